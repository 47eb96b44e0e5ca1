"""The data section of a run configuration (``data.*`` keys)."""
from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

DATASET_NAMES: tuple[str, ...] = ("digits", "imagefolder", "cifar10", "cifar100")
SHARED_CIFAR10_ZIP = "../shared/datasets/cifar10-jpeg.zip"


@dataclass
class DataConfig:
    """Which images to train on, how to split them, and the default augmentation."""

    name: str = "digits"
    """``digits`` (scikit-learn, 8x8 grey), ``imagefolder`` (directory or .zip), ``cifar10`` or ``cifar100``."""
    root: str | None = None
    """imagefolder: a directory or .zip holding ``train/<class>/*`` and ``test/<class>/*``;
    cifar10/100: the torchvision root (default: ``<cache_dir>/torchvision``)."""
    download: bool = False
    """cifar10/100 only: let torchvision download the files (needs internet)."""
    val_fraction: float = 0.1
    """Fraction of the full training split held out for validation (seeded, stratified), in [0, 0.9]."""
    split_seed: int = 0
    """Seed of the validation split and of ``train_subset``."""
    train_subset: int | None = None
    """Train on only this many images. The validation split is carved FIRST from the full training
    split, then the subset is drawn (seeded, stratified) from the rest, so validation images are the
    same whatever the subset."""
    test_subset: int | None = None
    """Cap on test images (seeded, stratified); larger values keep the whole test split."""
    label_noise: float = 0.0
    """Fraction in [0, 1] of training labels (never val/test) replaced by uniformly random labels;
    a random label may equal the true one, so about ``label_noise * (1 - 1/classes)`` change."""
    noise_seed: int = 0
    """Seed of the label noise."""
    image_size: int | None = None
    """imagefolder only: resize every image to this square size. None keeps the size, which must
    then be the same for all images."""
    augment: bool = True
    """Random crop with zero padding and horizontal flip on training batches."""
    crop_padding: int | None = None
    """Padding of the random crop; 0 disables the crop; None: 1 for digits, else image_size // 8 (4 at 32 px)."""
    flip: bool | None = None
    """Random horizontal flip; None: off for digits (not flip-invariant), on otherwise."""
    cache_dir: str | None = None
    """Where decoded images are cached; None: ``$TRICKBOX_CACHE`` or ``~/.cache/trickbox``."""

    def validate(self) -> None:
        """Check every field; raise :class:`DataError` naming the first bad one."""
        if not isinstance(self.name, str) or self.name not in DATASET_NAMES:
            close = difflib.get_close_matches(str(self.name), DATASET_NAMES, n=1)
            hint = f"; did you mean data.name={close[0]}?" if close else ""
            raise DataError(f"data.name must be one of {', '.join(DATASET_NAMES)}, got {self.name!r}{hint}")
        _optional_str("root", self.root)
        _optional_str("cache_dir", self.cache_dir)
        _bool("download", self.download)
        _bool("augment", self.augment)
        if self.flip is not None:
            _bool("flip", self.flip)
        _fraction("val_fraction", self.val_fraction, 0.9, "0.1")
        _fraction("label_noise", self.label_noise, 1.0, "0.2")
        _int("split_seed", self.split_seed, 0)
        _int("noise_seed", self.noise_seed, 0)
        for key in ("train_subset", "test_subset", "image_size"):
            value = getattr(self, key)
            if value is not None:
                _int(key, value, 1)
        if self.crop_padding is not None:
            _int("crop_padding", self.crop_padding, 0)
        if self.name == "imagefolder" and not self.root:
            raise DataError(
                "data.root is not set for data.name=imagefolder: set data.root=PATH (a directory or .zip "
                f"with train/ and test/ class folders), e.g. data.root={SHARED_CIFAR10_ZIP}"
            )
        if self.image_size is not None and self.name != "imagefolder":
            raise DataError(
                f"data.image_size={self.image_size} applies only to data.name=imagefolder; "
                f"remove it for data.name={self.name}"
            )
        if self.download and self.name not in ("cifar10", "cifar100"):
            raise DataError(f"data.download=true applies only to cifar10/cifar100; remove it for data.name={self.name}")

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
        raw = self.cache_dir or os.environ.get("TRICKBOX_CACHE") or "~/.cache/trickbox"
        return Path(raw).expanduser()


def _bool(key: str, value: object) -> None:
    if not isinstance(value, bool):
        raise DataError(f"data.{key} must be true or false, got {value!r}")


def _optional_str(key: str, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise DataError(f"data.{key} must be a path string or null, got {value!r}")


def _int(key: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"data.{key} must be an integer >= {minimum}, got {value!r}")


def _fraction(key: str, value: object, maximum: float, example: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0.0 <= value <= maximum
    ):
        raise DataError(f"data.{key} must be a number in [0, {maximum:g}], got {value!r}; e.g. data.{key}={example}")
