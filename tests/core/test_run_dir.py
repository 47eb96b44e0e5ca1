"""Run directories are claimed, not assumed; bad input stops before anything is written; resume refuses a changed
run; a full disk is one line and --resume continues (issue: reliability)."""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trickbox.cli import main as cli_main
from trickbox.config import load_config
from trickbox.loop import train

from ..conftest import REPO, assert_same_weights, subprocess_env, told
from ..conftest import RESUME_CONFIG as CONFIG

TRAIN = [sys.executable, str(REPO / "train.py")]
FAST = ["train.epochs=2", "train.tracker=none", "train.progress=false", "data.train_subset=256"]


def test_two_runs_started_at_the_same_moment_get_two_directories(tmp_path, fault):
    fault("two runs started in the same second in one directory")
    procs = [subprocess.Popen([*TRAIN, *FAST, f"train.seed={s}"], cwd=tmp_path, env=subprocess_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for s in (0, 1)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()[-2000:] if p.stderr else ""
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    seeds = set()
    for run in runs:
        for f in ("config.yaml", "metrics.jsonl", "model.safetensors", "summary.json"):
            assert (run / f).is_file(), (run, f)
        seeds.add(yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"])
        epochs = [line for line in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in line]
        assert len(epochs) == 2  # its own two epochs, not the other run's interleaved
    assert seeds == {0, 1}


def _refused(tmp_path: Path, capsys, *args: str) -> str:
    code = cli_main(["train", f"train.out_dir={tmp_path / 'out'}", "train.tracker=none", *args])
    err = told(capsys.readouterr().err).strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), "something was written"
    return err


@pytest.mark.parametrize("args, fragment", [
    (["train.run_name=../escaped"], "train.run_name must be one folder name"),
    (["train.run_name=/tmp/abs"], "train.run_name must be one folder name"),
    (["optim.lr=.nan"], "optim.lr must be a finite number"),
    (["optim.weight_decay=.inf"], "optim.weight_decay must be a finite number"),
    (["train.seed=-1"], "train.seed must be an integer in [0, 4294967296)"),
    (["train.seed=4294967296"], "train.seed must be an integer in [0, 4294967296)"),
])
def test_bad_values_stop_before_anything_is_written(tmp_path, capsys, args, fragment, fault):
    fault(f"bad value {args[0]}")
    assert fragment in _refused(tmp_path, capsys, *args)


def test_bad_config_files_are_one_line(tmp_path, capsys, fault):
    fault("a config file that is not UTF-8, and an empty one")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("train: {project: caf\xe9}\n".encode("latin-1"))
    assert "is not UTF-8 text" in _refused(tmp_path, capsys, "-c", str(latin))
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    assert "is empty" in _refused(tmp_path, capsys, "-c", str(empty))


def test_an_unwritable_or_file_out_dir_is_one_line(tmp_path, capsys, fault):
    fault("train.out_dir read-only, then a file")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root): a read-only folder is not read-only")
        code = cli_main(["train", f"train.out_dir={ro / 'runs'}", "train.tracker=none", *FAST])
        err = told(capsys.readouterr().err).strip()
        assert code == 2 and "cannot create the run directory" in err and "\n" not in err
    finally:
        ro.chmod(stat.S_IRWXU)


def test_an_out_dir_that_is_a_file_is_one_line(tmp_path, capsys, fault):
    fault("train.out_dir is a file")
    (tmp_path / "afile").write_text("x")
    code = cli_main(["train", f"train.out_dir={tmp_path / 'afile'}", "train.tracker=none", *FAST])
    err = told(capsys.readouterr().err).strip()
    assert code == 2 and "cannot create the run directory" in err and "\n" not in err


def test_a_refused_teacher_leaves_nothing_written(tmp_path, capsys, fault):
    fault("distillation teacher that does not exist")
    err = _refused(tmp_path, capsys, f"tricks.distillation.teacher={tmp_path / 'nope'}")
    assert "not a trickbox run directory" in err


def test_a_finished_run_name_needs_resume_and_a_live_one_is_refused(tmp_path, capsys, fault):
    fault("train.run_name of a finished run, and of a run a live process trains in")
    out = tmp_path / "out"
    assert cli_main(["train", f"train.out_dir={out}", "train.run_name=r", *FAST]) == 0
    capsys.readouterr()
    assert cli_main(["train", f"train.out_dir={out}", "train.run_name=r", *FAST]) == 2
    assert "holds a run already; add --resume" in capsys.readouterr().err
    from trickbox.run_dir import claim

    _, lock, _ = claim(out, "busy", "x", resume=False)  # this process holds it, as a live run would
    try:
        holder = subprocess.run([*TRAIN, f"train.out_dir={out}", "train.run_name=busy", "--resume", *FAST],
                                cwd=tmp_path,
                                env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert holder.returncode == 2 and "is in use by a live process" in holder.stderr, holder.stderr
    finally:
        lock.close()


def _cfg(tmp_path: Path) -> Path:
    path = tmp_path / "resume.yaml"
    path.write_text(CONFIG)
    return path


def test_resume_refuses_a_changed_seed_or_learning_rate_and_allows_what_it_is_told(tmp_path, capsys, fault):
    fault("--resume with a changed seed / learning rate / number of epochs", resumed=True)
    cfg, out = _cfg(tmp_path), tmp_path / "out"
    base = ["-c", str(cfg), f"train.out_dir={out}", "train.run_name=r"]
    assert cli_main(["train", *base, "train.stop_after_epoch=1"]) == 0
    capsys.readouterr()
    for change, key in (("train.seed=5", "train.seed: 0 -> 5"), ("optim.lr=0.01", "optim.lr: 0.05 -> 0.01")):
        assert cli_main(["train", *base, "--resume", change]) == 2
        err = told(capsys.readouterr().err).strip()
        assert key in err and "\n" not in err, err
    assert cli_main(["train", *base, "--resume", "train.epochs=4", "train.resume_allow=[train.epochs]"]) == 0
    err = capsys.readouterr().err
    assert "resuming with a changed setting (train.resume_allow): train.epochs: 3 -> 4" in err
    assert (out / "r" / "model.safetensors").is_file()


def test_resume_with_another_number_of_processes_is_refused(tmp_path, capsys):
    from trickbox.run_dir import check_resume

    with pytest.raises(Exception, match="processes: 2 -> 1"):
        check_resume({"processes": 2, "train.seed": 0}, {"processes": 1, "train.seed": 0}, [], tmp_path)


def test_a_full_disk_while_checkpointing_is_one_line_and_resume_then_ends_identical(tmp_path, capsys, monkeypatch,
                                                                                    fault):
    f = fault("ENOSPC while writing the epoch-2 checkpoint", resumed=True)
    cfg, out = _cfg(tmp_path), tmp_path / "out"
    ref = train(load_config([cfg], [f"train.out_dir={tmp_path / 'ref'}", "train.run_name=ref"]))
    import safetensors.torch as ckpt  # trickbox.checkpoint imports save_file from here when it writes

    real, calls = ckpt.save_file, {"n": 0}

    def full(*a, **k):  # the model file of the second checkpoint finds the disk full
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **k)

    monkeypatch.setattr(ckpt, "save_file", full)
    code = cli_main(["train", "-c", str(cfg), f"train.out_dir={out}", "train.run_name=r"])
    err = told(capsys.readouterr().err).strip()
    assert code == 4 and "\n" not in err and "No space left on device" in err, err
    assert "checkpoints of earlier steps" in err and "--resume train.run_name=r" in err
    monkeypatch.setattr(ckpt, "save_file", real)
    assert cli_main(["train", "-c", str(cfg), f"train.out_dir={out}", "train.run_name=r", "--resume"]) == 0
    assert_same_weights(ref.run_dir, out / "r")
    f.update(exact=True)
