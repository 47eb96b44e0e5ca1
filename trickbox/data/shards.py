"""WebDataset tar shards on the stream path: training through timm's reader, evaluation in shard order.

Training uses ``timm.data.create_dataset("wds/...")``: the shards are shuffled per epoch with a seed common
to all ranks, then dealt out to ranks and workers, so each rank reads only its own shards; every worker yields
the same number of samples (repeating its shards when they run short), so all ranks take the same number of
steps. Workers are started afresh each epoch with seeds from ``(seed, epoch)``: a resumed epoch reads the
same samples in the same order, and the batches before the resume point are read and dropped.

Evaluation reads rank ``r``'s shards ``shards[r::world]`` in order, each sample exactly once (timm's reader
pads validation across ranks instead), so metrics summed over ranks count every image once; an image that cannot
be decoded is skipped and named, as in training.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from ..errors import DataError
from ..seeding import derive_seed, generator
from .config import DataConfig
from .layout import SHARD_IMAGE_KEYS, Layout, ShardSplit
from .loaders import LoaderOptions, RunData
from .streaming import (
    BadImages,
    Item,
    OnDevice,
    TrainTransform,
    Transform,
    default_workers,
    loader_options,
    read_image,
    streamed_stats,
)

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
    """Training batches of tar shards (the :class:`~trickbox.data.loaders.TrainLoader` methods, no random access)."""

    def __init__(self, split: ShardSplit, transform: TrainTransform, cfg: DataConfig, options: LoaderOptions) -> None:
        from timm.data import create_dataset

        self.cfg, self.batch_size, self.device, self.seed = cfg, options.batch_size, options.device, options.seed
        self.pattern = split.pattern
        quiet = logging.getLogger("timm.data.readers.reader_wds")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # no "dataset info file not found" on every run: trickbox lists the shards itself
        try:
            self.dataset = create_dataset("wds/", root="/", split="::".join(split.shards) + f"|{split.num_samples}",
                                          is_training=True, batch_size=options.batch_size,
                                          seed=derive_seed(options.seed, "shards") % (1 << 31))
        finally:
            quiet.setLevel(level)
        self.dataset.transform, self.transform = transform, transform
        self.dataset.set_loader_cfg(num_workers=default_workers(cfg))
        self.labels = torch.tensor(split.labels, dtype=torch.int64, device=options.device)
        self.bad = BadImages(cfg.max_bad_fraction, split.num_samples, "train")
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size

    @property
    def image_size(self) -> int:
        """The training images' side at full size."""
        return self.transform.image_size

    def set_sizes(self, sizes: dict[int, int]) -> None:
        """The training images' side per 0-based epoch (``progressive_resize``); workers start afresh each epoch."""
        self.transform.sizes = dict(sizes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.dataset.set_epoch(epoch)
        self.dataset.transform = self.transform.for_epoch(epoch)  # timm's reader decodes; the crop takes the size

    def batches(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        loader = DataLoader(_Items(self.dataset), batch_size=self.batch_size,
                            generator=generator(self.seed, "shards", self.epoch),
                            **loader_options(self.cfg, self.device, persistent=False))
        self.bad.new_epoch()
        read = start
        for batch in OnDevice(loader, self.device, self.cfg, self.bad).batches(skip=start):
            read += 1
            yield batch
        if read < len(self):  # timm's reader logs and skips shards it cannot open
            raise DataError(f"data: the tar shards gave {read} of this epoch's {len(self)} batches (see the webdataset "
                            f"errors above); check that every shard of {self.pattern!r} is readable")

    def fetch(self, indices: Tensor, *, epoch_step: int) -> Tensor:
        raise DataError(NO_RANDOM_ACCESS)

    def knn_features(self) -> tuple[Tensor, Tensor]:
        raise DataError(NO_RANDOM_ACCESS)


class _EvalShards(IterableDataset[Item]):
    """The samples of some shards in order, each once, decoded here (a bad image is an :class:`Item` without one);
    DataLoader workers take every ``workers``-th shard."""

    def __init__(self, shards: list[str], transform: Transform) -> None:
        self.shards, self.transform = shards, transform

    def __iter__(self) -> Iterator[Item]:
        import webdataset as wds

        info = torch.utils.data.get_worker_info()
        mine = self.shards[info.id::info.num_workers] if info else self.shards
        if not mine:
            return
        reader = wds.WebDataset(mine, shardshuffle=False, nodesplitter=None, workersplitter=None, empty_check=False)
        for sample in reader:
            key = next(k for k in SHARD_IMAGE_KEYS if k in sample)
            name = f"{sample.get('__url__', '?')}:{sample['__key__']}.{key}"
            image, bad = read_image(name, self.transform, sample[key])
            yield Item(image, int(sample["cls"]), -1, bad)


def eval_loader(split: ShardSplit, transform: Transform, cfg: DataConfig, options: LoaderOptions,
                name: str) -> OnDevice:
    """This process's shards of an evaluation split, in order, on the device."""
    loader_kwargs = loader_options(cfg, options.device, persistent=False)
    mine = split.shards[options.rank::options.world_size]
    loader_kwargs["num_workers"] = min(loader_kwargs["num_workers"], max(1, len(mine)))
    loader = DataLoader(_EvalShards(mine, transform), batch_size=options.eval_batch_size, **loader_kwargs)
    return OnDevice(loader, options.device, cfg, BadImages(cfg.max_bad_fraction, split.num_samples, name))


def training_stats(split: ShardSplit, cfg: DataConfig,
                   eval_tf: Transform) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The pad crop's normalisation: the mean and std of the training shards' images, from histograms in one pass."""
    return streamed_stats(eval_loader(split, eval_tf, cfg, LoaderOptions(64, 64, 0), "train").loader)


def shard_run_data(layout: Layout, cfg: DataConfig, train_tf: TrainTransform, eval_tf: Transform,
                   options: LoaderOptions, reason: str) -> RunData:
    """Loaders over tar shards: ``val`` shards, else the test shards stand in for validation too."""
    train, val, test = layout.train, layout.val, layout.test
    assert isinstance(train, ShardSplit) and isinstance(val, ShardSplit) and isinstance(test, ShardSplit)
    if cfg.label_noise > 0 or cfg.train_subset or cfg.test_subset:
        raise DataError("data.label_noise, train_subset and test_subset need random access; tar shards have none: "
                        "write the subset as shards of its own, or use class folders")
    shared = " (val/ is also the test split)" if val is test else ""
    return RunData(path="stream", reason=reason + shared, config=cfg, classes=list(layout.classes), in_chans=3,
                   train=ShardTrainLoader(train, train_tf, cfg, options),
                   val=eval_loader(val, eval_tf, cfg, options, "val"),
                   test=eval_loader(test, eval_tf, cfg, options, "test"),
                   fit=eval_loader(train, eval_tf, cfg, options, "train") if options.want_fit else None,
                   sizes={"train": train.num_samples, "val": val.num_samples, "test": test.num_samples})

