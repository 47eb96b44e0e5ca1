"""Targets: one-hot encoding, label smoothing and soft-target cross-entropy."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_hard_labels, check_soft_targets, is_cpu

__all__ = ["one_hot", "smooth_targets", "soft_cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")


def one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """One-hot targets: ``out[b, k] = 1 if labels[b] == k else 0``, shape (B, K).

    Labels outside ``[0, num_classes)`` raise on CPU; on an accelerator the range
    is not checked (that would force a host sync) and the scatter fails instead.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}; pass the dataset's number of classes")
    check_hard_labels(labels)
    if labels.numel() and is_cpu(labels):
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"labels must lie in [0, {num_classes}), got label {bad}; check num_classes or remap the labels"
            )
    out = torch.zeros(labels.shape[0], num_classes, dtype=dtype, device=labels.device)
    return out.scatter_(1, labels.long().unsqueeze(1), 1)


def smooth_targets(targets: Tensor, eps: float, prior: Tensor | None = None) -> Tensor:
    """Label smoothing: ``p' = (1 - eps) * p + eps * u``.

    ``u`` is uniform (``1/K``) or the given class ``prior`` of shape (K,)
    (non-negative, summing to 1). ``targets`` are soft (B, K), so smoothing
    after mixup treats both mixed labels alike. ``eps = 0`` returns ``targets``.
    """
    if not 0 <= eps < 1:
        raise ValueError(f"eps must be in [0, 1), got {eps}; use eps=0 to switch label smoothing off (0.1 is typical)")
    check_soft_targets(targets)
    k = targets.shape[-1]
    if prior is not None:
        if prior.shape != (k,):
            raise ValueError(
                f"prior must have shape ({k},) to match the targets' class dim, got {tuple(prior.shape)}; "
                f"pass one probability per class"
            )
        prior64 = prior.detach().to(torch.float64)
        if bool((prior64 < 0).any()):
            raise ValueError(f"prior must be non-negative, got min {float(prior64.min())}; pass class frequencies / "
                             "their sum")
        total = float(prior64.sum())
        if abs(total - 1.0) > 1e-4:
            raise ValueError(f"prior must sum to 1 (within 1e-4), got sum {total}; normalise it with prior / "
                             "prior.sum()")
    if eps == 0:
        return targets
    if prior is None:
        return targets * (1.0 - eps) + eps / k
    return targets * (1.0 - eps) + eps * prior.to(device=targets.device, dtype=targets.dtype)


def soft_cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy against soft targets: ``loss_b = -sum_k targets[b,k] * log_softmax(logits[b])_k``.

    The class dim is the last one. Computed in float32 even for bf16/fp16
    logits. ``reduction`` is ``"mean"`` (over the batch), ``"sum"`` or ``"none"``.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}; use reduction='mean'")
    check_soft_targets(targets)
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must have the same shape (B, K), got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}; convert hard labels with one_hot(labels, num_classes)"
        )
    logp = F.log_softmax(logits.float(), dim=-1)
    loss = -(targets.float() * logp).sum(dim=-1)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
