"""Small shared helpers for argument checks and device-safe random draws."""
from __future__ import annotations

import torch
from torch import Tensor


def is_cpu(t: Tensor) -> bool:
    """True when ``t`` lives on the CPU, where value checks cost no device sync."""
    return t.device.type == "cpu"


def check_hard_labels(labels: Tensor, name: str = "labels") -> None:
    """Raise unless ``labels`` is a 1-D integer tensor of class indices."""
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(
            f"{name} must be a 1-D integer tensor of class indices, got dtype={labels.dtype} "
            f"shape={tuple(labels.shape)}; for soft targets pass targets.argmax(dim=1)"
        )


def check_soft_targets(targets: Tensor, name: str = "targets") -> None:
    """Raise unless ``targets`` is a floating (..., K) tensor of class probabilities."""
    if targets.dim() < 1 or not targets.dtype.is_floating_point:
        raise ValueError(
            f"{name} must be floating-point soft targets of shape (B, K), got dtype={targets.dtype} "
            f"shape={tuple(targets.shape)}; convert hard labels with one_hot(labels, num_classes)"
        )


def randperm(n: int, generator: torch.Generator | None, device: torch.device | str | None) -> Tensor:
    """``torch.randperm(n)`` drawn on the generator's device, then moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=gen_device).to(device)


def randint(high: int, size: tuple[int, ...], generator: torch.Generator | None,
            device: torch.device | str | None) -> Tensor:
    """``torch.randint(0, high, size)`` drawn on the generator's device, then moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randint(0, high, size, generator=generator, device=gen_device).to(device)
