"""The stream path: class folders with val/ and tar shards train with tricks; ranks read disjoint parts; resume is
exact; unreadable images are skipped and named; bad layouts are one line before a model is built; ``auto`` picks."""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from trickbox.config import default_config_path, load_config
from trickbox.data import DataConfig, choose
from trickbox.data.splits import epoch_order
from trickbox.errors import DataError
from trickbox.loop import train

from ..conftest import REPO, launch_two_ranks, subprocess_env

TRICKS = ["tricks.mixup.alpha=0.4", "tricks.mixup.grid=false", "tricks.label_smoothing.eps=0.1", "tricks.sgdr.t0=1",
          "tricks.sgdr.plot=false"]
SMALL = ["model.name=cifar_resnet8", "data.image_size=32", "data.workers=1", "train.batch_size=16", "train.epochs=2",
         "train.tracker=none", "train.progress=false", "optim.lr=0.05"]


def _train(tmp_path: Path, *overrides: str, resume: bool = False):
    cfg = load_config([default_config_path()], [f"train.out_dir={tmp_path / 'runs'}", *SMALL, *overrides])
    return train(cfg, resume=resume)


def _runtime(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())["runtime"]


@pytest.mark.slow
def test_a_streamed_image_folder_with_val_trains_with_mixup_label_smoothing_and_sgdr(imagenet_like, tmp_path):
    res = _train(tmp_path, "data.name=imagefolder", "data.loader=stream", f"data.root={imagenet_like / 'folder'}",
                 *TRICKS)
    assert _runtime(res.run_dir)["data_path"] == "stream"
    assert [h["epoch"] for h in res.history] == [1, 2] and all(h["train/loss"] > 0 for h in res.history)
    n = len(list((imagenet_like / "folder" / "train").rglob("*.jpg")))
    assert res.steps == 2 * math.ceil((n - round(0.1 * n)) / 16)  # val carved from train/; val/ is the test split
    assert set(res.test) >= {"top1", "nll"}


@pytest.mark.slow
def test_webdataset_shards_train_with_mixup_label_smoothing_and_sgdr(imagenet_like, tmp_path):
    res = _train(tmp_path, "data.name=wds", f"data.root={imagenet_like / 'wds'}", *TRICKS)
    assert _runtime(res.run_dir)["data_path"] == "stream"
    assert [h["epoch"] for h in res.history] == [1, 2] and all(h["train/loss"] > 0 for h in res.history)
    assert res.test["top1"] >= 0


def test_every_rank_gets_a_disjoint_part_and_the_union_is_the_epoch():
    for n, world in ((10, 3), (96, 2), (7, 8)):
        parts = [epoch_order(n, seed=1, epoch=4, rank=r, world_size=world) for r in range(world)]
        assert len({len(p) for p in parts}) == 1  # equal steps on every rank
        joined = torch.cat(parts)
        assert set(joined.tolist()) == set(range(n)) and len(joined) - n == (-n) % world  # only the padding repeats
        assert not torch.equal(parts[0], epoch_order(n, seed=1, epoch=5, rank=0, world_size=world))


RANKS_SCRIPT = """
import json, sys, torch
from accelerate import Accelerator
from trickbox.data import DataConfig, LoaderOptions, open_run_data
acc = Accelerator(cpu=True)
cfg = DataConfig(name="imagefolder", root=sys.argv[1], loader="stream", image_size=16, workers=1)
data = open_run_data(cfg, LoaderOptions(batch_size=8, eval_batch_size=8, seed=3, device=acc.device,
rank=acc.process_index,
                                        world_size=acc.num_processes))
data.train.set_epoch(1)
seen = [i for _, _, idx in data.train.batches() for i in idx.tolist()]
val = [int(y) for _, ys in data.val for y in ys]
out = {"train": seen, "batches": len(data.train), "val_labels": val, "sizes": data.sizes}
json.dump(out, open(f"{sys.argv[2]}/rank{acc.process_index}.json", "w"))
"""


@pytest.mark.slow
def test_two_cpu_ranks_on_the_stream_path_read_disjoint_parts_whose_union_is_the_epoch(imagenet_like, tmp_path):
    import json

    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    cmd = [*launch_two_ranks(), str(script), str(imagenet_like / "folder"), str(tmp_path)]
    proc = subprocess.run(cmd, env=subprocess_env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    n = a["sizes"]["train"]
    assert a["batches"] == b["batches"] and len(a["train"]) == len(b["train"])
    assert set(a["train"]) | set(b["train"]) == set(range(n))
    assert len(set(a["train"]) & set(b["train"])) == n % 2  # an odd count repeats one image to even the ranks
    assert len(a["val_labels"]) + len(b["val_labels"]) == a["sizes"]["val"]  # each val image once over the ranks


@pytest.mark.slow
def test_resume_mid_epoch_on_the_stream_path_gives_the_same_weights(imagenet_like, tmp_path, fault):
    from ..conftest import assert_same_weights

    fault("SIGTERM mid-epoch on the stream path (class folders)", resumed=True, exact=True)

    data = ["data.name=imagefolder", "data.loader=stream", f"data.root={imagenet_like / 'folder'}", *TRICKS]
    reference = _train(tmp_path / "ref", *data)
    args = [sys.executable, str(REPO / "train.py"), f"train.out_dir={tmp_path / 'runs'}", "train.run_name=r", *SMALL,
            *data]
    env = subprocess_env(TRICKBOX_PLUGINS="signals", PYTHONPATH=str(REPO / "tests" / "fixtures"))
    first = subprocess.run([*args, "tricks.signal_at.at=8"], env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 143, first.stderr[-2000:]  # SIGTERM at step 8: mid-way through epoch 2
    second = subprocess.run([*args, "--resume", "tricks.signal_at.at=10000", "train.resume_allow=[tricks.signal_at]"],
                            env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert_same_weights(reference.run_dir, tmp_path / "runs" / "r")


def _folder_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "folder", dst)
    return dst


@pytest.mark.slow
def test_a_truncated_jpeg_is_skipped_with_a_warning_that_names_it(imagenet_like, tmp_path, fault, capsys):
    fault("a truncated JPEG in the training split")
    fault("more unreadable images than data.max_bad_fraction")
    root = _folder_copy(imagenet_like, tmp_path / "data")
    victim = sorted((root / "train").rglob("*.jpg"))[5]
    victim.write_bytes(victim.read_bytes()[:300])
    data = ["data.name=imagefolder", "data.loader=stream", f"data.root={root}", "train.epochs=1"]
    res = _train(tmp_path, *data, "data.max_bad_fraction=0.05")
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "skipped unreadable image" in line]
    assert victim.name in warning
    n = len(list((root / "train").rglob("*.jpg")))
    assert res.steps == math.ceil((n - round(0.1 * n)) / 16)  # the skipped image leaves a batch one short
    with pytest.raises(DataError, match=r"data.max_bad_fraction=0.0 .*" + victim.name):
        _train(tmp_path, *data, "data.max_bad_fraction=0", "train.run_name=strict")


def _layout_error(cfg: DataConfig) -> str:
    with pytest.raises(DataError) as info:  # a DataError is one line and exit 2 at the CLI (ConfigError)
        choose(cfg, torch.device("cpu"))
    assert "\n" not in str(info.value)
    return str(info.value)


def test_bad_layouts_are_one_line_each(imagenet_like, tmp_path, fault):
    for what in ("no val/ or test/ split", "an empty class folder", "val/ with a class missing",
                 "a shard pattern that matches nothing", "a data.root that does not exist", "a missing shard"):
        fault(what)
    folder = _folder_copy(imagenet_like, tmp_path / "f")
    shutil.rmtree(folder / "val")
    assert "neither test/ nor val/" in _layout_error(DataConfig(name="imagefolder", root=str(folder)))
    folder = _folder_copy(imagenet_like, tmp_path / "g")
    (folder / "train" / "empty_class").mkdir()
    assert "empty_class holds no images" in _layout_error(DataConfig(name="imagefolder", root=str(folder)))
    folder = _folder_copy(imagenet_like, tmp_path / "h")
    shutil.rmtree(sorted((folder / "val").iterdir())[0])
    assert "each split needs the 4 class folders of train/" in _layout_error(
        DataConfig(name="imagefolder", root=str(folder)))
    shards = DataConfig(name="wds", root=str(imagenet_like / "wds"), train_split="train-{000100..000101}.tar")
    assert "matches no tar shard" in _layout_error(shards)
    for message in (_layout_error(DataConfig(name="imagefolder", root=str(tmp_path / "nowhere"))),):
        assert "\n" not in message and "does not exist" in message
    gap = DataConfig(name="wds", root=str(imagenet_like / "wds"), train_split="train-{000000..000003}.tar")
    assert "shard train-000003.tar is missing" in _layout_error(gap)  # three shards exist, the fourth does not


@pytest.mark.slow
def test_a_bad_layout_exits_2_with_one_line_before_anything_is_written(imagenet_like, tmp_path, fault):
    fault("a stray class folder in val/, through the CLI")
    folder = _folder_copy(imagenet_like, tmp_path / "f")
    (folder / "val" / "stray").mkdir()
    (folder / "val" / "stray" / "x.jpg").write_bytes((folder / "val").rglob("*.jpg").__next__().read_bytes())
    proc = subprocess.run([sys.executable, str(REPO / "train.py"), "data.name=imagefolder", f"data.root={folder}",
                           "train.tracker=none"], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "stray" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_auto_holds_the_cifar_zip_and_small_same_size_folders_in_memory_and_streams_the_rest(imagenet_like, cifar_zip,
                                                                                             tmp_path):
    path, why = _path(DataConfig(name="imagefolder", root=str(cifar_zip)))
    assert path == "memory" and ".zip" in why
    mixed = DataConfig(name="imagefolder", root=str(imagenet_like / "folder"))
    assert _path(mixed) == ("stream", "the images differ in size, and the resized crop samples from each whole image")
    sized = DataConfig(name="imagefolder", root=str(imagenet_like / "folder"), image_size=64, crop="pad")
    path, why = _path(sized)  # the pad crop resizes every image first: the memory path holds them
    assert path == "memory" and "96 images" in why and "fits" in why
    tight = DataConfig(name="imagefolder", root=str(imagenet_like / "folder"), image_size=64, crop="pad",
                       memory_budget_gb=0.001)
    path, why = _path(tight)
    assert path == "stream" and "exceeds data.memory_budget_gb=0.001" in why
    assert _path(DataConfig(name="digits"))[0] == "memory"
    assert _path(DataConfig(name="digits", loader="memory")) == ("memory", "data.loader=memory")


def _path(cfg: DataConfig) -> tuple[str, str]:
    choice = choose(cfg, torch.device("cpu"))
    return choice.path, choice.reason


@pytest.mark.slow
def test_knn_mixup_on_the_stream_path_pairs_from_a_streamed_thumbnail_pass(imagenet_like, tmp_path):
    res = _train(tmp_path, "data.name=imagefolder", "data.loader=stream", f"data.root={imagenet_like / 'folder'}",
                 "train.epochs=1",
                 "tricks.mixup.alpha=0.4", "tricks.mixup.pairing=knn", "tricks.mixup.k=3", "tricks.mixup.grid=false")
    assert len(res.history) == 1 and res.history[0]["train/loss"] > 0


def test_knn_on_tar_shards_is_refused_with_one_line(imagenet_like, tmp_path):
    with pytest.raises(DataError, match="no random access"):
        _train(tmp_path, "data.name=wds", f"data.root={imagenet_like / 'wds'}", "train.epochs=1",
               "tricks.mixup.pairing=knn", "tricks.mixup.k=3")



def test_timm_augmentation_strings_are_accepted_and_a_bad_one_is_one_line():
    from PIL import Image

    from trickbox.data.streaming import transforms

    image = Image.new("RGB", (300, 200), (120, 60, 30))
    for aa in ("rand-m9-mstd0.5", "augmix-m5-w3"):
        for crop in ("resized", "pad"):
            cfg = DataConfig(name="imagefolder", root="x", image_size=48, auto_augment=aa, crop=crop).resolved(None)
            train_tf, eval_tf = transforms(cfg, (0.5,) * 3, (0.2,) * 3)
            assert tuple(train_tf(image).shape) == (3, 48, 48) and tuple(eval_tf(image).shape) == (3, 48, 48)
    with pytest.raises(DataError, match="data.auto_augment='rand-x9' is not a timm augmentation string"):
        transforms(DataConfig(name="imagefolder", root="x", auto_augment="rand-x9").resolved(None), (0.5,) * 3, (0.2,
                                                                                                                 ) * 3)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.slow
def test_a_killed_loader_worker_stops_the_run_with_one_line_and_it_resumes(imagenet_like, tmp_path, fault):
    import signal
    import time

    fault("a DataLoader worker SIGKILLed mid-epoch", resumed=True)
    args = [sys.executable, str(REPO / "train.py"), f"train.out_dir={tmp_path / 'runs'}", "train.run_name=k", *SMALL,
            "train.epochs=30", "data.name=imagefolder", "data.loader=stream", f"data.root={imagenet_like / 'folder'}"]
    proc = subprocess.Popen(args, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.time() + 120
        while not list((tmp_path / "runs" / "k" / "checkpoints").glob("step-*/state.json")):
            assert proc.poll() is None and time.time() < end, proc.communicate()[1][-2000:]
            time.sleep(0.05)
        workers = _children(proc.pid)
        assert workers, "the run has no DataLoader worker"
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 5 and "Traceback" not in err, err[-3000:]
    (line,) = [x for x in err.splitlines() if "worker died" in x]
    assert "--resume" in line
    resumed = subprocess.run([*args, "--resume"], env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (tmp_path / "runs" / "k" / "model.safetensors").is_file()
