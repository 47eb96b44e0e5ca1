"""Optimizer tricks of He et al. (2018): linear scaling of the learning rate and no bias decay."""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import Tensor

__all__ = ["linear_scaled_lr", "is_no_decay", "split_no_decay"]


def linear_scaled_lr(lr: float, global_batch: int, reference_batch: int = 256) -> float:
    """``lr × global_batch / reference_batch`` (Goyal et al., 2017): 0.1 at batch 256 is 0.4 at batch 1024."""
    if global_batch < 1 or reference_batch < 1:
        raise ValueError(f"global_batch and reference_batch must be >= 1, got {global_batch} and {reference_batch}")
    return lr * global_batch / reference_batch


def is_no_decay(name: str, param: Tensor, extra: Iterable[str] = ()) -> bool:
    """Whether a parameter is exempt from weight decay: a bias or a normalisation weight (every tensor of at most
    one dimension, and every ``*.bias``), or a name matching one of the ``extra`` globs."""
    return param.ndim <= 1 or name.endswith(".bias") or any(fnmatch.fnmatchcase(name, g) for g in extra)


def split_no_decay(
    groups: Sequence[Mapping[str, Any]], names: Mapping[int, str], extra: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """New parameter groups: each group's decayed parameters keep its settings, its exempt ones (:func:`is_no_decay`)
    move to a copy of it with ``weight_decay=0``. The decayed groups come first, then the exempt ones, each in the
    original order; empty groups are left out. ``names`` maps ``id(param)`` to its name (``""`` when unknown)."""
    extra = tuple(extra)
    decayed, exempt = [], []
    for group in groups:
        keep = [p for p in group["params"] if not is_no_decay(names.get(id(p), ""), p, extra)]
        free = [p for p in group["params"] if is_no_decay(names.get(id(p), ""), p, extra)]
        if keep:
            decayed.append({**group, "params": keep})
        if free:
            exempt.append({**group, "params": free, "weight_decay": 0.0})
    return decayed + exempt
