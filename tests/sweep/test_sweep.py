"""End-to-end sweeps with real worker processes: exact trial counts, PostgreSQL, crashes, reports."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO, load_study, subprocess_env

SMOKE = REPO / "sweeps" / "smoke.yaml"
FAST = ["data.train_subset=300", "data.test_subset=100"]
PG_ENV = "TRICKBOX_TEST_POSTGRES_URL"


def sweep(*args: str) -> list[str]:
    return [sys.executable, "-m", "trickbox", "sweep", *args]


def run(cmd: list[str], cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=subprocess_env(**env), capture_output=True, text=True, timeout=timeout)
    return proc


def states(study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def crash_spec(tmp_path: Path, epochs: int = 3) -> Path:
    """smoke.yaml without a pruner, with a few epochs per trial and fast heartbeats."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw["base"]["train"]["epochs"] = epochs
    raw["pruner"] = "none"
    raw["heartbeat"] = {"interval": 1, "grace": 4}
    path = tmp_path / "crash.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def postgres_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.skip(f"{PG_ENV} is not set (CI starts a PostgreSQL server and sets it)")
    return url


# -- 1: exact count with concurrent workers -------------------------------------------------
@pytest.mark.slow
def test_two_workers_record_exactly_n_trials(tmp_path):
    out = tmp_path / "out"
    proc = run(sweep(str(SMOKE), "--workers", "2", "--out-dir", str(out), *FAST), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load_study("smoke", out / "smoke" / "journal.log")
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials), states(study)
    assert {t.user_attrs["owner"]["worker"] for t in trials} == {"w0", "w1"}  # both workers took trials
    assert all((out / "smoke" / f"trial-{t.number}" / "metrics.jsonl").is_file() for t in trials)
    assert study.user_attrs["trickbox"]["objective"] == "val/top1"

    # the budget is used up: running the same sweep again starts nothing
    again = run(sweep(str(SMOKE), "--workers", "2", "--out-dir", str(out), *FAST), tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(load_study("smoke", out / "smoke" / "journal.log").trials) == 4
    # ... and a different spec under the same study name is refused
    clash = run(sweep(str(SMOKE), "--out-dir", str(out), "train.epochs=1", *FAST), tmp_path)
    assert clash.returncode == 2 and "different spec" in clash.stderr


# -- 2: workers on two "machines" join one PostgreSQL study -----------------------------------------
@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_workers_on_two_hosts_share_one_study(tmp_path):
    url = postgres_url()
    study_name = f"pg-{os.getpid()}-{int(time.time())}"
    procs = []
    for host in ("host-a", "host-b"):
        cmd = sweep(str(SMOKE), "--storage", url, "--study", study_name, "--out-dir", str(tmp_path / host),
                    "--n-trials", "4",
                    "train.epochs=1", *FAST)
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=subprocess_env(TRICKBOX_SWEEP_HOST=host),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    study = load_study(study_name, url)
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]  # every trial recorded once, no extra
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials), states(study)
    assert {t.user_attrs["owner"]["host"] for t in trials} == {"host-a", "host-b"}


# -- 6: a killed worker's trial is failed, retried with the same parameters, resumed -----------------
def _wait_for_checkpoint(study_dir: Path, deadline: float, owner_host: str | None = None, storage=None,
                         name: str = "") -> int:
    """The number of a RUNNING trial that has an epoch checkpoint (optionally owned by ``owner_host``)."""
    while time.time() < deadline:
        for state in sorted(study_dir.glob("trial-*/checkpoints/step-*/state.json")):
            number = int(state.parts[-4].split("-")[1])
            try:  # an older checkpoint may be pruned between the listing and the read
                epoch = json.loads(state.read_text()).get("epoch", 0)
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            if epoch < 1:
                continue
            if owner_host is None:
                return number
            t = [t for t in load_study(name, storage).get_trials() if t.number == number][0]
            if t.user_attrs.get("owner", {}).get("host") == owner_host and t.state.name == "RUNNING":
                return number
        time.sleep(0.5)
    raise AssertionError(f"no trial checkpointed an epoch under {study_dir}")


def _check_retry(study, killed: int, n_trials: int, study_dir: Path) -> None:
    trials = study.get_trials()
    by_number = {t.number: t for t in trials}
    assert [t.number for t in trials] == list(range(len(trials)))  # no gaps
    assert by_number[killed].state.name == "FAIL"
    retries = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    assert len(retries) == 1, [t.user_attrs for t in trials]
    retry = retries[0]
    assert retry.state.name == "COMPLETE"
    assert retry.params == by_number[killed].params  # same parameters
    assert retry.user_attrs["resumed_from"]["epoch"] >= 1  # continued from the killed trial's checkpoint
    metrics = study_dir / f"trial-{retry.number}" / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    resumed = retry.user_attrs["resumed_from"]["epoch"]  # the kill may land after the last epoch's checkpoint
    assert rows[0]["step"] > 0 and all(r["epoch"] > resumed for r in rows if "epoch" in r)  # no epoch trained twice
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == n_trials  # nothing lost, nothing extra
    assert sum(t.state.name == "FAIL" for t in trials) == 1


@pytest.mark.slow
def test_sigkilled_worker_trial_is_retried_from_its_checkpoint_journal(tmp_path):
    spec = crash_spec(tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen(sweep(str(spec), "--workers", "2", "--study", "crash", "--out-dir", str(out), "--n-trials",
                                  "2", *FAST),
                            cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        study_dir = out / "crash"
        killed = _wait_for_checkpoint(study_dir, time.time() + 300)
        trials = load_study("crash", study_dir / "journal.log").get_trials()
        owner = [t for t in trials if t.number == killed][0].user_attrs["owner"]
        os.kill(owner["pid"], signal.SIGKILL)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "died" in err
    _check_retry(load_study("crash", study_dir / "journal.log"), killed, 2, study_dir)


@pytest.mark.slow
@pytest.mark.postgres
def test_vanished_machine_trial_is_retried_through_heartbeats_postgres(tmp_path):
    """Host A's supervisor and worker are SIGKILLed; host B sees A's trial stop beating, fails it and retries it."""
    url = postgres_url()
    spec = crash_spec(tmp_path)
    name = f"hb-{os.getpid()}-{int(time.time())}"
    out = tmp_path / "out"  # one shared output directory, as on a shared file system
    common = ["--storage", url, "--study", name, "--out-dir", str(out), "--n-trials", "3", *FAST]
    a = subprocess.Popen(sweep(str(spec), *common), cwd=tmp_path, env=subprocess_env(TRICKBOX_SWEEP_HOST="host-a"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    b = subprocess.Popen(sweep(str(spec), *common), cwd=tmp_path, env=subprocess_env(TRICKBOX_SWEEP_HOST="host-b"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        killed = _wait_for_checkpoint(out / name, time.time() + 300, owner_host="host-a", storage=url, name=name)
        owner = [t for t in load_study(name, url).get_trials() if t.number == killed][0].user_attrs["owner"]
        a.send_signal(signal.SIGKILL)  # the whole machine goes away (one worker runs inside the sweep process)
        with contextlib.suppress(ProcessLookupError):
            os.kill(owner["pid"], signal.SIGKILL)
        _, err = b.communicate(timeout=600)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    assert b.returncode == 0, err[-3000:]
    assert "heartbeats" in err
    study = load_study(name, url)
    _check_retry(study, killed, 3, out / name)
    retry = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == killed][0]
    assert retry.user_attrs["owner"]["host"] == "host-b"


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_journal_deleted_or_truncated_under_a_running_sweep_stops_it_with_one_line(tmp_path, damage, fault):
    fault(f"study journal {damage} while the sweep runs")
    spec = crash_spec(tmp_path, epochs=2)
    out = tmp_path / "out"
    proc = subprocess.Popen(sweep(str(spec), "--study", "j", "--out-dir", str(out), "--n-trials", "4", *FAST),
                            cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_for_checkpoint(out / "j", time.time() + 300)  # a trial is under way: the journal holds several logs
        journal = out / "j" / "journal.log"
        if damage == "deleted":
            journal.unlink()
        else:
            with open(journal, "r+b") as f:
                f.truncate(journal.stat().st_size // 2)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, err[-3000:]
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if "study journal" in x]
    assert any(f"was {w}" in line for w in {"deleted": ("deleted", "replaced"), "truncated": ("replaced or cut",
                                                                                              "damaged")}[damage])
    assert "run directories" in line and "--study NAME" in line


# -- 5: the report ---------------------------------------------------------------------------------------
def _grid_study(tmp_path: Path, tracker: str = "none") -> Path:
    """A finished grid study (2 α × 2 seeds) written straight into a journal, as a sweep would leave it."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState, create_trial

    from trickbox.sweep.spec import spec_from_mapping

    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(sampler="grid", seeds=[0, 1], n_trials=None,
               search={"mixup.alpha": {"choices": [0.2, 1.0]}, "label_smoothing.eps": {"choices": [0.0, 0.1]}})
    spec = spec_from_mapping(raw, study="grid")
    journal = tmp_path / "out" / "grid" / "journal.log"
    journal.parent.mkdir(parents=True)
    study = optuna.create_study(study_name="grid", storage=JournalStorage(JournalFileBackend(str(journal))),
                                direction="maximize")
    study.set_user_attr("trickbox", {**spec.summary(), "tracker": tracker})
    dists = {d.name: CategoricalDistribution(list(d.choices)) for d in spec.search}
    values = {(0.2, 0.0): 0.90, (0.2, 0.1): 0.92, (1.0, 0.0): 0.88, (1.0, 0.1): 0.80}
    for (alpha, eps), base in values.items():
        for seed in (0, 1):
            params = {"mixup.alpha": alpha, "label_smoothing.eps": eps, "train.seed": seed}
            value = base + 0.01 * seed
            if (alpha, eps, seed) == (1.0, 0.1, 1):
                study.add_trial(create_trial(state=TrialState.PRUNED, params=params, distributions=dists,
                                             intermediate_values={1: 0.5}))
            else:
                study.add_trial(create_trial(value=value, params=params, distributions=dists,
                                             intermediate_values={1: value - 0.1, 2: value}))
    return tmp_path / "out"


def test_report_writes_html_and_grid_table(tmp_path):
    out = _grid_study(tmp_path)
    proc = run([sys.executable, "-m", "trickbox", "report", "grid", "--out-dir", str(out)], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best val/top1 = 0.9300" in proc.stdout and "mixup.alpha: 0.2" in proc.stdout
    page = (out / "grid" / "report.html").read_text()
    # history, intermediate values, importances, parallel coordinates
    assert page.count('class="plotly-graph-div"') == 4
    assert '"name":"pruned"' in page and '"name":"complete"' in page  # the history shows the pruned trial too
    # the objective is named on the history's axis, not "Objective Value"
    assert '"title":{"text":"val\\u002ftop1"}' in page
    assert not re.search(r"<script[^>]*\ssrc=", page) and not re.search(r"<link[^>]*href=", page)  # self-contained
    table = (out / "grid" / "report.md").read_text()
    assert "| mixup.alpha | label_smoothing.eps | val/top1 (mean ± std) | seeds | trials |" in table
    assert "| 0.2 | 0.1 | 0.9250 ± 0.0071 | 2 | 2 complete |" in table
    assert "| 1 | 0.1 | 0.8000 | 1 | 1 complete, 1 pruned |" in table
    assert len([line for line in table.splitlines() if line.startswith("| ") and "mean" not in line]) == 4

    missing = run([sys.executable, "-m", "trickbox", "report", "nope", "--out-dir", str(out)], tmp_path, timeout=300)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_report_logs_the_plots_to_a_wandb_summary_run(tmp_path):
    out = _grid_study(tmp_path, tracker="wandb")
    proc = run([sys.executable, "-m", "trickbox", "report", "grid", "--out-dir", str(out)], tmp_path, timeout=300,
               WANDB_MODE="offline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from ..wandb_reader import offline_runs, read_run

    runs = [read_run(p) for p in offline_runs(tmp_path)]
    assert len(runs) == 1
    run_ = runs[0]
    assert (run_.job_type, run_.group, run_.name) == ("summary", "grid", "grid-summary")
    logged = {k.split("/_type")[0] for row in run_.history for k in row if k.endswith("/_type")}
    assert {"study/optimisation_history", "study/parameter_importances", "study/parallel_coordinates",
            "study/trials"} <= logged
    assert run_.summary["best/value"] == pytest.approx(0.93) and run_.summary["best/mixup.alpha"] == 0.2


def test_report_html_loads_in_headless_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (CI: apt-get install -y chromium)")
    out = _grid_study(tmp_path)
    from trickbox.sweep.report import write_report

    report = write_report("grid", out_dir=out, use_wandb=False)
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update",
         "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}", "--enable-logging=stderr",
         "--v=0",
         "--virtual-time-budget=10000", "--dump-dom", report.html.resolve().as_uri()],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console  # no console errors (nor any console output)
    assert proc.stdout.count('class="main-svg"') >= 4  # plotly drew every figure


# -- a teacher trained once by the spec; restart-aware pruning reports at SGDR cycle ends --------------------
@pytest.mark.slow
def test_spec_trains_the_teacher_once_and_reports_at_cycle_ends(tmp_path):
    data = {"name": "digits", "train_subset": 300, "test_subset": 100}
    raw = {
        "study": "kd",
        "base": {"data": data, "model": {"name": "cifar_resnet8"}, "train": {"epochs": 3, "tracker": "none",
                                                                             "progress": False},
                 "tricks": {"distillation": {}, "sgdr": {"t0": 1, "t_mult": 2.0}}},
        # no tracker here: the teacher tracks as the trials do (base: none), not with the default W&B
        "train_first": {"data": data, "model": {"name": "cifar_resnet8"}, "train": {"epochs": 1, "progress": False}},
        "search": {"distillation.temperature": {"choices": [2.0, 4.0]}},
        "objective": "val/top1", "sampler": "grid", "pruner": "median", "pruning": {"restart_aware": True},
    }
    spec = tmp_path / "kd.yaml"
    spec.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    proc = run(sweep(str(spec), "--workers", "2", "--out-dir", str(out)), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one worker trains it, the other waits for it
    assert proc.stderr.count("training the run the trials need first") == 1
    assert "image logging failed" not in proc.stderr and "W&B" not in proc.stderr
    teacher = out / "kd" / "train_first"
    assert (teacher / "model.safetensors").is_file()
    study = load_study("kd", out / "kd" / "journal.log")
    trials = study.get_trials()
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials), states(study)
    for t in trials:
        used = yaml.safe_load((out / "kd" / f"trial-{t.number}" / "config.yaml").read_text())
        assert used["tricks"]["distillation"]["teacher"] == str(teacher.resolve())
        assert used["tricks"]["distillation"]["temperature"] == t.params["distillation.temperature"]
        assert sorted(t.intermediate_values) == [1, 3]  # SGDR cycles (t0=1, t_mult=2) end after epochs 1 and 3


def _orphan(tmp_path: Path, n_trials: int, owner: dict, lease: float):
    """A study of sweeps/smoke.yaml with one RUNNING trial that ``owner`` holds until ``lease``."""
    from trickbox.sweep.spec import load_spec
    from trickbox.sweep.storage import resolve_storage
    from trickbox.sweep.study import Coordinator

    spec = load_spec(SMOKE, FAST, study="orphan", n_trials=n_trials)
    study_dir = tmp_path / "out" / "orphan"
    co = Coordinator(spec, resolve_storage(None, study_dir), study_dir, worker="test")
    trial = co.study.ask()
    for d in spec.search:
        d.suggest(trial)
    trial.set_user_attr("owner", owner)
    trial.set_user_attr("lease", lease)
    trial.set_user_attr("run_dir", str(study_dir / "trial-0"))
    co.close()
    return study_dir


@pytest.mark.slow
def test_a_trial_left_running_on_another_host_with_an_expired_lease_is_reaped(tmp_path, fault):
    fault("sweep trial RUNNING under another host name, lease expired")
    study_dir = _orphan(tmp_path, 2, {"host": "a-host-that-is-gone", "pid": 1, "start": None, "worker": "w0"},
                        time.time() - 60)
    proc = run(sweep(str(SMOKE), "--study", "orphan", "--n-trials", "2", "--out-dir", str(tmp_path / "out"), *FAST),
               tmp_path,
               timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stopped renewing its lease" in proc.stderr
    trials = load_study("orphan", study_dir / "journal.log").get_trials()
    assert trials[0].state.name == "FAIL" and [t.user_attrs.get("retry_of") for t in trials[1:2]] == [0]
    assert sorted(t.state.name for t in trials[1:]) == ["COMPLETE", "COMPLETE"] or \
        {t.state.name for t in trials[1:]} <= {"COMPLETE", "PRUNED"}


@pytest.mark.slow
def test_sigterm_stops_a_sweep_that_waits_for_another_workers_trial(tmp_path, fault):
    from trickbox.sweep.leases import owner_record

    fault("SIGTERM to a sweep waiting for a live worker's trial")
    # the test process "runs" trial 0 and renews nothing: its lease is in the future, its process alive
    study_dir = _orphan(tmp_path, 2, owner_record("elsewhere-in-this-process"), time.time() + 3600)
    proc = subprocess.Popen(sweep(str(SMOKE), "--study", "orphan", "--n-trials", "2", "--out-dir",
                                  str(tmp_path / "out"),
                                  *FAST), cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:  # it trains trial 1, then waits: trial 0 might still crash and need a retry
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            states = [t.state.name for t in load_study("orphan", study_dir / "journal.log").get_trials()]
            if len(states) == 2 and states[1] in ("COMPLETE", "PRUNED"):
                break
            time.sleep(0.5)
        time.sleep(2)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        start = time.time()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.time() - start < 30 and proc.returncode in (0, 143), err[-2000:]
    assert "Traceback" not in err
    assert load_study("orphan", study_dir / "journal.log").get_trials()[0].state.name == "RUNNING"  # not its to fail
