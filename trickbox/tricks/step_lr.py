"""Step decay of the learning rate: ×``decay_rate`` every ``decay_epochs`` (timm's ``--sched step``).

``lr(step) = optim.lr · decay_rate^⌊step / (decay_epochs · steps_per_epoch)⌋``: timm's ``StepLRScheduler``
updated per optimizer step. Add the ``warmup`` trick for a warmup.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

from ..context import RunContext
from ..functional import step_lr
from ..trick import Param, Search, Trick, hookimpl


class StepLR(Trick):
    name = "step_lr"
    summary = "step decay: the LR times decay_rate every decay_epochs (timm's StepLRScheduler)"
    params = (
        Param("decay_epochs", float, 30.0, "epochs between decays (timm's decay_t)", low=0, low_open=True,
              search=Search(1.0, 60.0)),
        Param("decay_rate", float, 0.1, "factor at each decay", low=0, low_open=True, high=1,
              search=Search(0.1, 0.5)),
    )

    @hookimpl
    def trickbox_lr_schedule(self, ctx: RunContext) -> Callable[[int], float]:
        return functools.partial(step_lr, base_lr=ctx.base_lr, decay_steps=self.decay_epochs * ctx.steps_per_epoch,
                                 decay_rate=self.decay_rate)
