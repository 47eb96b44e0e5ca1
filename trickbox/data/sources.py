"""The memory path's sources: digits and CIFAR as tensors, and class folders (a directory or a .zip) decoded once.

:func:`load_dataset` turns a :class:`DataConfig` into split uint8 tensors (:class:`DatasetArrays`). Folders are
listed by :mod:`trickbox.data.layout` and split by :func:`~trickbox.data.splits.plan_folders`, the rule the stream
path follows too. Images are decoded with Pillow to RGB uint8, in a pool of worker processes for large sets; when
most of the images are needed, all of them are decoded once and cached (.npz keyed by path, size and mtime). An
unreadable image is skipped with a warning that names it, up to ``data.max_bad_fraction`` of its split.
"""
from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from itertools import repeat
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError, first_line, warn
from ..seeding import generator
from .arrays import DatasetArrays, channel_stats
from .config import MEMORY_ONLY, SHARED_CIFAR10_ZIP, DataConfig
from .layout import Layout, find_layout
from .splits import add_label_noise, plan_folders, plan_splits, stratified_take
from .streaming import READ_ERRORS, ignore_stop_signals

PARALLEL_MIN_IMAGES = 2000
WORKERS = 2
CHUNK = 1000
CACHE_VERSION = 2
DIGITS_TEST_FRACTION, DIGITS_TEST_SEED = 0.2, 0
"""The digits test split is fixed: it does not depend on ``data.split_seed``."""


def load_dataset(cfg: DataConfig, *, progress: bool = True, layout: Layout | None = None) -> DatasetArrays:
    """Load, split (val, then train subset, then test cap), add label noise and compute the training split's
    mean/std. A folder config whose ``crop`` is still ``auto`` is settled here from its images' size."""
    cfg.validate()
    if cfg.name in MEMORY_ONLY:
        return _tensor_dataset(cfg)
    layout = layout or find_layout(cfg)
    if cfg.crop == "auto":
        cfg = cfg.resolved(layout.probe_size())
    planned = plan_folders(layout, cfg)
    size = cfg.image_size if cfg.crop == "pad" else None  # the resized crop samples from the whole image
    images = _decoded(layout, [name for split in planned.values() for name in split.names], size, cfg, progress)
    parts: dict[str, tuple[Tensor, Tensor, Tensor, list[str]]] = {}
    for key, split in planned.items():
        x, ok = _take(images, key, split.names, cfg.max_bad_fraction)
        keep = torch.from_numpy(ok)
        parts[key] = (x, split.labels[keep], split.clean[keep], [n for n, good in zip(split.names, ok) if good])
    mean, std = channel_stats(parts["train"][0])
    return DatasetArrays(cfg.name, list(layout.classes), parts["train"][0], parts["train"][1], parts["train"][2],
                         parts["val"][0], parts["val"][1], parts["test"][0], parts["test"][1], mean, std,
                         files={k: p[3] for k, p in parts.items()})


# -- digits and CIFAR: tensors from scikit-learn and torchvision ---------------------------------------------------
def tensor_source(cfg: DataConfig) -> tuple[list[str], Tensor, Tensor, Tensor, Tensor]:
    """Digits or CIFAR whole: ``(classes, train_x, train_y, test_x, test_y)`` before any split is planned."""
    return _digits() if cfg.name == "digits" else _cifar(cfg)


def _tensor_dataset(cfg: DataConfig) -> DatasetArrays:
    classes, train_x, train_y, test_x, test_y = tensor_source(cfg)
    plan = plan_splits(train_y, test_y, len(classes), cfg)
    clean = train_y[plan.train]
    noisy = add_label_noise(clean, cfg.label_noise, len(classes), cfg.noise_seed)
    tx = train_x[plan.train].contiguous()
    mean, std = channel_stats(tx)
    return DatasetArrays(cfg.name, classes, tx, noisy, clean, train_x[plan.val].contiguous(), train_y[plan.val],
                         test_x[plan.test].contiguous(), test_y[plan.test], mean, std)


def _digits() -> tuple[list[str], Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's 8x8 digits as uint8 ``(N, 1, 8, 8)`` (0..16 scaled to 0..255) with a fixed 20 % test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)), 0, 255)
    x = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1).contiguous()
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    classes = [str(k) for k in range(10)]
    test, train = stratified_take(y, round(DIGITS_TEST_FRACTION * len(y)), len(classes),
                                  generator(DIGITS_TEST_SEED, "digits_test"))
    return classes, x[train], y[train], x[test], y[test]


def _cifar(cfg: DataConfig) -> tuple[list[str], Tensor, Tensor, Tensor, Tensor]:
    """CIFAR-10 or CIFAR-100 from the torchvision root ``cfg.root`` (default ``<cache_dir>/torchvision``)."""
    from torchvision import datasets

    root = cfg.root or str(cfg.resolved_cache_dir() / "torchvision")
    kind = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
    try:
        train, test = kind(root, train=True, download=cfg.download), kind(root, train=False, download=cfg.download)
    except (RuntimeError, OSError) as exc:
        title = "CIFAR-10" if cfg.name == "cifar10" else "CIFAR-100"
        what = f"download of {title} failed ({first_line(exc)})" if cfg.download else \
            f"{title} not found under data.root={root!r}"
        fixes = ("check the internet connection" if cfg.download else "set data.download=true (needs internet)") + \
            f" or point data.root at a torchvision {title} root"
        if cfg.name == "cifar10":
            fixes = f"use data.name=imagefolder data.root={SHARED_CIFAR10_ZIP} (offline JPEG copy), or " + fixes
        raise DataError(f"{what}: {fixes}") from None

    def images(data: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))

    return (list(train.classes), images(train.data), torch.as_tensor(train.targets, dtype=torch.int64),
            images(test.data), torch.as_tensor(test.targets, dtype=torch.int64))


# -- class folders: decoding, once, with a cache ----------------------------------------------------------------------
Decoded = tuple[dict[str, int], np.ndarray]
"""image name -> its row in the decoded images' array (-1: the image could not be read), and that array."""


def _decoded(layout: Layout, wanted: list[str], size: int | None, cfg: DataConfig, progress: bool) -> Decoded:
    """The ``wanted`` images decoded, from the cache when it holds them; when they are most of the layout's
    images, all of them are decoded and cached, so that other subsets of the same data decode nothing."""
    everything = sorted({n for split in (layout.train, layout.val, layout.test) if split is not None
                         for n, _ in split.samples})  # type: ignore[union-attr]
    if 2 * len(set(wanted)) <= len(everything):
        return _decode(layout, sorted(set(wanted)), size, cfg.interpolation, progress)
    path = _cache_file(layout, everything, size, cfg)
    try:
        with np.load(path, allow_pickle=False) as cached:
            if cached["names"].tolist() == everything:
                return dict(zip(everything, cached["rows"].tolist())), cached["images"]
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        pass  # no cache, or not one of these images: decode them
    rows, images = _decode(layout, everything, size, cfg.interpolation, progress)
    _save_cache(path, {"names": np.array(everything), "rows": np.array([rows[n] for n in everything]),
                       "images": images})
    return rows, images


def _take(decoded: Decoded, split: str, names: list[str], limit: float) -> tuple[Tensor, np.ndarray]:
    """The readable images of split ``split``'s ``names`` and which those are (a bool per name); more than ``limit``
    of the split unreadable is a :class:`DataError`."""
    rows = np.array([decoded[0][n] for n in names], dtype=np.int64)
    ok = rows >= 0
    bad = [n for n, good in zip(names, ok) if not good]
    if len(bad) > limit * len(names):
        raise DataError(f"data: {len(bad)} of {len(names):,} images of the {split} split could not be read, above "
                        f"data.max_bad_fraction={limit} (first: {bad[0]!r}); fix or remove the files, or raise "
                        "data.max_bad_fraction")
    return torch.from_numpy(np.ascontiguousarray(decoded[1][rows[ok]])), ok


def _decode(layout: Layout, names: list[str], size: int | None, interpolation: str, progress: bool) -> Decoded:
    """Decode ``names`` to one uint8 ``(n, 3, H, W)`` array (rows of the readable ones), in parallel when many."""
    from tqdm import tqdm

    chunks = [names[i:i + CHUNK] for i in range(0, len(names), CHUNK)]
    parts: list[tuple[np.ndarray, list[tuple[str, str]]]] = []
    with tqdm(total=len(names), desc="decoding images", unit="img", file=sys.stderr, disable=not progress) as bar:
        parallel = len(names) >= PARALLEL_MIN_IMAGES and (os.cpu_count() or 1) >= 2
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        pool = ProcessPoolExecutor(WORKERS, mp_context=ctx, initializer=ignore_stop_signals) if parallel else None
        try:
            run = pool.map if pool is not None else map
            for part in run(decode_chunk, chunks, _payloads(layout, chunks), repeat(size), repeat(interpolation)):
                parts.append(part)
                bar.update(len(part[0]) + len(part[1]))
        finally:  # a stop signal or an error: the chunks not begun are dropped, not decoded first
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
    arrays = [a for a, _ in parts if len(a)]
    sizes = {a.shape[2:] for a in arrays}
    if len(sizes) > 1:
        raise _size_error(*sorted(sizes)[:2])
    failures = [f for _, fs in parts for f in fs]
    for name, error in failures:
        warn(f"data: skipped unreadable image {name!r} ({error})")
    failed = {name for name, _ in failures}
    rows = {n: -1 for n in failed} | {n: r for r, n in enumerate(n for n in names if n not in failed)}
    return rows, np.concatenate(arrays) if arrays else np.zeros((0, 3, 1, 1), np.uint8)


def _payloads(layout: Layout, chunks: list[list[str]]) -> Iterator[list[bytes | None]]:
    with (zipfile.ZipFile(layout.root) if layout.kind == "zip" else nullcontext()) as archive:
        for chunk in chunks:
            yield [_read(archive, n) for n in chunk]


def _read(archive: zipfile.ZipFile | None, name: str) -> bytes | None:
    try:
        return archive.read(name) if archive is not None else Path(name).read_bytes()
    except (OSError, zipfile.BadZipFile, ValueError):
        return None


def decode_chunk(names: list[str], payload: list[bytes | None], size: int | None,
                 interpolation: str = "bilinear") -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Decode one chunk to uint8 ``(n, 3, H, W)`` (the readable images, in order) and the failures as
    ``(name, error)`` (runs in worker processes). ``size``: resize each image to that square first."""
    from PIL import Image

    resample = Image.Resampling.BICUBIC if interpolation == "bicubic" else Image.Resampling.BILINEAR
    images: list[np.ndarray] = []
    failures: list[tuple[str, str]] = []
    for name, blob in zip(names, payload):
        try:
            if blob is None:
                raise OSError("cannot be read")
            with Image.open(io.BytesIO(blob)) as img:
                rgb = img.convert("RGB")
                if size is not None and rgb.size != (size, size):
                    rgb = rgb.resize((size, size), resample)
                images.append(np.asarray(rgb, dtype=np.uint8))
        except READ_ERRORS as exc:
            failures.append((name, first_line(exc)))
            continue
        if images[-1].shape != images[0].shape:
            raise _size_error(images[0].shape[:2], images[-1].shape[:2], names[0], name)
    stacked = np.stack(images).transpose(0, 3, 1, 2) if images else np.zeros((0, 3, 1, 1), np.uint8)
    return np.ascontiguousarray(stacked), failures


def _size_error(hw_a: tuple[int, ...], hw_b: tuple[int, ...], a: str = "", b: str = "") -> DataError:
    """Images of sizes ``(h, w)`` ``hw_a`` and ``hw_b`` (named ``a`` and ``b`` when known) in one memory split."""
    which = f"{a!r} is {hw_a[0]}x{hw_a[1]}, {b!r} is {hw_b[0]}x{hw_b[1]}" if a else \
        f"{hw_a[0]}x{hw_a[1]} and {hw_b[0]}x{hw_b[1]}"
    return DataError(f"images differ in size ({which}): the memory path holds one size; use data.loader=stream, or "
                     "data.crop=pad with data.image_size=N to resize them all to NxN")


# -- the cache ---------------------------------------------------------------------------------------------------
def _cache_file(layout: Layout, names: list[str], size: int | None, cfg: DataConfig) -> Path:
    if layout.kind == "zip":
        st = layout.root.stat()
        stamp: tuple[int, ...] = (st.st_size, st.st_mtime_ns)
    else:
        stats = [os.stat(n) for n in names]
        stamp = (len(stats), sum(s.st_size for s in stats), max(s.st_mtime_ns for s in stats))
    key = "\x1f".join(repr(k) for k in (CACHE_VERSION, str(layout.root), stamp, size, cfg.interpolation, len(names)))
    return cfg.resolved_cache_dir() / f"imagefolder-{hashlib.blake2b(key.encode(), digest_size=10).hexdigest()}.npz"


def _save_cache(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` atomically (a temporary file, then ``os.replace``); a failure is a warning, never an error."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        warnings.warn(f"could not cache decoded images at {str(path)!r} ({exc}); set a writable data.cache_dir",
                      stacklevel=2)
