"""The path chooses speed, never meaning: the same folder gives the same splits, augmentation and limits on the
memory and the stream path, and with 1 and 2 processes."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from trickbox.cli import main as cli_main
from trickbox.config import load_config
from trickbox.data import DataConfig, LoaderOptions, open_run_data
from trickbox.data.memory import resized_crop_boxes
from trickbox.loop import train

from ..conftest import REPO, SMALL_RUN, launch_two_ranks, runs_in_one_launch, subprocess_env, told


def write_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (32, 32), classes: int = 4,
                 bad: int = 0) -> Path:
    """``counts[split]`` PNGs per split spread over ``classes`` class folders; the first ``bad`` training images
    (in listing order) are cut short."""
    rng = np.random.default_rng(0)
    for split, n in counts.items():
        for i in range(n):
            path = root / split / f"c{i % classes}" / f"{split}{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    victims = sorted((root / "train").rglob("*.png"))[:bad]
    for victim in victims:
        victim.write_bytes(victim.read_bytes()[:60])
    return root


def _open(cfg: DataConfig):
    return open_run_data(cfg, LoaderOptions(batch_size=8, eval_batch_size=8, seed=0))


@pytest.mark.parametrize("size, extra", [((32, 32), {}), ((40, 48), {"image_size": 24, "crop": "resized"})],
                         ids=["pad-crop", "resized-crop"])
def test_the_same_folder_has_the_same_splits_and_augmentation_on_both_paths(tmp_path, size, extra):
    root = write_folder(tmp_path / "f", {"train": 40, "val": 12, "test": 16}, size=size)
    memory, stream = (_open(DataConfig(name="imagefolder", root=str(root), loader=loader, workers=0,
                                       cache_dir=str(tmp_path / "cache"), **extra))  # type: ignore[arg-type]
                      for loader in ("memory", "stream"))
    assert (memory.path, stream.path) == ("memory", "stream")
    assert memory.sizes == stream.sizes == {"train": 40, "val": 12, "test": 16}  # val/ is validated, test/ reported
    for split in ("train", "val", "test"):
        assert [Path(n).name for n in memory.files[split]] == [Path(n).name for n in stream.files[split]]
        assert all(f"/{split}/" in n for n in memory.files[split])
    settled = [{k: v for k, v in vars(d.config).items() if k not in ("loader", "workers")} for d in (memory, stream)]
    assert settled[0].keys() == settled[1].keys()
    for key in settled[0]:
        if key in ("mean", "std"):
            assert np.allclose(settled[0][key], settled[1][key], atol=1e-6), key
        else:
            assert settled[0][key] == settled[1][key], key
    assert settled[0]["crop"] == ("pad" if size == (32, 32) else "resized")
    xm, _, _ = next(iter(memory.train.batches()))
    xs, _, _ = next(iter(stream.train.batches()))
    assert xm.shape == xs.shape and xm.dtype == xs.dtype  # both crop to the same size
    vm, vs = next(iter(memory.val)), next(iter(stream.val))
    assert vm[0].shape == vs[0].shape and torch.equal(vm[1], vs[1])
    if size == (32, 32):  # the pad crop evaluates the image itself: the same pixels on both paths
        assert torch.allclose(vm[0], vs[0], atol=1e-4)
    else:  # the resized crop's evaluation view: antialiased resize and centre crop, within rounding of PIL's
        assert (vm[0] - vs[0]).abs().mean() < 0.05


def test_the_run_config_records_the_settled_augmentation_and_the_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_folder(tmp_path / "f", {"train": 24, "val": 8, "test": 8})
    configs = {}
    for loader in ("memory", "stream"):
        assert cli_main(["train", *SMALL_RUN, "data.name=imagefolder", f"data.root={root}", f"data.loader={loader}",
                         "data.workers=0", f"train.run_name={loader}", "data.train_subset=null",
                         "data.test_subset=null"]) == 0
        configs[loader] = yaml.safe_load((tmp_path / "runs" / loader / "config.yaml").read_text())
    for loader, cfg in configs.items():
        assert cfg["runtime"]["data_path"] == cfg["data"]["loader"] == loader
        assert cfg["runtime"]["data_path_reason"] == f"data.loader={loader}"
    memory, stream = ({k: v for k, v in c["data"].items() if k not in ("loader", "mean",
                                                                       "std")} for c in configs.values())
    assert memory == stream and memory["crop"] == "pad" and memory["crop_padding"] == 4 and memory["flip"] is True


def test_resized_crop_boxes_follow_timms_rule():
    from timm.data.transforms import RandomResizedCropAndInterpolation

    g = torch.Generator().manual_seed(0)
    boxes = resized_crop_boxes(20000, 30, 50, (0.08, 1.0), (3 / 4, 4 / 3), g)
    top, left, h, w = boxes.T.double()
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 30) & (left + w <= 50) & (h >= 1) & (w >= 1)).all())
    ours = (h * w / (30 * 50))
    image = Image.new("RGB", (50, 30))
    theirs = torch.tensor([(lambda p: p[2] * p[3] / 1500)(RandomResizedCropAndInterpolation.get_params(
        image, (0.08, 1.0), (3 / 4, 4 / 3))) for _ in range(20000)], dtype=torch.float64)
    assert abs(ours.mean() - theirs.mean()) < 0.01 and abs(ours.std() - theirs.std()) < 0.01  # same distribution
    narrow = resized_crop_boxes(10, 10, 100, (1.0, 1.0), (1.0, 1.0), g)  # nothing fits: timm's centre fallback
    assert narrow.tolist() == [[0, 45, 10, 10]] * 10


def test_an_option_the_memory_path_cannot_honour_is_one_line_when_forced(tmp_path):
    from trickbox.data import choose
    from trickbox.errors import DataError

    root = write_folder(tmp_path / "f", {"train": 8, "test": 4})
    with pytest.raises(DataError, match="data.loader=memory cannot honour this config: data.auto_augment") as info:
        choose(DataConfig(name="imagefolder", root=str(root), loader="memory", auto_augment="rand-m9-mstd0.5"),
               torch.device("cpu"))
    assert "\n" not in str(info.value)
    auto = choose(DataConfig(name="imagefolder", root=str(root), auto_augment="rand-m9-mstd0.5"), torch.device("cpu"))
    assert auto.path == "stream" and "auto_augment" in auto.reason


@pytest.mark.parametrize("crop", ["pad", "resized"])
def test_color_jitter_is_timms_on_the_stream_path_and_refused_on_the_memory_path(tmp_path, crop):
    from timm.data import create_transform
    from torchvision.transforms import ColorJitter

    from trickbox.data import choose
    from trickbox.data.streaming import transforms
    from trickbox.errors import DataError

    root = write_folder(tmp_path / "f", {"train": 8, "test": 4})
    with pytest.raises(DataError, match="cannot honour this config: data.color_jitter=0.4 runs on single images"):
        choose(DataConfig(name="imagefolder", root=str(root), loader="memory", color_jitter=0.4), torch.device("cpu"))
    auto = choose(DataConfig(name="imagefolder", root=str(root), color_jitter=0.4), torch.device("cpu"))
    assert auto.path == "stream"
    cfg = DataConfig(name="imagefolder", root="x", image_size=32, crop=crop, color_jitter=0.4).resolved(None)
    train_tf = transforms(cfg, (0.5,) * 3, (0.25,) * 3)[0]
    ours = [t for t in _walk(train_tf) if isinstance(t, ColorJitter)]
    theirs = [t for t in _walk(create_transform(32, is_training=True, color_jitter=0.4)) if isinstance(t, ColorJitter)]
    assert len(ours) == len(theirs) == 1 and repr(ours[0]) == repr(theirs[0])  # brightness/contrast/saturation 0.4


def _walk(transform):
    yield transform
    for t in getattr(transform, "transforms", ()):
        yield from _walk(t)


BAD_FOLDER = {"train": 221, "val": 20, "test": 20}
ON_FOLDER = [*SMALL_RUN, "data.name=imagefolder", "data.loader=stream", "data.workers=0", "data.train_subset=null",
             "data.test_subset=null", "train.epochs=2"]


@pytest.fixture
def two_bad_of_221(tmp_path) -> Path:
    return write_folder(tmp_path / "bad", BAD_FOLDER, bad=2)


def test_two_bad_images_of_221_pass_on_one_and_two_processes(tmp_path, two_bad_of_221, fault):
    fault("2 unreadable images of 221 on 1 and on 2 processes")
    one = train(load_config([], [*ON_FOLDER, f"data.root={two_bad_of_221}", "train.run_name=one",
                                 f"train.out_dir={tmp_path / 'runs'}"]))
    assert one.history[-1]["train/skipped_images"] == 2
    results, _ = runs_in_one_launch(tmp_path, [{"overrides": [*ON_FOLDER, f"data.root={two_bad_of_221}",
                                                              "train.run_name=two"]}])
    assert results[0]["status"] == "complete", results


@pytest.mark.slow
def test_a_lower_limit_stops_one_and_two_processes_at_the_same_epoch_with_one_line(tmp_path, two_bad_of_221, capsys,
                                                                                   monkeypatch, fault):
    fault("unreadable images above data.max_bad_fraction on 1 and on 2 processes")
    monkeypatch.chdir(tmp_path)
    args = [*ON_FOLDER, f"data.root={two_bad_of_221}", "data.max_bad_fraction=0.005"]
    assert cli_main(["train", *args, "train.run_name=one"]) == 2
    err = [line for line in told(capsys.readouterr().err).splitlines() if "skipped unreadable" not in line]
    assert len(err) == 1 and "2 of 221 images of the train split" in err[0], err
    proc = subprocess.run([*launch_two_ranks(), str(REPO / "train.py"), *args, "train.run_name=two"], cwd=tmp_path,
                          env=subprocess_env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True, timeout=300)
    lines = [line for line in told(proc.stderr).splitlines() if line.startswith("trickbox:") and "skipped" not in line]
    assert [x.split(" (e.g.")[0] for x in lines] == [err[0].split(" (e.g.")[0]], proc.stderr[-3000:]  # once, by rank 0
    ranks = proc.stderr.split("Traceback")[0]
    assert "Error" not in ranks.replace("trickbox: error", "")  # no rank printed a traceback; the launcher reports
    assert "exitcode  : 2" in proc.stderr and "exitcode  : 1 " not in proc.stderr  # the first rank out exited 2
    for run in ("one", "two"):
        assert not list((tmp_path / "runs" / run / "checkpoints").glob("step-*"))
