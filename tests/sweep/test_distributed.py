"""Trials across two processes: ``accelerate launch --multi_gpu --num_processes 2 train.py --sweep SPEC`` on CPU (gloo).

Rank 0 owns each trial and broadcasts parameters and prune decisions; a rank's
failure at an epoch boundary fails the trial on every rank and the sweep goes
on; a failure inside a step ends the launch promptly (no hang) with the trial
FAILED. Each trial is one W&B run, whose file we read back.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import REPO, launch_two_ranks, load_study, subprocess_env
from ..wandb_reader import config_value, offline_runs, read_run

SPEC = REPO / "tests" / "fixtures" / "sweep_dist.yaml"
pytestmark = pytest.mark.slow


def fault(**where: object) -> dict[str, str]:
    """Environment and overrides that load the fault plugin (tests/fixtures/faults.py) and make rank 1 fail."""
    return {"TRICKBOX_PLUGINS": "faults", "PYTHONPATH": str(REPO / "tests" / "fixtures"),
            "overrides": " ".join(f"tricks.fault.{k}={v}" for k, v in {"rank": 1, "trial": 0, **where}.items())}


def launch(cwd: Path, *extra: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    cmd = [*launch_two_ranks(), str(REPO / "train.py"), "--sweep", str(SPEC),
           "--out-dir", str(cwd / "out"), *extra, *env.pop("overrides", "").split()]
    return subprocess.run(cmd, cwd=cwd, env=subprocess_env(ACCELERATE_USE_CPU="1", **env), capture_output=True,
                          text=True, timeout=timeout)


def rank_files(out: Path, study: str, number: int) -> list[dict]:
    return [json.loads((out / study / f"trial-{number}" / "ranks" / f"rank-{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def wandb_sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("dist")
    proc = launch(cwd, "train.tracker=wandb", WANDB_MODE="offline")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return cwd, load_study("dist", cwd / "out" / "dist" / "journal.log")


def test_ranks_train_the_same_parameters_and_stop_at_the_same_decision(wandb_sweep):
    cwd, study = wandb_sweep
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    by_lr = {t.params["optim.lr"]: t for t in trials}
    assert by_lr[1e-6].state.name == "PRUNED"  # cannot learn: below the threshold after epoch 1
    assert by_lr[0.05].state.name == by_lr[0.1].state.name == "COMPLETE"
    for t in trials:
        r0, r1 = rank_files(cwd / "out", "dist", t.number)
        assert r0["params"] == r1["params"] == t.params
        assert r0["epochs"] == r1["epochs"] and r0["decisions"] == r1["decisions"]
        assert r0["state"] == r1["state"] == {"COMPLETE": "complete", "PRUNED": "pruned"}[t.state.name]
    pruned = rank_files(cwd / "out", "dist", by_lr[1e-6].number)
    assert pruned[0]["decisions"] == pruned[1]["decisions"] == ["prune"]


def test_one_wandb_run_per_trial_tagged_with_its_state(wandb_sweep):
    cwd, study = wandb_sweep
    runs = [read_run(p) for p in offline_runs(cwd)]
    assert len(runs) == 3
    states = {t.number: t.state.name.lower() for t in study.get_trials()}
    assert sorted(r.name for r in runs) == ["trial-0", "trial-1", "trial-2"]
    for r in runs:
        assert r.group == "dist" and r.job_type == "trial"
        n = int(r.name.split("-")[1])
        expected = {"complete": "complete", "pruned": "pruned"}[states[n]]
        assert expected in r.tags and r.summary.get("state") == expected


def test_wandb_runs_hold_lr_history_mixup_images_and_params(wandb_sweep):
    from trickbox.functional import sgdr_lr

    cwd, study = wandb_sweep
    trials = {t.number: t for t in study.get_trials()}
    for path in offline_runs(cwd):
        run = read_run(path)
        trial = trials[int(run.name.split("-")[1])]
        assert config_value(run.config, "trial")["params"] == trial.params
        assert config_value(run.config, "optim")["lr"] == trial.params["optim.lr"]  # the full resolved config
        lrs = [v for _, v in run.series("lr")]
        steps_per_epoch = run.series("val/top1")[0][0]  # the step at which epoch 1 ended
        expected = [sgdr_lr(s, steps_per_epoch=steps_per_epoch, base_lr=trial.params["optim.lr"],
                            t0=trial.params["sgdr.t0"],
                            t_mult=trial.params["sgdr.t_mult"]) for s in range(len(lrs))]
        assert len(lrs) == steps_per_epoch * len(run.series("val/top1"))
        assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)
        assert run.media("mixup_samples"), "no mixup image logged"
        if trial.state.name == "COMPLETE":
            assert "test/top1" in run.summary and run.summary["val/top1"] == pytest.approx(trial.value)


def test_failure_at_an_epoch_boundary_fails_the_trial_on_every_rank_and_the_sweep_goes_on(tmp_path):
    proc = launch(tmp_path, **fault(where="epoch_end", at=1))
    assert proc.returncode == 0, proc.stderr[-4000:]
    study = load_study("dist", tmp_path / "out" / "dist" / "journal.log")
    trials = study.get_trials()
    assert [t.state.name for t in trials][0] == "FAIL" and len(trials) == 3
    assert {t.state.name for t in trials[1:]} <= {"COMPLETE", "PRUNED"}
    assert trials[0].user_attrs["failed_rank"] == 1 and "InjectedFault" in trials[0].user_attrs["error"]
    r0, r1 = rank_files(tmp_path / "out", "dist", 0)
    assert r0["state"] == r1["state"] == "failed" and r0["epochs"] == r1["epochs"] == [1]


def test_failure_inside_a_step_on_one_rank_ends_the_launch_without_hanging(tmp_path):
    start = time.time()
    proc = launch(tmp_path, timeout=400, **fault(where="step", at=3))
    assert proc.returncode != 0
    assert time.time() - start < 300  # start-up + failure_wait (5 s) + shutdown; the process-group timeout is 120 s
    journal = tmp_path / "out" / "dist" / "journal.log"
    trials = load_study("dist", journal).get_trials()
    assert len(trials) == 1 and trials[0].state.name == "FAIL", [t.state for t in trials]
    assert trials[0].user_attrs["failed_rank"] == 1
    assert "rank 1: InjectedFault" in trials[0].user_attrs["error"]
    assert "run the same command again" in proc.stderr
