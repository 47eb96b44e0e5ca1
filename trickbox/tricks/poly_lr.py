"""Polynomial decay of the learning rate to ``min_lr`` over the run (timm's ``--sched poly``).

``lr = min_lr + (optim.lr − min_lr)·(1 − t/T)^power`` with ``T`` the run's optimizer steps after any prefix warmup
(or ``epochs``): timm's ``PolyLRScheduler`` with one cycle, updated per optimizer step.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

from ..context import RunContext
from ..functional import poly_lr
from ..trick import ConfigError, Param, Search, Trick, hookimpl


class PolyLR(Trick):
    name = "poly_lr"
    summary = "polynomial LR decay to min_lr over the run (timm's PolyLRScheduler)"
    params = (
        Param("power", float, 0.5, "exponent of the decay (timm's decay_rate for poly)", low=0, low_open=True,
              search=Search(0.5, 2.0)),
        Param("min_lr", float, 0.0, "the rate at the end", low=0),
        Param("epochs", float, None, "length of the decay in epochs (default: the run, after a prefix warmup)",
              low=0, low_open=True, optional=True),
    )

    @hookimpl
    def trickbox_lr_schedule(self, ctx: RunContext) -> Callable[[int], float]:
        if self.min_lr > ctx.base_lr:
            raise ConfigError(f"tricks.poly_lr.min_lr={self.min_lr} exceeds optim.lr={ctx.base_lr}; lower min_lr")
        total = (self.epochs * ctx.steps_per_epoch if self.epochs is not None
                 else ctx.total_steps - ctx.warmup_steps)
        return functools.partial(poly_lr, base_lr=ctx.base_lr, total_steps=total, power=self.power,
                                 min_lr=self.min_lr)
