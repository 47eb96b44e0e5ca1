"""Reliability, round 3: no trained run lost to a bad file at the end, nothing that hangs, nothing silently useless,
and one line (exit 2, nothing left behind) for each bad input. Item 0 (NaN written into a buffer, a parameter, an
EMA copy) is ``test_nonfinite_state.py``; a signal during setup is ``test_say_and_stop.py``."""
from __future__ import annotations

import errno
import io
import json
import os
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trickbox.cli import main as cli_main
from trickbox.data import DataConfig, LoaderOptions, open_run_data
from trickbox.plots import LR_CURVE_POINTS, lr_curve_steps

from ..conftest import SMALL_RUN, told

STREAM = ["model.name=cifar_resnet8", "data.image_size=32", "data.workers=0", "data.loader=stream",
          "train.batch_size=8",
          "train.epochs=1", "train.tracker=none", "train.progress=false"]


def _png(rng: np.random.Generator, size: tuple[int, int] = (32, 32)) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _jpeg(rng: np.random.Generator) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def _folder(root: Path, splits: dict[str, int], classes: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for split, n in splits.items():
        for i in range(n):
            path = root / split / f"c{i % classes}" / f"{split}{i:03d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(_png(rng))
    return root


def _shard(path: Path, samples: list[tuple[str, bytes, bytes]]) -> Path:
    """A tar of ``(key, image bytes, cls bytes)`` samples, as WebDataset writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, image, cls in samples:
            for name, data in ((f"{key}.jpg", image), (f"{key}.cls", cls)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _shards(root: Path, n_train: int = 32, n_val: int = 8) -> Path:
    rng = np.random.default_rng(1)
    _shard(root / "train-000000.tar", [(f"t{i:03d}", _jpeg(rng), str(i % 4).encode()) for i in range(n_train)])
    _shard(root / "val-000000.tar", [(f"v{i:03d}", _jpeg(rng), str(i % 4).encode()) for i in range(n_val)])
    return root


def _refused(capsys, code: int, fragment: str, cwd: Path) -> str:
    """Exit 2, one line naming the problem, and nothing left behind in ``cwd``."""
    err = told(capsys.readouterr().err).strip()
    assert code == 2 and "\n" not in err and fragment in err and "Traceback" not in err, err
    assert not (cwd / "runs").exists(), sorted(p.name for p in (cwd / "runs").iterdir())
    return err


# -- data loss --------------------------------------------------------------------------------------------------
def test_1_a_bad_image_in_the_final_split_still_saves_the_trained_weights(tmp_path, monkeypatch, capsys, fault):
    fault("one truncated PNG in val/ (the final split), no test/")
    root = _folder(tmp_path / "f", {"train": 40, "val": 8})
    victim = sorted((root / "val").rglob("*.png"))[0]
    victim.write_bytes(victim.read_bytes()[:60])
    monkeypatch.chdir(tmp_path)
    code = cli_main(["train", *STREAM, "data.name=imagefolder", f"data.root={root}", "train.run_name=r"])
    err = told(capsys.readouterr().err)
    lines = [line for line in err.splitlines() if not line.startswith("trickbox: warning: data: skipped")]
    assert code == 2 and len(lines) == 1 and "The trained weights are saved" in lines[0], err
    assert victim.name in err  # skipped and named first
    run = tmp_path / "runs" / "r"
    assert (run / "model.safetensors").is_file() and (run / "model.json").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] > 0 and not any(k.startswith("test/") for k in summary)


def test_2_a_truncated_jpeg_in_a_validation_shard_is_skipped_and_named(tmp_path, monkeypatch, capsys, fault):
    fault("a truncated JPEG inside a validation shard")
    root = tmp_path / "wds"
    rng = np.random.default_rng(2)
    _shard(root / "train-000000.tar", [(f"t{i:03d}", _jpeg(rng), str(i % 4).encode()) for i in range(32)])
    val = [(f"v{i:03d}", _jpeg(rng), str(i % 4).encode()) for i in range(8)]
    val[3] = (val[3][0], val[3][1][:200], val[3][2])
    _shard(root / "val-000000.tar", val)
    monkeypatch.chdir(tmp_path)
    code = cli_main(["train", *STREAM, "data.name=wds", f"data.root={root}", "data.max_bad_fraction=0.2",
                     "train.run_name=r"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "v003" in err and "Traceback" not in err and "DecodingError" not in err
    summary = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert summary["test/skipped_images"] == 1.0


# -- hangs ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("epochs", ["1.0e+30", "100000000000000000000000000000"])
def test_3_a_huge_epoch_count_is_refused_at_once(tmp_path, monkeypatch, capsys, epochs, fault):
    fault(f"train.epochs={epochs}")
    monkeypatch.chdir(tmp_path)
    _refused(capsys, cli_main(["train", *SMALL_RUN, f"train.epochs={epochs}"]), "train.epochs must be an integer in",
             tmp_path)


def test_3_the_lr_curve_is_drawn_from_a_bounded_sample_of_steps():
    assert lr_curve_steps(10) == list(range(10))
    many = lr_curve_steps(10**12)
    assert len(many) <= LR_CURVE_POINTS and many[0] == 0 and many[-1] == 10**12 - 1 and many == sorted(many)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_4_a_fifo_named_like_an_image_is_not_listed(tmp_path, fault):
    fault("a FIFO named zzz.png in a class folder")
    root = _folder(tmp_path / "f", {"train": 24, "test": 8})
    os.mkfifo(root / "train" / "c0" / "zzz.png")
    for loader in ("memory", "stream"):
        data = open_run_data(DataConfig(name="imagefolder", root=str(root), loader=loader, workers=0,
                                        cache_dir=str(tmp_path / "cache")), LoaderOptions(batch_size=8,
                                                                                          eval_batch_size=8, seed=0))
        assert not any(name.endswith("zzz.png") for split in data.files.values() for name in split)
        assert sum(data.sizes[s] for s in ("train", "val")) == 24
        next(iter(data.train.batches(0)))  # reads without blocking
        data.close()


# -- silent, useless runs ---------------------------------------------------------------------------------------
def test_5_a_warmup_as_long_as_the_run_is_refused(tmp_path, monkeypatch, capsys, fault):
    fault("tricks.sgdr.warmup_epochs longer than the run")
    monkeypatch.chdir(tmp_path)
    _refused(capsys, cli_main(["train", *SMALL_RUN, "train.epochs=2", "tricks.sgdr.warmup_epochs=5"]),
             "tricks.sgdr.warmup_epochs=5 is not shorter than the run (train.epochs=2)", tmp_path)


def test_6_a_shard_cut_at_a_member_boundary_is_refused(tmp_path, monkeypatch, capsys, fault):
    fault("a shard cut exactly at a member boundary")
    root = _shards(tmp_path / "wds")
    shard = root / "train-000000.tar"
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    cut = members[-2].offset  # the last sample's image header: the tar then ends after a whole member
    shard.write_bytes(shard.read_bytes()[:cut])
    with tarfile.open(shard) as tar:  # still a valid tar to Python, only shorter
        assert len(tar.getmembers()) == len(members) - 2
    monkeypatch.chdir(tmp_path)
    _refused(capsys, cli_main(["train", *STREAM, "data.name=wds", f"data.root={root}"]),
             "ends without a tar's end-of-archive blocks", tmp_path)


def test_7_a_key_given_twice_in_a_yaml_file_is_refused(tmp_path, monkeypatch, capsys, fault):
    fault("duplicate keys in a YAML config")
    (tmp_path / "dup.yaml").write_text("train:\n  epochs: 1\n  epochs: 2\n")
    monkeypatch.chdir(tmp_path)
    _refused(capsys, cli_main(["train", "-c", "dup.yaml", *SMALL_RUN]), "key 'epochs' appears twice", tmp_path)


# -- tracebacks instead of one line -----------------------------------------------------------------------------
def _bomb_png() -> bytes:
    """A small PNG whose header says 20000 x 20000 (Pillow's decompression-bomb limit is half that many pixels)."""
    raw = _png(np.random.default_rng(3), (8, 8))
    ihdr = bytearray(raw[16:29])
    ihdr[0:8] = struct.pack(">II", 20000, 20000)
    return raw[:16] + bytes(ihdr) + struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr))) + raw[33:]


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_8_a_decompression_bomb_is_skipped_and_named(tmp_path, monkeypatch, capsys, loader, fault):
    fault(f"a decompression-bomb PNG in train/ ({loader} path)")
    root = _folder(tmp_path / "f", {"train": 40, "test": 8})
    (root / "train" / "c1" / "bomb.png").write_bytes(_bomb_png())
    monkeypatch.chdir(tmp_path)
    code = cli_main(["train", *STREAM, f"data.loader={loader}", "data.name=imagefolder", f"data.root={root}",
                     "data.max_bad_fraction=0.05", f"data.cache_dir={tmp_path / 'cache'}"])
    err = capsys.readouterr().err
    assert code == 0 and "bomb.png" in err, err
    assert "Traceback" not in err and "DecompressionBombError:" not in err


def _safetensors(tmp_path: Path) -> Path:
    import timm
    from safetensors.torch import save_file

    import trickbox.models  # noqa: F401  (registers cifar_resnet8)

    path = tmp_path / "ok.safetensors"
    save_file(timm.create_model("cifar_resnet8", num_classes=10).state_dict(), str(path))
    return path


@pytest.mark.parametrize("kind", ["header-2^62", "renamed-pth", "empty", "truncated"])
def test_9_10_a_weights_file_that_is_not_whole_safetensors_is_one_line(tmp_path, monkeypatch, capsys, kind, fault):
    fault(f"model.pretrained_file: {kind}")
    path = tmp_path / "w.safetensors"
    if kind == "header-2^62":
        path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    elif kind == "renamed-pth":
        torch.save({"w": torch.zeros(3)}, path)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        whole = _safetensors(tmp_path).read_bytes()
        path.write_bytes(whole[:len(whole) // 2])
    monkeypatch.chdir(tmp_path)
    fragment = "is truncated" if kind == "truncated" else "is not a safetensors file"
    _refused(capsys, cli_main(["train", *SMALL_RUN, "model.pretrained=true", f"model.pretrained_file={path}"]),
             fragment, tmp_path)


def test_11_a_negative_class_in_a_training_shard_is_refused_before_training(tmp_path, monkeypatch, capsys, fault):
    fault(".cls = -1 in a training shard")
    root = tmp_path / "wds"
    rng = np.random.default_rng(4)
    _shard(root / "train-000000.tar", [(f"t{i:03d}", _jpeg(rng), b"-1" if i == 5 else str(i % 4).encode())
                                       for i in range(32)])
    _shard(root / "val-000000.tar", [(f"v{i:03d}", _jpeg(rng), str(i % 4).encode()) for i in range(8)])
    monkeypatch.chdir(tmp_path)
    _refused(capsys, cli_main(["train", *STREAM, "data.name=wds", f"data.root={root}"]), "class index -1", tmp_path)


def test_12_a_classes_txt_that_is_not_utf8_is_one_line(tmp_path, monkeypatch, capsys, fault):
    fault("classes.txt not UTF-8")
    root = _shards(tmp_path / "wds")
    (root / "classes.txt").write_bytes(b"cat\n\xff\xfedog\nbird\nfish\n")
    monkeypatch.chdir(tmp_path)
    _refused(capsys, cli_main(["train", *STREAM, "data.name=wds", f"data.root={root}"]), "is not UTF-8", tmp_path)


@pytest.mark.parametrize("card", ["{not json", '{"name": "cifar_resnet8", "in_chans": 3}'],
                         ids=["invalid-json", "no-num_classes"])
def test_13_19_a_bad_teacher_card_is_one_line_and_leaves_no_run_directory(tmp_path, monkeypatch, capsys, card, fault):
    fault("teacher model.json invalid or incomplete (refused after the run started)")
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "model.json").write_text(card)
    _safetensors(tmp_path).rename(teacher / "model.safetensors")
    monkeypatch.chdir(tmp_path)
    code = cli_main(["train", *SMALL_RUN, f"tricks.distillation.teacher={teacher}"])
    _refused(capsys, code, "model.json", tmp_path)


@pytest.mark.parametrize("override, fragment", [
    ("tricks=[1]", "tricks must be a mapping of trick names to parameters or a list of trick names, got [1]"),
    ("train.eval_batch_size=1e20", "train.eval_batch_size must be an integer in [1, 1048576]"),
    ("train.batch_size=1e9", "train.batch_size must be an integer in [1, 1048576]"),
    ("train.run_name=" + "x" * 300, "train.run_name is 300 bytes long"),
], ids=["tricks-list-of-int", "eval-batch-1e20", "batch-1e9", "run-name-300"])
def test_15_16_19_bounds_and_shapes_are_one_line(tmp_path, monkeypatch, capsys, override, fragment, fault):
    fault(f"bad override {override[:40]}")
    monkeypatch.chdir(tmp_path)
    _refused(capsys, cli_main(["train", *SMALL_RUN, override]), fragment, tmp_path)


def test_14_a_deeply_nested_yaml_is_one_line(tmp_path, monkeypatch, capsys, fault):
    fault("a 50,000-deep nested YAML list")
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 50000 + "]" * 50000 + "\n")
    monkeypatch.chdir(tmp_path)
    _refused(capsys, cli_main(["train", "-c", "deep.yaml", *SMALL_RUN]), "nested deeper than can be read", tmp_path)


# -- unclear messages and leftovers -----------------------------------------------------------------------------
def test_17_an_unwritable_journal_is_reported_intact(tmp_path):
    from trickbox.sweep.storage import StorageTarget, journal_damage

    journal = tmp_path / "study.journal"
    journal.write_text("")
    target = StorageTarget(kind="journal", url=str(journal), journal=journal)  # type: ignore[call-arg]
    for code in (errno.EROFS, errno.EACCES, errno.ENOSPC):
        exc = OSError(code, os.strerror(code), str(journal))
        error = journal_damage(target, tmp_path / "runs", exc)
        assert error is not None and "cannot be written" in str(error) and "intact" in str(error)
        assert "restore the journal" not in str(error)
    cut = journal_damage(target, tmp_path / "runs", ValueError(f"bad line in {journal}"))
    assert cut is not None and "damaged" in str(cut)  # a garbled line is still reported as damage


@pytest.mark.parametrize("what", ["directory", "dev-null", "fifo"])
@pytest.mark.parametrize("where", ["config", "pretrained_file"])
def test_18_things_that_exist_are_not_said_to_be_missing(tmp_path, monkeypatch, capsys, what, where, fault):
    fault(f"a {what} as {where}")
    target = {"directory": tmp_path / "adir", "dev-null": Path("/dev/null"), "fifo": tmp_path / "fifo"}[what]
    if what == "directory":
        target.mkdir()
    elif what == "fifo":
        os.mkfifo(target)
    monkeypatch.chdir(tmp_path)
    args = ["-c", str(target), *SMALL_RUN] if where == "config" else [*SMALL_RUN, "model.pretrained=true",
                                                                      f"model.pretrained_file={target}"]
    err = _refused(capsys, cli_main(["train", *args]), "is a directory" if what == "directory" else
                   "is not a regular file", tmp_path)
    assert "does not exist" not in err


def test_20_a_skipped_image_warning_is_one_line_with_the_name_quoted(tmp_path, capsys, fault):
    fault("a bad image whose name holds a newline")
    root = _folder(tmp_path / "f", {"train": 40, "test": 8})
    bad = root / "train" / "c2" / "two\nlines.png"
    bad.write_bytes(b"not a png")
    data = open_run_data(DataConfig(name="imagefolder", root=str(root), loader="memory", max_bad_fraction=0.05,
                                    cache_dir=str(tmp_path / "cache")), LoaderOptions(batch_size=8, eval_batch_size=8,
                                                                                      seed=0))
    data.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert len(lines) == 1 and "two\\nlines.png" in lines[0] and lines[0].startswith("trickbox: warning: data:"), lines


def test_21_a_shard_run_prints_no_dataset_info_noise(tmp_path, monkeypatch, capsys, fault):
    fault("shard run: 'Dataset info file not found'")
    root = _shards(tmp_path / "wds")
    monkeypatch.chdir(tmp_path)
    assert cli_main(["train", *STREAM, "data.name=wds", f"data.root={root}"]) == 0
    captured = capsys.readouterr()
    assert "Dataset info file not found" not in captured.err + captured.out
