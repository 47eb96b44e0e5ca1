"""A run says what runs, and a stop signal means the same however it arrives: to the main process, to the whole
process group (SLURM, ``kill -TERM -PGID``: the launcher and the data-loading workers get it too), or during setup."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trickbox.checkpoint import latest_checkpoint
from trickbox.cli import run as cli_run
from trickbox.loop import launch_warnings

from ..conftest import REPO, SMALL_RUN, launch_two_ranks, runs_in_one_launch, same_weights, subprocess_env, weights

FIXTURES = str(REPO / "tests" / "fixtures")


def test_the_first_line_says_processes_device_precision_and_data_path_without_a_progress_bar(tmp_path, monkeypatch,
                                                                                             capsys):
    monkeypatch.chdir(tmp_path)
    # what `accelerate launch --num_processes 2` without --multi_gpu sets
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit) as done:
        _cli(["train", *SMALL_RUN])
    assert done.value.code == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == ("trickbox: 1 process on cpu, precision no; data: memory path (data.name=digits is held in "
                        "memory); train 256, val 144, test 100 images, 10 classes"), lines
    assert lines[1].startswith("trickbox: warning: the launcher was asked for several processes but 1 started: add "
                               "--multi_gpu"), lines


def _cli(argv: list[str]) -> None:
    old = sys.argv
    sys.argv = ["trickbox", *argv]
    try:
        cli_run()
    finally:
        sys.argv = old


def test_launch_warnings_name_fewer_processes_than_asked_and_autocast_on_a_cpu():
    assert launch_warnings(1, "cpu", "no", {}) == []
    assert launch_warnings(2, "cpu", "no", {"MASTER_ADDR": "x", "WORLD_SIZE": "2"}) == []
    assert "1 started" in launch_warnings(1, "cpu", "no", {"MASTER_ADDR": "x"})[0]
    assert "WORLD_SIZE=4 but 2 processes" in launch_warnings(2, "cpu", "no", {"MASTER_ADDR": "x", "WORLD_SIZE": "4"})[0]
    for precision in ("bf16", "fp16"):
        (line,) = launch_warnings(1, "cpu", precision, {})
        assert line.startswith(f"{precision} autocast on a CPU") and "train.mixed_precision=no" in line
    assert launch_warnings(1, "cuda", "bf16", {}) == []


def test_a_signal_during_setup_stops_at_once_and_says_nothing_was_trained(tmp_path, monkeypatch, capsys, fault):
    fault("SIGTERM during setup (a trick's trickbox_setup)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(FIXTURES)
    monkeypatch.setenv("TRICKBOX_PLUGINS", "signals")
    with pytest.raises(SystemExit) as done:
        _cli(["train", *SMALL_RUN, "tricks.signal_at.where=setup", "train.run_name=s"])
    assert done.value.code == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert ("trickbox: stopped by signal 15 before training began; nothing was trained: run the same command "
            "again") in err
    assert latest_checkpoint(tmp_path / "runs" / "s" / "checkpoints") is None
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handler is gone with the run


STREAM = ["data.name=imagefolder", "data.loader=stream", "data.workers=2", "model.name=cifar_resnet8",
          "data.image_size=32",
          "train.batch_size=16", "train.epochs=2", "train.tracker=none", "train.progress=false", "optim.lr=0.05",
          "tricks.mixup.alpha=0.4", "tricks.mixup.grid=false"]
RESUME = ["--resume", "tricks.signal_at.at=10000", "train.resume_allow=[tricks.signal_at]"]


def _group_env() -> dict[str, str]:
    return subprocess_env(ACCELERATE_USE_CPU="1", TRICKBOX_PLUGINS="signals", PYTHONPATH=FIXTURES)


def _signalled(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` as the leader of a session and process group of its own, whose id it is told
    (``TRICKBOX_TEST_SIGNAL_PGID``): a ``kill -TERM -PGID`` from inside reaches only it, its launcher and workers."""
    wrapped = ["sh", "-c", 'TRICKBOX_TEST_SIGNAL_PGID=$$ exec "$@"', "sh", *cmd]
    return subprocess.run(wrapped, cwd=cwd, env=_group_env(), capture_output=True, text=True, timeout=300,
                          start_new_session=True)


def _assert_preempted(proc: subprocess.CompletedProcess[str], run_dir: Path) -> None:
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert proc.stderr.count("trickbox: preempted (signal 15); checkpoint written, resume with --resume") == 1, \
        proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "worker died" not in proc.stderr, proc.stderr[-3000:]
    found = latest_checkpoint(run_dir / "checkpoints")
    assert found is not None and found.batch_in_epoch > 0  # mid-epoch, as the signal came


@pytest.mark.slow
def test_sigterm_to_the_process_group_on_the_stream_path_is_a_preemption_and_resumes_exactly(imagenet_like, tmp_path,
                                                                                            fault):
    fault("SIGTERM to the process group mid-epoch, stream path, 1 process", resumed=True, exact=True)
    data = [*STREAM, f"data.root={imagenet_like / 'folder'}"]
    script = [sys.executable, str(REPO / "train.py"), *data]
    ref = _signalled([*script, "train.run_name=ref", "tricks.signal_at.at=10000"], tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    _assert_preempted(_signalled([*script, "train.run_name=r", "tricks.signal_at.where=group", "tricks.signal_at.at=4"],
                                 tmp_path), tmp_path / "runs" / "r")
    resumed = _signalled([*script, "train.run_name=r", *RESUME], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert same_weights(weights(tmp_path / "runs" / "ref"), weights(tmp_path / "runs" / "r"))


@pytest.mark.slow
def test_sigterm_to_the_launchers_group_on_two_processes_is_a_preemption_and_resumes_exactly(imagenet_like, tmp_path,
                                                                                            fault):
    fault("SIGTERM to the process group mid-epoch, stream path, 2 processes (launcher included)", resumed=True,
          exact=True)
    # 3 steps an epoch on each rank; the ranks agree on the signal after the next step (mid-epoch 2)
    data = [*STREAM, f"data.root={imagenet_like / 'folder'}", "train.epochs=3", "train.finite_check_every=1"]
    killed = _signalled([*launch_two_ranks(), str(REPO / "train.py"), *data, "train.run_name=r",
                         "tricks.signal_at.where=group", "tricks.signal_at.at=4"], tmp_path)
    _assert_preempted(killed, tmp_path / "runs" / "r")
    results, _ = runs_in_one_launch(tmp_path, [
        {"overrides": [*data, "train.run_name=r", "tricks.signal_at.at=10000", "train.resume_allow=[tricks.signal_at]"],
         "resume": True, "defaults": True},
        {"overrides": [*data, "train.run_name=ref", "tricks.signal_at.at=10000"], "defaults": True}],
        env={"TRICKBOX_PLUGINS": "signals"})
    assert [r["status"] for r in results] == ["complete", "complete"], results
    assert same_weights(weights(tmp_path / "runs" / "ref"), weights(tmp_path / "runs" / "r"))
