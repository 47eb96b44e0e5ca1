"""Class folders on the stream path: images read at random by a seeded sampler, each rank its own part of the epoch.

A rank's part of an epoch is :func:`~trickbox.data.splits.epoch_order`'s, as on the memory path, and each image's
augmentation is seeded by ``(seed, epoch, image)``, so a resumed epoch yields the same batches, bit for bit, on any
number of workers.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError
from .config import DataConfig
from .loaders import LoaderOptions, RunData
from .memory import KNN_SIZE
from .splits import PlannedSplit, epoch_length, epoch_order
from .streaming import (
    BadImages,
    Item,
    OnDevice,
    TrainTransform,
    Transform,
    loader_options,
    read_image,
    seed_sample,
    streamed_stats,
)

KNN_LIMIT_BYTES = 4 << 30
"""The largest float32 copy of the thumbnails the exact KNN pass may hold (N x 3 x 32 x 32 x 4 bytes)."""


class FolderImages(Dataset[Item]):
    """Images of one split by position, read with Pillow and transformed; keys are ``(epoch, position)``."""

    def __init__(self, paths: list[str], labels: Tensor, transform: Transform, seed: int, stream: str) -> None:
        self.paths, self.labels, self.transform = paths, labels.tolist(), transform
        self.seed, self.stream = seed, stream

    def __len__(self) -> int:
        return len(self.paths)

    def transform_at(self, epoch: int) -> Transform:
        """The transform of ``epoch``: its own size under ``progressive_resize`` (:class:`TrainTransform`)."""
        return self.transform.for_epoch(epoch) if isinstance(self.transform, TrainTransform) else self.transform

    def __getitem__(self, key: tuple[int, ...]) -> Item:
        epoch, i, *position = key  # a repeated image's copies are told apart by their place in the epoch
        seed_sample(self.seed, self.stream, epoch, i, *position)
        image, bad = read_image(self.paths[i], self.transform_at(epoch))
        return Item(image, self.labels[i], i, bad)


class EpochSampler(Sampler[tuple[int, int]]):
    """This rank's ``(epoch, position)`` keys of one epoch, from batch ``start`` on (set both before iterating)."""

    def __init__(self, n: int, *, seed: int, rank: int, world_size: int, repeats: int = 0) -> None:
        self.n, self.seed, self.rank, self.world_size, self.repeats = n, seed, rank, world_size, repeats
        self.epoch, self.skip = 0, 0

    @property
    def per_rank(self) -> int:
        """Keys of a whole epoch on this rank (equal on every rank)."""
        return epoch_length(self.n, self.world_size, self.repeats)

    def __len__(self) -> int:
        return self.per_rank - self.skip

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        order = epoch_order(self.n, seed=self.seed, epoch=self.epoch, rank=self.rank, world_size=self.world_size,
                            repeats=self.repeats)
        if self.repeats >= 2:  # each copy's place in the epoch seeds its own augmentation
            return ((self.epoch, int(i), self.rank + self.world_size * k) for k, i in enumerate(order)
                    if k >= self.skip)
        return ((self.epoch, int(i)) for i in order[self.skip:])


class FolderTrainLoader:
    """Training batches of a folder split (the :class:`~trickbox.data.loaders.TrainLoader` methods)."""

    def __init__(self, images: FolderImages, cfg: DataConfig, options: LoaderOptions) -> None:
        self.images, self.cfg, self.batch_size = images, cfg, options.batch_size
        assert isinstance(images.transform, TrainTransform)
        self.train_tf = images.transform
        self.seed, self.rank, self.epoch = options.seed, options.rank, 0
        self.labels = torch.tensor(images.labels, dtype=torch.int64, device=options.device)
        self.sampler = EpochSampler(len(images), seed=options.seed, rank=options.rank, world_size=options.world_size,
                                    repeats=cfg.aug_repeats)
        self.bad = BadImages(cfg.max_bad_fraction, len(images), "train")
        loader = DataLoader(images, batch_size=self.batch_size, sampler=self.sampler,
                            **loader_options(cfg, options.device, persistent=True))
        self._device = OnDevice(loader, options.device, cfg, self.bad)

    def __len__(self) -> int:
        return math.ceil(self.sampler.per_rank / self.batch_size)

    @property
    def image_size(self) -> int:
        """The training images' side at full size."""
        return self.train_tf.image_size

    def set_sizes(self, sizes: dict[int, int]) -> None:
        """The training images' side per 0-based epoch (``progressive_resize``), before the first epoch: the
        persistent workers take the sizes with them when they start."""
        if getattr(self._device.loader, "_iterator", None) is not None:
            raise DataError("set the training sizes before the first epoch (the loader's workers have started)")
        self.train_tf.sizes = dict(sizes)

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
            image, bad = read_image(self.images.paths[i], self.images.transform_at(self.epoch))
            if image is None:
                raise DataError(f"data: a mixup partner cannot be read: {bad}; fix or remove the file")
            out.append(torch.as_tensor(image))
        return self._device.normalise(torch.stack(out))

    def knn_features(self) -> tuple[Tensor, Tensor]:
        """:data:`~trickbox.data.memory.KNN_SIZE` thumbnails of every training image (uint8, flattened), in one
        streamed pass, and their labels."""
        from timm.data.transforms import ToNumpy
        from torchvision.transforms import Compose, Resize

        n, d = len(self.images), 3 * KNN_SIZE * KNN_SIZE
        if n * d * 4 > KNN_LIMIT_BYTES:
            raise DataError(f"tricks.mixup.pairing=knn compares {KNN_SIZE}x{KNN_SIZE} thumbnails of every training "
                            f"image: {n:,} images need {n * d * 4 / 2**30:.1f} GiB, above the {KNN_LIMIT_BYTES >> 30} "
                            f"GiB limit; use data.train_subset<={KNN_LIMIT_BYTES // (d * 4):,} or pairing=random")
        thumbs = FolderImages(self.images.paths, torch.tensor(self.images.labels),
                              Compose([Resize((KNN_SIZE, KNN_SIZE)), ToNumpy()]), self.seed, "knn")
        features = torch.zeros(n, d, dtype=torch.uint8)
        for x, _y, index, failures in in_order(thumbs, self.cfg, LoaderOptions(256, 256, 0)):
            self.bad.add(failures)
            features[index] = x.flatten(1)
        return features, self.labels.cpu()

    def close(self) -> None:
        self._device.loader = None  # lets persistent workers exit


def in_order(images: FolderImages, cfg: DataConfig, options: LoaderOptions) -> Any:
    """This process's share of ``images`` (every ``world_size``-th from its rank), in order, read in its workers."""
    keys = [(0, i) for i in range(options.rank, len(images), options.world_size)]
    return DataLoader(images, batch_size=options.eval_batch_size, sampler=keys,
                      **loader_options(cfg, options.device, persistent=False))


def training_stats(planned: PlannedSplit, cfg: DataConfig,
                   eval_tf: Transform) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The pad crop's normalisation on the stream path: the mean and std of the training images as the memory
    path holds them (resized to ``image_size`` when it is set), in one streamed pass."""
    from timm.data.transforms import ToNumpy

    images = FolderImages(planned.names, planned.labels, eval_tf if cfg.image_size else ToNumpy(), 0, "stats")
    return streamed_stats(in_order(images, cfg, LoaderOptions(64, 64, 0)))


def folder_run_data(planned: dict[str, PlannedSplit], classes: list[str], cfg: DataConfig, train_tf: TrainTransform,
                    eval_tf: Transform, options: LoaderOptions, reason: str) -> RunData:
    """Loaders that read, decode and augment images in worker processes; this process's part of every split."""
    train = FolderTrainLoader(FolderImages(planned["train"].names, planned["train"].labels, train_tf, options.seed,
                                           "train"), cfg, options)

    def split(name: str) -> OnDevice:  # this rank's disjoint share, in order
        part = planned[name]
        loader = in_order(FolderImages(part.names, part.labels, eval_tf, options.seed, name), cfg, options)
        return OnDevice(loader, options.device, cfg, BadImages(cfg.max_bad_fraction, len(part.names), name))

    return RunData(path="stream", reason=reason, config=cfg, classes=list(classes), in_chans=3, train=train,
                   val=split("val"), test=split("test"), fit=split("train") if options.want_fit else None,
                   sizes={k: len(v.names) for k, v in planned.items()},
                   files={k: list(v.names) for k, v in planned.items()})
