"""Every point of the training loop where a trick can act. Read this file first.

The loop, with the hooks it calls (``trickbox/loop.py`` is this, in code: each
comment on the right names the function of ``loop.py`` that does that part)::

    tricks = load_tricks(config)                       # start_run: entry points, validated; nothing written
    data = open_run_data(config.data)                  # load_data: list, settle augmentation, pick the path
    claim run_dir; write config.yaml; start tracking   # start_outputs (also: find the checkpoint to resume)
    model, opt = timm model, optimizer                 # build_model
    trickbox_setup(ctx)                                #   load teachers, KNN tables, plot the LR
    model = trickbox_configure_model(model, ctx)       #   chain: each may return a new model
    opt   = trickbox_configure_optimizer(opt, model, ctx)   # chain
    sched = trickbox_lr_schedule(ctx)                  #   first result wins; LR = sched(step)
    load the checkpoint; compile; accelerator.prepare  # restore, prepare (a signal before here stops at once)
    for epoch:
        for i, (x, labels) in data.train:              # train_epoch
            batch = Batch(x, one_hot(labels), labels)
            batch = trickbox_transform_batch(batch, ctx)     # chain: mixup, cutmix, noise (x and y)
            batch = trickbox_transform_targets(batch, ctx)   # chain: label smoothing (y only)
            logits = trickbox_forward(model, batch, ctx)     # first result wins; default model(batch.x)
            parts  = trickbox_loss(logits, batch, ctx)       # every result kept: {"ce": …} + {"kd": …}
            backward(sum(parts) / grad_accum)                # under no_sync until the group's last batch
            if the accumulation group is not done: continue
            trickbox_before_optimizer_step(model, optimizer, ctx)   # gradient clipping
            optimizer.step(); step += 1; set LR = sched(step)       # a non-finite step is skipped on the device
            trickbox_after_step(batch, parts, ctx)           # EMA of the weights, logging
            every finite_check_every steps: agree on NaN and on a stop signal; on a signal: checkpoint, exit 128+sig
        check every weight, buffer and trickbox_state_tensors(ctx) is finite   # check_finite, on every rank
        metrics = evaluate(val) + trickbox_evaluate(model, "val", ctx)   # evaluate_epoch
        checkpoint(); trickbox_epoch_end(metrics, ctx)  # end_epoch (a sweep's reporter wraps epoch_end)
    model.safetensors                                  # finish: the weights first, then
    test = evaluate(test) + trickbox_evaluate(model, "test", ctx)       #   the test metrics and summary.json
    trickbox_teardown(ctx)                             # also after an error

Order. The stages above are fixed: batch transforms run before target
transforms, which run before the forward pass and the loss. Within one hook
the tricks order themselves with pluggy's ``tryfirst=True`` / ``trylast=True``
on :data:`trickbox.trick.hookimpl`; among equals, the order is the order of
``tricks:`` in the config. The core never looks at which trick is which.

Chains. ``configure_*`` and ``transform_*`` hooks are chains: each
implementation receives the previous one's result and returns a new value,
or ``None`` to pass its input on unchanged.

All hooks take keyword arguments and must not keep references to batches.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

from .trick import PROJECT

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from .batch import Batch, LossParts
    from .context import RunContext

hookspec = pluggy.HookspecMarker(PROJECT)


@hookspec
def trickbox_setup(ctx: RunContext) -> None:
    """Once, after the model and its optimizer are built and before the configure hooks, before a checkpoint is
    loaded and before ``accelerator.prepare``. Load resources (a teacher, a KNN table), log plots; a
    :class:`~trickbox.errors.ConfigError` raised here refuses the run and removes its new directory."""


@hookspec
def trickbox_configure_model(model: torch.nn.Module, ctx: RunContext) -> torch.nn.Module | None:
    """Chain, before ``accelerator.prepare``. Return a replacement model or ``None``.

    May register forward hooks (manifold mixup) or change layers.
    """


@hookspec
def trickbox_configure_optimizer(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module, ctx: RunContext
) -> torch.optim.Optimizer | None:
    """Chain, before ``accelerator.prepare``. Return a replacement optimizer or ``None``."""


@hookspec(firstresult=True)
def trickbox_lr_schedule(ctx: RunContext) -> Callable[[int], float] | None:
    """First result wins. Return ``lr(step) -> float``, a pure function of the optimizer step.

    The loop sets this learning rate on every parameter group, scaled by the
    group's ``lr_scale`` (by default the group's own initial rate over
    ``ctx.base_lr``, so groups keep their ratios: a 10x head stays 10x),
    before each optimizer step. Without an implementation the learning rates
    stay as the optimizer has them (a user's own scheduler keeps working).
    """


@hookspec
def trickbox_transform_batch(batch: Batch, ctx: RunContext) -> Batch | None:
    """Chain, per training batch. May change inputs and targets together (mixup, noise). The tricks named in
    ``ctx.muted`` sit out the batch (a trick that chooses among them sets it, first in the chain).

    Return ``batch.replace(x=…, y=…, meta={…})`` or ``None``.
    """


@hookspec
def trickbox_transform_targets(batch: Batch, ctx: RunContext) -> Batch | None:
    """Chain, after every batch transform. May change only ``y`` (label smoothing)."""


@hookspec(firstresult=True)
def trickbox_forward(model: torch.nn.Module, batch: Batch, ctx: RunContext) -> Tensor | None:
    """First result wins. Return logits; without an implementation the loop calls ``model(batch.x)``."""


@hookspec
def trickbox_loss(logits: Tensor, batch: Batch, ctx: RunContext) -> dict[str, Tensor] | None:
    """Every result is kept. Return named loss terms; the loss is their sum.

    The built-in ``base_loss`` plugin returns ``{"ce": soft cross-entropy}``.
    Two terms with the same name are an error. A value wrapped in
    :class:`trickbox.batch.Logged` is logged as ``loss/<name>`` and not added (a diagnostic).
    """


@hookspec
def trickbox_before_optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: RunContext) -> None:
    """After backward (gradients synchronised), before ``optimizer.step()``. May change gradients in place
    (clipping: use ``ctx.accelerator.clip_grad_norm_`` when there is one, it unscales fp16 gradients first)."""


@hookspec
def trickbox_after_step(batch: Batch, parts: LossParts, ctx: RunContext) -> None:
    """After each optimizer step (``ctx.step`` already advanced). Log, never change the model."""


@hookspec
def trickbox_evaluate(model: torch.nn.Module, split: str, ctx: RunContext) -> dict[str, float] | None:
    """After the loop's own evaluation of ``split`` ("val" or "test"). Return extra metrics."""


@hookspec
def trickbox_state_tensors(ctx: RunContext) -> dict[str, Tensor] | None:
    """Tensors beyond the model's own that this trick evaluates or writes to disk (an EMA's averaged weights), by
    name. The loop checks them with the model's weights and buffers, on every process, before each evaluation,
    checkpoint and final save: one non-finite value anywhere stops the run (exit 3) before it is evaluated or saved."""


@hookspec
def trickbox_epoch_end(metrics: dict[str, Any], ctx: RunContext) -> None:
    """After each epoch's evaluation, with that epoch's metrics."""


@hookspec
def trickbox_report_epochs(ctx: RunContext) -> list[int] | None:
    """The epochs (1-based) at whose end this run may fairly be compared with runs that differ in this trick's
    parameters, or ``None`` for any epoch. A schedule with warm restarts returns the ends of its cycles (the LR is
    low there in every run). A sweep with ``pruning: {restart_aware: true}`` reports to its pruner only at the
    epochs every trick allows (and at the last epoch)."""


@hookspec
def trickbox_teardown(ctx: RunContext) -> None:
    """Once, when training ends (also after an error). Remove hooks, free resources."""


CHAIN_HOOKS = {
    "trickbox_configure_model": "model",
    "trickbox_configure_optimizer": "optimizer",
    "trickbox_transform_batch": "batch",
    "trickbox_transform_targets": "batch",
}
"""Hooks that pass a value from one implementation to the next, with the argument that carries it."""
