"""Step, multistep and polynomial learning-rate decay, and linear warmup before or over any schedule.

Each is a pure function of the optimizer step, written to give timm's scheduler of the same name when that
scheduler is updated once per optimizer step (``t_in_epochs=False``, ``step_update(num_updates)``):
``StepLRScheduler``, ``MultiStepLRScheduler`` (a milestone m applies from step m − 1, timm's convention, one step
before torch's ``MultiStepLR``) and ``PolyLRScheduler`` (one cycle), with ``warmup_t``, ``warmup_lr_init`` and
``warmup_prefix``.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

__all__ = ["multistep_lr", "poly_lr", "step_lr", "warmup_lr"]


def step_lr(step: int, *, base_lr: float, decay_steps: float, decay_rate: float) -> float:
    """``base_lr · decay_rate^⌊step / decay_steps⌋``."""
    return base_lr * decay_rate ** (step // decay_steps)


def multistep_lr(step: int, *, base_lr: float, milestones: Sequence[int], decay_rate: float) -> float:
    """``base_lr · decay_rate^k``, k the milestones (sorted steps) at or before ``step + 1`` (timm's convention)."""
    return base_lr * decay_rate ** bisect.bisect_right(list(milestones), step + 1)


def poly_lr(step: int, *, base_lr: float, total_steps: float, power: float, min_lr: float = 0.0) -> float:
    """``min_lr + (base_lr − min_lr)·(1 − step/total_steps)^power``, then ``min_lr`` from ``total_steps`` on."""
    if step >= total_steps:
        return min_lr
    return min_lr + (base_lr - min_lr) * (1 - step / total_steps) ** power


def warmup_lr(step: int, *, schedule: Callable[[int], float], base_lr: float, warmup_steps: float, start_lr: float,
              prefix: bool) -> float:
    """Linear from ``start_lr`` towards ``base_lr`` over ``warmup_steps``, then ``schedule``: started after the
    warmup (``prefix``: timm's ``warmup_prefix=True``) or at its own step (the warmup replaced its first steps)."""
    if step < warmup_steps:
        return start_lr + step * (base_lr - start_lr) / warmup_steps
    return schedule(int(step - warmup_steps) if prefix else step)
