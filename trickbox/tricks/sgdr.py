"""SGDR: cosine decay with warm restarts (Loshchilov & Hutter, 2017), as a trick.

The learning rate is :func:`trickbox.functional.sgdr_lr` of the optimizer step:
no scheduler object and no hidden state, so several processes, gradient
accumulation and resume all see the same periods.

Warmup runs BEFORE the first cycle: ``warmup_epochs`` of linear warmup, then the
full first period ``t0`` (default: the rest of the run). timm's
``CosineLRScheduler`` does this only with ``warmup_prefix=True``; its default
(``warmup_prefix=False``) lets the warmup replace the first steps of the cycle.
The equivalent timm scheduler, updated per optimizer step with
``step_update(num_updates)``, is::

    CosineLRScheduler(optimizer, t_initial=t0 * steps_per_epoch, warmup_t=warmup_epochs * steps_per_epoch,
                      warmup_lr_init=warmup_start_lr, warmup_prefix=True, lr_min=min_lr, cycle_mul=t_mult,
                      cycle_decay=cycle_decay, cycle_limit=<cycles in the run>, t_in_epochs=False)
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable

from ..context import RunContext
from ..functional import sgdr_lr, sgdr_restarts
from ..trick import ConfigError, Param, Search, Trick, hookimpl


class SGDR(Trick):
    name = "sgdr"
    summary = "cosine LR decay with warm restarts; t0 = run length gives plain cosine decay"
    params = (
        Param("t0", float, None, "first period in epochs, after the warmup (default: the rest of the run, i.e. plain "
              "cosine; timm's t_initial)",
              low=1, optional=True, search=Search(1, 20, step=1)),
        Param("t_mult", float, 1.0, "period growth factor, T_i = t0 * t_mult^i", low=1,
              search=Search(choices=(1.0, 2.0))),
        Param("min_lr", float, 0.0, "eta_min", low=0),
        Param("warmup_epochs", float, 0.0, "linear warmup BEFORE the first cycle (timm's warmup_prefix=True; timm's "
              "default instead replaces the cycle's first steps)", low=0),
        Param("warmup_start_lr", float, 0.0, "learning rate at the start of warmup", low=0),
        Param("cycle_decay", float, 1.0, "eta_max is multiplied by this at each restart", low=0, low_open=True, high=1),
        Param("plot", bool, True, "draw the LR curve before training starts (false: no lr_curve.png)"),
    )

    def period(self, epochs: int) -> float:
        """The first period in epochs: ``t0``, or the whole run after warmup (plain cosine decay)."""
        return self.t0 if self.t0 is not None else max(epochs - self.warmup_epochs, 1.0)

    def schedule(self, ctx: RunContext) -> Callable[[int], float]:
        """``lr(step)`` for this run."""
        t0 = self.period(ctx.epochs)
        if self.min_lr > ctx.base_lr:
            raise ConfigError(f"tricks.sgdr.min_lr={self.min_lr} exceeds optim.lr={ctx.base_lr}; lower min_lr")
        if self.warmup_epochs >= ctx.epochs:
            raise ConfigError(f"tricks.sgdr.warmup_epochs={self.warmup_epochs:g} is not shorter than the run "
                              f"(train.epochs={ctx.epochs}): the whole run would warm up and never train at the full "
                              "rate; lower tricks.sgdr.warmup_epochs or raise train.epochs")
        return functools.partial(
            sgdr_lr, steps_per_epoch=ctx.steps_per_epoch, base_lr=ctx.base_lr, min_lr=self.min_lr,
            t0=t0, t_mult=self.t_mult, warmup_epochs=self.warmup_epochs,
            warmup_start_lr=self.warmup_start_lr, cycle_decay=self.cycle_decay,
        )

    @hookimpl
    def trickbox_lr_schedule(self, ctx: RunContext) -> Callable[[int], float]:
        return self.schedule(ctx)

    @hookimpl
    def trickbox_report_epochs(self, ctx: RunContext) -> list[int]:
        """The first epoch end at or after each cycle's end: runs with other periods are compared at a low LR."""
        ends = sgdr_restarts(float(ctx.epochs), self.period(ctx.epochs), self.t_mult, self.warmup_epochs)
        return sorted({min(ctx.epochs, max(1, math.ceil(e - 1e-9))) for e in ends}) or [ctx.epochs]

    @hookimpl
    def trickbox_setup(self, ctx: RunContext) -> None:
        ctx.draw_lr = ctx.draw_lr and self.plot  # the loop draws the curve, with any warmup trick around it
