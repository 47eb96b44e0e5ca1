"""The paper's experiments as grid studies: spec variants and report columns, per-epoch test/train
evaluation, the shipped sweeps/paper specs, and experiments/paper.py end to end (on digits)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trickbox.config import load_config
from trickbox.loop import at_best_val
from trickbox.sweep.spec import VARIANT, load_spec, spec_from_mapping
from trickbox.trick import ConfigError

from ..conftest import REPO, subprocess_env

PAPER = REPO / "sweeps" / "paper"
PAPER_SPECS = sorted(p for p in PAPER.glob("*.yaml") if "study" in (yaml.safe_load(p.read_text()) or {}))


def variant_spec(**changes):
    raw = {
        "study": "v",
        "base": {"config": "default", "train": {"epochs": 1}, "tricks": {"mixup": {"alpha": 1.0}, "sgdr": {}}},
        "variants": {"ERM": {"tricks": {"mixup": None}}, "mixup": {}, "3-way": {"tricks": {"mixup": {"ways": 3}}},
                     "dropout": {"model": {"drop_rate": 0.5}}},
        "objective": "val/top1", "sampler": "grid", "seeds": [0, 1], "pruner": "none",
        "columns": ["test/top1", {"metric": "at_best_val/test/top1", "title": "best test error (%)", "error": True}],
    }
    raw.update(changes)
    return raw


def test_variants_are_one_grid_dimension_merged_over_the_base():
    spec = spec_from_mapping(variant_spec())
    assert [d.name for d in spec.search] == [VARIANT, "train.seed"] and spec.grid_size == 8 and spec.n_trials == 8
    erm = spec.trial_mapping({VARIANT: "ERM", "train.seed": 1})
    assert "mixup" not in erm["tricks"] and erm["tricks"]["sgdr"] == {} and erm["train"]["seed"] == 1
    assert spec.trial_mapping({VARIANT: "3-way"})["tricks"]["mixup"] == {"alpha": 1.0, "ways": 3}
    assert spec.trial_mapping({VARIANT: "dropout"})["model"]["drop_rate"] == 0.5
    assert spec.columns[0] == {"metric": "test/top1", "title": "test/top1", "error": False}
    assert spec.columns[1]["error"] is True and spec.summary()["choices"][VARIANT] == ["ERM", "mixup", "3-way",
                                                                                       "dropout"]
    # variants are part of the study's identity
    other = variant_spec(variants={"ERM": {"tricks": {"mixup": None}}, "mixup": {"tricks": {"mixup": {"alpha": 0.2}}}})
    assert spec_from_mapping(other).fingerprint() != spec.fingerprint()


def test_variants_with_searched_keys_and_a_teacher_only_where_distillation_stays():
    raw = variant_spec(search={"data.label_noise": {"choices": [0.2, 0.8]}})
    spec = spec_from_mapping(raw)
    assert spec.grid_size == 4 * 2 * 2
    assert spec.trial_mapping({VARIANT: "ERM", "data.label_noise": 0.8})["data"]["label_noise"] == 0.8
    raw = variant_spec(base={"config": "default", "tricks": {"distillation": {}, "sgdr": {}}},
                       train_first={"config": "default", "train": {"epochs": 1}},
                       variants={"plain": {"tricks": {"distillation": None}}, "KD": {}})
    spec = spec_from_mapping(raw)
    assert "distillation" not in spec.trial_mapping({VARIANT: "plain"}, first_dir="/t")["tricks"]
    assert spec.trial_mapping({VARIANT: "KD"}, first_dir="/t")["tricks"]["distillation"] == {"teacher": "/t"}


@pytest.mark.parametrize("changes, needle", [
    ({"variants": {"bad": {"tricks": {"mixup": {"alpah": 1}}}}}, "variant 'bad': "),
    ({"variants": {"bad": {"model": {"drop_rate": 2}}}}, "variant 'bad': model.drop_rate must be in [0, 1)"),
    ({"variants": {"bad": 3}}, "variant 'bad' must be a config fragment"),
    ({"variants": []}, "variants must be a mapping"),
    ({"search": {"variant": ["a"]}}, "is the dimension that variants: creates"),
    ({"columns": "test/top1"}, "columns must be a list"),
    ({"columns": [{"title": "x"}]}, "needs metric: KEY"),
    ({"columns": [{"metric": "test/top1", "colour": "red"}]}, "unknown key 'colour'"),
    ({"columns": [{"metric": "test/top1", "error": "yes"}]}, "error must be true or false"),
])
def test_variant_and_column_errors_are_one_line(changes, needle):
    with pytest.raises(ConfigError) as exc:
        spec_from_mapping(variant_spec(**changes))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("path", PAPER_SPECS, ids=lambda p: p.name)
def test_paper_specs_make_a_valid_config_for_every_grid_point(path: Path):
    import itertools

    spec = load_spec(path)
    assert spec.is_grid and spec.seeds and len(spec.seeds) >= 2 and spec.objective.startswith("val/")
    for values in itertools.product(*(d.choices for d in spec.search)):
        load_config(base=spec.trial_mapping(dict(zip([d.name for d in spec.search], values))))


def test_paper_specs_cover_the_issue_rows():
    rows = {p.stem: list(load_spec(p).variants) for p in PAPER_SPECS}
    assert rows["alpha"][0].startswith("ERM") and len(rows["alpha"]) == 7
    assert len(rows["ablation"]) == 16 and {"mixup AC+KNN", "mixup SC+RP", "mix hidden layer 3",
                                            "3-way mixup"} <= set(rows["ablation"])
    assert load_spec(PAPER / "labels.yaml").dimension("data.label_noise").choices == (0.2, 0.5, 0.8)
    assert load_spec(PAPER / "capacity.yaml").dimension("model.kwargs.width").choices == (16, 32)


def test_eval_each_epoch_is_checked_and_at_best_val_picks_by_validation():
    with pytest.raises(ConfigError, match=r"train.eval_each_epoch must be a list of splits from \[test, train\]"):
        load_config(base={"train": {"eval_each_epoch": ["tset"]}})
    history = [{"val/top1": 0.5, "test/top1": 0.9, "epoch": 1}, {"val/top1": 0.7, "test/top1": 0.6, "epoch": 2},
               {"val/top1": 0.7, "test/top1": 0.5, "epoch": 3}, {"val/top1": float("nan"), "test/top1": 0.99,
                                                                 "epoch": 4}]
    picked = at_best_val(history)
    assert picked["at_best_val/test/top1"] == 0.6 and picked["at_best_val/epoch"] == 2  # first best, never test-chosen
    assert at_best_val([]) == {}


def test_grid_table_orders_rows_as_written_and_adds_columns(tmp_path):
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    from trickbox.sweep.report import grid_table

    spec = spec_from_mapping(variant_spec())
    study = optuna.create_study(direction="maximize")
    dists = {d.name: CategoricalDistribution(list(d.choices)) for d in spec.search}
    for name, acc in reversed([("ERM", 0.80), ("mixup", 0.85), ("3-way", 0.84), ("dropout", 0.79)]):
        for seed in (0, 1):
            t = create_trial(value=acc + seed / 100, params={VARIANT: name, "train.seed": seed}, distributions=dists,
                             user_attrs={"metrics": {"test/top1": acc - 0.05 + seed / 100,
                                                     "at_best_val/test/top1": acc - 0.1}})
            study.add_trial(t)
    info = spec.summary()
    absent = {"metric": "train/top1", "title": "train error (%)", "error": True}  # no trial has it: left out
    table = grid_table(study, "val/top1", info["params"], choices=info["choices"], columns=[*info["columns"], absent])
    lines = table.splitlines()
    assert lines[0] == "| variant | val/top1 (mean ± std) | test/top1 | best test error (%) | seeds | trials |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| ERM", "| mixup", "| 3-way", "| dropout"]
    assert lines[3] == "| mixup | 0.8550 ± 0.0071 | 0.8050 ± 0.0071 | 25.00 ± 0.00 | 2 | 2 complete |"


def _epoch_rows(run_dir: Path) -> list[dict]:
    """The rows of ``metrics.jsonl`` that close an epoch."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"epoch"' in line]


def test_train_logs_test_and_train_metrics_every_epoch(tmp_path):
    proc = subprocess.run([sys.executable, "train.py", "train.epochs=2", "train.tracker=none", "train.progress=false",
                           f"train.out_dir={tmp_path}", "train.run_name=r", "train.eval_each_epoch=[test,train]",
                           "data.label_noise=0.5"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    epochs = _epoch_rows(tmp_path / "r")
    assert len(epochs) == 2 and all({"val/top1", "test/top1", "train/top1"} <= set(e) for e in epochs)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["test/top1"] == epochs[-1]["test/top1"]  # the final test pass sees the last epoch's weights
    # half the training labels are random: fitting them is harder than the clean validation labels after 2 epochs
    assert summary["train/top1"] < summary["val/top1"]
    assert summary["at_best_val/epoch"] in (1.0, 2.0)


def test_eval_at_end_fits_the_training_set_once(tmp_path):
    with pytest.raises(ConfigError, match=r"train.eval_at_end must be a list of splits from \[train\]"):
        load_config(base={"train": {"eval_at_end": ["test"]}})
    proc = subprocess.run([sys.executable, "train.py", "train.epochs=2", "train.tracker=none", "train.progress=false",
                           f"train.out_dir={tmp_path}", "train.run_name=r", "train.eval_at_end=[train]",
                           "data.label_noise=0.5"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    epochs = _epoch_rows(tmp_path / "r")
    assert len(epochs) == 2 and not any("train/top1" in e for e in epochs)  # no pass over the training set per epoch
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert 0 < summary["train/top1"] < summary["val/top1"] and summary["train/n"] > 0  # half the labels are random


@pytest.mark.slow
def test_paper_runner_end_to_end_on_digits(tmp_path):
    """alpha grid → table, plot and JSON; adversarial from its models; one row rerun reproduces its committed
    numbers."""
    digits = ["data.name=digits", "data.root=null", "data.train_subset=null", "data.test_subset=null",
              "data.val_fraction=0.1",
              "train.epochs=1", "train.eval_batch_size=256"]
    common = ["--out-dir", str(tmp_path / "out"), "--docs-dir", str(tmp_path / "docs"), *digits]

    def paper(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "experiments/paper.py", *args, *common], cwd=REPO, env=subprocess_env(),
                              capture_output=True, text=True, timeout=900)

    proc = paper("alpha")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = (tmp_path / "docs" / "paper_alpha.md").read_text()
    table = [line for line in doc.splitlines() if line.startswith("| ")]  # header, then rows ("|---|" is not "| ")
    assert table[0].startswith("| variant |") and table[1].startswith("| ERM (α=0) |") and "| α=8 |" in doc
    assert "- Command: `python experiments/paper.py alpha" in doc
    assert "**Why these settings.**" in doc and "**ERM's final training error" in doc  # the regime, measured
    assert (tmp_path / "docs" / "paper_alpha.png").stat().st_size > 5000
    per_seed = json.loads((tmp_path / "docs" / "paper_alpha.json").read_text())
    assert len(per_seed) == 7 and all(set(v) == {"0", "1", "2"} for v in per_seed.values())

    proc = paper("adversarial")
    assert proc.returncode == 0, proc.stderr[-3000:]
    adv = (tmp_path / "docs" / "paper_adversarial.md").read_text()
    assert "| ERM (α=0) | FGSM | 8 |" in adv and "| α=1 | IFGSM | 2 |" in adv

    proc = paper("alpha", "--rerun", "α=1", "--seed", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(a committed seed" in proc.stdout
    assert "inside the committed seeds' prediction interval on every metric" in proc.stdout
    # a seed the grid never trained: judged by the interval alone
    proc = paper("alpha", "--rerun", "α=1", "--seed", "7")
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "(a seed the table never trained)" in proc.stdout and "95 % prediction interval" in proc.stdout
    assert ("inside the committed" in proc.stdout) == (proc.returncode == 0)

    bad = paper("alpha", "--rerun", "α=3")
    assert bad.returncode == 2 and "is not a row of alpha" in bad.stderr and "Traceback" not in bad.stderr


def experiments_module(name: str):
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def test_verdict_rule_can_say_each_of_its_words():
    verdicts = experiments_module("verdicts")
    low, high = {"0": 10.0, "1": 11.0, "2": 10.5}, {"0": 20.0, "1": 21.0, "2": 20.2}
    near = {"0": 10.5, "1": 12.5, "2": 9.0}
    assert verdicts.lower(low, high).verdict == "reproduced" and verdicts.lower(high, low).verdict == "not reproduced"
    assert verdicts.lower(low, near).verdict == "inconclusive" and verdicts.lower(low, {"0": 1.0}).verdict == "not run"
    assert verdicts.higher(high, low).verdict == "reproduced"
    assert verdicts.no_gain(verdicts.lower(near, low))[0] == "reproduced"
    assert verdicts.no_gain(verdicts.lower(low, high))[0] == "not reproduced"
    assert verdicts.both(verdicts.lower(low, high), verdicts.lower(low, near))[0] == "inconclusive"
    assert verdicts.both(verdicts.lower(low, high), verdicts.lower(high, low))[0] == "not reproduced"
    block = verdicts.render()  # whatever is committed: every claim gets one of the words and names its test
    rows = [line for line in block.splitlines()
            if line.startswith("| ") and line.count(" | ") == 5 and "experiment" not in line]
    assert len(rows) >= 25
    assert all(any(w in line for w in ("reproduced", "inconclusive", "not run")) for line in rows)
    assert all(("Welch t" in line or "paired t" in line) and "p = " in line for line in rows if "not run" not in line)


def test_regression_compare_fails_when_an_effect_is_gone():
    reg = experiments_module("regression")

    def table(erm_fit: float, mix_fit: float, erm_acc: float, mix_acc: float) -> dict:
        return {json.dumps({"variant": "ERM"}): {s: {"train/top1": erm_fit, "test/top1": erm_acc} for s in "01"},
                json.dumps({"variant": "mixup (α=8)"}, ensure_ascii=False): {s: {"train/top1": mix_fit,
                                                                                 "test/top1": mix_acc} for s in "01"}}

    committed = table(0.9, 0.5, 0.30, 0.34)
    assert reg.compare(table(0.85, 0.55, 0.31, 0.34), committed) == []
    gone = reg.compare(table(0.6, 0.6, 0.31, 0.34), committed)  # the rows train alike: mixup does nothing
    assert len(gone) == 1 and "ERM fits more of the noisy training labels" in gone[0]
    flipped = reg.compare(table(0.5, 0.9, 0.31, 0.34), committed)  # mixup fits the noise, ERM does not
    assert len(flipped) == 1 and "-40.0 pt now, +40.0 pt committed" in flipped[0]
    assert len(reg.compare(table(0.65, 0.5, 0.31, 0.34), committed)) == 1  # the right sign, but less than half the size


@pytest.mark.slow
def test_regression_table_keeps_the_committed_effects(tmp_path, cifar_zip):
    """The short corrupted-label table, retrained from scratch: its effects keep their committed direction."""
    proc = subprocess.run([sys.executable, "experiments/regression.py", "--keep", str(tmp_path),
                           f"data.root={cifar_zip}"],
                          cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("kept  ") == len(experiments_module("regression").EFFECTS)
    assert (tmp_path / "docs" / "paper_regression.md").is_file()


@pytest.mark.slow
def test_gpu_script_calibrates_then_runs_erm_against_mixup(tmp_path):
    """experiments/gpu_paper.sh on digits: a 2-epoch calibration sizes the run, the table renders with test curves,
    the study comes back as one tarball, and TRICKBOX_COMMIT names the commit of a copied tree."""
    out = tmp_path / "out"
    env = {**subprocess_env(), "OUT": str(out), "WORKERS": "2", "PERF": "", "DATA": "null", "MAX_EPOCHS": "3",
           "BUDGET_S": "600", "STUDIES": str(tmp_path / "studies"), "CAL": str(tmp_path / "cal"),
           "TRICKBOX_COMMIT": "abc1234",
           "EXTRA": "data.name=digits data.test_subset=null model.name=cifar_resnet8 train.eval_batch_size=256"}
    proc = subprocess.run(["bash", "experiments/gpu_paper.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "training 3 epochs" in proc.stdout  # the calibration left room for more; MAX_EPOCHS caps it
    doc = (out / "paper_erm_mixup-full.md").read_text()
    assert "| ERM |" in doc and "| mixup (α=1) |" in doc and "train.epochs=3" in doc
    assert "trials ran at abc1234 (as sent)" in doc and "sharing the GPU" not in doc  # a CPU run says so
    assert (out / "paper_erm_mixup-full.png").stat().st_size > 5000 and (out / "study.tgz").stat().st_size > 1000
    per_seed = json.loads((out / "paper_erm_mixup-full.json").read_text())
    assert len(per_seed) == 2 and all(set(v) == {"0", "1", "2"} for v in per_seed.values())
