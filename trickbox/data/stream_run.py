"""A run's loaders on the stream path: class folders (random access) or tar shards (read in order)."""
from __future__ import annotations

from typing import Any

import torch

from .config import DataConfig
from .layout import ShardSplit, StreamLayout
from .run_data import RunData
from .shards import ShardTrainLoader, shard_eval_loader
from .stream import BadImages, FolderImages, FolderTrainLoader, Transform, eval_loader, folder_run_parts, transforms
from ..errors import DataError


def mean_std(cfg: DataConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``data.mean`` / ``data.std``, else ImageNet's (timm's constants): the stream path has no decoded split to measure."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return (tuple(cfg.mean), tuple(cfg.std)) if cfg.mean and cfg.std else (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)


def stream_run_data(cfg: DataConfig, layout: StreamLayout, *, batch_size: int, eval_batch_size: int, seed: int, device: torch.device,
                    rank: int, world_size: int, want_fit: bool, reason: str) -> RunData:
    """Loaders that read, decode and augment images in worker processes; this process's part of every split."""
    mean, std = mean_std(cfg)
    train_tf, eval_tf = transforms(cfg, mean, std)
    common = dict(device=device, mean=mean, std=std)
    if layout.kind == "wds":
        return _shard_data(layout, cfg, train_tf, eval_tf, batch_size=batch_size, eval_batch_size=eval_batch_size,
                           seed=seed, rank=rank, world_size=world_size, want_fit=want_fit, reason=reason, **common)
    parts = folder_run_parts(layout, cfg)
    train_paths, train_y = parts["train"]
    train = FolderTrainLoader(FolderImages(train_paths, train_y, train_tf, seed, "train"), cfg, batch_size=batch_size,
                              seed=seed, rank=rank, world_size=world_size, **common)

    def split(name: str) -> object:  # this rank's disjoint share, in order
        paths, labels = parts[name]
        images = FolderImages(paths, labels, eval_tf, seed, name)
        keys = [(0, i) for i in range(rank, len(paths), world_size)]
        return eval_loader(images, keys, cfg, batch_size=eval_batch_size, bad=BadImages(cfg.max_bad_fraction, len(keys) or 1),
                           **common)

    return RunData(path="stream", reason=reason, classes=list(layout.classes), in_chans=3, mean=mean, std=std,
                   train=train, val=split("val"), test=split("test"), fit=split("train") if want_fit else None,
                   sizes={k: len(v[0]) for k, v in parts.items()})


def _shard_data(layout: StreamLayout, cfg: DataConfig, train_tf: Transform, eval_tf: Transform, *, batch_size: int,
                eval_batch_size: int, seed: int, rank: int, world_size: int, want_fit: bool, reason: str,
                device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]) -> RunData:
    """Loaders over tar shards: ``val`` shards, else the test shards stand in for validation too."""
    assert isinstance(layout.train, ShardSplit) and isinstance(layout.test, ShardSplit)
    if cfg.label_noise > 0 or cfg.train_subset or cfg.test_subset:
        raise DataError("data.label_noise, train_subset and test_subset need random access; tar shards have none: "
                        "write the subset as shards of its own, or use class folders")
    val = layout.val  # the val shards, or the test shards themselves (find_layout)
    assert isinstance(val, ShardSplit)
    train = ShardTrainLoader(layout.train, train_tf, cfg, batch_size=batch_size, device=device, mean=mean, std=std,
                             seed=seed, world_size=world_size)

    def split(s: ShardSplit) -> object:
        return shard_eval_loader(s, eval_tf, cfg, batch_size=eval_batch_size, device=device, mean=mean, std=std,
                                 rank=rank, world_size=world_size)

    shared = " (val/ is also the test split)" if val is layout.test else ""
    return RunData(path="stream", reason=reason + shared, classes=list(layout.classes), in_chans=3, mean=mean, std=std,
                   train=train, val=split(val), test=split(layout.test), fit=split(layout.train) if want_fit else None,
                   sizes={"train": layout.train.num_samples, "val": val.num_samples, "test": layout.test.num_samples})


def raw_split(cfg: DataConfig, layout: StreamLayout, split: str, *, batch_size: int) -> tuple[Any, int]:
    """``(batches, images)`` of one evaluation split on the stream path, for ``trickbox eval``: a callable giving
    batches of uint8 ``(B, 3, H, W)`` images and labels on the CPU, after the evaluation transform."""
    mean, std = mean_std(cfg)
    _, eval_tf = transforms(cfg, mean, std)
    cpu = torch.device("cpu")
    if layout.kind == "wds":
        shards = layout.test if split == "test" else layout.val
        assert isinstance(shards, ShardSplit)
        stream = shard_eval_loader(shards, eval_tf, cfg, batch_size=batch_size, device=cpu, mean=mean, std=std,
                                   rank=0, world_size=1)
        count = shards.num_samples
    else:
        paths, labels = folder_run_parts(layout, cfg)[split]
        stream = eval_loader(FolderImages(paths, labels, eval_tf, 0, split), [(0, i) for i in range(len(paths))], cfg,
                             batch_size=batch_size, device=cpu, mean=mean, std=std, bad=BadImages(cfg.max_bad_fraction, 1))
        count = len(paths)
    return (lambda: ((x, y) for x, y, _ in stream.batches(normalise=False))), count
