"""What the stream path's loaders share: timm's transforms, the worker records, the count of unreadable images, and
the DataLoader workers' settings (how many, what they ignore).

Memory is bounded by workers x prefetch_factor x batch size, whatever the number of images. Workers hand uint8
images to the training process, which normalises them on the device (as timm's prefetcher does). Each image's
augmentation is seeded by ``(seed, epoch, image)``, so a resumed epoch yields the same batches on any number of
workers.
"""
from __future__ import annotations

import io
import os
import random
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import DataError, first_line, on_every_rank, warn
from ..seeding import derive_seed
from .arrays import channel_counts, histogram_stats
from .config import DataConfig
from .memory import stats

Transform = Callable[[Image.Image], Any]
"""PIL image in, uint8 ``(C, H, W)`` tensor or array out."""
READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
"""What Pillow raises for an unreadable, truncated or oversized image."""


def transforms(cfg: DataConfig, mean: Sequence[float], std: Sequence[float],
               native: tuple[int, int] | None = None, train_size: int | None = None) -> tuple[Transform, Transform]:
    """``(train, eval)`` transforms of settled config ``cfg`` (``DataConfig.resolved``), ending in uint8 CHW arrays.
    The resized crop is timm's ``create_transform``; the pad crop replaces only its first stage (the crop and flip)
    and keeps timm's augmentation strings and output stage. ``native``: the images' size when they share one.
    ``train_size``: the training images' side instead (``progressive_resize``): the resized crop's output, or a
    resize after the pad crop; evaluation keeps ``image_size``."""
    from timm.data import create_transform
    from torchvision import transforms as T

    h, w = (cfg.image_size, cfg.image_size) if cfg.image_size else native or (0, 0)  # resized: image_size is set
    th, tw = (train_size, train_size) if train_size else (h, w)
    common: dict[str, Any] = dict(input_size=(3, h, w), interpolation=cfg.interpolation, mean=tuple(mean),
                                  std=tuple(std), crop_pct=cfg.crop_pct, use_prefetcher=True)
    try:
        primary, secondary, final = create_transform(
            is_training=True, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio), hflip=0.5 if cfg.flip else 0.0,
            color_jitter=cfg.color_jitter, separate=True, auto_augment=cfg.auto_augment if cfg.augment else None,
            **{**common, "input_size": (3, th, tw)})
    except (AssertionError, ValueError, KeyError, IndexError) as e:
        raise DataError(f"data.auto_augment={cfg.auto_augment!r} is not a timm augmentation string "
                        f"({e or type(e).__name__}); use e.g. rand-m9-mstd0.5, augmix-m5-w3 or original") from None
    if cfg.crop == "pad":
        mode = T.InterpolationMode.BICUBIC if cfg.interpolation == "bicubic" else T.InterpolationMode.BILINEAR
        resize: list[Any] = [T.Resize((h, w), interpolation=mode)] if cfg.image_size else []
        flip = [T.RandomHorizontalFlip(0.5)] if cfg.flip else []
        smaller = [T.Resize((th, tw), interpolation=mode)] if (th, tw) != (h, w) else []
        primary = T.Compose([*resize, T.RandomCrop((h, w), padding=cfg.crop_padding or 0), *flip, *smaller])
        evaluation: Transform = T.Compose([*resize, final])
        plain: Transform = T.Compose([*resize, *smaller, final])
    else:
        evaluation = create_transform(is_training=False, **common)
        plain = evaluation if (th, tw) == (h, w) else create_transform(is_training=False,
                                                                        **{**common, "input_size": (3, th, tw)})
        if cfg.fast_decode:  # the crop's box first, then only the pixels it needs (trickbox.data.decoding)
            from .decoding import EncodedCompose, FastEvalDecode, FastResizedCrop

            primary = EncodedCompose(FastResizedCrop(primary.transforms[0]), T.Compose(primary.transforms[1:]))
            evaluation, plain = (EncodedCompose(FastEvalDecode(t.transforms[0]), T.Compose(t.transforms[1:]))
                                 for t in (evaluation, plain))
            if cfg.augment:
                return EncodedCompose(primary, T.Compose([secondary, final])), evaluation
    return (T.Compose([primary, secondary, final]) if cfg.augment else plain), evaluation


class TrainTransform:
    """The training transform at ``data.image_size``, and at the size of each epoch that ``progressive_resize``
    set in :attr:`sizes` (0-based epoch → side). Workers get a copy when they start, so the sizes are set before
    the first epoch; each size's transform is built once per process. :attr:`evaluation` is the run's evaluation
    transform (at ``data.image_size`` whatever the training size)."""

    def __init__(self, cfg: DataConfig, mean: Sequence[float], std: Sequence[float],
                 native: tuple[int, int] | None = None) -> None:
        self.cfg, self.mean, self.std, self.native = cfg, tuple(mean), tuple(std), native
        self.sizes: dict[int, int] = {}
        train, self.evaluation = transforms(cfg, mean, std, native)
        self._built: dict[int | None, Transform] = {None: train}

    @property
    def image_size(self) -> int:
        """The side of the training images at full size."""
        return int(self.cfg.image_size or (self.native or (0, 0))[0])

    def at(self, size: int | None) -> Transform:
        key = None if size in (None, self.image_size) else size
        if key not in self._built:
            self._built[key] = transforms(self.cfg, self.mean, self.std, self.native, train_size=key)[0]
        return self._built[key]

    def for_epoch(self, epoch: int) -> Transform:
        return self.at(self.sizes.get(epoch))

    def __call__(self, img: Image.Image) -> Any:
        return self._built[None](img)


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


def read_image(name: str, transform: Transform, data: bytes | None = None) -> tuple[Any, str]:
    """``(transformed image, "")``, or ``(None, "name: why")`` when file ``name`` (or its bytes ``data``, e.g. a
    shard's member) cannot be read as an image."""
    try:
        if getattr(transform, "takes_encoded", False):  # decodes only what its crop needs
            from .decoding import Encoded

            raw = data if data is not None else Path(name).read_bytes()
            with Image.open(io.BytesIO(raw)) as img:
                return transform(Encoded(img, raw)), ""
        with Image.open(name if data is None else io.BytesIO(data)) as img:
            return transform(img.convert("RGB")), ""
    except READ_ERRORS as e:
        return None, f"{name!r}: {first_line(e)}"


def collate(items: list[Item]) -> tuple[Tensor, Tensor, Tensor, list[str]]:
    """uint8 images, labels and positions of the readable items, and the failures (``path: error``)."""
    good = [it for it in items if it.image is not None]
    x = torch.stack([torch.as_tensor(it.image) for it in good]) if good else torch.zeros(0, dtype=torch.uint8)
    labels = torch.tensor([it.label for it in good], dtype=torch.int64)
    index = torch.tensor([it.index for it in good], dtype=torch.int64)
    return x, labels, index, [it.bad for it in items if it.image is None]


class BadImages:
    """Unreadable images of one split in one pass over it: each named once, in one line; the count is judged over
    every process by :meth:`check`, so 1 and N processes stop at the same epoch."""

    def __init__(self, max_fraction: float, total: int, split: str) -> None:
        self.max_fraction, self.total, self.split = max_fraction, total, split
        self.seen: set[str] = set()
        self.count, self.last = 0, ""

    def new_epoch(self) -> None:
        self.count = 0

    def add(self, failures: list[str]) -> None:
        for failure in failures:
            self.count += 1
            self.last = failure
            if failure not in self.seen:
                self.seen.add(failure)
                warn(f"data: skipped unreadable image {failure}")

    def check(self, accelerator: Any = None) -> int:
        """The images skipped in this pass over every process (one all-reduce); :class:`DataError` on every process
        when they exceed ``max_fraction`` of the split."""
        count = self.count
        if accelerator is not None and accelerator.num_processes > 1:
            import torch.distributed as dist

            summed = torch.tensor([float(count)], device=accelerator.device)
            dist.all_reduce(summed)
            count = int(summed.item())
        if count > self.max_fraction * self.total:
            last = f" (e.g. {self.last})" if self.last else ""
            raise on_every_rank(DataError(f"data: {count} of {self.total:,} images of the {self.split} split could not "
                                          f"be read, above data.max_bad_fraction={self.max_fraction}{last}; fix or "
                                          "remove the files, or raise data.max_bad_fraction"))
        return count


def streamed_stats(loader: Iterable[tuple[Tensor, ...]]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std of the uint8 RGB images of one pass over ``loader`` (batches as :func:`collate` makes them),
    from 256-bin histograms: the pad crop's normalisation on the stream path."""
    counts = torch.zeros(3, 256, dtype=torch.float64)
    for x, *_ in loader:
        if len(x):
            counts += channel_counts(x)
    return histogram_stats(counts)


def default_workers(cfg: DataConfig) -> int:
    """``data.workers``, else this process's share of the CPU cores (at least one worker)."""
    if cfg.workers is not None:
        return cfg.workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local))


def ignore_stop_signals(*_: Any) -> None:
    """In a loader or decoding worker: a SIGTERM or SIGUSR1 sent to the whole process group (SLURM, a launcher, ``kill
    -TERM -PGID``) is for the training process, which checkpoints; the worker ignores it. Only a SIGTERM from its own
    parent (torch shutting the worker down) ends it."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    parent = os.getppid()

    def watch() -> None:
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == parent:
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="trickbox-sigterm").start()


def loader_options(cfg: DataConfig, device: torch.device, *, persistent: bool) -> dict[str, Any]:
    """DataLoader keyword arguments: workers (that ignore the group's stop signals), pinned memory, prefetching."""
    workers = default_workers(cfg)
    pin = cfg.pin_memory if cfg.pin_memory is not None else device.type == "cuda"
    # torch pins only where there is an accelerator to pin for (it warns and skips on a CPU-only machine)
    options: dict[str, Any] = dict(num_workers=workers, pin_memory=pin and torch.accelerator.is_available(),
                                   collate_fn=collate)
    if workers:
        options.update(prefetch_factor=cfg.prefetch_factor, persistent_workers=persistent,
                       worker_init_fn=ignore_stop_signals)
    return options


class OnDevice:
    """Batches of a loader of uint8 images on the device, normalised, with unreadable images counted and dropped."""

    def __init__(self, loader: Any, device: torch.device, cfg: DataConfig, bad: BadImages) -> None:
        self.loader, self.device, self.bad = loader, device, bad
        self._m, self._s = stats(cfg.mean or (), cfg.std or (), 3, device)

    def normalise(self, x: Tensor) -> Tensor:
        return x.to(self.device, non_blocking=True).to(torch.float32).sub_(self._m).div_(self._s)

    def batches(self, *, skip: int = 0, normalise: bool = True) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """``(images, labels, positions)`` from batch ``skip`` on; ``normalise=False`` keeps uint8 images."""
        for x, y, index, failures in islice(self.loader, skip, None):
            self.bad.add(failures)
            if len(y):
                x = self.normalise(x) if normalise else x.to(self.device, non_blocking=True)
                yield x, y.to(self.device, non_blocking=True), index.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.bad.new_epoch()
        return ((x, y) for x, y, _ in self.batches())


def mean_std(cfg: DataConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``data.mean`` / ``data.std``, else ImageNet's (timm's constants), the resized crop's default on both paths."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return (tuple(cfg.mean), tuple(cfg.std)) if cfg.mean and cfg.std else (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
