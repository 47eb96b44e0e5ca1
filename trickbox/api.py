"""Bring your own loop: trickbox's tricks inside any PyTorch / Accelerate training script. The user keeps the
loop; trickbox supplies the pieces::

    tricks = trickbox.load_tricks(config["tricks"])           # e.g. {"<trick>": {"<param>": value}}
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    tricks.setup(model, optimizer, accelerator=accelerator, num_classes=10, epochs=E, steps_per_epoch=len(loader))
    for epoch in range(E):
        for x, y in loader:
            batch = tricks.batch(x, y)                       # batch and target transforms
            loss = tricks.loss(tricks.forward(model, batch), batch).total
            accelerator.backward(loss)
            optimizer.step(); optimizer.zero_grad()
            tricks.step()                                    # next LR, after-step hooks, logging

trickbox's own loop (:mod:`trickbox.loop`) is a client of this module like any other.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .batch import Batch, LossParts, hard_batch
from .context import RunContext
from .errors import ConfigError
from .guard import DeferredRows, FiniteGuard
from .lr import LearningRate
from .registry import Catalog, call_chain, configure, discover, plugin_manager
from .trick import Trick


class TrickSet:
    """The configured tricks of one run and the hook calls a training loop needs. ``plugins`` join the tricks'
    hooks without being tricks (a sweep's epoch reporter, a test's fault injector), registered after them."""

    def __init__(self, tricks: Sequence[Trick], plugins: Sequence[Any] = ()) -> None:
        self.tricks, self.plugins = list(tricks), list(plugins)
        self.pm = plugin_manager(self.tricks, self.plugins)
        self.ctx: RunContext | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.rate = LearningRate(None, 0.0)
        self.log_every = 10
        self.guard = FiniteGuard()
        self.rows = DeferredRows(lambda values, step=None: None)
        self.stop_signal: int | None = None  # the stop signal every process agreed on at the latest check()
        self._last: tuple[LossParts, Batch] | None = None  # the latest loss() call, for step() without arguments
        self._pending_step: int | None = None  # a load_state_dict before setup

    def resolved(self) -> dict[str, dict[str, Any]]:
        """Every trick's parameters as the run uses them, defaults included (``config.yaml``, the W&B config)."""
        return {t.name: dict(t.values) for t in self.tricks}

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs: the optimizer step (the schedule and every seeded draw follow from it).
        With it, ``accelerator.register_for_checkpointing(tricks)`` makes ``save_state``/``load_state`` exact."""
        return {"step": self._context().step if self.ctx is not None else self._pending_step or 0}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue at ``state["step"]`` (before or after :meth:`setup`)."""
        self._pending_step = int(state["step"])
        if self.ctx is not None and self.optimizer is not None:
            self.attach(self.optimizer, step=self._pending_step)

    def with_plugins(self, *plugins: Any) -> TrickSet:
        """The same tricks with ``plugins`` added (before :meth:`setup`)."""
        return TrickSet(self.tricks, [*self.plugins, *plugins])

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tricks]

    # -- setup ---------------------------------------------------------------
    def setup(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, num_classes: int, epochs: int,
              steps_per_epoch: int, accelerator: Any = None, base_lr: float | None = None, seed: int = 0,
              log_every: int = 10, finite_check_every: int | None = None,
              **context: Any) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """Create the run context, run the setup and configure hooks, and set the first LR. Call it before or after
        ``accelerator.prepare`` (after it, the configure hooks may change the model only in place).
        ``steps_per_epoch`` counts optimizer steps of one process. ``finite_check_every=N`` keeps the non-finite
        check on the device and reads it every N optimizer steps (:mod:`trickbox.guard`; call
        :meth:`before_optimizer_step` between backward and the optimizer step); unset, each loss is checked on the
        host and a non-finite one raises before backward."""
        for key, value in (("finite_check_every", finite_check_every), ("steps_per_epoch", steps_per_epoch),
                           ("epochs", epochs)):
            if value is not None and value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")
        self.guard = FiniteGuard(finite_check_every)
        base_lr = float(optimizer.param_groups[0]["lr"]) if base_lr is None else base_lr
        ctx = RunContext.from_accelerator(accelerator, num_classes=num_classes, epochs=epochs,
                                          steps_per_epoch=steps_per_epoch, base_lr=base_lr, seed=seed, **context)
        self.rows = DeferredRows(ctx.log)
        if self.guard.deferred:  # anything a trick logs goes after the rows still waiting, so steps stay in order
            ctx.log, ctx.log_images = self.rows.in_order(ctx.log), self.rows.in_order(ctx.log_images)
        self.ctx, self.log_every = ctx, log_every
        self.pm.hook.trickbox_setup(ctx=ctx)
        model, new_optimizer = configure(self.pm, model, optimizer, accelerator, ctx)
        self.rate = LearningRate.for_run(self.pm.hook.trickbox_lr_schedule(ctx=ctx), ctx)  # base_lr after the hooks
        self.attach(new_optimizer, step=self._pending_step)
        return model, new_optimizer

    def attach(self, optimizer: torch.optim.Optimizer, *, step: int | None = None) -> float:
        """Point the tricks at ``optimizer`` (e.g. the one ``accelerator.prepare`` returned), optionally at
        optimizer step ``step`` (a resumed run), and set that step's learning rate. Returns it."""
        ctx = self._context()
        if step is not None:
            ctx.step = step
        self.optimizer = optimizer
        self.rate.attach(optimizer)
        self.guard.attach(optimizer)
        return self._apply_lr()

    def _context(self) -> RunContext:
        if self.ctx is None:
            raise RuntimeError("call tricks.setup(model, optimizer, ...) before training")
        return self.ctx

    @property
    def schedule(self) -> Callable[[int], float] | None:
        """``lr(step)`` of the schedule trick (None: the rate is left to the optimizer, :mod:`trickbox.lr`)."""
        return self.rate.schedule

    def lr(self, step: int | None = None) -> float:
        """The scheduled rate at ``step`` (default: now); without a schedule trick, the optimizer's current rate."""
        ctx = self._context()
        if self.rate.schedule is None and step is not None:
            return ctx.base_lr
        return self.rate.at(ctx.step if step is None else step)

    def _apply_lr(self) -> float:
        return self.rate.apply(self._context().step)

    # -- per batch -----------------------------------------------------------
    def batch(self, x: Tensor, labels: Tensor, index: Tensor | None = None) -> Batch:
        """One-hot targets, then every batch transform, then every target transform."""
        ctx = self._context()
        batch = hard_batch(x, labels, ctx.num_classes, index)
        batch = call_chain(self.pm, "trickbox_transform_batch", batch, ctx=ctx)
        return call_chain(self.pm, "trickbox_transform_targets", batch, ctx=ctx)

    def forward(self, model: torch.nn.Module, batch: Batch) -> Tensor:
        """Logits for ``batch``: a trick's forward (one that mixes hidden features) or ``model(batch.x)``."""
        out = self.pm.hook.trickbox_forward(model=model, batch=batch, ctx=self._context())
        return model(batch.x) if out is None else out

    def loss(self, logits: Tensor, batch: Batch) -> LossParts:
        """Every loss term, named. A non-finite total raises :class:`NonFiniteError` before backward, or, with
        deferred checks, makes the optimizer skip this step and :meth:`check` raise (see :mod:`trickbox.guard`)."""
        ctx = self._context()
        parts = LossParts()
        for result in reversed(self.pm.hook.trickbox_loss(logits=logits, batch=batch, ctx=ctx)):
            for name, value in (result or {}).items():
                parts.add(name, value)
        self.guard.observe_loss(parts, ctx.step)
        self._last = (parts, batch)
        return parts

    def before_optimizer_step(self, model: torch.nn.Module, *, signal: int | None = None) -> None:
        """After backward, before ``optimizer.step()``: the gradient hooks (clipping); with deferred checks a
        non-finite gradient skips the step too (an optimizer that cannot skip one is checked here, on every rank)."""
        ctx = self._context()
        self.pm.hook.trickbox_before_optimizer_step(model=model, optimizer=self.optimizer, ctx=ctx)
        self.guard.observe_gradients(model.parameters(), ctx.step)
        if self.guard.deferred and not self.guard.skips_on_device:
            self.check(signal)

    def step(self, parts: LossParts | None = None, batch: Batch | None = None, *, signal: int | None = None,
             stepped: bool | None = None) -> float:
        """After ``optimizer.step()``: advance the step, set the next LR, run after-step hooks, log. ``stepped``: did
        the optimizer step (None: ``accelerator.sync_gradients``, as ``accelerator.accumulate`` sets it)? If not,
        this does nothing. Without arguments it uses the latest :meth:`loss` call's parts and batch. Deferred checks
        run :meth:`check` every ``finite_check_every`` steps with ``signal`` (a stop signal this process received)."""
        ctx = self._context()
        acc = ctx.accelerator
        if not (stepped if stepped is not None else acc is None or getattr(acc, "sync_gradients", True)):
            return self.lr()
        if parts is None and batch is None and self._last is not None:
            parts, batch = self._last
        self._last = None
        # row `s` holds what optimizer step s used: lr == schedule(s)
        values: dict[str, Any] = {"lr": self.lr(), **self.rate.groups(), **ctx.pop_row()}
        if parts is not None and ctx.step % self.log_every == 0:
            values.update(parts.detached(as_tensors=True))  # tensors: one host read per row, or per deferred flush
        self.rows.write(ctx.step, values, defer=self.guard.deferred)
        ctx.step += 1
        lr = self._apply_lr()
        if batch is not None:
            self.pm.hook.trickbox_after_step(batch=batch, parts=parts or LossParts(), ctx=ctx)
        if self.guard.reads_now(ctx.step, signal, 1 if acc is None else acc.num_processes):
            self.check(signal)
        return lr

    def check(self, signal: int | None = None) -> int | None:
        """Read the non-finite flag and agree with the other processes on it and on ``signal``; write deferred log
        rows. Raises :class:`NonFiniteError`; returns (and keeps in :attr:`stop_signal`) the agreed stop signal."""
        try:
            agreed = self.guard.check(self._context().accelerator, signal) if self.guard.deferred else signal
        finally:
            self.rows.flush()
        self.stop_signal = agreed
        return agreed

    # -- evaluation and end --------------------------------------------------
    def evaluate(self, model: torch.nn.Module, split: str) -> dict[str, float]:
        """Extra metrics from tricks for ``split``."""
        return _merged(self.pm.hook.trickbox_evaluate(model=model, split=split, ctx=self._context()))

    def state_tensors(self) -> dict[str, Tensor]:
        """Every trick's extra state that is evaluated or saved (:func:`~trickbox.hookspecs.trickbox_state_tensors`)."""
        return _merged(self.pm.hook.trickbox_state_tensors(ctx=self.ctx)) if self.ctx is not None else {}

    def report_epochs(self) -> list[int] | None:
        """Epochs (1-based) at whose end every trick allows a fair comparison (``None``: any epoch); the last
        epoch is always one of them."""
        ctx = self._context()
        answers = [set(r) for r in self.pm.hook.trickbox_report_epochs(ctx=ctx) if r is not None]
        return sorted(set.intersection(*answers) | {ctx.epochs}) if answers else None

    def epoch_end(self, metrics: dict[str, Any]) -> None:
        self.pm.hook.trickbox_epoch_end(metrics=metrics, ctx=self._context())

    def teardown(self) -> None:
        if self.ctx is not None:
            self.pm.hook.trickbox_teardown(ctx=self.ctx)


def load_tricks(tricks: Mapping[str, Mapping[str, Any] | None] | Iterable[str], *, block: Iterable[str] = (),
                autoload: bool | None = None, extra: Iterable[type[Trick]] = (), catalog: Catalog | None = None,
                ) -> TrickSet:
    """Validated tricks from installed entry points: ``{"<trick>": {"<param>": 0.2}}`` or ``["<trick>"]``."""
    cat = catalog or discover(autoload=autoload, block=block)
    for cls in extra:
        cat.add(cls)
    configured = dict(tricks) if isinstance(tricks, Mapping) else {name: {} for name in tricks}
    return TrickSet(cat.build(configured))


def _merged(results: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    return {k: v for result in results for k, v in (result or {}).items()}
