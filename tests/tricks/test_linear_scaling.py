"""Linear scaling: lr = optim.lr × global batch / 256 × schedule, applied, logged, and the same on 1 and 2 processes."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from trickbox import ConfigError, load_tricks
from trickbox.config import default_config_path, load_config
from trickbox.loop import train

from ..conftest import REPO, launch_two_ranks, subprocess_env

K = 10


def cosine(step: int, steps_per_epoch: int, peak: float, epochs: int) -> float:
    """Plain cosine decay over the run, written out by hand."""
    return 0.5 * peak * (1 + math.cos(math.pi * step / (steps_per_epoch * epochs)))


def test_every_group_scales_and_the_schedule_runs_from_the_scaled_rate():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, K))
    optimizer = torch.optim.SGD([{"params": model[1].parameters()}, {"params": model[3].parameters(), "lr": 1.0}],
                                lr=0.1)
    tricks = load_tricks({"sgdr": {}, "linear_scaling": {}}, autoload=False)
    # 32 images x 2 processes x 2 accumulation steps = 128 = half the reference batch
    tricks.setup(model, optimizer, num_classes=K, epochs=2, steps_per_epoch=5, batch_size=32, world_size=2,
                 grad_accum=2)
    for step in range(10):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(cosine(step, 5, 0.1 * 128 / 256, 2), abs=1e-15)
        assert optimizer.param_groups[1]["lr"] == pytest.approx(cosine(step, 5, 1.0 * 128 / 256, 2), abs=1e-15)
        assert tricks.lr() == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-15)  # what step() logs as "lr"
        tricks.ctx.step += 1
        tricks._apply_lr()


def test_without_a_schedule_the_optimizer_keeps_the_scaled_rate():
    model = nn.Linear(4, K)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tricks = load_tricks({"linear_scaling": {"reference_batch": 100}}, autoload=False)
    tricks.setup(model, optimizer, num_classes=K, epochs=1, steps_per_epoch=3, batch_size=50)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05) and tricks.lr() == pytest.approx(0.05)


def test_needs_the_batch_size():
    model = nn.Linear(4, K)
    tricks = load_tricks({"linear_scaling": {}}, autoload=False)
    with pytest.raises(ConfigError, match="needs the batch size"):
        tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=K, epochs=1, steps_per_epoch=3)


ARGS = ["data.train_subset=256", "train.epochs=1", "optim.lr=0.2", "tricks.sgdr={}", "tricks.linear_scaling={}",
        "train.tracker=none", "train.progress=false", "train.run_name=r"]


def _logged_lr(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["lr"] for r in rows if "lr" in r}


@pytest.mark.slow
def test_one_and_two_processes_with_the_same_global_batch_train_at_the_same_rate(tmp_path):
    two = tmp_path / "two"
    two.mkdir()
    r2 = subprocess.run(
        [*launch_two_ranks(), str(REPO / "train.py"), *ARGS, "train.batch_size=32"],
        cwd=two, env=subprocess_env(ACCELERATE_USE_CPU="1"), capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-3000:]
    one = train(load_config([default_config_path()], [*ARGS, "train.batch_size=64",
                                                      f"train.out_dir={tmp_path / 'one'}"]))
    lr1, lr2 = _logged_lr(one.run_dir), _logged_lr(two / "runs" / "r")
    steps = len(lr1)
    assert steps == one.steps > 2 and sorted(lr1) == sorted(lr2) == list(range(steps))  # the same optimizer steps
    for step in range(steps):  # 0.2 x 64/256 = 0.05 at the peak, then cosine
        assert lr1[step] == pytest.approx(cosine(step, steps, 0.2 * 64 / 256, 1), abs=1e-12)
        assert lr2[step] == pytest.approx(lr1[step], abs=1e-12)
