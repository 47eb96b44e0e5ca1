"""The data section of a run configuration (``data.*`` keys)."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from ..scalars import bounded, check_fields, check_scalar

DATASET_NAMES: tuple[str, ...] = ("digits", "imagefolder", "wds", "cifar10", "cifar100")
LOADERS: tuple[str, ...] = ("auto", "memory", "stream")
SHARED_CIFAR10_ZIP = "../shared/datasets/cifar10-jpeg.zip"
MEMORY_ONLY = ("digits", "cifar10", "cifar100")
"""Datasets that exist only in memory (small, loaded whole by scikit-learn or torchvision)."""
STREAM_ONLY = ("wds",)
"""Datasets that can only be streamed (WebDataset shards are read in order, never all at once)."""
PAD_CROP_MAX_SIZE = 64
"""``data.crop=auto`` pads and crops images of one size up to this many pixels a side (CIFAR-like), else resizes."""
DEFAULT_RESIZED_SIZE = 224
"""The resized crop's ``image_size`` when ``data.image_size`` is unset."""


@dataclass
class DataConfig:
    """Which images to train on, how to split them, how to read them, and the default augmentation."""

    name: str = bounded("digits", choices=DATASET_NAMES)
    """``digits`` (scikit-learn, 8x8 grey), ``imagefolder`` (a directory, .zip or .tar of class folders), ``wds``
    (WebDataset tar shards), ``cifar10`` or ``cifar100`` (torchvision)."""
    root: str | None = None
    """imagefolder: a directory, .zip or .tar holding ``train/<class>/*`` and ``test/<class>/*`` (or the ImageNet
    layout ``train/`` + ``val/``); wds: the folder of the shards (with timm's ``_info.json``, or give the shard
    patterns in ``train_split`` / ``val_split`` / ``test_split``); cifar10/100: the torchvision root
    (default: ``<cache_dir>/torchvision``)."""
    download: bool = False
    """cifar10/100 only: let torchvision download the files (needs internet)."""
    loader: str = bounded("auto", choices=LOADERS)
    """How images are read; it changes speed, never the run. ``memory``: decode every image once and keep the splits
    on the training device (crops and flips on whole batches there); ``stream``: read and augment images in
    DataLoader worker processes (memory bounded by workers x prefetch x batch); ``auto``: memory when the decoded
    data fits ``memory_budget_gb`` and the memory path can do the augmentation asked for, else stream."""
    memory_budget_gb: float | None = bounded(None, low=0, low_open=True)
    """``auto``'s limit on the decoded training, validation and test images of one process, in GiB. Unset: a quarter
    of the memory available to each local process, and on a GPU at most a third of its memory."""
    val_fraction: float = bounded(0.1, low=0, high=0.9)
    """Fraction of the full training split held out for validation (seeded, stratified), in [0, 0.9]. Not used when
    the data has its own validation split (``val_split``, or ``val/`` next to ``test/``)."""
    split_seed: int = bounded(0, low=0)
    """Seed of the validation split and of ``train_subset``."""
    train_subset: int | None = bounded(None, low=1)
    """Train on only this many images. The validation split is carved FIRST from the full training
    split, then the subset is drawn (seeded, stratified) from the rest, so validation images are the
    same whatever the subset."""
    test_subset: int | None = bounded(None, low=1)
    """Cap on test images (seeded, stratified); larger values keep the whole test split."""
    label_noise: float = bounded(0.0, low=0, high=1)
    """Fraction in [0, 1] of training labels (never val/test) replaced by uniformly random labels;
    a random label may equal the true one, so about ``label_noise * (1 - 1/classes)`` change."""
    noise_seed: int = bounded(0, low=0)
    """Seed of the label noise."""
    image_size: int | None = bounded(None, low=1)
    """The training and evaluation image size. Pad crop: every image is first resized to this square (None: the
    images' own size, which must then be one size); resized crop: RandomResizedCrop's output and the evaluation
    centre crop (None: 224)."""
    augment: bool = True
    """Training augmentation (``crop`` and ``flip``, and ``auto_augment``); false trains on the evaluation view."""
    crop: str = bounded("auto", choices=("auto", "pad", "resized"))
    """The training crop, the same on both data paths. ``pad``: a random ``image_size`` window of the image padded by
    ``crop_padding`` zeros (CIFAR's); evaluation sees the whole image. ``resized``: timm's RandomResizedCrop with
    ``scale``, ``ratio`` and ``interpolation`` (ImageNet's); evaluation resizes to ``image_size / crop_pct`` and takes
    the centre. ``auto``: ``pad`` for digits, CIFAR and images of one size up to 64 px, else ``resized``."""
    crop_padding: int | None = bounded(None, low=0)
    """Pad crop: the padding; 0 disables the crop; None: 1 for digits, else image_size // 8."""
    flip: bool | None = None
    """Random horizontal flip; None: off for digits (not flip-invariant), on otherwise."""
    cache_dir: str | None = None
    """Where decoded images are cached; None: ``$TRICKBOX_CACHE`` or ``~/.cache/trickbox``."""
    train_split: str = "train"
    """stream path: the training split, a folder name or (wds) a shard pattern such as
    ``train-{000000..000127}.tar``."""
    val_split: str | None = None
    """stream path: a validation split of its own (folder or shard pattern); None: ``val/`` when ``test/`` exists
    too, else ``val_fraction`` of the training split."""
    test_split: str | None = None
    """stream path: the split reported at the end; None: ``test/``, else ``val/`` (ImageNet's layout)."""
    crop_pct: float = bounded(0.875, low=0, low_open=True, high=1)
    """Resized crop: evaluation resizes to ``image_size / crop_pct`` and takes the centre crop (timm's ``crop_pct``)."""
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    """Resized crop: RandomResizedCrop's area range."""
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    """Resized crop: RandomResizedCrop's aspect-ratio range."""
    interpolation: str = bounded("bilinear", choices=("bilinear", "bicubic", "random"))
    """Resize interpolation (the memory path resizes bilinearly; other choices take the stream path)."""
    auto_augment: str | None = None
    """A timm augmentation string, e.g. ``rand-m9-mstd0.5`` (RandAugment) or ``augmix-m5-w3``; it runs on single
    images in the stream path's workers, so ``data.loader=auto`` streams and ``memory`` is refused."""
    aug_repeats: int = bounded(0, low=0, high=64)
    """Repeated augmentation (timm's ``--aug-repeats``, ``RepeatAugSampler``): each epoch shows about
    ``1 / aug_repeats`` of the training images, each that many times with its own augmentation, spread over the
    processes; 0 or 1: off. Folders on either path; tar shards stream in order and refuse it."""
    color_jitter: float = bounded(0.0, low=0)
    """timm's colour jitter strength (``--color-jitter``: brightness, contrast and saturation by up to this factor),
    per image in the stream path's workers (like ``auto_augment``, so ``data.loader=auto`` streams); 0: off. timm
    skips it when ``auto_augment`` is set."""
    fast_decode: bool = True
    """stream path, resized crop: decode each JPEG at the largest 1/2, 1/4 or 1/8 reduction its crop (or evaluation
    resize) still has enough pixels at, after drawing timm's box on the full size (``trickbox.data.decoding``);
    false: decode every image whole."""
    mean: list[float] | None = None
    """Normalisation mean per channel in [0, 1] units; None: the training split's with the pad crop, ImageNet's with
    the resized crop (on either path)."""
    std: list[float] | None = None
    """Normalisation std per channel; None as for ``mean``."""
    workers: int | None = bounded(None, low=0)
    """stream path: DataLoader worker processes per training process; None: the CPU cores of this process's share."""
    pin_memory: bool | None = None
    """stream path: page-locked batches for faster copies to a GPU; None: the device profile's (on for CUDA)."""
    prefetch_factor: int = bounded(2, low=1)
    """stream path: batches each worker prepares ahead."""
    max_bad_fraction: float = bounded(0.01, low=0, high=1)
    """Unreadable images are skipped with a warning naming the file, on either path; above this fraction of a split's
    images (counted over every process) the run stops."""

    def validate(self) -> None:
        """Check every field; raise :class:`DataError` naming the first bad one."""
        check_fields(self, "data", DataError)
        for key in ("scale", "ratio"):
            pair = getattr(self, key)
            if not (isinstance(pair, list) and len(pair) == 2):
                raise DataError(f"data.{key} must be a list [low, high], got {pair!r}")
            low, high = (check_scalar(f"data.{key}[{i}]", v, float, error=DataError) for i, v in enumerate(pair))
            if not 0 < low <= high:
                raise DataError(f"data.{key} must be [low, high] with 0 < low <= high, got {pair!r}")
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and (not isinstance(values, list) or not values):
                raise DataError(f"data.{key} must be a list of per-channel numbers or null, got {values!r}")
            for i, v in enumerate(values or []):
                check_scalar(f"data.{key}[{i}]", v, float, error=DataError)
        if (self.mean is None) != (self.std is None) or (self.mean and len(self.mean) != len(self.std or [])):
            raise DataError("data.mean and data.std go together, one number per channel each; set both or neither")
        if self.std and min(self.std) <= 0:
            raise DataError(f"data.std must be > 0 in every channel, got {self.std!r}")
        if self.name in ("imagefolder", "wds") and not self.root:
            raise DataError(f"data.root is not set for data.name={self.name}: set data.root=PATH (a directory, .zip or "
                            f".tar with train/ and test/ class folders), e.g. data.root={SHARED_CIFAR10_ZIP}")
        if self.image_size is not None and self.name not in ("imagefolder", "wds"):
            raise DataError(f"data.image_size={self.image_size} is for imagefolder or wds; drop it for {self.name}")
        if self.download and self.name not in ("cifar10", "cifar100"):
            raise DataError(f"data.download=true applies only to cifar10/cifar100; remove it for data.name={self.name}")
        if self.loader == "stream" and self.name in MEMORY_ONLY:
            raise DataError(f"data.name={self.name} is held in memory; use data.loader=auto or memory, not stream")
        if self.loader == "memory" and self.name in STREAM_ONLY:
            raise DataError(f"data.name={self.name} (tar shards) is only streamed; use data.loader=auto or stream")

    def resolved(self, native: tuple[int, int] | None) -> DataConfig:
        """This config with its augmentation settled for images of ``native`` ``(h, w)`` (None: sizes differ):
        ``crop``, ``image_size`` (resized crop), ``crop_padding`` (pad crop) and ``flip``. Both data paths train the
        config this returns, and ``config.yaml`` records it."""
        crop = self.crop
        if crop == "auto":
            small = native is not None and max(native) <= PAD_CROP_MAX_SIZE
            crop = "pad" if self.name in MEMORY_ONLY or small else "resized"
        if crop == "pad" and native is None and self.image_size is None:
            raise DataError("data.crop=pad needs images of one size, and these differ: set data.image_size=N (each "
                            "image is resized to NxN first) or use data.crop=resized")
        size = self.image_size or (DEFAULT_RESIZED_SIZE if crop == "resized" else None)
        padding = self.effective_crop_padding(size or min(native or (1, 1))) if crop == "pad" else self.crop_padding
        return dataclasses.replace(self, crop=crop, image_size=size, crop_padding=padding, flip=self.effective_flip())

    def effective_flip(self) -> bool:
        """``flip``, or the dataset default (False for digits, True otherwise)."""
        return self.flip if self.flip is not None else self.name != "digits"

    def effective_crop_padding(self, image_size: int) -> int:
        """``crop_padding``, or the dataset default (1 for digits, else ``max(1, image_size // 8)``)."""
        if self.crop_padding is not None:
            return self.crop_padding
        return 1 if self.name == "digits" else max(1, image_size // 8)

    def resolved_cache_dir(self) -> Path:
        """``cache_dir``, else ``$TRICKBOX_CACHE``, else ``~/.cache/trickbox`` (not created here)."""
        return Path(self.cache_dir or os.environ.get("TRICKBOX_CACHE") or "~/.cache/trickbox").expanduser()
