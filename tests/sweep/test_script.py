"""Sweeping a user's own script: ``trickbox sweep SPEC --script tests/fixtures/sweep_script.py [--launch ...]``."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO, launch_two_ranks, load_study, subprocess_env
from ..wandb_reader import config_value, offline_runs, read_run

SCRIPT = REPO / "tests" / "fixtures" / "sweep_script.py"
SPEC = REPO / "tests" / "fixtures" / "sweep_script.yaml"
pytestmark = pytest.mark.slow


def sweep(cwd: Path, spec: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "trickbox", "sweep", str(spec), "--script", str(SCRIPT), "--out-dir", str(cwd / "out"),
           *extra]
    return subprocess.run(cmd, cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True, timeout=600)


def test_script_sweep_records_three_trials_and_three_wandb_runs(tmp_path):
    proc = sweep(tmp_path, SPEC, WANDB_MODE="offline")
    assert proc.returncode == 0, proc.stderr[-4000:]
    study = load_study("script", tmp_path / "out" / "script" / "journal.log")
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2] and all(t.state.name == "COMPLETE" for t in trials)
    runs = {r.name: r for r in map(read_run, offline_runs(tmp_path))}
    assert sorted(runs) == ["trial-0", "trial-1", "trial-2"]
    for t in trials:
        run = runs[f"trial-{t.number}"]
        assert run.group == "script" and run.job_type == "trial" and "complete" in run.tags
        assert config_value(run.config, "trial")["params"] == t.params
        assert run.summary["val/accuracy"] == pytest.approx(t.value)
        used = json.loads((tmp_path / "out" / "script" / f"trial-{t.number}" / "rank-0.json").read_text())
        assert used["params"] == t.params
        # t.suggest() put the trial's values in place
        assert used["tricks"]["mixup"]["alpha"] == t.params["mixup.alpha"]
        assert used["tricks"]["sgdr"]["t0"] == t.params["sgdr.t0"]


def test_script_runs_standalone_outside_a_sweep(tmp_path):
    env = subprocess_env()
    env.pop("TRICKBOX_TRIAL", None)
    proc = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]  # no sweep, no trial: the script trains with its defaults


def test_script_under_accelerate_launch_shares_params_and_prune_decisions(tmp_path):
    raw = yaml.safe_load(SPEC.read_text())
    raw["pruner"] = {"name": "threshold", "lower": 1.01}  # every trial is pruned after its first report
    raw["n_trials"] = 1
    spec = tmp_path / "prune.yaml"
    spec.write_text(yaml.safe_dump(raw))
    launch = shlex.join(launch_two_ranks())
    proc = sweep(tmp_path, spec, "--launch", launch, ACCELERATE_USE_CPU="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    study = load_study("script", tmp_path / "out" / "script" / "journal.log")
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["PRUNED"]
    for t in trials:
        trial_dir = tmp_path / "out" / "script" / f"trial-{t.number}"
        ranks = [json.loads((trial_dir / f"rank-{r}.json").read_text()) for r in (0, 1)]
        assert ranks[0]["params"] == ranks[1]["params"] == t.params
        assert list(t.intermediate_values) == [1]  # both ranks stopped after epoch 1 (rank 1 got rank 0's decision)


def test_no_trial_stand_in_changes_nothing():
    from trickbox.sweep import NoTrial, current_trial

    saved = os.environ.pop("TRICKBOX_TRIAL", None)
    try:
        t = current_trial()
        assert isinstance(t, NoTrial) and not t.in_sweep
        cfg = {"mixup": {"alpha": 0.2}}
        assert t.suggest(cfg) == cfg and t.suggest(cfg) is not cfg
        assert t.report(0.5, 1) is False and t.finish(0.5) is None and t.wandb_init_kwargs() == {}
        assert t.get("lr", 0.1) == 0.1
    finally:
        if saved is not None:
            os.environ["TRICKBOX_TRIAL"] = saved


def test_suggest_places_trick_and_config_params(tmp_path):
    from trickbox.sweep.script import SweepTrial

    info = {"number": 3, "params": {"mixup.alpha": 0.7, "optim.lr": 0.02, "width": 16}, "run_dir": str(tmp_path),
            "targets": {"mixup.alpha": ["tricks", "mixup", "alpha"], "optim.lr": ["optim", "lr"], "width": []}}
    t = SweepTrial(info, tmp_path / "trial.json")
    assert t.suggest({"mixup": {"alpha": 0.2, "k": 5}, "sgdr": {}}) == {"mixup": {"alpha": 0.7, "k": 5}, "sgdr": {}}
    full = t.suggest({"optim": {"lr": 0.1}, "tricks": {"mixup": {}}})
    assert full == {"optim": {"lr": 0.02}, "tricks": {"mixup": {"alpha": 0.7}}}
    assert t.get("width") == 16
