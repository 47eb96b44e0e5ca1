"""Choosing between batch transforms: one of several batch-transform tricks per batch, or none.

``tricks.one_of.choices: {mixup: 0.5, cutmix: 0.5}`` gives each named trick its probability per batch; what is left
to 1 applies none of them. The draw is seeded by (seed, step, rank), so a resumed run chooses as the uninterrupted
one. The chosen trick's ``trickbox_transform_batch`` runs as it would alone; the others sit out that batch (the
core skips them, so third-party tricks work too). timm's ``Mixup(mixup_alpha, cutmix_alpha, prob, switch_prob)``
is ``choices: {cutmix: prob·switch_prob, mixup: prob·(1 − switch_prob)}`` with ``tricks.cutmix.prob=1``.
Only batch transforms are chosen: a trick that mixes elsewhere (manifold mixup's hidden features) is refused.
"""
from __future__ import annotations

from typing import Any

import torch

from ..batch import Batch
from ..context import RunContext
from ..trick import ConfigError, Param, Trick, hookimpl


class OneOf(Trick):
    name = "one_of"
    summary = "one batch-transform trick per batch (or none), by probability: timm's mixup switch, for any tricks"
    params = (Param("choices", dict, None, "trick name -> probability per batch, e.g. {mixup: 0.5, noise: 0.3}; "
                    "1 - their sum applies none"),)

    def check(self) -> None:
        c = self.choices
        def probability(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1

        if not isinstance(c, dict) or not c or not all(isinstance(k, str) and probability(v) for k, v in c.items()):
            raise ConfigError(f"tricks.one_of.choices must map trick names to probabilities in [0, 1], got {c!r}; "
                              "e.g. choices={mixup: 0.5, noise: 0.3}")
        if sum(c.values()) > 1 + 1e-9:
            raise ConfigError(f"tricks.one_of.choices: the probabilities sum to {sum(c.values()):g}, above 1; lower "
                              "them (1 - their sum is the chance of none)")

    def check_among(self, tricks: list[Trick]) -> None:
        by_name = {t.name: t for t in tricks}
        for name in self.choices:
            trick = by_name.get(name)
            if trick is None or name == self.name:
                raise ConfigError(f"tricks.one_of.choices names {name!r}, which is not an enabled trick; enable it "
                                  f"(tricks.{name}={{}}) or drop it from choices")
            if not hasattr(type(trick), "trickbox_transform_batch"):
                raise ConfigError(f"tricks.one_of.choices: {name!r} has no batch transform to choose")
            if getattr(trick, "layer", 0):
                raise ConfigError(f"tricks.one_of.choices: {name!r} mixes hidden features (layer="
                                  f"{trick.layer}), not batches; one_of chooses batch transforms only")

    def choose(self, ctx: RunContext) -> str | None:
        """The trick this batch takes (``None``: none of them)."""
        u = float(torch.rand((), generator=ctx.generator("one_of", device="cpu")))
        total = 0.0
        for name, p in self.choices.items():
            total += p
            if u < total:
                return name
        return None

    @hookimpl(tryfirst=True)
    def trickbox_transform_batch(self, batch: Batch, ctx: RunContext) -> Any:
        chosen = self.choose(ctx)
        ctx.muted = {n for n in self.choices if n != chosen}
        return None
