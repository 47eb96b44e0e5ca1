"""progressive_resize: its schedule against timm's progressive choice rule, each epoch's size on both data paths
(folders and shards on the stream path, the pad and the resized crop in memory), an exact resume, and one line for a
size the model cannot take."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trickbox.config import load_config
from trickbox.data import DataConfig, LoaderOptions, open_run_data
from trickbox.functional.resize import progressive_size, resize_batch, size_ladder
from trickbox.loop import train

from ..conftest import assert_same_weights, one_line

CASES = [(10, 128, 224, 0.75, 32, 0), (16, 96, 224, 1.0, 32, 0), (12, 128, 256, 0.5, 32, 3), (9, 64, 192, 0.8, 16, 4),
         (7, 160, 192, 1.0, 32, 0)]


def test_the_ladder_holds_start_the_multiples_and_end():
    assert size_ladder(128, 224, multiple=32) == [128, 160, 192, 224]
    assert size_ladder(100, 224, multiple=32) == [100, 128, 160, 192, 224]
    assert size_ladder(128, 224, multiple=32, stages=3) == [128, 192, 224]  # 176 rounds to 192
    assert size_ladder(224, 224, multiple=32) == [224]


@pytest.mark.parametrize("epochs,start,end,ramp,multiple,stages", CASES)
def test_each_epoch_takes_timms_progressive_choice(epochs, start, end, ramp, multiple, stages):
    """timm's ScheduledBatchSampler with ``choice_schedule='progressive'``, no spread and no random mix puts all the
    weight of an epoch on the choice nearest its place on the ramp; trickbox's size is that choice (the smaller on
    a tie, where timm splits the weight)."""
    from timm.data.scheduled_sampler import ScheduledBatchSampler

    ladder = size_ladder(start, end, multiple=multiple, stages=stages)
    ramp_epochs = max(1, round(ramp * epochs))
    sampler = ScheduledBatchSampler(list(range(64)), batch_sizes=[1] * len(ladder), choice_schedule="progressive",
                                    schedule_epochs=ramp_epochs, schedule_spread=0.0, schedule_random_mix=0.0)
    sizes = [progressive_size(e, epochs=epochs, start=start, end=end, ramp=ramp, multiple=multiple, stages=stages)
             for e in range(epochs)]
    for e, size in enumerate(sizes):
        weights = sampler.choice_weights_for_epoch(e)
        assert size == min(ladder[i] for i in range(len(ladder)) if weights[i] == weights.max()), e
    assert sizes[0] == start and sizes[ramp_epochs - 1:] == [end] * (epochs - ramp_epochs + 1)
    assert sizes == sorted(sizes)


def test_resize_batch_keeps_the_dtype_and_range():
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    small = resize_batch(x, 8)
    assert small.dtype == torch.uint8 and small.shape == (2, 3, 8, 8)
    assert resize_batch(x, 16) is x


def _sides(loader, epochs: int) -> list[tuple[int, int]]:
    out = []
    for e in range(epochs):
        loader.set_epoch(e)
        out.append(tuple(next(iter(loader.batches()))[0].shape[-2:]))
    return out


def _uniform_folder(root: Path) -> Path:
    """24x24 JPEGs, 2 classes, train/ and test/: images of one size, as the memory path's resized crop needs."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 24), ("test", 8)):
        for i in range(n):
            folder = root / "uniform" / split / f"c{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = torch.randint(0, 256, (24, 24, 3), generator=gen, dtype=torch.uint8).numpy()
            Image.fromarray(pixels).save(folder / f"{i}.jpg")
    return root / "uniform"


@pytest.mark.parametrize("crop", ["pad", "resized"])
def test_memory_path_trains_each_epoch_at_its_size(crop, tmp_path):
    """The pad crop (digits, 8 px) resizes its batches on the device; the resized crop samples at the size."""
    cfg = DataConfig(name="digits") if crop == "pad" else \
        DataConfig(name="imagefolder", root=str(_uniform_folder(tmp_path)), loader="memory", crop="resized",
                   image_size=16)
    data = open_run_data(cfg, LoaderOptions(batch_size=8, eval_batch_size=8, seed=0))
    assert data.path == "memory"
    full = 16 if crop == "resized" else 8
    assert data.train.image_size == full
    data.train.set_sizes({0: 4, 1: 6})
    assert _sides(data.train, 3) == [(4, 4), (6, 6), (full, full)]
    x, *_ = next(iter(data.val))
    assert tuple(x.shape[-2:]) == (full, full)  # evaluation stays at full size


@pytest.mark.parametrize("kind", ["folder", "wds"])
def test_stream_path_trains_each_epoch_at_its_size(imagenet_like, kind):
    """Folders keep their workers across epochs (each worker took the sizes when it started); shards start
    workers afresh each epoch."""
    root = imagenet_like / ("folder" if kind == "folder" else "wds")
    cfg = DataConfig(name="imagefolder" if kind == "folder" else "wds", root=str(root), loader="stream",
                     image_size=48, workers=1)
    data = open_run_data(cfg, LoaderOptions(batch_size=8, eval_batch_size=8, seed=0))
    try:
        assert data.path == "stream" and data.train.image_size == 48
        data.train.set_sizes({0: 24, 1: 32})
        assert _sides(data.train, 3) == [(24, 24), (32, 32), (48, 48)]
        x, _ = next(iter(data.val))
        assert tuple(x.shape[-2:]) == (48, 48)
    finally:
        data.close()


def test_stream_path_pad_crop_resizes_after_the_crop(tmp_path):
    cfg = DataConfig(name="imagefolder", root=str(_uniform_folder(tmp_path)), loader="stream", crop="pad", workers=1)
    data = open_run_data(cfg, LoaderOptions(batch_size=8, eval_batch_size=8, seed=0))
    try:
        assert data.path == "stream" and data.train.image_size == 24
        data.train.set_sizes({0: 12})
        assert _sides(data.train, 2) == [(12, 12), (24, 24)]
    finally:
        data.close()


def _run(out: Path, name: str, root: Path, *extra: str, resume: bool = False):
    cfg = load_config(overrides=[
        "data.name=imagefolder", f"data.root={root}", "data.loader=stream", "data.image_size=32", "data.workers=1",
        "model.name=cifar_resnet8", "train.epochs=3", "train.batch_size=16", "train.tracker=none",
        "train.progress=false", "tricks.progressive_resize.start=16", "tricks.progressive_resize.multiple=8",
        "tricks.progressive_resize.ramp=1.0", f"train.out_dir={out}", f"train.run_name={name}", *extra])
    return train(cfg, resume=resume)


def test_a_resumed_progressive_run_equals_the_uninterrupted_one(imagenet_like, tmp_path):
    root = imagenet_like / "folder"
    whole = _run(tmp_path, "whole", root)
    first = _run(tmp_path, "parts", root, "train.stop_after_epoch=1")
    assert first.steps < whole.steps
    second = _run(tmp_path, "parts", root, resume=True)
    assert second.steps == whole.steps
    assert_same_weights(whole.run_dir, second.run_dir)
    rows = [json.loads(line) for line in (whole.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["train/image_size"] for row in rows if "train/image_size" in row] == [16, 24, 32]


def test_a_size_the_model_cannot_take_is_one_line(cli, tmp_path, imagenet_like):
    r = cli("train", "model.name=vit_tiny_patch16_224", "data.name=imagefolder",
            f"data.root={imagenet_like / 'folder'}", "data.image_size=32", "train.epochs=2", "train.tracker=none",
            "tricks.progressive_resize.start=16", "tricks.progressive_resize.multiple=16", cwd=tmp_path)
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert "the model cannot take 16x16 images" in line and "dynamic_img_size=true" in line, line
    assert not list(tmp_path.glob("runs/*"))  # refused before training: the new run directory is removed
