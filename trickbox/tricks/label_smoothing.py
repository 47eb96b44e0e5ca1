"""Label smoothing (Szegedy et al., 2016): p' = (1 − ε)·p + ε·u."""
from __future__ import annotations

import math

import torch

from ..batch import Batch
from ..context import RunContext
from ..functional import smooth_targets
from ..trick import ConfigError, Param, Search, Trick, hookimpl


class LabelSmoothing(Trick):
    name = "label_smoothing"
    summary = "mix the targets with a uniform (or given) prior"
    params = (
        Param("eps", float, 0.1, "smoothing ε", low=0, high=1, high_open=True, search=Search(0.0, 0.3)),
        Param("prior", list, None, "class prior u (K numbers summing to 1); default uniform", optional=True),
    )

    def check(self) -> None:
        if self.prior is not None:
            if not all(isinstance(p, (int, float)) and not isinstance(p, bool) and p >= 0 for p in self.prior):
                raise ConfigError(f"tricks.label_smoothing.prior must hold non-negative numbers, got {self.prior!r}")
            if not math.isclose(sum(self.prior), 1.0, abs_tol=1e-4):
                raise ConfigError(f"tricks.label_smoothing.prior must sum to 1, got {sum(self.prior):g}")

    @hookimpl
    def trickbox_setup(self, ctx: RunContext) -> None:
        if self.prior is not None and len(self.prior) != ctx.num_classes:
            raise ConfigError(
                f"tricks.label_smoothing.prior has {len(self.prior)} entries but the data has {ctx.num_classes} classes"
            )

    @hookimpl
    def trickbox_transform_targets(self, batch: Batch, ctx: RunContext) -> Batch:
        prior = None if self.prior is None else torch.tensor(self.prior, dtype=batch.y.dtype, device=batch.y.device)
        return batch.replace(y=smooth_targets(batch.y, self.eps, prior))
