"""What a run's data gives the loop on either path: :class:`RunData`, the :class:`TrainLoader` protocol both training
loaders implement, and the :class:`LoaderOptions` every loader is built with."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from .arrays import DatasetArrays
from .config import DataConfig


@dataclass(frozen=True)
class LoaderOptions:
    """How this process's loaders are built: batch sizes, the seed, where batches go and which part is its own."""

    batch_size: int
    eval_batch_size: int
    seed: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    rank: int = 0
    world_size: int = 1
    progress: bool = False
    """A progress bar while images are decoded or measured (the main process)."""
    want_fit: bool = False
    """Also an evaluation loader over the training images (``train.eval_each_epoch=[train]``)."""


class TrainLoader(Protocol):
    """What the loop and the tricks need from a training loader (both paths implement it)."""

    labels: Tensor
    """The training labels (the possibly noisy ones trained on), indexed like ``index`` in :meth:`batches`."""

    def __len__(self) -> int:
        """Batches per epoch on this process (equal on every process)."""

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentations the next :meth:`batches` yields."""

    def batches(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(normalised float images, int64 labels, int64 dataset indices)`` on the device, from batch ``start``."""

    def fetch(self, indices: Tensor, *, epoch_step: int) -> Tensor:
        """Augmented, normalised images of dataset ``indices`` (random access; KNN partners)."""

    def knn_features(self) -> tuple[Tensor, Tensor]:
        """``(N, D)`` features of every training image in input space and their labels, for KNN pairing."""


EvalLoader = Iterable[tuple[Tensor, Tensor]]
"""``(normalised float images, int64 labels)`` batches of this process's part of a split."""


@dataclass
class RunData:
    """The loaders of one run on this process and what the model and tricks must know about the images."""

    path: str
    """``memory`` or ``stream``."""
    reason: str
    """Why that path (printed at the start of the run, recorded in ``config.yaml``)."""
    config: DataConfig
    """The data config as trained: augmentation and normalisation settled (``DataConfig.resolved``)."""
    classes: list[str]
    in_chans: int
    train: Any
    """A :class:`TrainLoader`."""
    val: EvalLoader
    test: EvalLoader
    fit: EvalLoader | None = None
    """The training images without augmentation (``train.eval_each_epoch=[train]``)."""
    arrays: DatasetArrays | None = None
    """The decoded splits on the memory path; ``None`` when streaming."""
    sizes: dict[str, int] = field(default_factory=dict)
    """Images per split over all processes: ``train``, ``val``, ``test``."""
    files: dict[str, list[str]] = field(default_factory=dict)
    """Class folders: the image names of each split (the same on both paths)."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.config.mean or ())

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.config.std or ())

    def describe(self) -> str:
        counts = ", ".join(f"{k} {v:,}" for k, v in self.sizes.items())
        return f"data: {self.path} path ({self.reason}); {counts} images, {self.num_classes} classes"

    def close(self) -> None:
        for loader in (self.train, self.val, self.test, self.fit):
            closer = getattr(loader, "close", None)
            if callable(closer):
                closer()
