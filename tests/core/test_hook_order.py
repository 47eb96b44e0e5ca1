"""hookspecs.py is the truth: a plugin that records every hook call, in a real run (with gradient accumulation and a
resume), sees the hooks in the order the pseudocode gives and in the state each hook's docstring promises."""
from __future__ import annotations

import re
from typing import Any

import torch
from safetensors.torch import load_file

from trickbox.config import load_config
from trickbox.loop import train
from trickbox.trick import hookimpl

from ..conftest import SMALL_RUN

LETTERS = {"trickbox_setup": "S", "trickbox_configure_model": "M", "trickbox_configure_optimizer": "O",
           "trickbox_lr_schedule": "L", "trickbox_transform_batch": "B", "trickbox_transform_targets": "T",
           "trickbox_forward": "F", "trickbox_loss": "X", "trickbox_before_optimizer_step": "G",
           "trickbox_after_step": "A", "trickbox_state_tensors": "Z", "trickbox_epoch_end": "E",
           "trickbox_teardown": "D"}


class Recorder:
    """Records each hook as a letter (evaluate: ``V`` for val, ``Q`` for test) and checks what its docstring says."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.problems: list[str] = []
        self.weights_at_configure: torch.Tensor | None = None
        self.first_name = ""
        self.step_at: dict[str, int] = {}

    def _saw(self, hook: str, ctx: Any) -> None:
        self.calls.append(LETTERS[hook])
        self.step_at[hook] = ctx.step

    def _expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.problems.append(what)

    @hookimpl
    def trickbox_setup(self, ctx):
        self._saw("trickbox_setup", ctx)
        self._expect(ctx.run_dir is not None and (ctx.run_dir / "config.yaml").is_file(),
                     "setup: config.yaml is written before the model is built")

    @hookimpl
    def trickbox_configure_model(self, model, ctx):
        self._saw("trickbox_configure_model", ctx)
        self._expect(not hasattr(model, "module"), "configure_model: before accelerator.prepare")
        self.first_name, first = next(iter(model.named_parameters()))
        self.weights_at_configure = first.detach().clone()

    @hookimpl
    def trickbox_configure_optimizer(self, optimizer, model, ctx):
        self._saw("trickbox_configure_optimizer", ctx)
        self._expect(type(optimizer).__name__ != "AcceleratedOptimizer", "configure_optimizer: before prepare")

    @hookimpl
    def trickbox_lr_schedule(self, ctx):
        self._saw("trickbox_lr_schedule", ctx)

    @hookimpl
    def trickbox_transform_batch(self, batch, ctx):
        self._saw("trickbox_transform_batch", ctx)

    @hookimpl
    def trickbox_transform_targets(self, batch, ctx):
        self._saw("trickbox_transform_targets", ctx)

    @hookimpl
    def trickbox_forward(self, model, batch, ctx):
        self._saw("trickbox_forward", ctx)

    @hookimpl
    def trickbox_loss(self, logits, batch, ctx):
        self._saw("trickbox_loss", ctx)

    @hookimpl
    def trickbox_before_optimizer_step(self, model, optimizer, ctx):
        self._saw("trickbox_before_optimizer_step", ctx)
        self._expect(all(p.grad is not None for p in model.parameters() if p.requires_grad),
                     "before_optimizer_step: after backward")

    @hookimpl
    def trickbox_after_step(self, batch, parts, ctx):
        self._expect(ctx.step == self.step_at["trickbox_before_optimizer_step"] + 1,
                     "after_step: ctx.step already advanced")
        self._saw("trickbox_after_step", ctx)

    @hookimpl
    def trickbox_evaluate(self, model, split, ctx):
        self.calls.append("V" if split == "val" else "Q")
        if split == "test":
            self._expect((ctx.run_dir / "model.safetensors").is_file(), "evaluate(test): after model.safetensors")

    @hookimpl
    def trickbox_state_tensors(self, ctx):
        self._saw("trickbox_state_tensors", ctx)

    @hookimpl
    def trickbox_epoch_end(self, metrics, ctx):
        self._saw("trickbox_epoch_end", ctx)
        self._expect("val/top1" in metrics, "epoch_end: with that epoch's metrics")

    @hookimpl
    def trickbox_teardown(self, ctx):
        self._saw("trickbox_teardown", ctx)


def _run(tmp_path, recorder: Recorder, *extra: str, resume: bool = False):
    cfg = load_config([], [*SMALL_RUN, f"train.out_dir={tmp_path}", "train.run_name=r", "train.grad_accum=2",
                           "train.epochs=2", "train.finite_check_every=1", *extra])
    return train(cfg, plugins=[recorder], resume=resume)


def test_the_hooks_run_where_hookspecs_says(tmp_path):
    first = Recorder()
    _run(tmp_path, first, "train.stop_after_epoch=1")
    seq = "".join(first.calls)
    # setup, the configure chains, the schedule; then per step two accumulated batches (4 hooks each), the step
    # hooks; the state check (Z) before the val evaluation and before the checkpoint; epoch_end; teardown
    assert re.fullmatch(r"SMOL(?:(?:BTFX){2}GA)+Z+VZ*E+D", seq), seq
    assert seq.count("G") == 2  # 256 images, 64 a batch, 2 batches a step: 2 optimizer steps in the epoch
    assert not first.problems, first.problems

    again = Recorder()
    final = _run(tmp_path, again, resume=True)
    seq = "".join(again.calls)
    assert re.fullmatch(r"SMOL(?:(?:BTFX){2}GA)+Z+VZ*E+Z*QD", seq), seq
    assert not again.problems, again.problems
    # setup and the configure chains come before the checkpoint is loaded: step 0 and the fresh initial weights
    assert again.step_at["trickbox_setup"] == 0 and again.step_at["trickbox_transform_batch"] >= 2
    assert torch.equal(again.weights_at_configure, first.weights_at_configure)
    trained = load_file(final.run_dir / "model.safetensors")
    assert not torch.equal(trained[first.first_name], first.weights_at_configure)
    assert final.test and final.steps == 4
