"""Sweeping a user's own script: ``trickbox sweep SPEC --script train.py [--launch "accelerate launch ..."]``.

The worker asks the study for a trial as usual, then runs the script as a
subprocess (``python train.py``, or the ``--launch`` command followed by the
script) with the trial in environment variables. The script reads it with
:func:`trickbox.sweep.current_trial` (see :mod:`trickbox.sweep.helper`). The
trial ends as the script says in ``result.json`` (complete with a value, or
pruned); a script that exits non-zero fails the trial, and one killed by a
signal fails it and is retried with the same parameters.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .coordinator import Coordinator, Outcome, TrialPlan
from .helper import ENV_DIR, ENV_NUMBER, ENV_STORAGE, ENV_STUDY, ENV_TRIAL, RESULT_FILE
from .spec import SweepSpec
from .storage import StorageTarget


def trial_info(plan: TrialPlan, spec: SweepSpec, target: StorageTarget, resume_dir: str | None) -> dict[str, Any]:
    """What the script's :class:`~trickbox.sweep.helper.SweepTrial` reads (``trial.json``)."""
    trial = {"number": plan.number, "study": plan.study, "params": plan.params, "retry_of": plan.retry_of}
    return {
        "study": plan.study, "number": plan.number, "trial_id": plan.trial_id, "params": plan.params,
        "targets": {d.name: list(d.target) for d in spec.search}, "config": plan.mapping, "run_dir": plan.run_dir,
        "resume_dir": resume_dir, "retry_of": plan.retry_of, "objective": spec.objective, "direction": spec.direction,
        "pruner": {"name": spec.pruner.name, "options": spec.pruner.options},
        "storage": {"kind": target.kind, "url": target.url, "journal": str(target.journal) if target.journal else None},
        "wandb": {"name": f"trial-{plan.number}", "group": plan.study, "job_type": "trial",
                  "tags": [f"study:{plan.study}"], "config": {"trial": trial}},
    }


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the worker dies (Linux), so no orphan keeps writing to the trial."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_script_trial(plan: TrialPlan, spec: SweepSpec, target: StorageTarget, script: str, launch: str | None,
                     resume_dir: str | None) -> Outcome:
    start = time.perf_counter()
    run_dir = Path(plan.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RESULT_FILE).unlink(missing_ok=True)
    info_path = run_dir / "trial.json"
    info_path.write_text(json.dumps(trial_info(plan, spec, target, resume_dir), indent=1, default=str))
    env = dict(os.environ)
    env.update({
        ENV_TRIAL: str(info_path), ENV_STORAGE: target.url, ENV_STUDY: plan.study, ENV_NUMBER: str(plan.number),
        ENV_DIR: str(run_dir), "WANDB_RUN_GROUP": plan.study, "WANDB_JOB_TYPE": "trial", "WANDB_NAME": f"trial-{plan.number}",
    })
    cmd = [*(shlex.split(launch) if launch else [sys.executable]), *shlex.split(script)]  # script: path and its arguments
    try:
        proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    except OSError as exc:
        return Outcome("failed", error=f"cannot start {cmd[0]}: {exc}", fatal=True, exit_code=2)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        return Outcome("failed", error="interrupted", retry=True, fatal=True, exit_code=130)
    seconds = time.perf_counter() - start
    try:
        result = json.loads((run_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        result = {}
    if result.get("state") == "pruned":
        return Outcome("pruned", error=f"pruned at epoch {result.get('epoch')}", seconds=seconds)
    if rc == 0 and result.get("state") == "complete":
        return Outcome("complete", float(result["value"]), seconds=seconds)
    if rc == 0:
        return Outcome("failed", error="the script exited without calling trickbox.sweep.current_trial().finish(value)", seconds=seconds)
    if rc < 0:
        return Outcome("failed", error=f"the script was killed by signal {-rc}", retry=True, seconds=seconds)
    return Outcome("failed", error=f"the script exited with code {rc}", seconds=seconds)


def run_script_worker(spec: SweepSpec, target: StorageTarget, study_dir: Path, *, index: int, deadline: float | None,
                      script: str, launch: str | None) -> int:
    from .worker import _print_outcome, _StopRequest

    stop = _StopRequest()
    coordinator = Coordinator(spec, target, study_dir, worker=f"w{index}", worker_index=index, deadline=deadline)
    code = 0
    try:
        while not stop.requested:
            plan = coordinator.next_trial()
            if plan is None:
                break
            outcome = run_script_trial(plan, spec, target, script, launch, plan.resume_from)
            coordinator.finish(plan, outcome)
            _print_outcome(f"w{index}", plan, outcome, spec.objective)
            if outcome.state == "failed" and not outcome.retry and not coordinator.any_success():
                print(f"trickbox sweep: the script failed on trial {plan.number} before any trial succeeded; stopping "
                      "(its output above says why)", file=sys.stderr, flush=True)
                code = 1
                break
            if outcome.fatal:
                code = outcome.exit_code or 1
                break
    finally:
        coordinator.close()
    return code
