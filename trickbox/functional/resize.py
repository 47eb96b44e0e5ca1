"""Progressive resizing: the training image size as a pure function of the epoch (low resolution first)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["progressive_size", "size_ladder", "resize_batch"]


def size_ladder(start: int, end: int, *, multiple: int, stages: int = 0) -> list[int]:
    """The sizes a schedule from ``start`` to ``end`` passes through, in order. ``stages=0``: every multiple of
    ``multiple`` strictly between them (the linear schedule); ``stages=k``: ``k`` sizes evenly spaced, each inner one
    rounded to the nearest multiple. ``start`` and ``end`` are always the first and last."""
    if start < 1 or end < 1 or multiple < 1 or stages < 0 or stages == 1:
        raise ValueError(f"need start, end, multiple >= 1 and stages 0 or >= 2, got {start}, {end}, {multiple}, "
                         f"{stages}")
    if start == end:
        return [end]
    if stages:
        inner = [start + (end - start) * k / (stages - 1) for k in range(1, stages - 1)]
        sizes = [start, *(max(multiple, multiple * math.floor(v / multiple + 0.5)) for v in inner), end]
    else:
        lo, hi = sorted((start, end))
        inner_sizes = range(multiple * (lo // multiple + 1), hi, multiple)
        sizes = [start, *(inner_sizes if start < end else reversed(inner_sizes)), end]
    return [s for i, s in enumerate(sizes) if i == 0 or s != sizes[i - 1]]


def progressive_size(epoch: int, *, epochs: int, start: int, end: int, ramp: float = 0.75, multiple: int = 32,
                     stages: int = 0) -> int:
    """The training image size of 0-based ``epoch`` of ``epochs``. The size moves from ``start`` (epoch 0) to ``end``
    over the first ``ramp`` of the epochs and holds ``end`` after them. Each epoch takes the size of
    :func:`size_ladder` nearest to its place on the ramp (timm's progressive choice rule with no spread; a tie takes
    the smaller size), so ``stages=0`` grows by one ``multiple`` at a time and ``stages=k`` in ``k - 1`` steps."""
    if epochs < 1 or not 0 <= epoch or not 0 < ramp <= 1:
        raise ValueError(f"need epochs >= 1, epoch >= 0 and 0 < ramp <= 1, got {epochs}, {epoch}, {ramp}")
    ladder = size_ladder(start, end, multiple=multiple, stages=stages)
    ramp_epochs = max(1, round(ramp * epochs))
    progress = 1.0 if ramp_epochs == 1 else min(epoch / (ramp_epochs - 1), 1.0)
    center = progress * (len(ladder) - 1)
    return ladder[min(range(len(ladder)), key=lambda i: (abs(i - center), ladder[i]))]


def resize_batch(x: Tensor, size: int) -> Tensor:
    """``(B, C, H, W)`` images resampled to ``size`` x ``size`` (bilinear, antialiased when shrinking), in their
    dtype's range: the memory path's and a user loop's way to a smaller training size."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    out = F.interpolate(x.to(torch.float32), size=(size, size), mode="bilinear", align_corners=False,
                        antialias=size < max(x.shape[-2:]))
    return out.round().clamp(0, 255).to(x.dtype) if x.dtype == torch.uint8 else out.to(x.dtype)
