"""examples/own_loop.py: a user's own Accelerate script with trickbox's tricks, on 1 and 2 processes.

The trickbox version must stay a small edit of examples/own_loop_plain.py:
the test counts the lines that differ.
"""
from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from trickbox.functional import sgdr_lr

from ..conftest import REPO, launch_two_ranks, subprocess_env
from ..wandb_reader import offline_runs, read_run

EXAMPLES = REPO / "examples"
MAX_CHANGED_LINES = 12


def changed_lines(old: str, new: str) -> tuple[int, list[str]]:
    """Lines added, removed or changed (a changed line counts once), ignoring blank lines; and the diff."""
    a = [line for line in old.splitlines() if line.strip()]
    b = [line for line in new.splitlines() if line.strip()]
    opcodes = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    count = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in opcodes if tag != "equal")
    diff = [line for line in difflib.unified_diff(a, b, lineterm="",
                                                  n=0) if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    return count, diff


def test_own_loop_differs_from_the_plain_script_by_at_most_a_dozen_lines():
    plain = (EXAMPLES / "own_loop_plain.py").read_text()
    own = (EXAMPLES / "own_loop.py").read_text()
    count, diff = changed_lines(plain, own)
    assert count <= MAX_CHANGED_LINES, "\n".join(diff)
    # the plain script uses trickbox only to register the CIFAR-sized models in timm
    assert re.findall(r"^[ \t]*(?:import|from) trickbox\S*", plain, flags=re.M) == ["import trickbox.models"]
    assert not re.search(r"\btricks\.", plain)
    # what the diff must contain: the whole API a loop needs
    added = "\n".join(line for line in diff if line.startswith("+"))
    for call in ("trickbox.load_tricks(", "tricks.setup(", "tricks.batch(", "tricks.loss(", "tricks.forward(",
                 "tricks.step("):
        assert call in added
    for trick in ("mixup", "label_smoothing", "sgdr", "distillation"):
        assert f'"{trick}"' in added


def test_changed_lines_counts_a_changed_line_once():
    assert changed_lines("a\nb\n\nc\n", "a\nB\nc\n\n\nd\n")[0] == 2


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A trickbox run directory (model.safetensors + model.json) trained for 2 epochs on digits."""
    out = tmp_path_factory.mktemp("teacher")
    res = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "train.epochs=2", "train.tracker=none", "train.run_name=teacher",
         f"train.out_dir={out}", "train.progress=false"],
        cwd=out, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    run = out / "teacher"
    assert (run / "model.safetensors").is_file() and (run / "model.json").is_file()
    return run


def _epochs(stdout: str) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in re.findall(r"train loss ([\d.]+), val accuracy ([\d.]+)", stdout)]


def _test_accuracy(stdout: str) -> list[float]:
    return [float(a) for a in re.findall(r"^test accuracy ([\d.]+)$", stdout, flags=re.M)]


def _check_logged_run(cwd: Path, epochs: int) -> None:
    """One W&B run (main process only) whose per-step LR is the script's SGDR (t0=2, t_mult=2) and whose loss has named
    parts."""
    runs = offline_runs(cwd)
    assert len(runs) == 1
    run = read_run(runs[0])
    lrs = [row["lr"] for row in run.history if "lr" in row]
    steps_per_epoch = len(lrs) // epochs
    assert len(lrs) == epochs * steps_per_epoch
    for step, lr in enumerate(lrs):  # tricks.step() logs the LR each optimizer step used
        assert lr == pytest.approx(sgdr_lr(step, steps_per_epoch=steps_per_epoch, base_lr=0.05, t0=2, t_mult=2),
                                   abs=1e-9)
    parts = [row for row in run.history if "loss/ce" in row]
    assert parts and all("loss/kd" in row and row["loss"] == pytest.approx(row["loss/ce"] + row["loss/kd"],
                                                                           rel=1e-5) for row in parts)
    assert run.summary["test/accuracy"] > 0.5
    assert len([row for row in run.history if "val/accuracy" in row]) == epochs


@pytest.mark.slow
def test_own_loop_one_process_with_the_four_tricks(teacher, tmp_path):
    # W&B offline in a scratch directory: the loss parts and the LR reach the Accelerator's tracker through
    # tricks.step()
    res = subprocess.run(
        [sys.executable, str(EXAMPLES / "own_loop.py"), "--epochs", "3", "--teacher", str(teacher), "--tracker",
         "wandb"],
        cwd=tmp_path, env=subprocess_env(WANDB_MODE="offline"), capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    epochs = _epochs(res.stdout)
    assert len(epochs) == 3
    # the total includes the distillation term T²·CE(teacher, student) at T=4, far above a plain CE
    assert all(loss > 10 for loss, _ in epochs)
    assert _test_accuracy(res.stdout)[0] > 0.5
    _check_logged_run(tmp_path, epochs=3)  # 3 epochs: the warm restart at epoch 2 is in the log


@pytest.mark.slow
def test_own_loop_two_cpu_processes_with_the_four_tricks(teacher, tmp_path):
    res = subprocess.run(
        [*launch_two_ranks(), str(EXAMPLES / "own_loop.py"), "--epochs", "2", "--teacher", str(teacher), "--tracker",
         "wandb"],
        cwd=tmp_path, env=subprocess_env(ACCELERATE_USE_CPU="1", WANDB_MODE="offline"), capture_output=True, text=True,
                         timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert len(_epochs(res.stdout)) == 2  # accelerator.print: the main process only
    assert len(_test_accuracy(res.stdout)) == 1
    assert _test_accuracy(res.stdout)[0] > 0.5
    _check_logged_run(tmp_path, epochs=2)  # each process takes half the batches; the schedule is still in epochs


@pytest.mark.slow
def test_plain_script_runs(tmp_path):
    res = subprocess.run([sys.executable, str(EXAMPLES / "own_loop_plain.py"), "--epochs", "1", "--tracker", "none"],
                         cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(_epochs(res.stdout)) == 1 and _test_accuracy(res.stdout)[0] > 0.5


@pytest.mark.slow
def test_own_loop_on_a_cifar_zip(cifar_zip, tmp_path):
    res = subprocess.run(
        [sys.executable, str(EXAMPLES / "own_loop.py"), "--epochs", "1", "--data", str(cifar_zip), "--limit", "300",
         "--tracker", "none"],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(_epochs(res.stdout)) == 1 and len(_test_accuracy(res.stdout)) == 1


def test_unknown_trick_in_own_loop_is_one_line(tmp_path):
    """A typo in the script's trick config fails before anything is built, naming the valid tricks."""
    import trickbox

    with pytest.raises(trickbox.ConfigError, match=r"unknown trick 'mixpu'; did you mean 'mixup'\?"):
        trickbox.load_tricks({"mixpu": {"alpha": 0.2}})


@pytest.mark.slow
def test_sweep_drives_own_loop_three_trials_three_wandb_runs(tmp_path):
    from optuna import load_study
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from ..wandb_reader import offline_runs, read_run

    cmd = [sys.executable, "-m", "trickbox", "sweep", str(REPO / "sweeps" / "own_loop.yaml"),
           "--script", f"{REPO / 'examples' / 'own_loop.py'} --epochs 1", "--out-dir", str(tmp_path / "out")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(WANDB_MODE="offline"), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "out" / "own_loop" / "journal.log")))
    trials = load_study(study_name="own_loop", storage=storage).get_trials()
    assert [t.number for t in trials] == [0, 1, 2] and all(t.state.name == "COMPLETE" for t in trials)
    assert len({t.params["label_smoothing.eps"] for t in trials}) == 3  # each trial got its own parameters
    runs = sorted(read_run(r).name for r in offline_runs(tmp_path))
    assert runs == ["trial-0", "trial-1", "trial-2"]
