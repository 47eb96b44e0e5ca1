"""ImageFolder-layout images (``train/<class>/*``, ``test/<class>/*``) from a directory or straight from a .zip.

Images are decoded with Pillow to RGB uint8, in a pool of worker processes for large sets. When most of
the images are needed, all of them are decoded once and cached (.npz keyed by path, size and mtime);
a small selection (at most half of the images, e.g. ``train_subset`` runs) is decoded alone and not cached.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .cache import cache_file, load_arrays, save_arrays
from .config import SHARED_CIFAR10_ZIP, DataConfig
from ..errors import DataError
from .source import Source, in_memory_source

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
SPLITS = ("train", "test")
PARALLEL_MIN_IMAGES = 2000
WORKERS = 2
CHUNK = 1000
LAYOUT = "a directory or .zip with train/<class>/<image> and test/<class>/<image> (or val/<class>/<image>)"

BlobFn = Callable[[list[str]], list[bytes]]


@dataclass(frozen=True)
class Listing:
    """Image names (zip members or file paths) and labels of both splits, sorted by (class, name)."""

    classes: list[str]
    train: list[str]
    train_y: Tensor
    test: list[str]
    test_y: Tensor


def imagefolder_source(cfg: DataConfig, *, progress: bool) -> Source:
    """A :class:`Source` over ``cfg.root`` (directory or .zip), served from the cache when possible."""
    shown = cfg.root or ""
    root = Path(shown).expanduser()
    if not shown or not root.exists():
        raise DataError(
            f"data.root={cfg.root!r} does not exist: set data.root=PATH ({LAYOUT}), "
            f"e.g. data.root={SHARED_CIFAR10_ZIP}"
        )
    cache_dir = cfg.resolved_cache_dir()
    if root.is_file():
        if not zipfile.is_zipfile(root):
            raise DataError(f"data.root={shown!r} is a file but not a .zip: point data.root at {LAYOUT}")
        st = root.stat()
        path = cache_file(cache_dir, "imagefolder", str(root.resolve()), st.st_size, st.st_mtime_ns, cfg.image_size)
        cached = _cached_source(path)
        if cached is not None:
            return cached
        archive = zipfile.ZipFile(root)
        try:
            listing = list_zip(archive, shown)
        except BaseException:
            archive.close()
            raise

        def blobs(names: list[str]) -> list[bytes]:
            return [archive.read(n) for n in names]

        return _decoding_source(listing, blobs, path, cfg.image_size, progress, archive.close)
    listing, stamp = list_directory(root, shown)
    path = cache_file(cache_dir, "imagefolder", str(root.resolve()), *stamp, cfg.image_size)
    cached = _cached_source(path)
    if cached is not None:
        return cached
    return _decoding_source(listing, _read_files, path, cfg.image_size, progress, _no_close)


def list_zip(archive: zipfile.ZipFile, shown: str) -> Listing:
    """The images of a zip; ``train/`` may sit at the top or inside one top-level folder."""
    names = [n for n in archive.namelist() if not n.endswith("/") and not n.startswith("__MACOSX/")]
    prefix = ""
    if not any(n.startswith("train/") for n in names):
        tops = {n.split("/", 1)[0] for n in names if "/" in n}
        top = next(iter(tops)) if len(tops) == 1 else ""
        if not top or not any(n.startswith(f"{top}/train/") for n in names):
            raise DataError(f"data.root={shown!r} has no train/ folder: the zip must hold {LAYOUT}")
        prefix = f"{top}/"
    entries: dict[str, list[tuple[str, str]]] = {s: [] for s in (*SPLITS, "val")}
    for name in names:
        if not name.startswith(prefix):
            continue
        parts = name[len(prefix) :].split("/")
        if len(parts) >= 3 and parts[0] in entries and _is_image(parts):
            entries[parts[0]].append((parts[1], name))
    if not entries["test"]:  # ImageNet's layout: val/ is the split reported at the end
        entries["test"] = entries["val"]
    return _listing(entries, shown)


def list_directory(root: Path, shown: str) -> tuple[Listing, tuple[int, int, int]]:
    """The images under a directory, and a (count, total bytes, newest mtime) stamp for the cache key."""
    entries: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    count = total = newest = 0
    for split in SPLITS:
        base = root / split
        if split == "test" and not base.is_dir() and (root / "val").is_dir():
            base = root / "val"  # ImageNet's layout: val/ is the split reported at the end
        if not base.is_dir():
            raise DataError(f"data.root={shown!r} has no {split}/ folder: point data.root at {LAYOUT}")
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel = Path(dirpath).relative_to(base).parts
            for fname in sorted(filenames):
                if rel and _is_image((*rel, fname)):
                    full = os.path.join(dirpath, fname)
                    st = os.stat(full)
                    count, total, newest = count + 1, total + st.st_size, max(newest, st.st_mtime_ns)
                    entries[split].append((rel[0], full))
    return _listing(entries, shown), (count, total, newest)


def _is_image(parts: Sequence[str]) -> bool:
    if any(p.startswith(".") for p in parts):
        return False
    return os.path.splitext(parts[-1])[1].lower() in IMAGE_EXTENSIONS


def _listing(entries: dict[str, list[tuple[str, str]]], shown: str) -> Listing:
    for split in SPLITS:
        if not entries[split]:
            raise DataError(f"data.root={shown!r} has no images under {split}/<class>/: point data.root at {LAYOUT}")
    classes = sorted({c for c, _ in entries["train"]})
    index = {c: k for k, c in enumerate(classes)}
    extra = sorted({c for c, _ in entries["test"]} - set(classes))
    if extra:
        raise DataError(
            f"data.root={shown!r}: test/ has class folder {extra[0]!r} that train/ lacks; "
            "give train/ and test/ the same class folders"
        )
    out: dict[str, tuple[list[str], Tensor]] = {}
    for split in SPLITS:
        pairs = sorted(entries[split], key=lambda p: (index[p[0]], p[1]))
        out[split] = ([n for _, n in pairs], torch.tensor([index[c] for c, _ in pairs], dtype=torch.int64))
    return Listing(classes, out["train"][0], out["train"][1], out["test"][0], out["test"][1])


def _cached_source(path: Path) -> Source | None:
    arrays = load_arrays(path)
    needed = {"classes", "train_x", "train_y", "test_x", "test_y"}
    if arrays is None or not needed <= arrays.keys():
        return None
    t = {k: torch.from_numpy(arrays[k]) for k in ("train_x", "train_y", "test_x", "test_y")}
    return in_memory_source([str(c) for c in arrays["classes"]], t["train_x"], t["train_y"], t["test_x"], t["test_y"])


def _decoding_source(
    listing: Listing, blobs: BlobFn, path: Path, size: int | None, progress: bool, close: Callable[[], None]
) -> Source:
    def read(train_idx: Tensor, test_idx: Tensor) -> tuple[Tensor, Tensor]:
        n_all = len(listing.train) + len(listing.test)
        if 2 * (len(train_idx) + len(test_idx)) <= n_all:
            names = [listing.train[i] for i in train_idx.tolist()] + [listing.test[i] for i in test_idx.tolist()]
            images = decode(names, blobs, size, progress)
            return images[: len(train_idx)], images[len(train_idx) :]
        images = decode(listing.train + listing.test, blobs, size, progress)
        train_x, test_x = images[: len(listing.train)], images[len(listing.train) :]
        arrays = {
            "classes": np.array(listing.classes),
            "train_x": train_x.numpy(),
            "train_y": listing.train_y.numpy(),
            "test_x": test_x.numpy(),
            "test_y": listing.test_y.numpy(),
        }
        save_arrays(path, arrays)
        return train_x[train_idx], test_x[test_idx]

    return Source(listing.classes, listing.train_y, listing.test_y, read=read, close=close)


def decode(names: list[str], blobs: BlobFn, size: int | None, progress: bool) -> Tensor:
    """Decode ``names`` (read through ``blobs``) to a uint8 ``(n, 3, H, W)`` tensor, in parallel when many."""
    chunks = [names[i : i + CHUNK] for i in range(0, len(names), CHUNK)]
    payloads: Iterator[list[bytes]] = (blobs(chunk) for chunk in chunks)
    parts: list[np.ndarray] = []
    with tqdm(total=len(names), desc="decoding images", unit="img", file=sys.stderr, disable=not progress) as bar:
        if len(names) >= PARALLEL_MIN_IMAGES and (os.cpu_count() or 1) >= 2:
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            pool = ProcessPoolExecutor(WORKERS, mp_context=ctx)
            try:
                for part in pool.map(decode_chunk, chunks, payloads, repeat(size)):
                    parts.append(part)
                    bar.update(len(part))
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            for chunk, payload in zip(chunks, payloads):
                parts.append(decode_chunk(chunk, payload, size))
                bar.update(len(chunk))
    for chunk, part in zip(chunks, parts):
        if part.shape[1:] != parts[0].shape[1:]:
            raise _size_error(chunks[0][0], parts[0].shape, chunk[0], part.shape)
    return torch.from_numpy(np.concatenate(parts) if len(parts) > 1 else parts[0])


def decode_chunk(names: list[str], payload: list[bytes], size: int | None) -> np.ndarray:
    """Decode one chunk of encoded images to uint8 ``(n, 3, H, W)`` (runs in worker processes)."""
    from PIL import Image

    images: list[np.ndarray] = []
    for name, blob in zip(names, payload):
        try:
            with Image.open(io.BytesIO(blob)) as img:
                if size is not None:
                    img.draft("RGB", (size, size))
                rgb = img.convert("RGB")
                if size is not None and rgb.size != (size, size):
                    rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
                images.append(np.asarray(rgb, dtype=np.uint8))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"cannot decode image {name!r} ({exc}); remove or replace the file") from None
        if images[-1].shape != images[0].shape:
            raise _size_error(names[0], _chw(images[0].shape), name, _chw(images[-1].shape))
    return np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))


def _chw(hwc: tuple[int, ...]) -> tuple[int, ...]:
    return (1, hwc[2], hwc[0], hwc[1])


def _size_error(a: str, shape_a: tuple[int, ...], b: str, shape_b: tuple[int, ...]) -> DataError:
    return DataError(
        f"images differ in size (HxW: {a!r} is {shape_a[2]}x{shape_a[3]}, {b!r} is {shape_b[2]}x{shape_b[3]}): "
        "set data.image_size=N to resize all images to NxN"
    )


def _read_files(paths: list[str]) -> list[bytes]:
    return [Path(p).read_bytes() for p in paths]


def _no_close() -> None:
    return None
