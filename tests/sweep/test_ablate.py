"""``trickbox ablate`` end to end on digits: a harmful trick is found to hurt, a no-op never helps or hurts, an
interrupted ablation continues with nothing lost or trained twice, and misuse is one line."""
from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import REPO, SMALL_RUN, told

RUN = [*SMALL_RUN, "data.train_subset=512", "train.epochs=2"]


@pytest.fixture
def test_tricks(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests" / "fixtures"))
    monkeypatch.setenv("TRICKBOX_PLUGINS", "ablation_tricks")
    yield
    sys.modules.pop("ablation_tricks", None)


def _trials(out, study, look=1):
    from trickbox.sweep.report import load_study

    s, _ = load_study(f"{study}.look-{look}", None, out / study)
    return s.get_trials()


def test_a_harmful_trick_hurts_and_a_noop_never_helps_or_hurts(cli, tmp_path, test_tricks):
    r = cli("ablate", "--tricks", "harm,noop", "--design", "single", "--seeds", "3", "--study", "hn", *RUN,
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads((tmp_path / "sweeps_out" / "hn" / "ablation.json").read_text())
    verdicts = {row["comparison"]["trick"]: row["comparison"] for row in record["rows"] if "comparison" in row}
    assert verdicts["harm"]["verdict"] == "hurts", verdicts
    assert verdicts["harm"]["delta"] < 0 and verdicts["harm"]["ci"][1] < 0
    assert verdicts["noop"]["verdict"] not in ("helps", "hurts"), verdicts
    assert verdicts["noop"]["delta"] == 0.0  # the same seed is the same run: the pairing is exact
    page = (tmp_path / "sweeps_out" / "hn" / "ablation.md").read_text()
    assert "| + harm alone |" in page and "**hurts**" in page and "Compute: 9 runs" in page
    assert (tmp_path / "sweeps_out" / "hn" / "forest.png").stat().st_size > 5000
    assert "<img" in (tmp_path / "sweeps_out" / "hn" / "report.html").read_text()
    shown = cli("report", "hn", cwd=tmp_path)
    assert shown.returncode == 0 and "**hurts**" in shown.stdout


def test_an_interrupted_ablation_continues_with_no_run_lost_or_trained_twice(cli, tmp_path, test_tricks,
                                                                            monkeypatch):
    marker = tmp_path / "interrupted"
    monkeypatch.setenv("TRICKBOX_NOOP_INTERRUPT", str(marker))
    args = ("ablate", "--tricks", "noop", "--design", "single", "--seeds", "2", "--study", "cut", *RUN)
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 130 and marker.exists(), first.stderr[-3000:]
    assert "run the same command again to continue" in first.stderr
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = _trials(tmp_path / "sweeps_out", "cut")
    done = [(t.params["variant"], t.params["train.seed"]) for t in trials if t.state.name == "COMPLETE"]
    assert sorted(done) == sorted((row, s) for row in ("baseline", "+ noop alone") for s in (0, 1))  # each once
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 1
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == failed[0].number)
    assert retry.user_attrs["resumed_from"]["epoch"] == 1  # its first epoch is not trained again
    third = cli(*args, cwd=tmp_path)  # finished: nothing more is trained
    assert third.returncode == 0 and len(_trials(tmp_path / "sweeps_out", "cut")) == len(trials)


@pytest.mark.parametrize("args, says", [
    (["--tricks", ""], "names no trick"),
    (["--tricks", "mixup,mixup"], "twice"),
    (["--tricks", "mixpu"], "mixup"),
    (["--tricks", "mixup", "--design", "sideways"], "--design 'sideways'"),
    (["--tricks", "mixup", "--design", "leave-one-out"], "at least two"),
    (["--tricks", "mixup", "--seeds", "1"], "--seeds"),
    (["--tricks", "mixup", "--seeds", "auto", "--max-seeds", "2"], "--max-seeds 2"),
    (["--tricks", "mixup", "--budget", "3", "--seeds", "3"], "--budget 3"),
    (["--tricks", "mixup", "--metric", "test/top1"], "test split"),
    (["--tricks", "distillation"], "--train-first"),
    (["--tricks", "mixup", "--min-effect", "0"], "--min-effect"),
])
def test_misuse_is_one_line_and_writes_nothing(cli, tmp_path, args, says):
    r = cli("ablate", *args, *SMALL_RUN, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    line = told(r.stderr).strip()
    assert len(line.splitlines()) == 1 and says in line and "Traceback" not in r.stderr, line
    assert not (tmp_path / "sweeps_out").exists()


# -- the driver's looks, without training: the sweep replaced by a table of per-seed numbers -----------
def _request(tmp_path, budget=None):
    from trickbox.ablation.design import build_design
    from trickbox.ablation.looks import Request
    from trickbox.ablation.rule import Rule

    return Request(study="sim", base={}, design=build_design("stack", ["a", "b", "c"]), metric="val/top1",
                   direction="maximize", rule=Rule(0.05, 0.005, 3, 8), budget=budget, train_first=None, artifacts={},
                   out_dir=tmp_path)


def _simulated(monkeypatch, req, values, wandb=False):
    """``run_look`` records the rows and seeds of each look; ``collect`` returns ``values`` for what ran."""
    from trickbox.ablation import answer, looks

    ran: list[tuple[list[str], list[int]]] = []
    monkeypatch.setattr(looks, "run_look", lambda req, path, raw: 0)
    monkeypatch.setattr(looks, "check_look", lambda raw: None)
    real_write = looks.write_look

    def write(req, k, raw):
        ran.append((list(raw["variants"]), list(raw["seeds"])))
        return real_write(req, k, raw)

    def collect(req, n):
        res = looks.Results()
        for rows, seeds in ran[:n]:
            for r in rows:
                for s in seeds:
                    res.runs.setdefault(r, {})[s] = {"val/top1": values[r][s]}
                    res.trials += 1
        return res

    monkeypatch.setattr(looks, "write_look", write)
    monkeypatch.setattr(looks, "collect", collect)
    if not wandb:
        monkeypatch.setattr(answer, "log_wandb", lambda *a: None)
    return ran


@pytest.mark.parametrize("seed", range(6))
def test_the_commands_looks_follow_the_simulated_rule(monkeypatch, tmp_path, seed):
    """Which rows each look trains, and the verdicts, are those of ``run_sequential`` on the same numbers."""
    import numpy as np

    from trickbox.ablation.answer import write_record
    from trickbox.ablation.looks import ablate
    from trickbox.ablation.rule import run_sequential

    req = _request(tmp_path)
    rng = np.random.default_rng(seed)
    effects = [0.03, 0.0, -0.002]  # helps; nothing; too small to call
    table = np.concatenate([[0.5], 0.5 + np.cumsum(effects)])[:, None] + rng.normal(0, 0.01, (4, 8))
    names = [r.name for r in req.design.rows]
    values = {n: list(map(float, table[i])) for i, n in enumerate(names)}
    ran = _simulated(monkeypatch, req, values)
    code, state, res, compute = ablate(req, write_record)
    assert code == 0
    expected = run_sequential(["a", "b", "c"], lambda c, s: values[names["abc".index(c) + 1]][s]
                              - values[names["abc".index(c)]][s], req.rule)
    assert {k: (v.verdict, v.seeds) for k, v in state.verdicts.items()} == \
           {k: (v.verdict, v.seeds) for k, v in expected.items()}
    assert ran[0] == (names, [0, 1, 2])  # every row at the first look
    for (rows, _), (_, seeds) in zip(ran[1:], ran[1:]):  # later looks: only the rows of open comparisons
        open_ = [c for c in req.design.contrasts if state.verdicts[c.name].seeds > seeds[0]]
        assert set(rows) == {n for c in open_ for n in (c.with_row, c.without_row)}
    assert compute["runs"] == sum(len(rows) * len(seeds) for rows, seeds in ran)


def test_a_run_budget_stops_before_a_look_that_does_not_fit(monkeypatch, tmp_path):
    from trickbox.ablation.answer import write_record
    from trickbox.ablation.looks import ablate
    from trickbox.ablation.rule import UNDECIDED

    req = _request(tmp_path, budget=14)  # look 1: 4 rows x 3 seeds = 12; look 2 would need more
    import numpy as np

    noise = np.random.default_rng(0).normal(0.5, 0.05, (4, 8))  # no effect, a large seed SD: nothing decided at 3
    ran = _simulated(monkeypatch, req, {r.name: list(map(float, noise[i])) for i, r in enumerate(req.design.rows)})
    code, state, _res, compute = ablate(req, write_record)
    assert code == 0 and len(ran) == 1 and compute["runs"] == 12
    assert "budget of 14 runs" in compute["stopped"]
    assert {v.verdict for v in state.verdicts.values()} <= {UNDECIDED, "no effect > δ"}
    assert "stopped early" in (tmp_path / "sim" / "ablation.md").read_text()


def test_the_answer_goes_to_a_wandb_summary_run_in_the_studys_group(monkeypatch, tmp_path):
    """With W&B on (offline here), one run of job type summary holds the table as a wandb.Table and the plot."""
    import numpy as np

    from trickbox.ablation import answer
    from trickbox.ablation.looks import ablate

    from ..wandb_reader import offline_runs, read_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    req = _request(tmp_path)
    req.base = {"train": {"tracker": "wandb", "project": "abl"}}
    table = np.random.default_rng(1).normal(0.5, 0.01, (4, 8)) + np.array([[0.0], [0.05], [0.05], [0.05]])
    _simulated(monkeypatch, req, {r.name: list(map(float, table[i])) for i, r in enumerate(req.design.rows)},
               wandb=True)
    code, *_ = ablate(req, answer.write_record)
    assert code == 0
    runs = [read_run(p) for p in offline_runs(tmp_path)]
    assert len(runs) == 1, runs  # one summary run, written once at the end (not after every look)
    run_ = runs[0]
    assert (run_.job_type, run_.group, run_.name) == ("summary", "sim", "sim-ablation")
    logged = {k.split("/_type")[0]: v for row in run_.history for k, v in row.items() if k.endswith("/_type")}
    assert logged == {"ablation/table": "table-file", "ablation/forest": "image-file"}, logged


def test_the_three_designs_rows_and_comparisons():
    from trickbox.ablation.design import build_design

    stack = build_design("stack", ["a", "b", "c"])
    assert [r.on for r in stack.rows] == [(), ("a",), ("a", "b"), ("a", "b", "c")]
    assert [(c.trick, c.with_row, c.without_row) for c in stack.contrasts] == [
        ("a", "+ a", "baseline"), ("b", "+ b", "+ a"), ("c", "+ c", "+ b")]
    assert stack.fragment(stack.rows[1]) == {"tricks": {"b": None, "c": None}}
    single = build_design("single", ["a", "b"])
    assert [r.on for r in single.rows] == [(), ("a",), ("b",)]
    assert {c.without_row for c in single.contrasts} == {"baseline"}
    loo = build_design("leave-one-out", ["a", "b", "c"])
    assert [r.on for r in loo.rows] == [(), ("a", "b", "c"), ("b", "c"), ("a", "c"), ("a", "b")]
    assert [(c.trick, c.with_row, c.without_row) for c in loo.contrasts] == [
        ("a", "all listed tricks", "- a"), ("b", "all listed tricks", "- b"), ("c", "all listed tricks", "- c")]
    assert loo.contrast_of(loo.rows[2]).trick == "a" and loo.contrast_of(loo.rows[1]) is None  # shown on "- a"


def test_the_baseline_keeps_the_configs_other_tricks_and_adds_listed_ones_with_defaults():
    from trickbox.ablation.design import with_listed
    from trickbox.registry import discover

    base = with_listed({"tricks": {"no_bias_decay": {}, "mixup": {"alpha": 0.2}}}, ["mixup", "label_smoothing"],
                       discover())
    assert base["tricks"] == {"no_bias_decay": {}, "mixup": {"alpha": 0.2}, "label_smoothing": {}}  # config order first


@pytest.mark.slow
def test_an_ablation_under_accelerate_launch_trains_each_run_on_both_ranks(tmp_path):
    """``accelerate launch train.py ablate ...``: every trial of every look is a DDP run of 2 processes; rank 0
    writes the answer, and the process group ends once, after the last look."""
    import subprocess

    from tests.conftest import launch_two_ranks, subprocess_env

    cmd = [*launch_two_ranks(), str(REPO / "train.py"), "ablate", "--tricks", "harm", "--design", "single",
           "--seeds", "2", "--study", "ddp", *RUN, "data.train_subset=256", "train.epochs=1"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=subprocess_env(ACCELERATE_USE_CPU="1", TRICKBOX_PLUGINS="ablation_tricks",
                                             PYTHONPATH=str(REPO / "tests" / "fixtures")))
    assert proc.returncode == 0, proc.stderr[-4000:]
    trials = _trials(tmp_path / "sweeps_out", "ddp")
    assert sorted((t.params["variant"], t.params["train.seed"]) for t in trials if t.state.name == "COMPLETE") == \
        [("+ harm alone", 0), ("+ harm alone", 1), ("baseline", 0), ("baseline", 1)]
    study_dir = tmp_path / "sweeps_out" / "ddp" / "ddp.look-1"
    for t in trials:
        ranks = [json.loads((study_dir / f"trial-{t.number}" / "ranks" / f"rank-{r}.json").read_text())
                 for r in (0, 1)]
        assert ranks[0]["params"] == ranks[1]["params"] == t.params
    assert proc.stdout.count("# Ablation ddp") == 1  # the answer, printed once (rank 0)
    assert "failed mid-trial" not in proc.stderr and "terminate called" not in proc.stderr
    assert (tmp_path / "sweeps_out" / "ddp" / "ablation.md").is_file()


def test_an_in_process_ablation_gives_sigterm_back(cli, tmp_path):
    """The looks' workers run in this process; their SIGTERM handler must not outlive them."""
    import signal

    before = signal.getsignal(signal.SIGTERM)
    r = cli("ablate", "--tricks", "label_smoothing", "--design", "single", "--seeds", "2", "--study", "sig",
            *SMALL_RUN, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert signal.getsignal(signal.SIGTERM) is before
