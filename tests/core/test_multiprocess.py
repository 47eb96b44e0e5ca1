"""Two CPU processes on gloo: one W&B run, one checkpoint directory, SGDR periods as with one process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trickbox.functional import sgdr_lr

from ..conftest import REPO, launch_two_ranks, subprocess_env

ARGS = ["train.epochs=3", "train.batch_size=64", "tricks.sgdr.t0=1", "tricks.sgdr.t_mult=2", "tricks.mixup.alpha=0.2",
        "train.log_every=1", "train.run_name=r", "optim.lr=0.05"]


def _lr_rows(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in rows if "lr" in r}


def _restart_epochs(lrs: dict[int, float], steps_per_epoch: int) -> list[float]:
    steps = sorted(lrs)
    return [s / steps_per_epoch for a, s in zip(steps, steps[1:]) if lrs[s] > lrs[a] + 1e-12]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    r1 = subprocess.run([sys.executable, str(REPO / "train.py"), *ARGS, "train.tracker=none"], cwd=one,
                        env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = subprocess.run(
        [*launch_two_ranks(), str(REPO / "train.py"), *ARGS],
        cwd=two, env=subprocess_env(ACCELERATE_USE_CPU="1", WANDB_MODE="offline"), capture_output=True, text=True,
                        timeout=300,
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "Traceback" not in r2.stderr

    # one W&B run and one run directory with checkpoints, written by rank 0 only
    assert len(list((two / "wandb").glob("offline-run-*"))) == 1
    assert [p.name for p in (two / "runs").iterdir()] == ["r"]
    assert len(list((two / "runs" / "r" / "checkpoints").glob("step-*"))) >= 1

    lr1, lr2 = _lr_rows(one / "runs" / "r"), _lr_rows(two / "runs" / "r")
    spe1, spe2 = len(lr1) // 3, len(lr2) // 3  # optimizer steps per epoch per process
    assert spe2 < spe1  # each process sees half the data
    for lrs, spe in ((lr1, spe1), (lr2, spe2)):
        for step, lr in lrs.items():
            assert lr == pytest.approx(sgdr_lr(step, steps_per_epoch=spe, base_lr=0.05, t0=1, t_mult=2), abs=1e-9)
    # the restarts fall on the same epochs (1 and 3 for t0=1, t_mult=2) whatever the number of processes
    assert _restart_epochs(lr1, spe1) == _restart_epochs(lr2, spe2) == [1.0]
