"""Where a dataset's splits are: the one listing rule for class folders (a directory or a .zip) and tar shards.

Folders: ``train/<class>/…`` with ``val/`` (ImageNet's name) and/or ``test/``. With both, ``val/`` is validated on
each epoch and ``test/`` reported at the end; with one of them, it is the split reported at the end and
``data.val_fraction`` of ``train/`` is carved for validation. The class of an image is the first folder under its
split (deeper folders belong to it); hidden entries and anything but regular files are skipped; images are sorted by
``(class, path)``. Both data paths list through here, so they see the same images in the same splits.

Shards: WebDataset tars whose samples hold an image (``jpg``, ``png`` or ``webp``) and a ``cls`` class index.
Every problem is one :class:`DataError` line naming the path and the fix, raised before a model is built.
"""
from __future__ import annotations

import glob
import io
import os
import stat
import tarfile
import zipfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .config import SHARED_CIFAR10_ZIP, DataConfig

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
FOLDER_LAYOUT = "train/<class>/<image> with val/<class>/ (ImageNet) or test/<class>/"
SHARD_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
PROBES = 16


@dataclass(frozen=True)
class FolderSplit:
    """One split of class folders: its images (file paths, or member names of the zip) with their class indices."""

    path: str
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
class Layout:
    """The splits of a dataset on disk. ``val`` None: carve ``data.val_fraction`` of ``train`` (folders only)."""

    kind: str
    """``folder`` (a directory), ``zip`` or ``wds``."""
    root: Path
    classes: list[str]
    train: FolderSplit | ShardSplit
    val: FolderSplit | ShardSplit | None
    test: FolderSplit | ShardSplit

    def probe_size(self) -> tuple[int, int] | None:
        """The ``(h, w)`` shared by a few images spread over the training split, or None when they differ."""
        from PIL import Image

        if isinstance(self.train, ShardSplit):
            return None
        samples = self.train.samples
        picks = samples[:: max(1, len(samples) // PROBES)][:PROBES]
        sizes = set()
        with (zipfile.ZipFile(self.root) if self.kind == "zip" else nullcontext()) as archive:
            for name, _ in picks:
                try:
                    with Image.open(io.BytesIO(archive.read(name)) if archive else name) as img:
                        sizes.add((img.size[1], img.size[0]))
                except (OSError, ValueError, Image.DecompressionBombError):
                    continue  # an unreadable image is named when it is read
        return next(iter(sizes)) if len(sizes) == 1 else None


def find_layout(cfg: DataConfig) -> Layout:
    """The splits ``cfg`` names, checked: every split exists and is non-empty, and all have ``train``'s classes."""
    root = Path(cfg.root or "").expanduser()
    if not cfg.root or not root.exists():
        raise DataError(f"data.root={cfg.root!r} does not exist: set data.root=PATH ({FOLDER_LAYOUT}, a .zip of it, or "
                        f"a folder of tar shards), e.g. data.root={SHARED_CIFAR10_ZIP}")
    root = root.resolve()
    if cfg.name == "wds":
        return _shard_layout(cfg, root)
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise DataError(f"data.root={cfg.root!r} is not a .zip: give a directory or .zip of {FOLDER_LAYOUT}")
        return _folder_layout(cfg, root, _zip_tree(root, cfg.root), "zip")
    return _folder_layout(cfg, root, _dir_tree(root), "folder")


# -- class folders ---------------------------------------------------------------------------------------------
Tree = dict[str, dict[str, list[str]]]
"""split folder -> class folder -> image names (paths, or zip members), as found."""


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _dir_tree(root: Path) -> Tree:
    """Every split folder's class folders and their regular image files (any depth; symlinks followed)."""
    return {split.name: {c.name: sorted(_images_under(c.path)) for c in _subdirs(Path(split.path))}
            for split in _subdirs(root)}


def _subdirs(path: Path) -> list[os.DirEntry[str]]:
    with os.scandir(path) as entries:
        return sorted((e for e in entries if not e.name.startswith(".") and e.is_dir()), key=lambda e: e.name)


def _images_under(path: str) -> list[str]:
    found: list[str] = []
    with os.scandir(path) as entries:
        for e in entries:  # hidden entries are skipped (_is_image refuses them too)
            if e.is_dir() and not e.name.startswith("."):
                found.extend(_images_under(e.path))
            elif _is_image(e.name) and stat.S_ISREG(e.stat().st_mode):  # a FIFO or device named *.png is no image
                found.append(e.path)
    return found


def _zip_tree(root: Path, shown: str | None) -> Tree:
    """The same tree from a zip's member names; ``train/`` may sit at the top or inside one top-level folder."""
    with zipfile.ZipFile(root) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/") and not n.startswith("__MACOSX/")]
    prefix = ""
    if not any(n.startswith("train/") for n in names):
        tops = {n.split("/", 1)[0] for n in names if "/" in n}
        top = next(iter(tops)) if len(tops) == 1 else ""
        if not top or not any(n.startswith(f"{top}/train/") for n in names):
            raise DataError(f"data.root={shown!r} has no train/ folder: the zip must hold {FOLDER_LAYOUT}")
        prefix = f"{top}/"
    tree: Tree = {}
    for name in sorted(names):
        parts = name[len(prefix):].split("/") if name.startswith(prefix) else []
        if len(parts) >= 3 and not any(p.startswith(".") for p in parts[:-1]) and _is_image(parts[-1]):
            tree.setdefault(parts[0], {}).setdefault(parts[1], []).append(name)
    return tree


def _folder_layout(cfg: DataConfig, root: Path, tree: Tree, kind: str) -> Layout:
    train_name = cfg.train_split
    if train_name not in tree:
        raise DataError(f"data.root={cfg.root!r} has no {train_name}/ folder: lay it out as {FOLDER_LAYOUT}")
    val_name = cfg.val_split or ("val" if "val" in tree and "test" in tree else None)
    test_name = cfg.test_split or ("test" if "test" in tree else "val")
    for key, name in (("test_split", test_name), ("val_split", val_name)):
        if name is not None and name not in tree:
            if key == "test_split" and not cfg.test_split:
                raise DataError(f"data.root={cfg.root!r} has neither test/ nor val/ next to {train_name}/: add one "
                                f"({FOLDER_LAYOUT}) or name it with data.test_split=FOLDER")
            raise DataError(f"data.{key}={name!r}: {root / name} is not a folder; name a split folder under data.root")
    classes = sorted(tree[train_name])
    if not classes:
        raise DataError(f"{root / train_name} has no class folders: put each class's images in {train_name}/<class>/")
    index = {c: k for k, c in enumerate(classes)}

    def split(name: str) -> FolderSplit:
        found = tree[name]
        if sorted(found) != classes:
            missing, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
            what = f"lacks {missing[:3]}" if missing else f"has {extra[:3]} that {train_name}/ lacks"
            raise DataError(f"{root / name} {what}: each split needs the {len(classes)} class folders of {train_name}/")
        empty = [c for c in classes if not found[c]]
        if empty:
            raise DataError(f"{root / name / empty[0]} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}): put "
                            "the class's images in it, or remove the empty class folder")
        return FolderSplit(str(root / name), [(p, index[c]) for c in classes for p in found[c]])

    return Layout(kind, root, classes, split(train_name), split(val_name) if val_name else None, split(test_name))


# -- tar shards --------------------------------------------------------------------------------------------------
def _shard_layout(cfg: DataConfig, root: Path) -> Layout:
    if not root.is_dir():
        raise DataError(f"data.root={cfg.root!r} must be the folder that holds the tar shards")
    train = _shard_split(root, cfg.train_split if cfg.train_split != "train" else "train-*.tar", "train_split")
    test_pattern = cfg.test_split or ("test-*.tar" if glob.glob(str(root / "test-*.tar")) else "val-*.tar")
    test = _shard_split(root, test_pattern, "test_split")
    val_shards = test_pattern != "val-*.tar" and glob.glob(str(root / "val-*.tar"))
    val_pattern = cfg.val_split or ("val-*.tar" if val_shards else None)
    val = _shard_split(root, val_pattern, "val_split") if val_pattern else test
    classes = _shard_classes(root, max(max(s.labels, default=-1) for s in (train, val, test)) + 1)
    for split in (train, val, test):
        bad = [y for y in split.labels if not 0 <= y < len(classes)]
        if bad:
            raise DataError(f"{split.pattern}: class index {bad[0]} is outside [0, {len(classes)}); fix its .cls")
    return Layout("wds", root, classes, train, val, test)


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
        raise DataError(f"data.{key}={pattern!r} matches no tar shard under {root}; e.g. train-{{000000..000127}}.tar")
    labels = [y for shard in shards for y in _shard_labels(shard)]
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
        raise DataError(f"{shard} is not a readable tar shard of images with .cls labels ({e}); rewrite it") from e
    if not _ends_like_a_tar(shard):
        raise DataError(f"{shard} ends without a tar's end-of-archive blocks: it was cut short (a copy or a download "
                        "that stopped between two samples), so its last samples may be missing; copy it again")
    missing = sorted(images - set(cls))
    if missing:
        raise DataError(f"{shard}: sample {missing[0]!r} has an image but no .cls label; give every sample one")
    return [cls[k] for k in sorted(images)]


def _ends_like_a_tar(shard: str) -> bool:
    """Whether ``shard`` ends with the two zero blocks (1,024 bytes) that close every tar archive. A file cut at a
    member boundary still reads as a valid, shorter tar; only its missing end tells it apart."""
    size = os.path.getsize(shard)
    with open(shard, "rb") as f:
        f.seek(max(0, size - 1024))
        return size >= 1024 and not any(f.read(1024))


def _shard_classes(root: Path, count: int) -> list[str]:
    """Class names from ``classes.txt`` next to the shards (one per line), else ``0 .. count-1``."""
    names_file = root / "classes.txt"
    if names_file.is_file():
        try:
            text = names_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{names_file} is not UTF-8 (byte {exc.start}); save it as UTF-8, a class a line") from None
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if len(names) < count:
            raise DataError(f"{names_file} names {len(names)} classes but the shards use class index {count - 1}; "
                            "list every class, one per line")
        return names
    return [str(k) for k in range(count)]
