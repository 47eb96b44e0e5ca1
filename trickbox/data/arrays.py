"""The loaded dataset: uint8 image tensors and int64 labels for train, val and test."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import DataError


@dataclass
class DatasetArrays:
    """Images are uint8 ``(N, C, H, W)`` CPU tensors; labels int64 ``(N,)``.

    ``train_y`` holds the (possibly noisy) labels to train on, ``train_y_clean`` the original ones.
    ``mean``/``std`` are per-channel statistics of ``train_x`` in [0, 1] units.
    """

    name: str
    classes: list[str]
    train_x: Tensor
    train_y: Tensor
    train_y_clean: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    files: dict[str, list[str]] = field(default_factory=dict)
    """Class folders: the image names of each split (``train``, ``val``, ``test``) in the order of the arrays."""

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        """Number of image channels (1 for digits, 3 otherwise)."""
        return int(self.train_x.shape[1])

    @property
    def image_hw(self) -> tuple[int, int]:
        """Image height and width."""
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    @property
    def image_size(self) -> int:
        """Side of the (square) images; raises :class:`DataError` for non-square ones."""
        h, w = self.image_hw
        if h != w:
            raise DataError(f"images are {h}x{w}, not square; set data.image_size=N to resize them to NxN")
        return h

    def __repr__(self) -> str:
        return (f"DatasetArrays(name={self.name!r}, classes={self.num_classes}, image={self.in_chans}x"
                f"{self.image_hw[0]}x{self.image_hw[1]}, train={len(self.train_y)}, val={len(self.val_y)}, "
                f"test={len(self.test_y)}, noisy_labels={int((self.train_y != self.train_y_clean).sum())})")


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images ``x`` in [0, 1] units (exact, from 256-bin histograms)."""
    if x.ndim != 4 or x.dtype != torch.uint8:
        raise DataError(f"images must be a uint8 (N, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
    if x.numel() == 0:
        return (0.5,) * x.shape[1], (0.5,) * x.shape[1]
    return histogram_stats(channel_counts(x))


def channel_counts(x: Tensor) -> Tensor:
    """The ``(C, 256)`` pixel-value counts of each channel of uint8 images ``(N, C, H, W)``."""
    return torch.stack([torch.bincount(x[:, k].reshape(-1), minlength=256) for k in range(x.shape[1])])


def histogram_stats(hist: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std in [0, 1] units of each channel's ``(C, 256)`` pixel-value counts."""
    counts, values = hist.to(torch.float64), torch.arange(256, dtype=torch.float64)
    n = counts.sum(1, keepdim=True).clamp_min(1)
    mean = (counts * values).sum(1, keepdim=True) / n
    var = ((counts * (values - mean).square()).sum(1, keepdim=True) / n).clamp_min(0.0)
    return tuple(float(m) / 255.0 for m in mean[:, 0]), tuple(max(float(s) / 255.0, 1e-3) for s in var.sqrt()[:, 0])
