"""Checkpoints and exact resume: atomic writes, damaged checkpoints, stop/resume, SIGTERM, SIGUSR1, SIGKILL.

Every resumed run is compared with one run that was never interrupted: the
final ``model.safetensors`` tensors must be *equal* (``torch.equal``), not
close. The run uses mixup + label smoothing + SGDR with warm restarts
(t0=1, t_mult=2: restarts at epochs 1 and 3), so the RNG streams, the
sampler position, the SGDR position and the mixup draws all have to be
restored for the weights to match. Kill and signal tests run the real CLI
(``python train.py``) in a subprocess and send real signals.

Each fault is recorded (the ``fault`` fixture) so ``docs/reliability.md``'s
numbers come from a test run.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from trickbox import checkpoint as ckpt_mod
from trickbox.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint, verify
from trickbox.config import load_config
from trickbox.functional import sgdr_lr
from trickbox.loop import train

from ..conftest import REPO, assert_same_weights, launch_two_ranks, subprocess_env
from ..conftest import RESUME_CONFIG as CONFIG
from ..conftest import RESUME_EPOCHS as EPOCHS

TRAIN_PY = str(REPO / "train.py")
STEPS_PER_EPOCH = 41  # 1293 digits training images / 32, rounded up; checked in the reference fixture


# -- helpers -----------------------------------------------------------------
def _train_here(cfg_file: Path, out: Path, name: str, *overrides: str, resume: bool = False):
    cfg = load_config([cfg_file], [f"train.out_dir={out}", f"train.run_name={name}", *overrides])
    return train(cfg, resume=resume)


def _cli(cfg_file: Path, out: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, TRAIN_PY, "-c", str(cfg_file), f"train.out_dir={out}", f"train.run_name={name}", *extra]


def _steps_logged(metrics: Path) -> int:
    if not metrics.is_file():
        return 0
    steps = [json.loads(line).get("step") or 0 for line in metrics.read_text().splitlines() if line.endswith("}")]
    return max(steps, default=0)


def _wait_until(proc: subprocess.Popen[str], ready, what: str, timeout: float = 180.0) -> None:
    """Poll ``ready()`` every 10 ms while ``proc`` runs; fail with its stderr if it ends first."""
    end = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"run ended (code {proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def spawn():
    """``spawn(cmd, cwd)`` starts a CLI run; any still running when the test ends is killed."""
    started: list[subprocess.Popen[str]] = []

    def start(cmd: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(cmd, cwd=cwd, env=subprocess_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def cfg_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "resume.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def reference(cfg_file, tmp_path_factory) -> Path:
    """The uninterrupted run every resumed run must reproduce exactly."""
    torch.set_num_threads(1)
    res = _train_here(cfg_file, tmp_path_factory.mktemp("ref"), "ref")
    assert res.steps == EPOCHS * STEPS_PER_EPOCH
    return res.run_dir


@pytest.fixture(scope="module")
def stopped_mid_cycle(cfg_file, tmp_path_factory) -> Path:
    """A run stopped (with its epoch-1 and epoch-2 checkpoints) after epoch 2, inside SGDR's second cycle."""
    torch.set_num_threads(1)
    res = _train_here(cfg_file, tmp_path_factory.mktemp("stopped"), "s", "train.stop_after_epoch=2")
    assert res.steps == 2 * STEPS_PER_EPOCH and not (res.run_dir / "model.safetensors").exists()
    return res.run_dir


# -- checkpoint files ----------------------------------------------------------
def _tiny_state(step: int) -> dict[str, object]:
    return dict(model_state={"w": torch.full((4,), float(step))}, optimizer_state={"state": {}, "param_groups": []},
                step=step, epoch=step, batch_in_epoch=0)


def test_checkpoint_is_complete_under_a_temporary_name_before_the_rename(tmp_path, monkeypatch):
    renames: list[tuple[Path, Path, bool, bool]] = []
    real_replace = os.replace

    def spy(src, dst):  # type: ignore[no-untyped-def]
        src, dst = Path(src), Path(dst)
        renames.append((src, dst, verify(src) is not None, dst.exists()))
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_mod.os, "replace", spy)
    final = save_checkpoint(tmp_path, **_tiny_state(7))  # type: ignore[arg-type]
    (src, dst, complete, existed) = renames[-1]
    assert src.name.startswith(".tmp-") and src.parent == tmp_path and dst == final == tmp_path / "step-00000007"
    assert complete and not existed, "the directory was renamed before all its files were written and hashed"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_old_checkpoint_is_deleted_only_after_the_new_one_is_in_place(tmp_path, monkeypatch):
    for step in (1, 2):
        save_checkpoint(tmp_path, **_tiny_state(step))  # type: ignore[arg-type]
    seen: list[tuple[str, int | None]] = []
    real_rmtree = shutil.rmtree

    def spy(path, *a, **k):  # type: ignore[no-untyped-def]
        newest = latest_checkpoint(tmp_path)
        seen.append((Path(path).name, newest and newest.step))
        real_rmtree(path, *a, **k)

    monkeypatch.setattr(ckpt_mod.shutil, "rmtree", spy)
    save_checkpoint(tmp_path, **_tiny_state(3), keep=2)  # type: ignore[arg-type]
    assert (".tmp-del-step-00000001", 3) in seen, seen  # renamed out of the way, then deleted
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002", "step-00000003"]


def test_a_failed_write_leaves_the_previous_checkpoints_untouched(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, **_tiny_state(1))  # type: ignore[arg-type]

    def disk_full(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, **_tiny_state(2))  # type: ignore[arg-type]
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000001"]  # no half-written step-2, no temp dir
    assert latest_checkpoint(tmp_path).step == 1  # type: ignore[union-attr]


def test_resume_picks_the_newest_complete_checkpoint(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, **_tiny_state(step), keep=10)  # type: ignore[arg-type]
    # a crash mid-write leaves a temporary directory; it never counts as a checkpoint
    shutil.copytree(tmp_path / "step-00000004", tmp_path / ".tmp-crashed")
    (tmp_path / "step-00000004" / "optimizer.pt").unlink()  # a file missing
    (tmp_path / "step-00000003" / "state.json").write_text("{not json")  # state unreadable
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = latest_checkpoint(tmp_path)
    assert found is not None and found.step == 2
    assert sum("incomplete or damaged" in str(w.message) for w in caught) == 2


def test_stale_temporary_directories_are_removed_by_the_next_checkpoint(tmp_path):
    save_checkpoint(tmp_path, **_tiny_state(1))  # type: ignore[arg-type]
    (tmp_path / ".tmp-killed").mkdir()
    (tmp_path / ".tmp-killed" / "model.safetensors").write_bytes(b"half")
    save_checkpoint(tmp_path, **_tiny_state(2))  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000001", "step-00000002"]


# -- exact resume ------------------------------------------------------------
def test_sgdr_restarts_where_the_tests_stop():
    lr = lambda s: sgdr_lr(s, steps_per_epoch=STEPS_PER_EPOCH, base_lr=0.05, t0=1, t_mult=2)  # noqa: E731
    assert lr(STEPS_PER_EPOCH) == pytest.approx(0.05)  # epoch 1 starts a cycle: stop_after_epoch=1 is at a restart
    assert lr(2 * STEPS_PER_EPOCH) < 0.05 * 0.6  # epoch 2 is in the middle of the 2-epoch cycle [1, 3)
    assert lr(2 * STEPS_PER_EPOCH - 1) < lr(STEPS_PER_EPOCH)


@pytest.mark.parametrize("stop", [1, 2], ids=["at-sgdr-restart", "mid-sgdr-cycle"])
def test_stop_after_epoch_then_resume_matches_an_uninterrupted_run(cfg_file, reference, tmp_path, stop, fault):
    fault(f"stop after epoch {stop} ({'SGDR restart' if stop == 1 else 'mid-cycle'})", resumed=True, exact=True)
    first = _train_here(cfg_file, tmp_path, "r", f"train.stop_after_epoch={stop}")
    assert first.steps == stop * STEPS_PER_EPOCH and first.test == {}
    assert latest_checkpoint(first.run_dir / "checkpoints").epoch == stop  # type: ignore[union-attr]
    second = _train_here(cfg_file, tmp_path, "r", resume=True)
    assert second.steps == EPOCHS * STEPS_PER_EPOCH
    assert [h["epoch"] for h in second.history] == list(range(1, EPOCHS + 1))
    assert_same_weights(reference, second.run_dir)


def test_truncated_newest_checkpoint_is_skipped_on_resume_through_the_cli(cfg_file, reference, stopped_mid_cycle,
                                                                          tmp_path, fault):
    fault("newest checkpoint truncated to half", resumed=True, exact=True)
    run_dir = tmp_path / "t"
    shutil.copytree(stopped_mid_cycle, run_dir)
    ckpts = list_checkpoints(run_dir / "checkpoints")
    assert [p.name for p in ckpts] == [f"step-{STEPS_PER_EPOCH:08d}", f"step-{2 * STEPS_PER_EPOCH:08d}"]
    weights = ckpts[-1] / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    res = subprocess.run(_cli(cfg_file, tmp_path, "t", "--resume"), cwd=tmp_path, env=subprocess_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"checkpoint {ckpts[-1]} is incomplete or damaged" in res.stderr
    assert_same_weights(reference, run_dir)  # so it resumed from the epoch-1 checkpoint and redid epoch 2


# -- preemption and kills (real subprocesses, real signals) ---------------------
@pytest.mark.slow
def test_sigterm_mid_epoch_checkpoints_exits_143_and_resumes_exactly(cfg_file, reference, tmp_path, spawn, fault):
    f = fault("SIGTERM mid-epoch", resumed=True, exact=True)
    run_dir = tmp_path / "p"
    proc = spawn(_cli(cfg_file, tmp_path, "p"), tmp_path)
    _wait_until(proc, lambda: _steps_logged(run_dir / "metrics.jsonl") >= 3, "3 steps were logged")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM == 143, err[-2000:]
    assert "preempted (signal 15)" in err and "Traceback" not in err
    found = latest_checkpoint(run_dir / "checkpoints")
    assert found is not None and 0 < found.batch_in_epoch < STEPS_PER_EPOCH, "no mid-epoch checkpoint"
    assert found.step == found.epoch * STEPS_PER_EPOCH + found.batch_in_epoch
    assert not (run_dir / "model.safetensors").exists()
    f.update(checkpoint_step=found.step)

    res = subprocess.run(_cli(cfg_file, tmp_path, "p", "--resume"), cwd=tmp_path, env=subprocess_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert_same_weights(reference, run_dir)


@pytest.mark.slow
def test_sigusr1_is_a_preemption_too(cfg_file, reference, tmp_path, spawn, fault):
    f = fault("SIGUSR1 mid-epoch", resumed=True, exact=True)
    run_dir = tmp_path / "u"
    proc = spawn(_cli(cfg_file, tmp_path, "u"), tmp_path)
    _wait_until(proc, lambda: _steps_logged(run_dir / "metrics.jsonl") >= STEPS_PER_EPOCH + 5, "epoch 2 had begun")
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGUSR1, err[-2000:]
    found = latest_checkpoint(run_dir / "checkpoints")
    assert found is not None and found.epoch >= 1 and found.batch_in_epoch > 0
    f.update(checkpoint_step=found.step)
    torch.set_num_threads(1)
    resumed = _train_here(cfg_file, tmp_path, "u", resume=True)  # in-process resume of a CLI checkpoint
    assert_same_weights(reference, resumed.run_dir)


@pytest.mark.slow
def test_sigkill_mid_run_leaves_a_resumable_run(cfg_file, reference, tmp_path, spawn, fault):
    """No handler runs on SIGKILL: what is on disk must still be either complete or ignored."""
    f = fault("SIGKILL mid-run (no handler runs)", resumed=True, exact=True)
    run_dir = tmp_path / "k"
    proc = spawn(_cli(cfg_file, tmp_path, "k"), tmp_path)
    _wait_until(proc, lambda: bool(list_checkpoints(run_dir / "checkpoints")), "the first checkpoint was written")
    time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    for path in list_checkpoints(run_dir / "checkpoints"):
        assert verify(path) is not None, f"{path} has a final name but is incomplete"
    killed_at = latest_checkpoint(run_dir / "checkpoints")
    f.update(checkpoint_step=killed_at and killed_at.step)
    torch.set_num_threads(1)
    resumed = _train_here(cfg_file, tmp_path, "k", resume=True)
    assert_same_weights(reference, resumed.run_dir)
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".tmp-")]


def _worker_ranks(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of the workers that ``accelerate launch`` started (Linux /proc)."""
    ranks = {}
    for child in open(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read().split():
        env = dict(kv.split("=", 1) for kv in Path(f"/proc/{child}/environ").read_text().split("\0") if "=" in kv)
        if "RANK" in env:
            ranks[int(env["RANK"])] = int(child)
    return ranks


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the worker processes")
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step(cfg_file, tmp_path, fault):
    """A scheduler may signal one worker only: both must checkpoint at the same step instead of deadlocking."""
    f = fault("SIGTERM to one of 2 ranks (accelerate launch)")
    run_dir = tmp_path / "mp"
    proc = subprocess.Popen([*launch_two_ranks(), *_cli(cfg_file, tmp_path, "mp")[1:]], cwd=tmp_path,
                            env=subprocess_env(ACCELERATE_USE_CPU="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    ranks: dict[int, int] = {}
    try:
        _wait_until(proc, lambda: _steps_logged(run_dir / "metrics.jsonl") >= 3, "3 steps were logged", timeout=300)
        ranks = _worker_ranks(proc.pid)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGTERM)  # rank 0, which writes checkpoints, gets no signal
        _, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        pytest.fail("the ranks deadlocked after one of them was signalled")
    finally:
        if proc.poll() is None:  # only on failure: the launcher and its workers are still ours to end
            for pid in [*ranks.values(), proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
    assert err.count("trickbox: preempted (signal 15)") == 1, err[-3000:]  # said once, by the main process
    assert "exitcode: 143" in err
    found = latest_checkpoint(run_dir / "checkpoints")
    assert found is not None and found.step >= 3  # where both agreed: mid-epoch, or the epoch's end if that came first
    f.update(checkpoint_step=found.step)


WRITER = """
import sys, torch
from pathlib import Path
from trickbox.checkpoint import save_checkpoint
root, step = Path(sys.argv[1]), int(sys.argv[2])
state = {"w": torch.randn(2_000_000)}
print("ready", flush=True)
while True:
    step += 1
    save_checkpoint(root, model_state=state, optimizer_state={"step": torch.tensor(step)}, step=step, epoch=step,
                    batch_in_epoch=0)
"""


@pytest.mark.slow
def test_sigkill_while_checkpoints_are_being_written(tmp_path, spawn, fault):
    """A process that does nothing but write 8 MB checkpoints is killed at three moments; every checkpoint
    with a final name verifies, and the newest complete one is always found."""
    root = tmp_path / "checkpoints"
    newest = 0
    for delay in (0.05, 0.23, 0.41):
        f = fault(f"SIGKILL while writing checkpoints (+{delay}s)")
        proc = spawn([sys.executable, "-c", WRITER, str(root), str(newest)], tmp_path)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        deadline = time.time() + 60  # a loaded machine may take long for the first write: kill during a later one
        while len(list_checkpoints(root)) <= (1 if newest else 0) and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        proc.kill()
        proc.communicate(timeout=60)
        mid_write = any(root.glob(".tmp-*"))  # the kill landed while a checkpoint was being written or deleted
        final = list_checkpoints(root)
        assert final and all(verify(p) is not None for p in final), "a checkpoint with a final name is incomplete"
        found = latest_checkpoint(root)
        assert found is not None and found.path == final[-1] and found.step > newest
        newest = found.step
        f.update(newest_complete_step=newest, killed_mid_write=mid_write)


PLUGINS = {"TRICKBOX_PLUGINS": "signals", "PYTHONPATH": str(REPO / "tests" / "fixtures")}


@pytest.mark.slow
def test_sigterm_in_the_first_epoch_before_any_checkpoint_resumes_exactly(cfg_file, reference, tmp_path, fault):
    f = fault("SIGTERM at step 2, before the first checkpoint", resumed=True)
    first = subprocess.run(_cli(cfg_file, tmp_path, "early", "tricks.signal_at.at=2"), cwd=tmp_path,
                           env=subprocess_env(**PLUGINS), capture_output=True, text=True, timeout=300)
    assert first.returncode == 143, first.stderr[-2000:]
    found = latest_checkpoint(tmp_path / "early" / "checkpoints")
    # the step after the signal
    assert found is not None and (found.step, found.epoch, found.batch_in_epoch) == (3, 0, 3)
    resumed = subprocess.run(_cli(cfg_file, tmp_path, "early", "--resume", "tricks.signal_at.at=10000"), cwd=tmp_path,
                             env=subprocess_env(**PLUGINS), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 2 and "tricks.signal_at.at" in resumed.stderr  # a changed trick: refused
    resumed = subprocess.run(_cli(cfg_file, tmp_path, "early", "--resume", "tricks.signal_at.at=10000",
                                  "train.resume_allow=[tricks.signal_at]"), cwd=tmp_path,
                             env=subprocess_env(**PLUGINS), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_weights(reference, tmp_path / "early")
    f.update(exact=True, checkpoint_step=3)


@pytest.mark.slow
def test_a_signal_during_the_final_evaluation_still_finishes_the_run(cfg_file, tmp_path, fault):
    fault("SIGTERM during the final test evaluation")
    proc = subprocess.run(_cli(cfg_file, tmp_path, "late", "train.epochs=1", "tricks.signal_at.where=final_eval"),
                          cwd=tmp_path, env=subprocess_env(**PLUGINS), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "late" / "model.safetensors").is_file() and (tmp_path / "late" / "summary.json").is_file()
    assert "the run is complete" in proc.stderr


@pytest.mark.slow
def test_a_rank_that_dies_mid_step_stops_the_others_promptly(cfg_file, tmp_path, fault):
    fault("one of two ranks exits mid-step (os._exit)")
    start = time.time()
    proc = subprocess.run([*launch_two_ranks(), *_cli(cfg_file, tmp_path, "dies")[1:],
                           "tricks.signal_at.where=die", "tricks.signal_at.rank=1", "tricks.signal_at.at=5"],
                          cwd=tmp_path, env=subprocess_env(ACCELERATE_USE_CPU="1", **PLUGINS), capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode != 0
    assert time.time() - start < 240  # the other rank does not wait for the process-group timeout (30 min)
