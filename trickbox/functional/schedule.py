"""SGDR: cosine learning-rate decay with warm restarts (Loshchilov & Hutter, 2017).

Within cycle ``i`` (length ``T_i = t0 * t_mult**i``) the rate is

    lr = min_lr + 0.5 * (eta_max_i - min_lr) * (1 + cos(pi * T_cur / T_i)),
    eta_max_i = base_lr * cycle_decay**i,

where ``T_cur`` is the time since the cycle started. Plain cosine decay is the
special case ``t0 = total epochs, cycle_limit = 1``.
"""
from __future__ import annotations

import math
from typing import Any

__all__ = ["sgdr_cycle", "sgdr_lr", "sgdr_restarts", "lr_curve"]

# Relative tolerance used to snap a time that lies a rounding error before a
# cycle boundary onto the boundary (e.g. 0.1 * 30 = 3.0000000000000004 steps).
_BOUNDARY_RTOL = 1e-9


def _check_cycle_args(t0: float, t_mult: float) -> None:
    if not t0 > 0:
        raise ValueError(f"t0 must be > 0 (first cycle length in epochs), got {t0}; use e.g. t0=10")
    if not t_mult >= 1:
        raise ValueError(f"t_mult must be >= 1, got {t_mult}; use t_mult=1 for equal-length cycles")


def _cycle_start(i: int, t0: float, t_mult: float) -> float:
    """Start time S_i of cycle i: S_i = t0 * i (t_mult = 1) or t0 * (t_mult**i - 1) / (t_mult - 1)."""
    if t_mult == 1:
        return t0 * i
    return t0 * (t_mult**i - 1) / (t_mult - 1)


def sgdr_cycle(t: float, t0: float, t_mult: float) -> tuple[int, float, float]:
    """Locate time ``t`` within the SGDR cycles.

    ``t`` and ``t0`` share one unit (epochs; fractional allowed), and ``t`` is
    measured from the start of the first cycle. Returns ``(i, T_cur, T_i)``
    with ``T_i = t0 * t_mult**i`` and ``T_cur = t - S_i``, where
    ``S_i = t0 * (t_mult**i - 1) / (t_mult - 1)`` (``t0 * i`` for ``t_mult = 1``).

    The cycle index comes from the closed form
    ``i = floor(log_{t_mult}(1 + t (t_mult - 1) / t0))`` (``floor(t / t0)`` for
    ``t_mult = 1``) and is then corrected for floating-point error, so that
    ``S_i <= t < S_{i+1}`` holds; a ``t`` within a relative 1e-9 of a boundary
    counts as lying on it (the new cycle starts there).
    """
    if not t >= 0:
        raise ValueError(f"t must be >= 0 (time since the first cycle started), got {t}; clamp negative times to 0")
    _check_cycle_args(t0, t_mult)
    if t_mult == 1:
        i = int(math.floor(t / t0))
    else:
        i = int(math.floor(math.log1p(t * (t_mult - 1) / t0) / math.log(t_mult)))
    i = max(i, 0)
    tol = _BOUNDARY_RTOL * max(abs(t), t0)
    # Correct an off-by-one from rounding in the closed form.
    while i > 0 and t < _cycle_start(i, t0, t_mult) - tol:
        i -= 1
    while t >= _cycle_start(i + 1, t0, t_mult) - tol:
        i += 1
    t_i = t0 * t_mult**i
    t_cur = min(max(t - _cycle_start(i, t0, t_mult), 0.0), t_i)
    return i, t_cur, t_i


def sgdr_lr(
    step: int,
    *,
    steps_per_epoch: float,
    base_lr: float,
    min_lr: float = 0.0,
    t0: float,
    t_mult: float = 1.0,
    warmup_epochs: float = 0.0,
    warmup_start_lr: float = 0.0,
    cycle_decay: float = 1.0,
    cycle_limit: int | None = None,
) -> float:
    """Learning rate at optimizer step ``step`` (0-based) under SGDR with linear warmup.

    With ``t = step / steps_per_epoch`` (epochs):

    * warmup (``t < warmup_epochs``):
      ``lr = warmup_start_lr + (base_lr - warmup_start_lr) * t / warmup_epochs``;
    * afterwards, with ``(i, T_cur, T_i) = sgdr_cycle(t - warmup_epochs, t0, t_mult)``:
      ``lr = min_lr + 0.5 * (base_lr * cycle_decay**i - min_lr) * (1 + cos(pi * T_cur / T_i))``,
      or ``min_lr`` once ``i >= cycle_limit``.

    Times are evaluated in step units (``t0 * steps_per_epoch`` steps per first
    cycle), which is exact when ``t0 * steps_per_epoch`` is a whole number.
    """
    if not step >= 0:
        raise ValueError(f"step must be >= 0, got {step}; count optimizer steps from 0")
    if not steps_per_epoch > 0:
        raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}; pass len(train_loader) / "
                         "grad_accum_steps")
    _check_cycle_args(t0, t_mult)
    if not min_lr >= 0:
        raise ValueError(f"min_lr must be >= 0, got {min_lr}; use min_lr=0")
    if min_lr > base_lr:
        raise ValueError(f"min_lr must be <= base_lr, got min_lr={min_lr} > base_lr={base_lr}; lower min_lr or raise "
                         "base_lr")
    if not warmup_epochs >= 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}; use warmup_epochs=0 for no warmup")
    if not cycle_decay > 0:
        raise ValueError(f"cycle_decay must be > 0, got {cycle_decay}; use cycle_decay=1 to keep the peak lr on every "
                         "restart")
    if cycle_limit is not None and cycle_limit < 1:
        raise ValueError(f"cycle_limit must be >= 1 or None, got {cycle_limit}; use cycle_limit=None for unlimited "
                         "restarts")

    t = float(step)
    warmup_steps = warmup_epochs * steps_per_epoch
    if t < warmup_steps:
        return warmup_start_lr + (base_lr - warmup_start_lr) * t / warmup_steps
    i, t_cur, t_i = sgdr_cycle(t - warmup_steps, t0 * steps_per_epoch, t_mult)
    if cycle_limit is not None and i >= cycle_limit:
        return min_lr
    eta_max = base_lr * cycle_decay**i
    return min_lr + 0.5 * (eta_max - min_lr) * (1.0 + math.cos(math.pi * t_cur / t_i))


def sgdr_restarts(
    total_epochs: float,
    t0: float,
    t_mult: float = 1.0,
    warmup_epochs: float = 0.0,
) -> list[float]:
    """Absolute epoch times at which each SGDR cycle ends, up to ``total_epochs``.

    Cycle ``i`` ends at ``warmup_epochs + S_{i+1}`` with
    ``S_{i+1} = t0 * (t_mult**(i+1) - 1) / (t_mult - 1)`` (``t0 * (i+1)`` for
    ``t_mult = 1``); ends within a relative 1e-9 of ``total_epochs`` are kept.
    These are the points where the learning rate is at its minimum, i.e. the
    natural times to evaluate, checkpoint or prune.
    """
    if not total_epochs >= 0:
        raise ValueError(f"total_epochs must be >= 0, got {total_epochs}; pass the planned training length in epochs")
    _check_cycle_args(t0, t_mult)
    if not warmup_epochs >= 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}; use warmup_epochs=0 for no warmup")
    limit = total_epochs + _BOUNDARY_RTOL * max(total_epochs, t0)
    ends: list[float] = []
    i = 1
    while True:
        end = warmup_epochs + _cycle_start(i, t0, t_mult)
        if end > limit:
            return ends
        ends.append(end)
        i += 1


def lr_curve(n_steps: int, **sgdr_kwargs: Any) -> list[float]:
    """``[sgdr_lr(s, **sgdr_kwargs) for s in range(n_steps)]``: the whole schedule, for plots and checks."""
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}; pass the total number of optimizer steps")
    return [sgdr_lr(s, **sgdr_kwargs) for s in range(n_steps)]
