"""The data of one run: which path reads it (memory or stream), and its loaders for this process.

:func:`open_run_data` is what the training loop calls. Whatever the path, a
run gets the same things: a training loader with the :class:`TrainLoader`
methods, and evaluation loaders that yield this process's disjoint part of
each split (metrics are summed over processes, so nothing is counted twice).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from .arrays import DatasetArrays
from .config import MEMORY_ONLY, STREAM_ONLY, DataConfig
from .load import load_dataset
from .loader import InMemoryLoader, make_eval_loader
from .run_data import EvalLoader, RunData, TrainLoader

__all__ = ["EvalLoader", "EvalSplit", "RunData", "TrainLoader", "choose_path", "eval_split", "memory_budget", "open_run_data"]


def open_run_data(
    cfg: DataConfig,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    want_fit: bool = False,
) -> RunData:
    """The run's data on the path ``cfg.loader`` chooses (``auto``: memory when it fits, else stream)."""
    cfg.validate()
    path, reason, layout = _choose(cfg, device)
    options = dict(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, device=device, rank=rank,
                   world_size=world_size, want_fit=want_fit, reason=reason)
    if path == "stream":
        from .layout import find_layout
        from .stream_run import stream_run_data

        return stream_run_data(cfg, layout or find_layout(cfg), **options)  # type: ignore[arg-type]
    return memory_run_data(load_dataset(cfg, progress=progress), cfg, **options)  # type: ignore[arg-type]


def memory_budget(cfg: DataConfig, device: torch.device) -> int:
    """``data.memory_budget_gb`` in bytes, else a quarter of this machine's memory per local process, and on a GPU
    at most a third of its memory."""
    if cfg.memory_budget_gb is not None:
        return int(cfg.memory_budget_gb * 2**30)
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    budget = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4 // local
    if device.type == "cuda":
        budget = min(budget, torch.cuda.get_device_properties(device).total_memory // 3)
    return int(budget)


def choose_path(cfg: DataConfig, *, device: torch.device) -> tuple[str, str]:
    """``(memory | stream, why)`` for ``cfg``; ``auto`` weighs the decoded size of every split against the budget.
    A streamed layout is checked here (missing splits, empty class folders, shards that match nothing)."""
    path, reason, _ = _choose(cfg, device)
    return path, reason


def _choose(cfg: DataConfig, device: torch.device) -> tuple[str, str, Any]:
    from .layout import find_layout

    root = Path(cfg.root or "").expanduser()
    streamable = cfg.name not in MEMORY_ONLY and not root.is_file()
    if cfg.loader != "auto":
        return cfg.loader, f"data.loader={cfg.loader}", find_layout(cfg) if cfg.loader == "stream" else None
    if cfg.name in MEMORY_ONLY:
        return "memory", f"data.name={cfg.name} is held in memory", None
    if cfg.name in STREAM_ONLY:
        return "stream", "tar shards are always streamed", find_layout(cfg)
    if not streamable:
        return "memory", "a .zip is decoded into memory; extract it to stream it", None
    layout = find_layout(cfg)  # the bad-layout checks run here, before anything is decoded
    paths = [p for split in (layout.train, layout.val, layout.test) if split is not None for p, _ in split.samples]  # type: ignore[union-attr]
    shape = _probe_size(paths, cfg.image_size)
    if shape is None:
        return "stream", "the images differ in size and data.image_size is unset", layout
    need, budget = len(paths) * 3 * shape[0] * shape[1], memory_budget(cfg, device)
    verdict = "fits" if need <= budget else "exceeds"
    where = f"data.memory_budget_gb={cfg.memory_budget_gb}" if cfg.memory_budget_gb else "the default budget"
    reason = f"{len(paths):,} images, {need / 2**30:.2f} GiB decoded, {verdict} {where} of {budget / 2**30:.1f} GiB"
    return ("memory" if need <= budget else "stream"), reason, layout


def _probe_size(paths: list[str], image_size: int | None, probes: int = 16) -> tuple[int, int] | None:
    """The decoded ``(h, w)`` of every image: ``image_size`` square, else the size shared by a few probed images."""
    if image_size:
        return image_size, image_size
    from PIL import Image

    step = max(1, len(paths) // probes)
    sizes = set()
    for p in paths[::step][:probes]:
        with Image.open(p) as img:
            sizes.add(img.size)
    return (next(iter(sizes))[1], next(iter(sizes))[0]) if len(sizes) == 1 else None


def memory_run_data(
    arrays: DatasetArrays,
    cfg: DataConfig,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    device: torch.device,
    rank: int,
    world_size: int,
    want_fit: bool,
    reason: str,
) -> RunData:
    """Decoded splits: the training split on the device with batched crop and flip there."""
    mean, std = arrays.mean, arrays.std
    train = InMemoryLoader(
        arrays.train_x, arrays.train_y, batch_size=batch_size, device=device, mean=mean, std=std,
        augment=cfg.augment, crop_padding=cfg.effective_crop_padding(min(arrays.image_hw)),
        flip=cfg.effective_flip(), seed=seed, rank=rank, world_size=world_size,
    )

    def part(x: Tensor, y: Tensor) -> EvalLoader:  # this process's disjoint share of a split
        return make_eval_loader(x[rank::world_size], y[rank::world_size], batch_size=eval_batch_size, mean=mean, std=std)

    return RunData(
        path="memory", reason=reason, classes=list(arrays.classes), in_chans=arrays.in_chans, mean=mean, std=std,
        train=train, val=part(arrays.val_x, arrays.val_y), test=part(arrays.test_x, arrays.test_y),
        fit=part(arrays.train_x, arrays.train_y) if want_fit else None, arrays=arrays,
        sizes={"train": len(arrays.train_y), "val": len(arrays.val_y), "test": len(arrays.test_y)},
    )


@dataclass(frozen=True)
class EvalSplit:
    """One evaluation split of a run for ``trickbox eval``: uint8 batches on the CPU, on the run's data path."""

    batches: Callable[[], Iterator[tuple[Tensor, Tensor]]]
    images: int
    num_classes: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


def eval_split(cfg: DataConfig, split: str, *, batch_size: int, progress: bool = False) -> EvalSplit:
    """``split`` (``val`` or ``test``) of ``cfg``'s data, read the way training read it (memory or stream)."""
    path, _, layout = _choose(cfg, torch.device("cpu"))
    if path == "stream":
        from .layout import find_layout
        from .stream_run import mean_std, raw_split

        layout = layout or find_layout(cfg)
        batches, n = raw_split(cfg, layout, split, batch_size=batch_size)
        return EvalSplit(batches, n, len(layout.classes), 3, *mean_std(cfg))
    data = load_dataset(cfg, progress=progress)
    x, y = (data.test_x, data.test_y) if split == "test" else (data.val_x, data.val_y)

    def batches() -> Iterator[tuple[Tensor, Tensor]]:
        return ((x[s : s + batch_size], y[s : s + batch_size]) for s in range(0, len(y), batch_size))

    return EvalSplit(batches, len(y), data.num_classes, data.in_chans, tuple(data.mean), tuple(data.std))
