"""The data of one run: which path reads it (memory or stream), and its loaders for this process.

:func:`open_run_data` is what the training loop calls. Whatever the path, a
run gets the same things: a training loader with the :class:`TrainLoader`
methods, and evaluation loaders that yield this process's disjoint part of
each split (metrics are summed over processes, so nothing is counted twice).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Protocol

import torch
from torch import Tensor

from .arrays import DatasetArrays
from .config import DataConfig
from .load import load_dataset
from .loader import InMemoryLoader, make_eval_loader


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
    """Why that path (printed at the start of the run)."""
    classes: list[str]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
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

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        counts = ", ".join(f"{k} {v:,}" for k, v in self.sizes.items())
        return f"data: {self.path} path ({self.reason}); {counts} images, {self.num_classes} classes"

    def close(self) -> None:
        for loader in (self.train, self.val, self.test, self.fit):
            closer = getattr(loader, "close", None)
            if callable(closer):
                closer()


def decoded_bytes(arrays_or_shape: Any) -> int:
    """Bytes of uint8 images: a DatasetArrays, or an ``(n, c, h, w)`` tuple."""
    if isinstance(arrays_or_shape, DatasetArrays):
        a = arrays_or_shape
        return sum(t.numel() for t in (a.train_x, a.val_x, a.test_x))
    return int(math.prod(arrays_or_shape))


def open_run_data(
    cfg: DataConfig,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    want_fit: bool = False,
) -> RunData:
    """The run's data on the path ``cfg.loader`` chooses (``auto``: memory when it fits, else stream)."""
    cfg.validate()
    arrays = load_dataset(cfg, progress=progress)
    return memory_run_data(arrays, cfg, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
                           device=device, rank=rank, world_size=world_size, want_fit=want_fit,
                           reason="data.loader=memory" if cfg.loader == "memory" else "held in memory")


def memory_run_data(
    arrays: DatasetArrays,
    cfg: DataConfig,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    device: torch.device,
    rank: int,
    world_size: int,
    want_fit: bool,
    reason: str,
) -> RunData:
    """Decoded splits: the training split on the device with batched crop and flip there."""
    mean, std = arrays.mean, arrays.std
    train = InMemoryLoader(
        arrays.train_x, arrays.train_y, batch_size=batch_size, device=device, mean=mean, std=std,
        augment=cfg.augment, crop_padding=cfg.effective_crop_padding(min(arrays.image_hw)),
        flip=cfg.effective_flip(), seed=seed, rank=rank, world_size=world_size,
    )

    def part(x: Tensor, y: Tensor) -> EvalLoader:  # this process's disjoint share of a split
        return make_eval_loader(x[rank::world_size], y[rank::world_size], batch_size=eval_batch_size, mean=mean, std=std)

    return RunData(
        path="memory", reason=reason, classes=list(arrays.classes), in_chans=arrays.in_chans, mean=mean, std=std,
        train=train, val=part(arrays.val_x, arrays.val_y), test=part(arrays.test_x, arrays.test_y),
        fit=part(arrays.train_x, arrays.train_y) if want_fit else None, arrays=arrays,
        sizes={"train": len(arrays.train_y), "val": len(arrays.val_y), "test": len(arrays.test_y)},
    )
