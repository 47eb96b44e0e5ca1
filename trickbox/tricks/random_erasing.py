"""Random erasing (Zhong et al., 2020), timm's ``--reprob/--remode/--recount``, on both data paths.

timm's own :class:`timm.data.random_erasing.RandomErasing` erases boxes of the normalised batch, as timm's
prefetching loader does on the device; here it runs on the batch the loop holds, whichever data path made it, first
among the batch transforms (before mixup, as in timm). Its draws (Python's ``random`` and, for ``pixel``/``rand``,
torch's) are seeded by (seed, step, rank), so a resumed run erases as the uninterrupted one, and the global
generators are left as they were.
"""
from __future__ import annotations

import random
from typing import Any

import torch

from ..batch import Batch
from ..context import RunContext
from ..seeding import derive_seed
from ..trick import Param, Search, Trick, hookimpl


class RandomErasing(Trick):
    name = "random_erasing"
    summary = "erase random boxes of each training image (timm's RandomErasing: --reprob, --remode, --recount)"
    params = (
        Param("prob", float, 0.25, "probability per image (timm's re_prob)", low=0, high=1, search=Search(0.1, 0.5)),
        Param("mode", str, "pixel", "const: zeros; rand: one normal colour per box; pixel: normal noise per pixel "
              "(timm's re_mode)", choices=("const", "rand", "pixel")),
        Param("count", int, 1, "up to this many boxes per image (timm's re_count)", low=1),
    )

    def seed(self, ctx: RunContext) -> int:
        """The seed of this step's draws."""
        return derive_seed(ctx.seed, "random_erasing", ctx.step, ctx.rank)

    def erase(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """timm's RandomErasing of a copy of ``x`` with every draw seeded by ``seed``."""
        from timm.data.random_erasing import RandomErasing as TimmErasing

        eraser = TimmErasing(probability=self.prob, mode=self.mode, max_count=self.count, device=x.device)
        state = random.getstate()
        devices = [x.device] if x.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                random.seed(seed)
                torch.manual_seed(seed)
                return eraser(x.clone())
        finally:
            random.setstate(state)

    @hookimpl(tryfirst=True)
    def trickbox_transform_batch(self, batch: Batch, ctx: RunContext) -> Any:
        return batch.replace(x=self.erase(batch.x, self.seed(ctx)))
