"""Classification metrics: top-k accuracy, negative log-likelihood and expected calibration error.

Accuracies are fractions in [0, 1]. Everything is accumulated on the CPU in float64.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MetricAccumulator", "classification_metrics", "expected_calibration_error", "topk_accuracy"]


def _check_pair(scores: Tensor, labels: Tensor, what: str) -> None:
    if scores.dim() != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"{what} must be a non-empty (N, num_classes) tensor, got shape {tuple(scores.shape)}")
    if labels.dim() != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(f"labels must be class indices of shape ({scores.shape[0]},), got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError("labels must be integer class indices (not one-hot or soft targets), got dtype "
                         f"{labels.dtype}")
    if int(labels.min()) < 0 or int(labels.max()) >= scores.shape[1]:
        raise ValueError(
            f"labels must lie in [0, {scores.shape[1] - 1}], got values in [{int(labels.min())}, {int(labels.max())}]"
        )


def _check_n_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int (15 is usual), got {n_bins!r}")


def _correct_at(scores: Tensor, labels: Tensor, ks: Sequence[int]) -> dict[int, Tensor]:
    """Per-sample bool tensors: is the label among the top ``min(k, num_classes)`` scores."""
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"every k in ks must be an int >= 1, got {k!r} in {tuple(ks)}")
    num_classes = scores.shape[1]
    max_k = min(max(ks), num_classes)
    top = scores.topk(max_k, dim=1).indices
    hits = top == labels.unsqueeze(1)
    return {k: hits[:, : min(k, num_classes)].any(dim=1) for k in ks}


def _calibration_bins(confidence: Tensor, correct: Tensor, n_bins: int) -> Tensor:
    """(3, n_bins) float64 sums per equal-width bin (lo, hi]: count, confidence, correct."""
    conf = confidence.to(torch.float64).cpu()
    idx = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    sums = torch.zeros(3, n_bins, dtype=torch.float64)
    sums[0].index_add_(0, idx, torch.ones_like(conf))
    sums[1].index_add_(0, idx, conf)
    sums[2].index_add_(0, idx, correct.to(torch.float64).cpu())
    return sums


def _ece_from_bins(sums: Tensor) -> float:
    count, conf, correct = sums
    total = float(count.sum())
    if total == 0:
        return math.nan
    return float((conf - correct).abs().sum() / total)  # Σ |B|/N · |conf(B) − acc(B)|


def topk_accuracy(logits: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of samples whose label is among the top-k logits, for each k (k clamps to num_classes)."""
    _check_pair(logits, labels, "logits")
    hits = _correct_at(logits.detach(), labels.detach(), ks)
    return {k: float(h.to(torch.float64).mean()) for k, h in hits.items()}


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width bins on the max probability: Σ |B|/N · |acc(B) − conf(B)|."""
    _check_pair(probs, labels, "probs")
    _check_n_bins(n_bins)
    probs = probs.detach().to(torch.float64)
    row_sums = probs.sum(dim=1)
    if float(probs.min()) < 0 or float((row_sums - 1).abs().max()) > 1e-3:
        raise ValueError("probs must be probabilities with rows summing to 1; pass logits.softmax(dim=1)")
    confidence, predicted = probs.max(dim=1)
    return _ece_from_bins(_calibration_bins(confidence, predicted == labels.to(probs.device), n_bins))


class MetricAccumulator:
    """Accumulates top-1/top-5 accuracy, mean NLL and ECE over batches of logits.

    ``compute()`` returns ``{"top1", "top5", "nll", "ece", "n"}``; the values are NaN
    (and ``n`` is 0) before the first ``update``.
    """

    def __init__(self, n_bins: int = 15) -> None:
        _check_n_bins(n_bins)
        self.n_bins = n_bins
        self.reset()

    def reset(self) -> None:
        """Forget every sample seen so far."""
        self._n = 0
        self._correct1 = 0
        self._correct5 = 0
        self._nll_sum = 0.0
        self._bins = torch.zeros(3, self.n_bins, dtype=torch.float64)

    @torch.no_grad()
    def update(self, logits: Tensor, labels: Tensor) -> None:
        """Add a batch: ``logits`` (N, num_classes), ``labels`` (N,) integer class indices."""
        _check_pair(logits, labels, "logits")
        logits = logits.detach().to("cpu", torch.float64)
        labels = labels.detach().to("cpu", torch.long)
        hits = _correct_at(logits, labels, (1, 5))
        log_probs = F.log_softmax(logits, dim=1)
        self._n += labels.shape[0]
        self._correct1 += int(hits[1].sum())
        self._correct5 += int(hits[5].sum())
        self._nll_sum += float(-log_probs.gather(1, labels.unsqueeze(1)).sum())
        confidence = log_probs.max(dim=1).values.exp()
        self._bins += _calibration_bins(confidence, hits[1], self.n_bins)

    def all_reduce(self, accelerator: Any) -> None:
        """Sum the counts of every process into this one (each process saw a disjoint part of the split)."""
        if accelerator is None or accelerator.num_processes == 1:
            return
        packed = torch.cat([torch.tensor([self._n, self._correct1, self._correct5, self._nll_sum], dtype=torch.float64),
                            self._bins.flatten()]).to(accelerator.device)
        packed = accelerator.reduce(packed, reduction="sum").cpu()
        self._n, self._correct1, self._correct5 = int(packed[0]), int(packed[1]), int(packed[2])
        self._nll_sum = float(packed[3])
        self._bins = packed[4:].reshape(3, self.n_bins).clone()

    def compute(self) -> dict[str, float]:
        """``top1``/``top5`` accuracy in [0, 1], mean ``nll`` (nats), ``ece`` and sample count ``n``."""
        if self._n == 0:
            return {"top1": math.nan, "top5": math.nan, "nll": math.nan, "ece": math.nan, "n": 0.0}
        return {
            "top1": self._correct1 / self._n,
            "top5": self._correct5 / self._n,
            "nll": self._nll_sum / self._n,
            "ece": _ece_from_bins(self._bins),
            "n": float(self._n),
        }


def classification_metrics(logits: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, float]:
    """One-shot ``MetricAccumulator``: ``{"top1", "top5", "nll", "ece", "n"}`` for one set of logits."""
    acc = MetricAccumulator(n_bins)
    acc.update(logits, labels)
    return acc.compute()
