"""Vicinal risk minimisation with Gaussian input noise: x̃ = x + σ·N(0, I), labels unchanged."""
from __future__ import annotations

from ..batch import Batch
from ..context import RunContext
from ..functional import gaussian_noise
from ..trick import Param, Search, Trick, hookimpl


class GaussianNoise(Trick):
    name = "noise"
    summary = "Gaussian input noise (VRM baseline of the mixup paper)"
    params = (Param("sigma", float, 0.1, "noise std in normalised input units", low=0,
                    search=Search(0.01, 0.5, log=True)),)

    @hookimpl
    def trickbox_transform_batch(self, batch: Batch, ctx: RunContext) -> Batch:
        return batch.replace(x=gaussian_noise(batch.x, self.sigma, ctx.generator("noise")), meta={"sigma": self.sigma})
