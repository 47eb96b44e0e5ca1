"""CutMix (Yun et al., 2019) as a trickbox trick, written against trickbox's public API only.

A box cut from a partner image replaces the same region of each image; the
targets are mixed by the share of the image each sample keeps::

    λ ~ Beta(α, α);  box of area ≈ (1 − λ)·H·W at a uniform centre, clipped to the image
    x̃ = x outside the box, x[perm] inside it
    ỹ = λ'·y + (1 − λ')·y[perm],  λ' = 1 − (box area) / (H·W)   (exact, after clipping)

The module has two layers, as every trick should: pure functions
(:func:`sample_box`, :func:`cutmix`) that work in anyone's loop, and a thin
:class:`CutMix` plugin that wires them into trickbox's ``transform_batch`` hook.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

import trickbox
from trickbox import Batch, Param, RunContext, Search, hookimpl

__all__ = ["CutMix", "box_lambda", "cutmix", "sample_box"]
__version__ = "0.1.0"

Box = tuple[int, int, int, int]
"""``(top, bottom, left, right)`` in pixels; rows ``top:bottom`` and columns ``left:right``."""


def sample_box(height: int, width: int, lam: float, rng: np.random.Generator) -> Box:
    """A box covering about ``1 − lam`` of a ``height × width`` image, centred uniformly, clipped to the image."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam}")
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(round(height * ratio)), int(round(width * ratio))
    cy, cx = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, width)
    return top, bottom, left, right


def box_lambda(box: Box, height: int, width: int) -> float:
    """The share of the image outside ``box``: the weight of each sample's own target."""
    top, bottom, left, right = box
    return 1.0 - (bottom - top) * (right - left) / (height * width)


def cutmix(x: Tensor, y: Tensor, perm: Tensor, box: Box) -> tuple[Tensor, Tensor, float]:
    """Paste ``x[perm]`` into ``box`` of ``x`` (B, C, H, W) and mix the soft targets ``y`` (B, K) by area.

    Returns the new inputs, the new targets and the exact λ' used for the
    targets. The inputs are not modified.
    """
    if x.ndim != 4:
        raise ValueError(f"cutmix needs image batches of shape (B, C, H, W), got shape {tuple(x.shape)}")
    height, width = x.shape[-2:]
    top, bottom, left, right = box
    lam = box_lambda(box, height, width)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[perm, :, top:bottom, left:right]
    return mixed, lam * y + (1.0 - lam) * y[perm], lam


class CutMix(trickbox.Trick):
    """CutMix as a batch transform. Runs before label smoothing, like every batch transform."""

    name = "cutmix"
    summary = "paste a random box from a partner image; mix the labels by the box's exact area"
    params = (
        Param("alpha", float, 1.0, "box area share 1 − λ with λ ~ Beta(α, α)", low=0, low_open=True,
              search=Search(0.1, 2.0, log=True)),
        Param("prob", float, 0.5, "probability of applying CutMix to a batch", low=0, high=1, search=Search(0.0, 1.0)),
    )

    @hookimpl
    def trickbox_transform_batch(self, batch: Batch, ctx: RunContext) -> Batch | None:
        # Seeded by (seed, "cutmix", step, rank): a resumed run draws the same coins, boxes and partners.
        rng = ctx.rng("cutmix")
        if rng.random() >= self.prob:
            return None
        if batch.x.ndim != 4:
            raise trickbox.ConfigError(
                f"tricks.cutmix needs image batches (B, C, H, W), got inputs of shape {tuple(batch.x.shape)}; remove "
                "cutmix for this data"
            )
        lam = float(rng.beta(self.alpha, self.alpha))
        box = sample_box(batch.x.shape[-2], batch.x.shape[-1], lam, rng)
        perm = torch.randperm(batch.size, generator=ctx.generator("cutmix", device="cpu")).to(batch.x.device)
        x, y, lam_box = cutmix(batch.x, batch.y, perm, box)
        # meta keys carry the trick's name, so they never collide with another trick's
        return batch.replace(x=x, y=y, meta={"cutmix_lam": lam_box, "cutmix_box": box, "cutmix_perm": perm})
