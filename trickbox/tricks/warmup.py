"""Linear learning-rate warmup, composed with any schedule trick (or none: warmup, then ``optim.lr``).

The trick wraps whichever ``trickbox_lr_schedule`` wins (pluggy's ``wrapper=True``), so it works with ``step_lr``,
``multistep_lr``, ``poly_lr``, ``sgdr`` and third-party schedules alike. For ``epochs`` the rate rises linearly
from ``start_lr`` towards ``optim.lr``; then the schedule runs, started after the warmup (``prefix: true``, timm's
``warmup_prefix=True``) or at its own step, so that the warmup replaced its first steps (timm's default). SGDR's own
``warmup_epochs`` gives the same curve as this trick with ``prefix: true``; use one of the two.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from typing import Any

from ..context import RunContext
from ..functional import warmup_lr
from ..trick import ConfigError, Param, Search, Trick, hookimpl


def _constant(step: int, *, lr: float) -> float:
    return lr


class Warmup(Trick):
    name = "warmup"
    summary = "linear LR warmup before (or over the start of) any schedule"
    params = (
        Param("epochs", float, 5.0, "length of the warmup in epochs (timm's warmup_epochs)", low=0, low_open=True,
              search=Search(0.5, 10.0)),
        Param("start_lr", float, 0.0, "the rate at the first step (timm's warmup_lr)", low=0),
        Param("prefix", bool, True, "start the schedule after the warmup (timm's warmup_prefix); false: the warmup "
              "replaces the schedule's first steps"),
    )

    @hookimpl(wrapper=True)
    def trickbox_lr_schedule(self, ctx: RunContext) -> Generator[None, Any, Callable[[int], float]]:
        steps = self.epochs * ctx.steps_per_epoch
        if steps >= ctx.total_steps:
            raise ConfigError(f"tricks.warmup.epochs={self.epochs:g} is not shorter than the run (train.epochs="
                              f"{ctx.epochs}); lower tricks.warmup.epochs or raise train.epochs")
        if self.start_lr > ctx.base_lr:
            raise ConfigError(f"tricks.warmup.start_lr={self.start_lr} exceeds optim.lr={ctx.base_lr}; lower it")
        ctx.warmup_steps = int(steps) if self.prefix else 0
        inner = yield
        schedule = inner if inner is not None else functools.partial(_constant, lr=ctx.base_lr)
        return functools.partial(warmup_lr, schedule=schedule, base_lr=ctx.base_lr, warmup_steps=steps,
                                 start_lr=self.start_lr, prefix=self.prefix)
