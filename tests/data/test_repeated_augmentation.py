"""data.aug_repeats is timm's RepeatAugSampler on trickbox's seeded permutation, the same on both data paths and
across ranks; each copy of an image gets its own augmentation; tar shards refuse it in one line."""
from __future__ import annotations

import pytest
import torch
from timm.data.distributed_sampler import RepeatAugSampler

from trickbox.data import LoaderOptions, choose, open_run_data
from trickbox.data.config import DataConfig
from trickbox.data.splits import epoch_length, epoch_order
from trickbox.errors import DataError

from .test_one_meaning import write_folder


@pytest.mark.parametrize("n, world", [(600, 1), (600, 2), (777, 3), (256, 4)])
def test_the_order_is_timms_repeat_aug_sampler_on_the_same_permutation(monkeypatch, n, world):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(n + world))
    monkeypatch.setattr(torch, "randperm", lambda size, generator=None: perm.clone())
    for rank in range(world):
        sampler = RepeatAugSampler(list(range(n)), num_replicas=world, rank=rank, num_repeats=3)
        sampler.set_epoch(2)
        ours = epoch_order(n, seed=0, epoch=2, rank=rank, world_size=world, repeats=3)
        assert ours.tolist() == list(sampler) and len(ours) == epoch_length(n, world, 3) == len(sampler)


def test_repeats_spread_over_ranks_and_too_few_images_are_one_line():
    parts = [epoch_order(1024, seed=0, epoch=0, rank=r, world_size=2, repeats=2) for r in range(2)]
    first = parts[0][:8].tolist()
    assert all(i in parts[1][:8].tolist() for i in first[:4])  # an image's copies go to both processes
    with pytest.raises(DataError, match="keeps no image of 100") as info:
        epoch_length(100, 1, 3)
    assert "\n" not in str(info.value)


def _loader(root, loader: str):
    cfg = DataConfig(name="imagefolder", root=str(root), image_size=24, crop="resized", aug_repeats=3,
                     loader=loader, workers=0)
    options = LoaderOptions(batch_size=32, eval_batch_size=32, seed=0, device=torch.device("cpu"))
    return open_run_data(cfg, options).train


def test_both_paths_yield_the_same_images_each_copy_augmented_apart(tmp_path):
    root = write_folder(tmp_path / "f", {"train": 300, "test": 8}, size=(40, 40))
    memory, stream = _loader(root, "memory"), _loader(root, "stream")
    assert len(memory) == len(stream) == 8  # 256 of the 270 training images an epoch, 32 a batch
    for loader in (memory, stream):
        loader.set_epoch(0)
        x, _labels, index = next(iter(loader.batches(0)))
        assert index[:3].unique().numel() == 1  # the first image three times in a row (one process)
        assert not torch.equal(x[0], x[1]) and not torch.equal(x[1], x[2])  # each copy its own crop
    m = torch.cat([i for _, _, i in memory.batches(0)])
    s = torch.cat([i for _, _, i in stream.batches(0)])
    assert torch.equal(m.cpu(), s.cpu())


def test_tar_shards_refuse_repeated_augmentation(imagenet_like):
    with pytest.raises(DataError, match="data.aug_repeats=3: tar shards stream in order") as info:
        choose(DataConfig(name="wds", root=str(imagenet_like / "wds"), aug_repeats=3), torch.device("cpu"))
    assert "\n" not in str(info.value)
