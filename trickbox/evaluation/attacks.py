"""White-box FGSM (Goodfellow et al. 2015) and I-FGSM (Kurakin et al. 2016) in pixel space.

The model sees normalised inputs; the attacks perturb pixels in [0, 1] and call
``normalize`` before every forward pass. ``eps`` and ``step_size`` are in pixel
units of 1/255 (``eps=4`` allows a change of 4/255 per pixel).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .metrics import MetricAccumulator

__all__ = ["ATTACKS", "Normalize", "attack_metrics", "fgsm", "ifgsm", "make_normalize"]

NormalizeFn = Callable[[Tensor], Tensor]


class Normalize:
    """``(pixels - mean) / std`` per channel of a (B, C, H, W) batch; picklable, device-agnostic."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) == 0 or len(mean) != len(std):
            raise ValueError(f"mean and std need one value per channel, got {len(mean)} and {len(std)} values")
        if min(std) <= 0:
            raise ValueError(f"std values must be > 0, got {tuple(std)}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(self, pixels: Tensor) -> Tensor:
        if pixels.dim() != 4 or pixels.shape[1] != len(self.mean):
            raise ValueError(
                f"expected pixels of shape (B, {len(self.mean)}, H, W) for this normalize, got {tuple(pixels.shape)}"
            )
        mean = torch.tensor(self.mean, device=pixels.device, dtype=pixels.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=pixels.device, dtype=pixels.dtype).view(1, -1, 1, 1)
        return (pixels - mean) / std

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


def make_normalize(mean: Sequence[float], std: Sequence[float]) -> NormalizeFn:
    """A function mapping pixels in [0, 1] to the model's normalised inputs."""
    return Normalize(mean, std)


def _check_eps(eps: float) -> None:
    if not 0 < eps <= 255:
        raise ValueError(f"eps must be in (0, 255] (pixel units of 1/255), got {eps}")


def _check_inputs(pixels: Tensor, labels: Tensor) -> None:
    if not pixels.is_floating_point():
        raise ValueError(f"pixels must be a float tensor in [0, 1], got dtype {pixels.dtype}; divide uint8 by 255")
    if pixels.dim() < 2 or labels.shape != pixels.shape[:1]:
        raise ValueError(
            f"labels must have shape (B,) matching pixels (B, ...), got {tuple(labels.shape)} and {tuple(pixels.shape)}"
        )
    lo, hi = float(pixels.min()), float(pixels.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"pixels must lie in [0, 1] (un-normalised; pass normalize=...), got range [{lo:.3g}, "
                         f"{hi:.3g}]")


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, then restore each one's own previous mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, was_training in modes:
            module.training = was_training


def _input_grad(model: nn.Module, pixels: Tensor, labels: Tensor, normalize: NormalizeFn) -> Tensor:
    """d(summed cross-entropy)/d(pixels), without touching the parameters' ``.grad``."""
    x = pixels.detach().requires_grad_(True)
    loss = F.cross_entropy(model(normalize(x)), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def fgsm(model: nn.Module, pixels: Tensor, labels: Tensor, eps: float, *, normalize: NormalizeFn) -> Tensor:
    """One signed-gradient step of size eps/255 that raises the loss; returns adversarial pixels in [0, 1]."""
    return ifgsm(model, pixels, labels, eps, iterations=1, step_size=eps, normalize=normalize)


def ifgsm(
    model: nn.Module,
    pixels: Tensor,
    labels: Tensor,
    eps: float,
    *,
    iterations: int = 10,
    step_size: float | None = None,
    normalize: NormalizeFn,
) -> Tensor:
    """Iterated FGSM: ``iterations`` steps of ``step_size``/255 (default eps/iterations), each
    projected onto the L∞ ball of radius eps/255 around ``pixels`` and clamped to [0, 1]."""
    _check_eps(eps)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    step = eps / iterations if step_size is None else step_size
    if step <= 0:
        raise ValueError(f"step_size must be > 0 (pixel units of 1/255) or None for eps/iterations, got {step_size}")
    _check_inputs(pixels, labels)
    clean = pixels.detach()
    radius, alpha = eps / 255.0, step / 255.0
    adv = clean.clone()
    with _eval_mode(model), torch.enable_grad():
        for _ in range(iterations):
            grad = _input_grad(model, adv, labels, normalize)
            adv = adv + alpha * grad.sign()
            adv = torch.min(torch.max(adv, clean - radius), clean + radius).clamp_(0.0, 1.0)
    return adv.detach()


ATTACKS: tuple[str, ...] = ("fgsm", "ifgsm")
"""Names ``attack_metrics`` accepts."""


def attack_metrics(
    model: nn.Module,
    pixels_batches: Iterable[tuple[Tensor, Tensor]],
    *,
    attack: str,
    eps: float,
    iterations: int = 10,
    step_size: float | None = None,
    normalize: NormalizeFn,
) -> dict[str, float]:
    """Top-1/top-5 error (fractions) of ``model`` on attacked (pixels, labels) batches.

    Returns ``top1_error``, ``top5_error`` and the ``MetricAccumulator`` keys
    (``top1``, ``top5``, ``nll``, ``ece``, ``n``) measured on the adversarial inputs.
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {list(ATTACKS)}, got {attack!r}")
    _check_eps(eps)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    acc = MetricAccumulator()
    for pixels, labels in pixels_batches:
        pixels, labels = pixels.to(device), labels.to(device)
        if attack == "fgsm":
            adv = fgsm(model, pixels, labels, eps, normalize=normalize)
        else:
            adv = ifgsm(model, pixels, labels, eps, iterations=iterations, step_size=step_size, normalize=normalize)
        with _eval_mode(model), torch.no_grad():
            acc.update(model(normalize(adv)), labels)
    metrics = acc.compute()
    return {"top1_error": 1.0 - metrics["top1"], "top5_error": 1.0 - metrics["top5"], **metrics}
