"""Where the splits of a streamed dataset are, checked before anything is read: class folders or tar shards.

Folders: ``train/<class>/*`` with ``val/`` (ImageNet's name) and/or ``test/``. Shards: WebDataset tars whose
samples hold an image (``jpg``, ``png`` or ``webp``) and a ``cls`` class index, e.g. ``train-000000.tar``.
Every problem here is one :class:`DataError` line naming the path and the fix, raised before a model is built.
"""
from __future__ import annotations

import glob
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .config import DataConfig
from .imagefolder import IMAGE_EXTENSIONS
from ..errors import DataError

FOLDER_LAYOUT = "train/<class>/<image> with val/<class>/ (ImageNet) or test/<class>/"
SHARD_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class FolderSplit:
    """One split of class folders: its directory and its images with their class indices."""

    path: Path
    samples: list[tuple[str, int]]


@dataclass(frozen=True)
class ShardSplit:
    """One split of tar shards: the shard files (in order) and the class index of each sample, shard by shard."""

    pattern: str
    shards: list[str]
    labels: list[int]

    @property
    def num_samples(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class StreamLayout:
    """The splits of a streamed dataset. ``val`` None: carve ``data.val_fraction`` of ``train`` (folders only)."""

    kind: str
    """``folder`` or ``wds``."""
    classes: list[str]
    train: FolderSplit | ShardSplit
    val: FolderSplit | ShardSplit | None
    test: FolderSplit | ShardSplit


def find_layout(cfg: DataConfig) -> StreamLayout:
    """The splits ``cfg`` names, checked: every split exists and is non-empty, and all have ``train``'s classes."""
    root = Path(cfg.root or "").expanduser()
    if not cfg.root or not root.exists():
        raise DataError(f"data.root={cfg.root!r} does not exist: set data.root=PATH ({FOLDER_LAYOUT}, or a folder of tar shards)")
    root = root.resolve()
    if cfg.name == "wds":
        return _shard_layout(cfg, root)
    if not root.is_dir():
        raise DataError(f"data.root={cfg.root!r} is a file; data.loader=stream reads a directory ({FOLDER_LAYOUT}) or "
                        "tar shards (data.name=wds): extract it, or use data.loader=memory for a .zip")
    return _folder_layout(cfg, root)


# -- class folders -----------------------------------------------------------------------------------------
def _folder_layout(cfg: DataConfig, root: Path) -> StreamLayout:
    train_dir = root / cfg.train_split
    if not train_dir.is_dir():
        raise DataError(f"data.root={cfg.root!r} has no {cfg.train_split}/ folder: lay it out as {FOLDER_LAYOUT}")
    classes = class_folders(train_dir)
    val_name = cfg.val_split or ("val" if (root / "val").is_dir() and (root / "test").is_dir() else None)
    test_name = cfg.test_split or ("test" if (root / "test").is_dir() else "val")
    if not (root / test_name).is_dir():
        raise DataError(f"data.root={cfg.root!r} has neither test/ nor val/ next to {cfg.train_split}/: "
                        f"add one ({FOLDER_LAYOUT}) or name it with data.test_split=FOLDER")
    index = {c: k for k, c in enumerate(classes)}
    train = _folder_split(train_dir, index)
    val = _folder_split(_existing(root, val_name, "val_split"), index) if val_name else None
    test = _folder_split(_existing(root, test_name, "test_split"), index)
    return StreamLayout("folder", classes, train, val, test)


def _existing(root: Path, name: str, key: str) -> Path:
    path = root / name
    if not path.is_dir():
        raise DataError(f"data.{key}={name!r}: {path} is not a folder; name a split folder under data.root")
    return path


def class_folders(split_dir: Path) -> list[str]:
    """The sorted class folders of a split."""
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"{split_dir} has no class folders: put each class's images in {split_dir}/<class>/")
    return classes


def _folder_split(path: Path, index: dict[str, int]) -> FolderSplit:
    """The split's images through timm's folder reader, after checking its classes against ``train/``'s; a class
    folder that yields no image is an error (timm would drop it silently and renumber nothing)."""
    from timm.data.readers.reader_image_folder import find_images_and_targets

    classes = class_folders(path)
    if classes != list(index):
        missing, extra = sorted(set(index) - set(classes)), sorted(set(classes) - set(index))
        what = f"lacks {missing[:3]}" if missing else f"has {extra[:3]} that train/ lacks"
        raise DataError(f"{path} {what}: every split needs the same class folders as train/ ({len(index)} classes)")
    samples, _ = find_images_and_targets(str(path), types=tuple(IMAGE_EXTENSIONS), class_to_idx=index)
    found = {int(t) for _, t in samples}
    empty = [c for c, k in index.items() if k not in found]
    if empty:
        raise DataError(f"{path / empty[0]} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) of its own: put the "
                        "class's images directly in it, or remove the empty class folder")
    return FolderSplit(path, [(p, int(t)) for p, t in samples])


# -- tar shards --------------------------------------------------------------------------------------------
def _shard_layout(cfg: DataConfig, root: Path) -> StreamLayout:
    if not root.is_dir():
        raise DataError(f"data.root={cfg.root!r} must be the folder that holds the tar shards")
    default_train = cfg.train_split if cfg.train_split != "train" else "train-*.tar"
    train = _shard_split(root, default_train, "train_split")
    test_pattern = cfg.test_split or ("test-*.tar" if glob.glob(str(root / "test-*.tar")) else "val-*.tar")
    test = _shard_split(root, test_pattern, "test_split")
    val_pattern = cfg.val_split or ("val-*.tar" if test_pattern != "val-*.tar" and glob.glob(str(root / "val-*.tar")) else None)
    val = _shard_split(root, val_pattern, "val_split") if val_pattern else test
    classes = _shard_classes(root, max(max(s.labels, default=-1) for s in (train, val, test)) + 1)
    for split in (val, test):
        bad = [y for y in split.labels if not 0 <= y < len(classes)]
        if bad:
            raise DataError(f"{split.pattern}: class index {bad[0]} is outside train's {len(classes)} classes")
    return StreamLayout("wds", classes, train, val, test)


def _shard_split(root: Path, pattern: str, key: str) -> ShardSplit:
    """The shards matching ``pattern`` (a glob or brace range) and their samples' class indices."""
    from webdataset.shardlists import expand_urls

    parts = expand_urls(pattern)
    missing = [p for p in parts if not any(c in p for c in "*?[") and not (root / p).is_file()]
    if missing and len(missing) < len(parts):
        raise DataError(f"data.{key}={pattern!r}: shard {missing[0]} is missing under {root} ({len(missing)} of "
                        f"{len(parts)} missing); restore it or give a pattern that names only the shards there")
    shards = sorted({p for part in parts for p in glob.glob(str(root / part))})
    if not shards:
        raise DataError(f"data.{key}={pattern!r} matches no tar shard under {root}: give a pattern such as "
                        "train-{000000..000127}.tar or train-*.tar")
    labels: list[int] = []
    for shard in shards:
        labels.extend(_shard_labels(shard))
    if not labels:
        raise DataError(f"data.{key}={pattern!r}: the shards hold no samples with an image and a .cls label")
    return ShardSplit(pattern, shards, labels)


def _shard_labels(shard: str) -> list[int]:
    """The ``cls`` of each sample with an image in one tar (headers and the tiny label members only)."""
    images: set[str] = set()
    cls: dict[str, int] = {}
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if ext.lower() in SHARD_IMAGE_KEYS:
                    images.add(key)
                elif ext == "cls":
                    data = tar.extractfile(member)
                    cls[key] = int((data.read() if data else b"").strip())
    except (tarfile.TarError, OSError, ValueError) as e:
        raise DataError(f"{shard} is not a readable tar shard of images with .cls labels ({e}); rewrite or remove it") from e
    missing = sorted(images - set(cls))
    if missing:
        raise DataError(f"{shard}: sample {missing[0]!r} has an image but no .cls label; give every sample a class index")
    return [cls[k] for k in sorted(images)]


def _shard_classes(root: Path, count: int) -> list[str]:
    """Class names from ``classes.txt`` next to the shards (one per line), else ``0 .. count-1``."""
    names_file = root / "classes.txt"
    if names_file.is_file():
        names = [line.strip() for line in names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if len(names) < count:
            raise DataError(f"{names_file} names {len(names)} classes but the shards use class index {count - 1}; "
                            "list every class, one per line")
        return names
    return [str(k) for k in range(count)]
