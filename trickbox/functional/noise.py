"""Additive Gaussian input noise (a mixup-paper baseline)."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gaussian_noise"]


def gaussian_noise(x: Tensor, sigma: float, generator: torch.Generator | None = None) -> Tensor:
    """``x + sigma * N(0, 1)`` (elementwise, same shape and dtype as ``x``); ``sigma = 0`` returns ``x``."""
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}; use sigma=0 to switch the noise off")
    if sigma == 0:
        return x
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be floating point, got dtype={x.dtype}; convert inputs with x.float() first")
    gen_device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
    return x + sigma * noise
