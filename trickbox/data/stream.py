"""The stream path: images read, decoded and augmented in DataLoader workers with timm's transforms.

Memory is bounded by workers x prefetch_factor x batch size, whatever the number of images. Workers hand
uint8 images to the training process, which normalises them on the device (as timm's prefetcher does).

Class folders are read at random: a seeded sampler gives every rank its own part of each epoch (the
permutation of :func:`~trickbox.data.loader.epoch_order`), and each image's augmentation is seeded by
``(seed, epoch, image)``, so a resumed epoch yields the same batches, bit for bit, on any number of workers.
Tar shards go through timm's WebDataset reader (each rank and worker reads its own shards).
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .config import DataConfig
from .layout import FolderSplit, StreamLayout
from .loader import _stats, epoch_order
from .splits import add_label_noise, plan_splits
from ..errors import DataError
from ..seeding import derive_seed

DEFAULT_IMAGE_SIZE = 224
KNN_SIZE = 32
"""pairing=knn on the stream path compares training images as KNN_SIZE x KNN_SIZE thumbnails."""
KNN_LIMIT_BYTES = 4 << 30
"""The largest float32 copy of the thumbnails the exact KNN pass may hold (N x 3 x 32 x 32 x 4 bytes)."""

Transform = Callable[[Image.Image], Any]
"""PIL image in, uint8 ``(C, H, W)`` tensor or array out."""


def transforms(cfg: DataConfig, mean: Sequence[float], std: Sequence[float]) -> tuple[Transform, Transform]:
    """``(train, eval)`` transforms from timm, ending in uint8 CHW arrays (normalisation happens on the device)."""
    from timm.data import create_transform

    size = cfg.image_size or DEFAULT_IMAGE_SIZE
    common: dict[str, Any] = dict(input_size=(3, size, size), interpolation=cfg.interpolation, mean=tuple(mean),
                                  std=tuple(std), crop_pct=cfg.crop_pct, use_prefetcher=True)
    evaluation = create_transform(is_training=False, **common)
    if not cfg.augment:
        return evaluation, evaluation
    try:
        train = create_transform(is_training=True, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio),
                                 hflip=0.5 if cfg.effective_flip() else 0.0, color_jitter=0.0,
                                 auto_augment=cfg.auto_augment, **common)
    except (AssertionError, ValueError, KeyError, IndexError) as e:
        raise DataError(f"data.auto_augment={cfg.auto_augment!r} is not a timm augmentation string ({e or type(e).__name__}); "
                        "use e.g. rand-m9-mstd0.5, augmix-m5-w3 or original") from None
    return train, evaluation


def seed_sample(*parts: int | str) -> None:
    """Seed Python's, numpy's and torch's global generators for one image's augmentation (in its worker)."""
    s = derive_seed(*parts)
    random.seed(s)
    np.random.seed(s % (1 << 32))
    torch.default_generator.manual_seed(s)


@dataclass(frozen=True)
class Item:
    """One image as a worker returns it; ``image`` None when the file could not be read (``bad`` says why)."""

    image: Any
    label: int
    index: int
    bad: str = ""


class FolderImages(Dataset[Item]):
    """Images of one split by position, read with Pillow and transformed; keys are ``(epoch, position)``."""

    def __init__(self, paths: list[str], labels: Tensor, transform: Transform, seed: int, stream: str) -> None:
        self.paths, self.labels, self.transform, self.seed, self.stream = paths, labels.tolist(), transform, seed, stream

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: tuple[int, int]) -> Item:
        epoch, i = key
        seed_sample(self.seed, self.stream, epoch, i)
        try:
            with Image.open(self.paths[i]) as img:
                image = self.transform(img.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as e:  # Pillow's errors for unreadable or truncated files
            return Item(None, self.labels[i], i, f"{self.paths[i]}: {e}")
        return Item(image, self.labels[i], i)


class EpochSampler(Sampler[tuple[int, int]]):
    """This rank's ``(epoch, position)`` keys of one epoch, from batch ``start`` on (set both before iterating)."""

    def __init__(self, n: int, *, seed: int, rank: int, world_size: int, shuffle: bool) -> None:
        self.n, self.seed, self.rank, self.world_size, self.shuffle = n, seed, rank, world_size, shuffle
        self.epoch, self.skip = 0, 0

    @property
    def per_rank(self) -> int:
        """Keys of a whole epoch on this rank (equal on every rank)."""
        return math.ceil(self.n / self.world_size)

    def __len__(self) -> int:
        return self.per_rank - self.skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = epoch_order(self.n, seed=self.seed, epoch=self.epoch, rank=self.rank, world_size=self.world_size,
                            shuffle=self.shuffle)
        return ((self.epoch, int(i)) for i in order[self.skip :])


def collate(items: list[Item]) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """uint8 images, labels and positions of the readable items, and the failures (``path: error``)."""
    good = [it for it in items if it.image is not None]
    bad = [it.bad for it in items if it.image is None]
    if not good:
        return torch.zeros(0, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), bad
    x = torch.stack([torch.as_tensor(it.image) for it in good])
    return x, torch.tensor([it.label for it in good]), torch.tensor([it.index for it in good]), bad


class BadImages:
    """Counts unreadable images per epoch; warns once per file and stops above ``max_fraction`` of the epoch."""

    def __init__(self, max_fraction: float, per_epoch: int) -> None:
        self.max_fraction, self.per_epoch = max_fraction, per_epoch
        self.seen: set[str] = set()
        self.count = 0

    def new_epoch(self) -> None:
        self.count = 0

    def add(self, failures: list[str]) -> None:
        for failure in failures:
            self.count += 1
            if failure not in self.seen:
                self.seen.add(failure)
                warnings.warn(f"data: skipped unreadable image {failure}", stacklevel=3)
        if failures and self.count > self.max_fraction * self.per_epoch:
            raise DataError(f"data: {self.count} of {self.per_epoch:,} images could not be read this epoch, above "
                            f"data.max_bad_fraction={self.max_fraction} (last: {failures[-1]}); fix or remove the files, "
                            "or raise data.max_bad_fraction")


def default_workers(cfg: DataConfig) -> int:
    """``data.workers``, else this process's share of the CPU cores (at least one worker)."""
    if cfg.workers is not None:
        return cfg.workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local))


def loader_options(cfg: DataConfig, device: torch.device, *, persistent: bool) -> dict[str, Any]:
    """DataLoader keyword arguments: workers, pinned memory, prefetching."""
    workers = default_workers(cfg)
    pin = cfg.pin_memory if cfg.pin_memory is not None else device.type == "cuda"
    # torch pins only where there is an accelerator to pin for (it warns and skips on a CPU-only machine)
    options: dict[str, Any] = dict(num_workers=workers, pin_memory=pin and torch.accelerator.is_available(),
                                   collate_fn=collate)
    if workers:
        options.update(prefetch_factor=cfg.prefetch_factor, persistent_workers=persistent)
    return options


class OnDevice:
    """Batches of a loader of uint8 images on the device, normalised, with unreadable images counted and dropped."""

    def __init__(self, loader: Any, device: torch.device, mean: Sequence[float], std: Sequence[float], bad: BadImages) -> None:
        self.loader, self.device, self.bad = loader, device, bad
        self._m, self._s = _stats(mean, std, 3, device)

    def normalise(self, x: Tensor) -> Tensor:
        return x.to(self.device, non_blocking=True).to(torch.float32).sub_(self._m).div_(self._s)

    def batches(self, *, skip: int = 0, normalise: bool = True) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(images, labels, positions)`` from batch ``skip`` on; ``normalise=False`` keeps uint8 images."""
        for b, (x, y, index, failures) in enumerate(self.loader):
            if b < skip:
                continue
            self.bad.add(failures)
            if len(y):
                x = self.normalise(x) if normalise else x.to(self.device, non_blocking=True)
                yield x, y.to(self.device, non_blocking=True), index.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return ((x, y) for x, y, _ in self.batches())


class FolderTrainLoader:
    """Training batches of a folder split (the :class:`~trickbox.data.run.TrainLoader` methods)."""

    def __init__(self, images: FolderImages, cfg: DataConfig, *, batch_size: int, device: torch.device,
                 mean: Sequence[float], std: Sequence[float], seed: int, rank: int, world_size: int) -> None:
        self.images, self.cfg, self.batch_size, self.device, self.seed, self.rank = images, cfg, batch_size, device, seed, rank
        self.labels = torch.tensor(images.labels, dtype=torch.int64, device=device)
        self.sampler = EpochSampler(len(images), seed=seed, rank=rank, world_size=world_size, shuffle=True)
        self.bad = BadImages(cfg.max_bad_fraction, self.sampler.per_rank)
        loader = DataLoader(images, batch_size=batch_size, sampler=self.sampler, **loader_options(cfg, device, persistent=True))
        self._device = OnDevice(loader, device, mean, std, self.bad)
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(self.sampler.per_rank / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        self.sampler.epoch, self.sampler.skip = self.epoch, min(start * self.batch_size, self.sampler.per_rank)
        self.bad.new_epoch()
        return self._device.batches()

    def fetch(self, indices: Tensor, *, epoch_step: int) -> Tensor:
        """Augmented images of ``indices``, read here in the training process (KNN partners)."""
        out = []
        for i in indices.tolist():
            seed_sample(self.seed, "fetch", self.epoch, self.rank, epoch_step, i)
            with Image.open(self.images.paths[i]) as img:
                out.append(self.images.transform(img.convert("RGB")))
        return self._device.normalise(torch.stack([torch.as_tensor(o) for o in out]))

    def knn_features(self) -> tuple[Tensor, Tensor]:
        """32 x 32 thumbnails of every training image (uint8, flattened), in one streamed pass, and their labels."""
        from torchvision.transforms import Resize
        from timm.data.transforms import ToNumpy

        n, d = len(self.images), 3 * KNN_SIZE * KNN_SIZE
        if n * d * 4 > KNN_LIMIT_BYTES:
            raise DataError(f"tricks.mixup.pairing=knn compares {KNN_SIZE}x{KNN_SIZE} thumbnails of every training image: "
                            f"{n:,} images need {n * d * 4 / 2**30:.1f} GiB, above the {KNN_LIMIT_BYTES >> 30} GiB limit; "
                            f"use data.train_subset<={KNN_LIMIT_BYTES // (d * 4):,} or pairing=random")
        thumbs = FolderImages(self.images.paths, torch.tensor(self.images.labels), _compose(Resize((KNN_SIZE, KNN_SIZE)), ToNumpy()),
                              self.seed, "knn")
        keys = [(0, i) for i in range(n)]
        loader = DataLoader(thumbs, batch_size=256, sampler=keys, **loader_options(self.cfg, torch.device("cpu"), persistent=False))
        features = torch.zeros(n, d, dtype=torch.uint8)
        for x, _y, index, failures in loader:
            self.bad.add(failures)
            features[index] = x.flatten(1)
        return features, self.labels.cpu()

    def close(self) -> None:
        self._device.loader = None  # lets persistent workers exit


def _compose(*steps: Callable[[Any], Any]) -> Transform:
    from torchvision.transforms import Compose

    return Compose(list(steps))


def eval_loader(images: Dataset[Item], keys: Sequence[Any] | None, cfg: DataConfig, *, batch_size: int,
                device: torch.device, mean: Sequence[float], std: Sequence[float], bad: BadImages) -> OnDevice:
    """Ordered batches of ``images`` (``keys`` for a map-style split; None for shards) on the device."""
    loader = DataLoader(images, batch_size=batch_size, sampler=keys, **loader_options(cfg, device, persistent=False))
    return OnDevice(loader, device, mean, std, bad)


def folder_run_parts(layout: StreamLayout, cfg: DataConfig) -> dict[str, tuple[list[str], Tensor]]:
    """Paths and labels of ``train``, ``val`` and ``test``: the layout's own splits, or ``val`` carved from train."""
    assert isinstance(layout.train, FolderSplit) and isinstance(layout.test, FolderSplit)
    k = len(layout.classes)

    def of(split: FolderSplit) -> tuple[list[str], Tensor]:
        return [p for p, _ in split.samples], torch.tensor([y for _, y in split.samples], dtype=torch.int64)

    train_paths, train_y = of(layout.train)
    test_paths, test_y = of(layout.test)
    if layout.val is not None:
        assert isinstance(layout.val, FolderSplit)
        val_paths, val_y = of(layout.val)
        plan = plan_splits(train_y, test_y, k, dataclasses.replace(cfg, val_fraction=0.0))
    else:
        plan = plan_splits(train_y, test_y, k, cfg)
        val_paths, val_y = [train_paths[i] for i in plan.val.tolist()], train_y[plan.val]
    labels = train_y[plan.train]
    if cfg.label_noise > 0:
        labels = add_label_noise(labels, cfg.label_noise, k, cfg.noise_seed)
    return {"train": ([train_paths[i] for i in plan.train.tolist()], labels), "val": (val_paths, val_y),
            "test": ([test_paths[i] for i in plan.test.tolist()], test_y[plan.test])}
