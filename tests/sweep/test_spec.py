"""Study specs: validation (one-line errors, exit 2), search spaces from the tricks' declarations, budget rules."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from trickbox.sweep.spec import load_spec, spec_from_mapping
from trickbox.sweep.storage import budget_used, resolve_storage
from trickbox.sweep.workers import assign_gpus, worker_count
from trickbox.trick import ConfigError, Search

from ..conftest import REPO, subprocess_env

SMOKE = REPO / "sweeps" / "smoke.yaml"


def smoke(**changes):
    raw = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        if value is None:
            raw.pop(key, None)
        else:
            raw[key] = value
    return raw


def error_of(raw, **kwargs) -> str:
    with pytest.raises(ConfigError) as exc:
        spec_from_mapping(raw, **kwargs)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


# The fingerprints of the committed specs as trickbox 2280cdd computed them (before ranges were Optuna distributions):
# a study created then must still match its own spec.
FINGERPRINTS = {"bag_of_tricks": "9b622c1eab88fc6c", "distillation": "fcdd7e85dd7a878b",
                "label_smoothing": "04d1f37c8c1675b1", "mixup": "291de0e37e24c2ba", "own_loop": "aabf960e7c168e9c",
                "sgdr": "2b017b500c492bdc", "smoke": "0c867c673cedce60"}


def test_study_fingerprints_survive_the_move_to_optuna_distributions():
    assert {p.stem: load_spec(p).fingerprint() for p in sorted((REPO / "sweeps").glob("*.yaml"))} == FINGERPRINTS
    t0 = load_spec(REPO / "sweeps" / "sgdr.yaml").dimension("sgdr.t0")
    assert t0.distribution == FloatDistribution(1.0, 15.0, step=1.0) and t0.identity()["step"] == 1.0
    spelled = spec_from_mapping(smoke(search={"train.epochs": {"low": 1, "high": 3, "step": 1}}))
    bare = spec_from_mapping(smoke(search={"train.epochs": {"low": 1, "high": 3}}))
    assert spelled.dimension("train.epochs").distribution == bare.dimension("train.epochs").distribution \
        == IntDistribution(1, 3)
    # the same draws, but a study made from either spelling before the move must still match it
    assert (spelled.dimension("train.epochs").identity()["step"], bare.dimension("train.epochs").identity()["step"]) \
        == (1, None) and spelled.fingerprint() != bare.fingerprint()


def test_trials_draw_from_the_specs_distributions():
    """What Optuna records for a trial is exactly the spec's distribution, for each of the three kinds."""
    spec = spec_from_mapping(smoke(search={"mixup.alpha": {"low": 0.1, "high": 2.0, "log": True},
                                           "train.epochs": {"low": 1, "high": 6}, "sgdr.t_mult": [1.0, 2.0]}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = {d.name: d.suggest(trial) for d in spec.search}
    assert trial.distributions == {d.name: d.distribution for d in spec.search}
    assert {type(d.distribution) for d in spec.search} == {FloatDistribution, IntDistribution, CategoricalDistribution}
    assert isinstance(params["train.epochs"], int) and 0.1 <= params["mixup.alpha"] <= 2.0
    assert [d.describe() for d in spec.search] == ["mixup.alpha in [0.1, 2] log", "train.epochs in [1, 6] step 1",
                                                   "sgdr.t_mult in [1.0, 2.0]"]


def test_smoke_spec_uses_declared_ranges():
    spec = load_spec(SMOKE)
    alpha = spec.dimension("mixup.alpha")
    assert alpha.kind == "float" and alpha.search == Search(0.05, 4.0, log=True)  # Mixup's Param.search
    assert alpha.distribution == FloatDistribution(0.05, 4.0, log=True)  # what the sampler draws from
    assert spec.dimension("sgdr.t_mult").choices == (1.0, 2.0)
    assert spec.dimension("label_smoothing.eps").search.high == 0.2
    assert spec.n_trials == 4 and spec.direction == "maximize" and spec.sampler.name == "tpe"
    mapping = spec.trial_mapping({"mixup.alpha": 0.3, "label_smoothing.eps": 0.1, "sgdr.t_mult": 2.0})
    assert mapping["tricks"]["mixup"] == {"alpha": 0.3} and mapping["tricks"]["sgdr"] == {"t_mult": 2.0}


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_specs_validate(path: Path):
    spec = load_spec(path)
    assert spec.search and (spec.n_trials or spec.timeout)
    if spec.is_grid:
        assert all(d.choices for d in spec.search)


def test_bag_of_tricks_searches_the_five_parameters():
    spec = load_spec(REPO / "sweeps" / "bag_of_tricks.yaml")
    names = {d.name for d in spec.search}
    assert {"mixup.alpha", "label_smoothing.eps", "distillation.temperature", "sgdr.t0", "sgdr.t_mult"} <= names
    assert spec.train_first is not None  # the spec trains its own teacher first
    # the trick's Param(artifact=True), not a name the sweep knows
    assert spec.artifacts == {"distillation": ["teacher"]}


def test_plain_config_keys_choices_and_shorthands():
    raw = smoke(search={"optim.lr": {"low": 0.01, "high": 0.2, "log": True}, "mixup.pairing": {"choices": ["random",
                                                                                                           "knn"]},
                        "tricks.mixup.per_sample": "default", "train.batch_size": [16, 32]})
    spec = spec_from_mapping(raw)
    assert spec.dimension("optim.lr").kind == "float"
    assert spec.dimension("mixup.pairing").choices == ("random", "knn")
    assert spec.dimension("mixup.per_sample").choices == (False, True)  # a bool parameter with no declared search
    assert spec.dimension("train.batch_size").choices == (16, 32)
    assert spec.trial_mapping({"optim.lr": 0.1})["optim"]["lr"] == 0.1


def test_grid_with_seeds_counts_every_point_per_seed():
    raw = smoke(sampler="grid", seeds=[0, 1], n_trials=None,
                search={"mixup.alpha": {"choices": [0.2, 1.0]}, "sgdr.t_mult": "default"})
    spec = spec_from_mapping(raw)
    assert spec.grid_size == 8 and spec.n_trials == 8
    assert spec.dimension("train.seed").choices == (0, 1)


@pytest.mark.parametrize("raw, needle", [
    (smoke(serach={}), "unknown key 'serach' in spec; did you mean 'search'?"),
    (smoke(objective="test/top1"), "uses the test split"),
    (smoke(objective="top1"), "must be a validation metric"),
    (smoke(search={"mixup.alpah": {}}), "has no parameter 'alpah'; did you mean 'alpha'?"),
    (smoke(search={"mixpu.alpha": {}}), "unknown trick 'mixpu'; did you mean 'mixup'?"),
    (smoke(search={"noise.sigma": {}}), "noise is not enabled"),
    (smoke(sampler="grid", search={"mixup.alpha": {}}), "sampler grid needs choices for every searched parameter"),
    (smoke(search={"mixup.alpha": {"low": 0, "high": 2, "log": False}}), "search mixup.alpha must be > 0, got 0"),
    (smoke(search={"mixup.alpha": {"low": 0, "high": 2}}), "a log range needs low > 0"),
    (smoke(search={"mixup.alpha": {"low": 1, "high": 0.5}}), "low (1) must be below high (0.5)"),
    (smoke(search={"mixup.alpha": {"low": 0.1, "high": 1, "lg": True}}), "unknown key 'lg'"),
    (smoke(search={"optim.lr": {}}), "no declared range"),
    (smoke(search={"optim.lr": {"low": 0, "high": 0.1}}), "optim.lr must be > 0"),
    (smoke(search={"train.out_dir": ["a", "b"]}), "cannot be searched"),
    (smoke(search={"optim.lrr": {"low": 0.1, "high": 0.2}}), "unknown config key 'optim.lrr'; did you mean 'lr'?"),
    (smoke(sampler="cmaes"), "sampler 'cmaes' is not supported"),
    (smoke(pruner={"name": "median", "warmup": 1}), "pruner median has no option 'warmup'"),
    (smoke(n_trials=0), "n_trials must be an integer >= 1"),
    (smoke(n_trials=None), "give the study a budget"),
    (smoke(seeds=[0, 1]), "seeds repeats every grid point"),
    (smoke(pruning={"restart_aware": True}, base={"tricks": {"mixup": {}, "label_smoothing": {}}},
           search={"mixup.alpha": {}}), "no trick under base.tricks declares them"),
    (smoke(base={"train": {"epoch": 2}, "tricks": {"mixup": {}}}, search={"mixup.alpha": {}}), "unknown config key "
                                                                                               "'train.epoch'"),
    (smoke(train_first={"train": {"epochs": 1}}), "no enabled trick has such a parameter"),
])
def test_spec_errors_are_one_line(raw, needle):
    assert needle in error_of(raw)


def test_script_mode_allows_the_scripts_own_parameters():
    raw = smoke(search={"lr": {"low": 0.001, "high": 0.1, "log": True}, "width": {"low": 8, "high": 64},
                        "mixup.alpha": {}})
    with pytest.raises(ConfigError, match="neither <trick>.<param> nor a config key"):
        spec_from_mapping(raw)
    spec = spec_from_mapping(raw, script=True)
    assert spec.dimension("lr").kind == "float" and spec.dimension("width").kind == "int"
    assert spec.dimension("lr").target == ()


def test_restart_aware_report_epochs():
    import torch

    from trickbox import load_tricks

    raw = smoke(pruning={"restart_aware": True}, base={"train": {"epochs": 7}, "tricks": {"sgdr": {}, "mixup": {}}},
                search={"mixup.alpha": {}})
    assert spec_from_mapping(raw).restart_aware

    def report_epochs(sgdr):  # the schedule trick declares them (trickbox_report_epochs); the sweep only asks
        tricks = load_tricks({"sgdr": sgdr, "mixup": {}})
        model = torch.nn.Linear(4, 2)
        tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=2, epochs=7, steps_per_epoch=3)
        return tricks.report_epochs()

    assert report_epochs({"t0": 1, "t_mult": 2.0}) == [1, 3, 7]
    assert report_epochs({}) == [7]  # t0 = the run: one cycle


@pytest.mark.parametrize("args, needle", [
    (["--serach"], "unrecognized arguments"),
    (["objective=1"], "unknown config key 'objective'"),
    (["--workers", "0"], "--workers must be a positive integer or auto"),
    (["--launch", "accelerate launch"], "give --script PATH too"),
])
def test_cli_errors_exit_2_with_one_line(tmp_path, args, needle, cli):
    proc = cli("sweep", str(SMOKE), "--out-dir", str(tmp_path), *args)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], proc.stderr


BAD_SPECS = {
    "unknown key": ("bogus: 1\n", "unknown key 'bogus'"),
    "test split": ("objective: test/top1\n", "uses the test split"),
    "unknown param": ("search: {mixup.alpah: {}}\n", "trick mixup has no parameter 'alpah'; did you mean 'alpha'?"),
    "grid without choices": ("sampler: grid\nn_trials: null\n", "sampler grid needs choices for every searched "
                                                                "parameter"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_cli_rejects_bad_spec_files(tmp_path, case, cli):
    body, needle = BAD_SPECS[case]
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(yaml.safe_load(body))
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(raw))
    proc = cli("sweep", str(spec), cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "sweeps_out").exists()  # nothing ran


def test_gpu_pinning_and_worker_count():
    assert worker_count("auto", []) == 1
    assert worker_count("auto", ["0", "1", "2"]) == 3
    assert worker_count("2", []) == 2
    assert assign_gpus(3, ["4", "5"]) == ["4", "5", "4"]
    assert assign_gpus(2, []) == [None, None]
    with pytest.raises(ConfigError):
        worker_count("many", [])


def test_budget_counts_failed_trials_only_when_not_retried():
    import optuna
    from optuna.trial import TrialState, create_trial

    study = optuna.create_study()
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=1.0))
    study.add_trial(create_trial(state=TrialState.FAIL))  # 1: crashed, retried by 2
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=1.0, user_attrs={"retry_of": 1}))
    study.add_trial(create_trial(state=TrialState.FAIL))  # 3: failed, not retried: counts
    study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.5}))
    assert budget_used(study.get_trials()) == 4


def test_storage_urls(tmp_path):
    assert resolve_storage(None, tmp_path / "s").journal == (tmp_path / "s" / "journal.log").resolve()
    assert resolve_storage("postgresql://u:pw@h/db", tmp_path).display().endswith("u:***@h/db")
    assert resolve_storage(f"sqlite:///{tmp_path}/x.db", tmp_path).kind == "sqlite"
    with pytest.raises(ConfigError, match="not supported"):
        resolve_storage("mysql://u@h/db", tmp_path)


def _coordinator(tmp_path, **kwargs):
    from trickbox.sweep.study import Coordinator

    spec = load_spec(SMOKE, n_trials=2)
    study_dir = tmp_path / "smoke"
    return spec, Coordinator(spec, resolve_storage(None, study_dir), study_dir, wait_for_others=False, **kwargs)


def test_coordinator_runs_exactly_n_trials_and_retries_dead_owners(tmp_path):
    import optuna

    from trickbox.sweep.study import Outcome

    spec, co = _coordinator(tmp_path)
    # trial 0 belongs to a process that is gone (a finished child's pid), as if its worker was SIGKILLed mid-trial
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    orphan = co.study.ask()
    params = {d.name: d.suggest(orphan) for d in spec.search}
    host = co.trials()[0].user_attrs.get("owner", {}).get("host") or __import__("socket").gethostname()
    orphan.set_user_attr("owner", {"host": host, "pid": int(dead), "start": None, "worker": "gone"})
    orphan.set_user_attr("run_dir", str(tmp_path / "smoke" / "trial-0"))
    plans = []

    def runner(plan):
        plans.append(plan)
        return Outcome("complete", 0.5)

    first = co.run_one(runner)  # reaps trial 0 first: FAILED, retried as trial 1 (same params), which it runs
    trials = co.trials()
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert first is not None and first[0].number == 1 and first[0].retry_of == 0 and first[0].params == params
    assert first[0].mapping["tricks"]["mixup"]["alpha"] == params["mixup.alpha"]
    assert first[0].resume_from == str(tmp_path / "smoke" / "trial-0") and first[0].resume is False  # no checkpoint
    second = co.run_one(runner)
    assert second is not None and second[0].number == 2 and second[0].retry_of is None  # the retry replaced trial 0
    assert co.run_one(runner) is None  # 2 trials budgeted: 1 (retry of 0) and 2
    assert [t.state.name for t in co.trials()] == ["FAIL", "COMPLETE", "COMPLETE"]
    co.close()


def test_coordinator_stops_at_the_deadline(tmp_path):
    _, co = _coordinator(tmp_path, deadline=time.time() - 1)
    assert co.run_one(lambda plan: None) is None
    co.close()


def test_sweep_stops_when_the_first_trial_fails_on_configuration(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "trickbox", "sweep", str(SMOKE), "--out-dir", str(tmp_path / "out"),
                           "data.name=imagefolder", f"data.root={tmp_path / 'missing.zip'}"],
                          capture_output=True, text=True, env=subprocess_env(), timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "no trial has trained yet; stopping" in proc.stderr
    from ..conftest import load_study

    trials = load_study("smoke", tmp_path / "out" / "smoke" / "journal.log").get_trials()
    assert [t.state.name for t in trials] == ["FAIL"]  # one failed trial, not n_trials of them
