"""Batches from uint8 tensors held on the device: shuffling, sharding, crop/flip and normalisation on whole batches."""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from .arrays import DatasetArrays
from .config import DataConfig
from ..errors import DataError
from ..seeding import generator

Batch = tuple[Tensor, Tensor, Tensor]
"""(normalised float32 images ``(B, C, H, W)``, int64 labels, int64 dataset indices), all on the device."""


def _stats(mean: Sequence[float], std: Sequence[float], channels: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``mean * 255`` and ``std * 255`` as float32 ``(C, 1, 1)`` tensors on ``device``, checked."""
    if len(mean) != channels or len(std) != channels:
        raise DataError(
            f"mean/std have {len(mean)}/{len(std)} values for {channels}-channel images; give one per channel"
        )
    if min(std) <= 0:
        raise DataError(f"std={tuple(std)} must be > 0 in every channel; use the training split's std")
    m = torch.tensor([255.0 * v for v in mean], dtype=torch.float32, device=device).view(-1, 1, 1)
    s = torch.tensor([255.0 * v for v in std], dtype=torch.float32, device=device).view(-1, 1, 1)
    return m, s


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 images ``(..., C, H, W)`` to float32 ``(x / 255 - mean) / std`` (mean/std in [0, 1] units)."""
    m, s = _stats(mean, std, x.shape[-3], x.device)
    return (x.to(torch.float32) - m) / s


def denormalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Inverse of :func:`normalize`, in [0, 1] units (not clamped; multiply by 255 for pixel values)."""
    m, s = _stats(mean, std, x.shape[-3], x.device)
    return (x.to(torch.float32) * s + m) / 255.0


def augment_batch(x: Tensor, *, crop_padding: int, flip: bool, gen: torch.Generator) -> Tensor:
    """Random crop after zero padding by ``crop_padding`` and random horizontal flip, per sample, in one gather.

    ``x`` is ``(B, C, H, W)`` on any device; the random draws come from the CPU generator ``gen``.
    """
    if crop_padding == 0 and not flip:
        return x
    b, c, h, w = x.shape
    p = crop_padding
    draws = torch.randint(0, 2 * p + 1, (2, b), generator=gen)
    flips = torch.rand(b, generator=gen) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    params = torch.cat([draws, flips.long().unsqueeze(0)]).to(x.device, non_blocking=True)
    oy, ox, fl = params[0], params[1], params[2].bool()
    padded = F.pad(x, (p, p, p, p)) if p else x
    hp, wp = h + 2 * p, w + 2 * p
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    cols = ox[:, None] + torch.where(fl[:, None], ar_w.flip(0), ar_w)
    rows = oy[:, None] + ar_h
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, flat).reshape(b, c, h, w)


def epoch_order(n: int, *, seed: int, epoch: int, rank: int, world_size: int, shuffle: bool = True) -> Tensor:
    """Rank ``rank``'s indices of one epoch: the ``(seed, epoch)`` permutation of ``range(n)``, padded by wrapping
    around to a multiple of ``world_size``, then every ``world_size``-th entry. Ranks get disjoint parts of equal
    length whose union is the epoch (plus at most ``world_size - 1`` repeats). Both data paths use it."""
    perm = torch.randperm(n, generator=generator(seed, "perm", epoch)) if shuffle else torch.arange(n)
    total = math.ceil(n / world_size) * world_size
    if total > n:
        perm = torch.cat([perm, perm.repeat(math.ceil((total - n) / n))[: total - n]])
    return perm[rank::world_size]


class InMemoryLoader:
    """Training batches from uint8 tensors held on `device`; shuffling and augmentation on whole batches on the device.

    Every random draw is a pure function of ``seed``, the epoch, the rank and the batch index: the epoch
    permutation comes from ``(seed, epoch)`` (same on all ranks), the crops and flips of batch ``b`` from
    ``(seed, epoch, rank, b)``. So :meth:`batches` can resume mid-epoch with the exact same batches.
    With ``world_size > 1`` the permutation is padded by wrapping around to a multiple of ``world_size``
    and rank ``r`` takes ``perm[r::world_size]``: every rank yields the same number of batches.
    Call :meth:`set_epoch` before each epoch (the epoch starts at 0).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        batch_size: int,
        device: torch.device | str,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool = True,
        crop_padding: int = 4,
        flip: bool = True,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if x.ndim != 4 or x.dtype != torch.uint8 or len(x) == 0:
            raise DataError(f"x must be a non-empty uint8 (N, C, H, W) tensor, got {x.dtype} {tuple(x.shape)}")
        if y.shape != (len(x),):
            raise DataError(f"y must have shape ({len(x)},) to match x, got {tuple(y.shape)}")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if crop_padding < 0:
            raise DataError(f"crop_padding must be >= 0, got {crop_padding}; use 0 to disable the crop")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank={rank} must be in [0, world_size={world_size}) with world_size >= 1")
        self.device = torch.device(device)
        self.x = x.to(self.device)
        self.y = y.to(self.device, torch.int64)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self._m, self._s = _stats(self.mean, self.std, x.shape[1], self.device)
        self.batch_size = batch_size
        self.augment = augment
        self.crop_padding = crop_padding
        self.flip = flip
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Samples per epoch on this rank (after padding)."""
        return math.ceil(len(self.x) / self.world_size)

    def __len__(self) -> int:
        """Batches per epoch on this rank (equal on all ranks)."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and augmentations the next iteration yields."""
        if epoch < 0:
            raise DataError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def order(self, epoch: int | None = None) -> Tensor:
        """This rank's dataset indices for ``epoch`` (default: the current one), on the CPU."""
        epoch = self.epoch if epoch is None else epoch
        return epoch_order(len(self.x), seed=self.seed, epoch=epoch, rank=self.rank, world_size=self.world_size,
                           shuffle=self.shuffle)

    def __iter__(self) -> Iterator[Batch]:
        return self.batches(0)

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """The epoch's batches from batch ``start`` on; skipped batches cost nothing and change nothing."""
        if start < 0:
            raise DataError(f"start must be >= 0, got {start}")
        epoch, count = self.epoch, len(self)
        order = self.order(epoch).to(self.device)
        return self._generate(order, epoch, start, count)

    def _generate(self, order: Tensor, epoch: int, start: int, count: int) -> Iterator[Batch]:
        for b in range(start, count):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self._images(idx, generator(self.seed, "augment", epoch, self.rank, b)), self.y[idx], idx

    @property
    def labels(self) -> Tensor:
        """The training labels, indexed by dataset index."""
        return self.y

    def knn_features(self) -> tuple[Tensor, Tensor]:
        """Every training image flattened (uint8, input space) and its label, for KNN pairing."""
        return self.x.flatten(1), self.y

    def fetch(self, indices: Tensor, *, epoch_step: int) -> Tensor:
        """Augmented, normalised images of dataset ``indices``; deterministic given (seed, epoch, rank, epoch_step)."""
        idx = indices.to(self.device, torch.int64)
        return self._images(idx, generator(self.seed, "fetch", self.epoch, self.rank, epoch_step))

    def _images(self, idx: Tensor, gen: torch.Generator) -> Tensor:
        xb = self.x[idx]
        if self.augment:
            xb = augment_batch(xb, crop_padding=self.crop_padding, flip=self.flip, gen=gen)
        return (xb.to(torch.float32) - self._m) / self._s


def make_train_loader(
    ds: DatasetArrays,
    cfg: DataConfig,
    *,
    batch_size: int,
    device: torch.device | str,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool = False,
) -> InMemoryLoader:
    """An :class:`InMemoryLoader` over ``ds.train_x`` with ``cfg``'s augmentation, dataset defaults resolved."""
    return InMemoryLoader(
        ds.train_x,
        ds.train_y,
        batch_size=batch_size,
        device=device,
        mean=ds.mean,
        std=ds.std,
        augment=cfg.augment,
        crop_padding=cfg.effective_crop_padding(min(ds.image_hw)),
        flip=cfg.effective_flip(),
        drop_last=drop_last,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )


class NormalizeCollate:
    """``collate_fn`` that stacks ``(uint8 image, label)`` pairs and normalises the images."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)

    def __call__(self, batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        xs = torch.stack([item[0] for item in batch])
        ys = torch.stack([item[1] for item in batch])
        return normalize(xs, self.mean, self.std), ys


def make_eval_loader(
    x: Tensor, y: Tensor, *, batch_size: int, mean: Sequence[float], std: Sequence[float]
) -> DataLoader[tuple[Tensor, ...]]:
    """An ordered DataLoader of ``(normalised float32 images, int64 labels)`` for evaluation (Accelerate-ready)."""
    if x.ndim != 4 or x.dtype != torch.uint8 or y.shape != (len(x),):
        raise DataError(
            f"x must be uint8 (N, C, H, W) with y of shape (N,), got x {x.dtype} {tuple(x.shape)}, y {tuple(y.shape)}"
        )
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    _stats(mean, std, x.shape[1], torch.device("cpu"))
    dataset = TensorDataset(x, y.long())
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=NormalizeCollate(mean, std))
