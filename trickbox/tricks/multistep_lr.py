"""Multistep decay of the learning rate: ×``decay_rate`` at each milestone epoch (timm's ``--sched multistep``).

The milestones are epochs (counted after a ``warmup`` trick's prefix warmup, as timm counts them), turned into
optimizer steps. As in timm's ``MultiStepLRScheduler`` updated per step, a milestone applies from the step before
it: the convention timm keeps, one step before torch's ``MultiStepLR``.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

from ..context import RunContext
from ..functional import multistep_lr
from ..trick import ConfigError, Param, Trick, hookimpl


class MultiStepLR(Trick):
    name = "multistep_lr"
    summary = "the LR times decay_rate at each milestone epoch (timm's MultiStepLRScheduler)"
    params = (
        Param("milestones", list, [30, 60, 90], "epochs at which the LR decays, ascending (timm's decay_milestones)"),
        Param("decay_rate", float, 0.1, "factor at each milestone", low=0, low_open=True, high=1),
    )

    def check(self) -> None:
        ms = self.milestones
        if (not ms or not all(isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0 for m in ms)
                or list(ms) != sorted(ms)):
            raise ConfigError(f"tricks.multistep_lr.milestones must be ascending epochs > 0, got {ms!r}; e.g. "
                              "milestones=[30, 60, 90]")

    @hookimpl
    def trickbox_lr_schedule(self, ctx: RunContext) -> Callable[[int], float]:
        steps = [round(m * ctx.steps_per_epoch) for m in self.milestones]
        return functools.partial(multistep_lr, base_lr=ctx.base_lr, milestones=steps, decay_rate=self.decay_rate)
