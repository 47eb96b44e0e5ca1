"""The memory path: uint8 tensors held on the training device, shuffled, cropped and flipped as whole batches there.

Both crops of :attr:`DataConfig.crop` run here with the stream path's parameters: the pad crop (a random window of
the zero-padded image) and timm's RandomResizedCrop, whose boxes are drawn by timm's rule (ten tries of area and
aspect ratio, then the centre) and resampled in one ``roi_align`` per batch (bilinear, averaging over each output
pixel's footprint when it shrinks). Evaluation of the resized crop resizes the shorter side to
``image_size / crop_pct`` and takes the centre, once per split when the run starts.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from ..errors import DataError
from ..seeding import generator
from .arrays import DatasetArrays
from .config import DataConfig
from .loaders import LoaderOptions, RunData
from .splits import epoch_length, epoch_order

Batch = tuple[Tensor, Tensor, Tensor]
"""(normalised float32 images ``(B, C, H, W)``, int64 labels, int64 dataset indices), all on the device."""
KNN_SIZE = 32
"""pairing=knn compares training images as KNN_SIZE x KNN_SIZE thumbnails (digits: as they are), on both paths."""


def stats(mean: Sequence[float], std: Sequence[float], channels: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``mean * 255`` and ``std * 255`` as float32 ``(C, 1, 1)`` tensors on ``device``, checked."""
    if len(mean) != channels or len(std) != channels:
        raise DataError(f"mean/std have {len(mean)}/{len(std)} values for {channels}-channel images; give one each")
    if min(std) <= 0:
        raise DataError(f"std={tuple(std)} must be > 0 in every channel; use the training split's std")
    return (torch.tensor([255.0 * v for v in mean], dtype=torch.float32, device=device).view(-1, 1, 1),
            torch.tensor([255.0 * v for v in std], dtype=torch.float32, device=device).view(-1, 1, 1))


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 images ``(..., C, H, W)`` to float32 ``(x / 255 - mean) / std`` (mean/std in [0, 1] units)."""
    m, s = stats(mean, std, x.shape[-3], x.device)
    return (x.to(torch.float32) - m) / s


def denormalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Inverse of :func:`normalize`, in [0, 1] units (not clamped; multiply by 255 for pixel values)."""
    m, s = stats(mean, std, x.shape[-3], x.device)
    return (x.to(torch.float32) * s + m) / 255.0


def _flips(b: int, flip: bool, gen: torch.Generator) -> Tensor:
    return torch.rand(b, generator=gen) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)


def augment_batch(x: Tensor, *, crop_padding: int, flip: bool, gen: torch.Generator) -> Tensor:
    """The pad crop: a random window after zero padding by ``crop_padding`` and a random horizontal flip, per sample,
    in one gather. ``x`` is ``(B, C, H, W)`` on any device; the random draws come from the CPU generator ``gen``."""
    if crop_padding == 0 and not flip:
        return x
    b, c, h, w = x.shape
    p = crop_padding
    draws = torch.randint(0, 2 * p + 1, (2, b), generator=gen)
    params = torch.cat([draws, _flips(b, flip, gen).long().unsqueeze(0)]).to(x.device, non_blocking=True)
    oy, ox, fl = params[0], params[1], params[2].bool()
    padded = F.pad(x, (p, p, p, p)) if p else x
    hp, wp = h + 2 * p, w + 2 * p
    ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    cols = ox[:, None] + torch.where(fl[:, None], ar_w.flip(0), ar_w)
    rows = oy[:, None] + ar_h
    flat = (rows[:, :, None] * wp + cols[:, None, :]).reshape(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, flat).reshape(b, c, h, w)


def resized_crop_boxes(b: int, h: int, w: int, scale: Sequence[float], ratio: Sequence[float],
                       gen: torch.Generator) -> Tensor:
    """``(b, 4)`` boxes ``(top, left, height, width)`` by timm's RandomResizedCrop rule, drawn from ``gen``: ten
    tries of a target area in ``scale`` and a log-uniform aspect ratio in ``ratio``, the first that fits, else the
    centre crop of the nearest allowed ratio."""
    area = h * w
    target = torch.empty(b, 10, dtype=torch.float64).uniform_(scale[0], scale[1], generator=gen) * area
    aspect = torch.exp(torch.empty(b, 10, dtype=torch.float64).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                                         generator=gen))
    tw, th = torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))
    fits = (tw <= w) & (th <= h)
    first = fits.to(torch.int8).argmax(1)
    pick_w, pick_h = tw.gather(1, first[:, None])[:, 0], th.gather(1, first[:, None])[:, 0]
    offsets = torch.rand(b, 2, generator=gen, dtype=torch.float64)
    top = torch.floor(offsets[:, 0] * (h - pick_h + 1))
    left = torch.floor(offsets[:, 1] * (w - pick_w + 1))
    in_ratio = w / h
    fw, fh = (w, round(w / min(ratio))) if in_ratio < min(ratio) else (round(h * max(ratio)), h) \
        if in_ratio > max(ratio) else (w, h)
    fallback = torch.tensor([(h - fh) // 2, (w - fw) // 2, fh, fw], dtype=torch.float64)
    boxes = torch.stack([top, left, pick_h, pick_w], 1)
    return torch.where(fits.any(1)[:, None], boxes, fallback).to(torch.int64)


def resized_crop_batch(x: Tensor, *, size: int, scale: Sequence[float], ratio: Sequence[float], flip: bool,
                       gen: torch.Generator) -> Tensor:
    """RandomResizedCrop to ``size`` x ``size`` and a random horizontal flip of uint8 ``(B, C, H, W)`` images; float32
    pixel values out (0..255), resampled by ``roi_align`` on the images' device."""
    from torchvision.ops import roi_align

    b, _, h, w = x.shape
    boxes = resized_crop_boxes(b, h, w, scale, ratio, gen)
    flips = _flips(b, flip, gen).to(x.device, non_blocking=True)
    top, left, bh, bw = boxes.to(torch.float32).unbind(1)
    rois = torch.stack([torch.arange(b, dtype=torch.float32), left, top, left + bw, top + bh], 1).to(x.device)
    out = roi_align(x.to(torch.float32), rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1,
                    aligned=True)
    return torch.where(flips[:, None, None, None], out.flip(-1), out)


def eval_view(x: Tensor, *, size: int, crop_pct: float, chunk: int = 256) -> Tensor:
    """timm's evaluation transform on uint8 ``(N, C, H, W)`` images of one size: the shorter side resized to
    ``floor(size / crop_pct)`` (bilinear, antialiased), then the centre ``size`` x ``size``; uint8 out."""
    _, _, h, w = x.shape
    short = math.floor(size / crop_pct)
    nh, nw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    if nh < size or nw < size:
        raise DataError(f"data.crop_pct={crop_pct} leaves a {nh}x{nw} image, smaller than data.image_size={size}")
    parts = []
    for start in range(0, len(x), chunk):
        resized = F.interpolate(x[start:start + chunk].to(torch.float32), size=(nh, nw), mode="bilinear",
                                antialias=True, align_corners=False) if (nh, nw) != (h, w) else x[start:start + chunk]
        parts.append(resized[:, :, top:top + size, left:left + size].round().clamp(0, 255).to(torch.uint8))
    return torch.cat(parts) if parts else x[:, :, :size, :size]


def eval_images(x: Tensor, cfg: DataConfig) -> Tensor:
    """Images ``x`` as settled config ``cfg`` evaluates them: the resized crop's :func:`eval_view`, else as they are."""
    if cfg.crop != "resized":
        return x
    return eval_view(x, size=cfg.image_size, crop_pct=cfg.crop_pct)  # type: ignore[arg-type]


class InMemoryLoader:
    """Training batches from uint8 tensors held on `device`; shuffling and augmentation on whole batches on the device.

    Every random draw is a pure function of ``seed``, the epoch, the rank and the batch index: the epoch
    permutation comes from ``(seed, epoch)`` (same on all ranks), the crops and flips of batch ``b`` from
    ``(seed, epoch, rank, b)``. So :meth:`batches` can resume mid-epoch with the exact same batches.
    With ``world_size > 1`` rank ``r`` takes its part of :func:`~trickbox.data.splits.epoch_order`: every rank
    yields the same number of batches. Call :meth:`set_epoch` before each epoch (the epoch starts at 0).
    ``crop="resized"`` draws RandomResizedCrop boxes of ``size`` with ``scale`` and ``ratio`` instead of the pad crop.
    """

    def __init__(self, x: Tensor, y: Tensor, *, batch_size: int, device: torch.device | str, mean: Sequence[float],
                 std: Sequence[float], augment: bool = True, crop: str = "pad", crop_padding: int = 4,
                 flip: bool = True, size: int | None = None, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), crop_pct: float = 0.875, shuffle: bool = True,
                 drop_last: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1, repeats: int = 0) -> None:
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
        if crop == "resized" and size is None:
            raise DataError("crop='resized' needs the output size: pass size=N")
        self.device = torch.device(device)
        self.x, self.y = x.to(self.device), y.to(self.device, torch.int64)
        self.labels = self.y  # the training labels, indexed by dataset index (the TrainLoader attribute)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self._m, self._s = stats(self.mean, self.std, x.shape[1], self.device)
        self.batch_size, self.augment, self.crop_padding, self.flip = batch_size, augment, crop_padding, flip
        self.crop, self.size, self.scale, self.ratio = crop, size, tuple(scale), tuple(ratio)
        self.view = eval_view(self.x, size=size, crop_pct=crop_pct) if crop == "resized" and not augment else self.x  # type: ignore[arg-type]
        self.shuffle, self.drop_last, self.seed, self.rank, self.world_size = shuffle, drop_last, seed, rank, world_size
        self.epoch, self.repeats = 0, repeats
        self.sizes: dict[int, int] = {}
        """The training images' side per 0-based epoch (``progressive_resize``); other epochs keep full size."""

    def __len__(self) -> int:
        """Batches per epoch on this rank (equal on all ranks): of its ``ceil(N / world_size)`` samples."""
        samples = epoch_length(len(self.x), self.world_size, self.repeats)
        return samples // self.batch_size if self.drop_last else math.ceil(samples / self.batch_size)

    @property
    def image_size(self) -> int:
        """The training images' side at full size (the resized crop's ``size``, else the images' own)."""
        return int(self.size if self.crop == "resized" and self.size else self.view.shape[-1])

    def set_sizes(self, sizes: dict[int, int]) -> None:
        """The training images' side per 0-based epoch: the resized crop samples at that size, the pad crop's
        batches are resized on the device after cropping."""
        self.sizes = dict(sizes)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and augmentations the next iteration yields."""
        if epoch < 0:
            raise DataError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def order(self, epoch: int | None = None) -> Tensor:
        """This rank's dataset indices for ``epoch`` (default: the current one), on the CPU."""
        return epoch_order(len(self.x), seed=self.seed, epoch=self.epoch if epoch is None else epoch, rank=self.rank,
                           world_size=self.world_size, shuffle=self.shuffle, repeats=self.repeats)

    def __iter__(self) -> Iterator[Batch]:
        return self.batches(0)

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """The epoch's batches from batch ``start`` on; skipped batches cost nothing and change nothing."""
        if start < 0:
            raise DataError(f"start must be >= 0, got {start}")
        epoch, order = self.epoch, self.order().to(self.device)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield self._images(idx, generator(self.seed, "augment", epoch, self.rank, b)), self.y[idx], idx

    def knn_features(self) -> tuple[Tensor, Tensor]:
        """Every training image as a flattened uint8 thumbnail (:data:`KNN_SIZE`; 1-channel images as they are)."""
        x = self.x
        if x.shape[1] == 3 and tuple(x.shape[2:]) != (KNN_SIZE, KNN_SIZE):
            x = torch.cat([F.interpolate(x[i:i + 1024].float(), size=(KNN_SIZE, KNN_SIZE), mode="bilinear",
                                         antialias=True).round().to(torch.uint8) for i in range(0, len(x), 1024)])
        return x.flatten(1), self.y

    def fetch(self, indices: Tensor, *, epoch_step: int) -> Tensor:
        """Augmented, normalised images of dataset ``indices``; deterministic given (seed, epoch, rank, epoch_step)."""
        return self._images(indices.to(self.device, torch.int64), generator(self.seed, "fetch", self.epoch, self.rank,
                                                                             epoch_step))

    def _images(self, idx: Tensor, gen: torch.Generator) -> Tensor:
        size = self.sizes.get(self.epoch)  # progressive_resize: the resized crop samples at it, others resize
        if self.augment and self.crop == "resized":
            xb: Tensor = resized_crop_batch(self.x[idx], size=size or self.size,  # type: ignore[arg-type]
                                            scale=self.scale, ratio=self.ratio, flip=self.flip, gen=gen)
        else:
            xb = augment_batch(self.x[idx], crop_padding=self.crop_padding, flip=self.flip, gen=gen) \
                if self.augment else self.view[idx]
            if size:
                from ..functional.resize import resize_batch

                xb = resize_batch(xb, size)
        return (xb.to(torch.float32) - self._m) / self._s


def _normalized_batch(mean: tuple[float, ...], std: tuple[float, ...],
                      batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """``collate_fn`` of :func:`make_eval_loader` (with ``functools.partial``): stacks ``(uint8 image, label)`` pairs
    and normalises the images."""
    xs, ys = torch.stack([item[0] for item in batch]), torch.stack([item[1] for item in batch])
    return normalize(xs, mean, std), ys


def make_eval_loader(x: Tensor, y: Tensor, *, batch_size: int, mean: Sequence[float],
                     std: Sequence[float]) -> DataLoader[tuple[Tensor, ...]]:
    """An ordered DataLoader of ``(normalised float32 images, int64 labels)`` for evaluation (Accelerate-ready)."""
    if x.ndim != 4 or x.dtype != torch.uint8 or y.shape != (len(x),):
        raise DataError(f"x must be uint8 (N, C, H, W) with y of shape (N,), got x {x.dtype} {tuple(x.shape)}, "
                        f"y {tuple(y.shape)}")
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    stats(mean, std, x.shape[1], torch.device("cpu"))
    return DataLoader(TensorDataset(x, y.long()), batch_size=batch_size, shuffle=False,
                      collate_fn=partial(_normalized_batch, tuple(map(float, mean)), tuple(map(float, std))))


def train_loader(arrays: DatasetArrays, cfg: DataConfig, options: LoaderOptions) -> InMemoryLoader:
    """The training loader of settled config ``cfg`` (``DataConfig.resolved``) over ``arrays``."""
    return InMemoryLoader(arrays.train_x, arrays.train_y, batch_size=options.batch_size, device=options.device,
                          mean=cfg.mean or arrays.mean, std=cfg.std or arrays.std, augment=cfg.augment, crop=cfg.crop,
                          crop_padding=cfg.crop_padding or 0, flip=bool(cfg.flip), size=cfg.image_size,
                          scale=cfg.scale, ratio=cfg.ratio, crop_pct=cfg.crop_pct, seed=options.seed, rank=options.rank,
                          world_size=options.world_size, repeats=cfg.aug_repeats)


def memory_run_data(arrays: DatasetArrays, cfg: DataConfig, options: LoaderOptions, reason: str) -> RunData:
    """Decoded splits under settled config ``cfg``: the training split on the device, cropped and flipped there,
    and this process's disjoint share of each evaluation split (viewed as the evaluation transform does)."""
    r, world = options.rank, options.world_size

    def part(x: Tensor, y: Tensor) -> DataLoader[tuple[Tensor, ...]]:
        return make_eval_loader(eval_images(x[r::world], cfg), y[r::world], batch_size=options.eval_batch_size,
                                mean=cfg.mean or (), std=cfg.std or ())

    return RunData(path="memory", reason=reason, config=cfg, classes=list(arrays.classes), in_chans=arrays.in_chans,
                   train=train_loader(arrays, cfg, options), val=part(arrays.val_x, arrays.val_y),
                   test=part(arrays.test_x, arrays.test_y),
                   fit=part(arrays.train_x, arrays.train_y) if options.want_fit else None, arrays=arrays,
                   sizes={"train": len(arrays.train_y), "val": len(arrays.val_y), "test": len(arrays.test_y)},
                   files=arrays.files)
