"""WebDataset tar shards on the stream path: training through timm's reader, evaluation in shard order.

Training uses ``timm.data.create_dataset("wds/...")``: the shards are shuffled per epoch with a seed common
to all ranks, then dealt out to ranks and workers, so each rank reads only its own shards; every worker yields
the same number of samples (repeating its shards when they run short), so all ranks take the same number of
steps. Workers are started afresh each epoch with seeds from ``(seed, epoch)``: a resumed epoch reads the
same samples in the same order, and the batches before the resume point are read and dropped.

Evaluation reads rank ``r``'s shards ``shards[r::world]`` in order, each sample exactly once (timm's reader
pads validation across ranks instead), so metrics summed over ranks count every image once.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from .config import DataConfig
from .layout import SHARD_IMAGE_KEYS, ShardSplit
from .stream import BadImages, Item, OnDevice, Transform, default_workers, loader_options
from ..errors import DataError
from ..seeding import derive_seed, generator


NO_RANDOM_ACCESS = ("tar shards have no random access, so tricks.mixup.pairing=knn cannot fetch partners; "
                    "use pairing=random, or class folders (data.name=imagefolder)")


class _Items(IterableDataset[Item]):
    """timm's WebDataset reader with ``transform``, as :class:`Item` records (no dataset positions: index -1)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __iter__(self) -> Iterator[Item]:
        for image, label in self.dataset:
            yield Item(image, int(label), -1)


class ShardTrainLoader:
    """Training batches of tar shards (the :class:`~trickbox.data.run.TrainLoader` methods, without random access)."""

    def __init__(self, split: ShardSplit, transform: Transform, cfg: DataConfig, *, batch_size: int,
                 device: torch.device, mean: Sequence[float], std: Sequence[float], seed: int, world_size: int) -> None:
        from timm.data import create_dataset

        self.cfg, self.batch_size, self.device, self.seed, self.pattern = cfg, batch_size, device, seed, split.pattern
        self.dataset = create_dataset("wds/", root="/", split="::".join(split.shards) + f"|{split.num_samples}",
                                      is_training=True, batch_size=batch_size, seed=derive_seed(seed, "shards") % (1 << 31))
        self.dataset.transform = transform
        self.dataset.set_loader_cfg(num_workers=default_workers(cfg))
        self.labels = torch.tensor(split.labels, dtype=torch.int64, device=device)
        self.bad = BadImages(cfg.max_bad_fraction, math.ceil(split.num_samples / world_size))
        self.mean, self.std = mean, std
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def batches(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        options = loader_options(self.cfg, self.device, persistent=False)
        loader = DataLoader(_Items(self.dataset), batch_size=self.batch_size, generator=generator(self.seed, "shards", self.epoch),
                            **options)
        read = start
        for batch in OnDevice(loader, self.device, self.mean, self.std, self.bad).batches(skip=start):
            read += 1
            yield batch
        if read < len(self):  # timm's reader logs and skips shards it cannot open
            raise DataError(f"data: the tar shards gave {read} of this epoch's {len(self)} batches (see the webdataset "
                            f"errors above); check that every shard of {self.pattern!r} is readable")

    def fetch(self, indices: Tensor, *, epoch_step: int) -> Tensor:
        raise DataError(NO_RANDOM_ACCESS)

    def knn_features(self) -> tuple[Tensor, Tensor]:
        raise DataError(NO_RANDOM_ACCESS)

    def close(self) -> None:
        return None


class _EvalShards(IterableDataset[Item]):
    """The samples of some shards in order, each once; DataLoader workers take every ``workers``-th shard."""

    def __init__(self, shards: list[str], transform: Transform) -> None:
        self.shards, self.transform = shards, transform

    def __iter__(self) -> Iterator[Item]:
        import webdataset as wds

        info = torch.utils.data.get_worker_info()
        mine = self.shards[info.id :: info.num_workers] if info else self.shards
        if not mine:
            return
        keys = ";".join(SHARD_IMAGE_KEYS)
        samples = wds.WebDataset(mine, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)
        for image, label in samples.decode("pil").to_tuple(keys, "cls"):
            yield Item(self.transform(image.convert("RGB")), int(label), -1)


def shard_eval_loader(split: ShardSplit, transform: Transform, cfg: DataConfig, *, batch_size: int, device: torch.device,
                      mean: Sequence[float], std: Sequence[float], rank: int, world_size: int) -> OnDevice:
    """Rank ``rank``'s shards of an evaluation split, in order, on the device."""
    options = loader_options(cfg, device, persistent=False)
    options["num_workers"] = min(options["num_workers"], max(1, len(split.shards[rank::world_size])))
    loader = DataLoader(_EvalShards(split.shards[rank::world_size], transform), batch_size=batch_size, **options)
    return OnDevice(loader, device, mean, std, BadImages(1.0, split.num_samples))
