"""Opening a run's data: the listing, the augmentation settled from the images, the path that reads them, and why.

:func:`open_run_data` is what the training loop calls. The path changes speed, never the run: both paths list
the images by :mod:`~trickbox.data.layout`'s rule, split them by :func:`~trickbox.data.splits.plan_folders`, crop
and flip them with the settled :meth:`DataConfig.resolved` parameters, normalise them with the same statistics and
skip unreadable images up to the same limit. ``data.loader=auto`` takes the memory path when the decoded images fit
the budget and the memory path can do the augmentation asked for; an option the forced path cannot honour is one
line naming it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import DataError
from .config import MEMORY_ONLY, DataConfig
from .layout import Layout, find_layout
from .loaders import LoaderOptions, RunData
from .memory import eval_images, memory_run_data
from .sources import load_dataset
from .splits import PlannedSplit, plan_folders
from .streaming import TrainTransform, mean_std, transforms

NATIVE = {"digits": (8, 8), "cifar10": (32, 32), "cifar100": (32, 32)}


@dataclass(frozen=True)
class Choice:
    """Which path reads the data and why, with the settled config and the listing it was settled on."""

    path: str
    reason: str
    config: DataConfig
    layout: Layout | None
    native: tuple[int, int] | None


def open_run_data(cfg: DataConfig, options: LoaderOptions) -> RunData:
    """The run's data on the path ``cfg.loader`` chooses (``auto``: memory when it fits and can, else stream)."""
    choice = choose(cfg, options.device)
    if choice.path == "memory":
        arrays = load_dataset(choice.config, progress=options.progress, layout=choice.layout)
        return memory_run_data(arrays, _normalised(choice.config, arrays.mean, arrays.std), options, choice.reason)
    return _stream_run_data(choice, options)


def choose(cfg: DataConfig, device: torch.device) -> Choice:
    """``memory`` or ``stream`` for ``cfg``, and why; every layout check runs here, before anything is decoded."""
    cfg.validate()
    layout = None if cfg.name in MEMORY_ONLY else find_layout(cfg)
    native = NATIVE[cfg.name] if layout is None else layout.probe_size()
    settled = cfg.resolved(native)
    refusal = memory_refusal(settled, native)
    if layout is not None and layout.kind == "wds" and cfg.aug_repeats >= 2:
        raise DataError(f"data.aug_repeats={cfg.aug_repeats}: tar shards stream in order; use data.name=imagefolder")
    if layout is None and refusal:
        raise DataError(f"{refusal}, and data.name={cfg.name} is held in memory; use data.name=imagefolder")
    if cfg.loader == "memory":
        if refusal:
            raise DataError(f"data.loader=memory cannot honour this config: {refusal}; use data.loader=auto or stream")
        path, why = "memory", "data.loader=memory"
    elif layout is None:
        path, why = "memory", f"data.name={cfg.name} is held in memory"
    elif layout.kind == "zip":
        if cfg.loader == "stream" or refusal:
            raise DataError(f"{refusal or 'data.loader=stream'}, which needs the stream path, and the stream path "
                            f"reads a directory: extract data.root={cfg.root!r} and point data.root at the folder")
        path, why = "memory", "a .zip is decoded into memory; extract it to stream it"
    elif cfg.loader == "stream" or layout.kind == "wds":
        path, why = "stream", "data.loader=stream" if cfg.loader == "stream" else "tar shards are always streamed"
    else:
        path, why = ("stream", refusal) if refusal else _by_budget(settled, layout, native, device)
    return Choice(path, why, settled, layout, native)


def memory_refusal(cfg: DataConfig, native: tuple[int, int] | None) -> str | None:
    """Why the memory path cannot train settled config ``cfg`` as the stream path would (None: it can)."""
    if cfg.augment and cfg.auto_augment:
        return f"data.auto_augment={cfg.auto_augment!r} runs on single images in the stream path's workers"
    if cfg.augment and cfg.color_jitter:
        return f"data.color_jitter={cfg.color_jitter:g} runs on single images in the stream path's workers"
    if cfg.crop == "resized" and native is None:
        return "the images differ in size, and the resized crop samples from each whole image"
    if cfg.crop == "resized" and cfg.interpolation != "bilinear":
        return f"data.interpolation={cfg.interpolation} (the memory path resamples bilinearly)"
    if cfg.crop == "pad" and cfg.image_size and cfg.interpolation == "random":
        return "data.interpolation=random (the memory path resizes each image once)"
    return None


def _by_budget(cfg: DataConfig, layout: Layout, native: tuple[int, int] | None,
               device: torch.device) -> tuple[str, str]:
    """``memory`` when the decoded images fit the budget, else ``stream``, and why. The budget is
    ``data.memory_budget_gb``, else a quarter of this machine's memory per local process, and on a GPU at most a third
    of its memory."""
    if cfg.memory_budget_gb is not None:
        budget = int(cfg.memory_budget_gb * 2**30)
    else:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
        budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4 // local
        if device.type == "cuda":
            budget = min(budget, torch.cuda.get_device_properties(device).total_memory // 3)
    images = sum(len(s.samples) for s in (layout.train, layout.val, layout.test) if s is not None)  # type: ignore[union-attr]
    h, w = (cfg.image_size, cfg.image_size) if cfg.crop == "pad" and cfg.image_size else native or (0, 0)
    need = images * 3 * h * w
    where = f"data.memory_budget_gb={cfg.memory_budget_gb}" if cfg.memory_budget_gb else "the default budget"
    verdict = "fits" if need <= budget else "exceeds"
    reason = f"{images:,} images, {need / 2**30:.2f} GiB decoded, {verdict} {where} of {budget / 2**30:.1f} GiB"
    return "memory" if need <= budget else "stream", reason


def _normalised(cfg: DataConfig, train_mean: tuple[float, ...], train_std: tuple[float, ...]) -> DataConfig:
    """``cfg`` with its normalisation settled: as set; else the training split's with the pad crop, ImageNet's with
    the resized crop."""
    if cfg.mean and cfg.std:
        return cfg
    mean, std = (train_mean, train_std) if cfg.crop == "pad" else mean_std(cfg)
    return dataclasses.replace(cfg, mean=[float(v) for v in mean], std=[float(v) for v in std])


def _stream_run_data(choice: Choice, options: LoaderOptions) -> RunData:
    from .folders import folder_run_data
    from .shards import shard_run_data

    cfg, layout = choice.config, choice.layout
    assert layout is not None
    planned = None if layout.kind == "wds" else plan_folders(layout, cfg)
    measured = cfg.crop == "pad" and not (cfg.mean and cfg.std)
    cfg = _normalised(cfg, *(_stream_stats(cfg, layout, planned, choice.native) if measured else ((), ())))
    train_tf = TrainTransform(cfg, cfg.mean or (), cfg.std or (), native=choice.native)
    if planned is None:
        return shard_run_data(layout, cfg, train_tf, train_tf.evaluation, options, choice.reason)
    return folder_run_data(planned, layout.classes, cfg, train_tf, train_tf.evaluation, options, choice.reason)


def _stream_stats(cfg: DataConfig, layout: Layout, planned: dict[str, PlannedSplit] | None,
                  native: tuple[int, int] | None) -> tuple[tuple[float, ...], ...]:
    """The training images' mean and std for the pad crop on the stream path (one streamed pass, cached by the
    images' names, sizes and times)."""
    from .folders import training_stats as folder_stats
    from .shards import training_stats as shard_stats

    names = list(layout.train.shards) if planned is None else planned["train"].names  # type: ignore[union-attr]
    stamps = [(n, os.stat(n).st_size, os.stat(n).st_mtime_ns) for n in names]
    key = hashlib.blake2b(repr((stamps, cfg.image_size, cfg.interpolation)).encode(), digest_size=10).hexdigest()
    path = cfg.resolved_cache_dir() / f"stats-{key}.json"
    try:
        saved = json.loads(path.read_text())
        return tuple(saved["mean"]), tuple(saved["std"])
    except (OSError, ValueError, KeyError):
        pass
    _, eval_tf = transforms(cfg, *mean_std(cfg), native=native)
    mean, std = shard_stats(layout.train, cfg, eval_tf) if planned is None else \
        folder_stats(planned["train"], cfg, eval_tf)  # type: ignore[arg-type]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"mean": mean, "std": std}))
        os.replace(tmp, path)
    except OSError:
        pass  # only a cache: the next run measures again
    return mean, std


@dataclass(frozen=True)
class EvalSplit:
    """One evaluation split of a run for ``trickbox eval``: uint8 batches on the CPU, viewed as training viewed it."""

    batches: Callable[[], Iterator[tuple[Tensor, Tensor]]]
    images: int
    num_classes: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def eval_split(cfg: DataConfig, split: str, *, batch_size: int, progress: bool = False) -> EvalSplit:
    """``split`` (``val`` or ``test``) of ``cfg``'s data, read on the path that ``cfg`` chooses."""
    choice = choose(cfg, torch.device("cpu"))
    options = LoaderOptions(batch_size=batch_size, eval_batch_size=batch_size, seed=0, progress=progress)
    if choice.path == "stream":
        data = _stream_run_data(choice, options)
        loader = data.test if split == "test" else data.val
        return EvalSplit(lambda: ((x, y) for x, y, _ in loader.batches(normalise=False)),  # type: ignore[attr-defined]
                         data.sizes[split], data.num_classes, 3, data.mean, data.std)
    arrays = load_dataset(choice.config, progress=progress, layout=choice.layout)
    settled = _normalised(choice.config, arrays.mean, arrays.std)
    x, y = (arrays.test_x, arrays.test_y) if split == "test" else (arrays.val_x, arrays.val_y)
    x = eval_images(x, settled)
    return EvalSplit(lambda: ((x[s:s + batch_size], y[s:s + batch_size]) for s in range(0, len(y), batch_size)),
                     len(y), arrays.num_classes, arrays.in_chans, tuple(settled.mean or ()), tuple(settled.std or ()))
