"""Exponential moving average of a model's weights (Polyak averaging), with the decay warmup of timm's ModelEmaV3.

After optimizer step ``t`` (1-based) every floating tensor of the state (parameters and, unless excluded, buffers)
moves towards the model's::

    ema = decay_t * ema + (1 - decay_t) * model,     i.e. ema.lerp_(model, 1 - decay_t)

    decay_t = 0                                       for s = t - update_after_step - 1 <= 0 (a copy)
            = clamp(1 - (1 + s / gamma) ** -power, min_decay, decay)   with warmup
            = decay                                   without warmup

Integer tensors (BatchNorm's ``num_batches_tracked``) are copied.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ema_decay", "ema_update_"]


def ema_decay(
    step: int,
    decay: float,
    *,
    warmup: bool = False,
    warmup_gamma: float = 1.0,
    warmup_power: float = 2 / 3,
    min_decay: float = 0.0,
    update_after_step: int = 0,
) -> float:
    """The decay used by the update after optimizer step ``step`` (1-based): 0 (a copy) up to and including step
    ``update_after_step + 1``, then ``decay``, or with ``warmup`` ``1 - (1 + s / warmup_gamma) ** -warmup_power``
    clamped to ``[min_decay, decay]``, ``s`` counting the steps after the copy."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"decay must be in [0, 1), got {decay}; e.g. decay=0.9998")
    if not warmup_gamma > 0:
        raise ValueError(f"warmup_gamma must be > 0, got {warmup_gamma}; e.g. warmup_gamma=1")
    s = step - update_after_step - 1
    if s <= 0:
        return 0.0
    if not warmup:
        return decay
    return max(min(1.0 - (1.0 + s / warmup_gamma) ** -warmup_power, decay), min_decay)


@torch.no_grad()
def ema_update_(ema: nn.Module, model: nn.Module, decay: float, *, exclude_buffers: bool = False) -> None:
    """Move ``ema``'s weights towards ``model``'s, in place: ``ema = decay·ema + (1 − decay)·model`` for every
    floating tensor of the state dict (only the parameters with ``exclude_buffers``; buffers are then copied);
    non-floating tensors are copied. ``ema`` must have ``model``'s architecture."""
    if exclude_buffers:
        pairs = list(zip(ema.parameters(), model.parameters()))
        copies = list(zip(ema.buffers(), model.buffers()))
    else:
        ema_state, model_state = ema.state_dict(), model.state_dict()
        if ema_state.keys() != model_state.keys():
            raise ValueError("ema and model have different state dict keys; build the EMA as a copy of the model")
        pairs = [(ema_state[k], model_state[k]) for k in ema_state if ema_state[k].is_floating_point()]
        copies = [(ema_state[k], model_state[k]) for k in ema_state if not ema_state[k].is_floating_point()]
    _lerp_all([e for e, _ in pairs], [m for _, m in pairs], 1.0 - decay)
    for e, m in copies:
        e.copy_(m)


def _lerp_all(ema: list[Tensor], model: list[Tensor], weight: float) -> None:
    """``e.lerp_(m, weight)`` for every pair; one fused kernel where the dtypes and devices agree."""
    if not ema:
        return
    same = all(e.dtype == m.dtype and e.device == m.device for e, m in zip(ema, model))
    if same and hasattr(torch, "_foreach_lerp_"):
        torch._foreach_lerp_(ema, model, weight)
        return
    for e, m in zip(ema, model):
        e.lerp_(m.to(device=e.device, dtype=e.dtype), weight)
