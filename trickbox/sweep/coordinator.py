"""The owner of a study in one worker (rank 0 of a distributed trial): asks, reports, tells.

Only the coordinator talks to the storage. It creates or joins the study,
hands out the next trial under the study lock (reaping crashed trials first),
reports each epoch's value to the pruner and records how the trial ended.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..seeding import derive_seed
from ..trick import ConfigError
from .spec import SweepSpec
from .storage import (
    StorageTarget,
    StudyLock,
    budget_used,
    open_storage,
    owner_alive,
    owner_record,
    retry_trial,
    tell,
)

POLL_SECONDS = 1.0


@dataclass
class TrialPlan:
    """Everything a worker (and every rank) needs to run one trial; picklable."""

    number: int
    trial_id: int
    params: dict[str, Any]
    mapping: dict[str, Any]
    run_dir: str
    resume: bool = False
    retry_of: int | None = None
    study: str = ""
    resume_from: str | None = None
    """The failed trial's run directory this retry continues (its checkpoints are linked into ``run_dir``)."""


@dataclass
class Outcome:
    """How a trial ended, as seen by one rank."""

    state: str  # "complete" | "pruned" | "failed"
    value: float | None = None
    error: str = ""
    failed_rank: int | None = None
    retry: bool = False
    """A crash (killed process, preemption): retry with the same parameters."""
    fatal: bool = False
    """This worker must stop after recording the trial (process group broken, interrupted, config error)."""
    config_error: bool = False
    """The trial failed on a ConfigError/DataError (a bad value, a missing file), not in training."""
    exit_code: int = 0
    epochs: int = 0
    seconds: float = 0.0
    attrs: dict[str, Any] = field(default_factory=dict)


def build_sampler(spec: SweepSpec, worker_index: int, start: int = 0) -> Any:
    """The spec's sampler; a seeded TPE/random sampler is reseeded per worker and per study size at start-up."""
    import optuna

    opts = dict(spec.sampler.options)
    seed = opts.pop("seed", None)
    if spec.sampler.name == "grid":  # every worker must shuffle the grid the same way: grid ids index it
        grid = {d.name: list(d.choices or ()) for d in spec.search}
        return optuna.samplers.GridSampler(grid, seed=seed)
    if seed is not None:  # workers (and a restarted worker) must not draw the same random points
        seed = derive_seed(int(seed), worker_index, start) % (2**31)
    if spec.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    opts.setdefault("constant_liar", True)  # concurrent workers: don't all sample next to the same running trial
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.samplers.TPESampler(seed=seed, **opts)


def build_pruner(spec: SweepSpec) -> Any:
    return pruner_from(spec.pruner.name, spec.pruner.options)


def pruner_from(name: str, options: dict[str, Any]) -> Any:
    import optuna

    opts = dict(options)
    if name == "median":
        return optuna.pruners.MedianPruner(**opts)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**opts)
    if name == "threshold":
        return optuna.pruners.ThresholdPruner(**opts)
    return optuna.pruners.NopPruner()


class Coordinator:
    """One worker's handle on the study."""

    def __init__(self, spec: SweepSpec, target: StorageTarget, study_dir: Path, *, worker: str = "0",
                 worker_index: int = 0, deadline: float | None = None, wait_for_others: bool = True) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spec = spec
        self.target = target
        self.study_dir = study_dir
        self.worker = worker
        self.deadline = deadline
        self.wait_for_others = wait_for_others
        self.lock = StudyLock(target, spec.study)
        hb = (spec.heartbeat_interval, spec.heartbeat_grace) if target.kind != "journal" else None
        self.storage = open_storage(target, heartbeat=hb, on_stale=self._on_stale)
        self.heartbeat = hb is not None
        self._current: Any = None  # optuna.Trial
        self._beat: _Heartbeat | None = None
        with self.lock.hold():
            self.study = self._create_or_join(build_sampler(spec, worker_index), build_pruner(spec))
            self.study.sampler = build_sampler(spec, worker_index, len(self.study.get_trials(deepcopy=False)))
            self.reap()

    # -- study -----------------------------------------------------------------
    def _create_or_join(self, sampler: Any, pruner: Any) -> Any:
        import optuna

        try:
            study = optuna.create_study(storage=self.storage, study_name=self.spec.study, sampler=sampler, pruner=pruner,
                                        direction=self.spec.direction, load_if_exists=True)
        except ValueError as exc:  # e.g. existing study with another direction
            raise ConfigError(f"study {self.spec.study!r} in {self.target.display()}: {exc}") from None
        mine = self.spec.summary()
        theirs = study.user_attrs.get("trickbox")
        if theirs is None:
            if study.trials:
                raise ConfigError(f"study {self.spec.study!r} in {self.target.display()} was not made by trickbox sweep; use --study NEW_NAME")
            study.set_user_attr("trickbox", {**mine, "created": time.time(), "storage": self.target.display()})
        elif theirs.get("fingerprint") != mine["fingerprint"]:
            raise ConfigError(
                f"study {self.spec.study!r} in {self.target.display()} was created from a different spec "
                f"(base, search space, objective or seeds differ); use --study NEW_NAME or the original spec"
            )
        return study

    def trials(self) -> list[Any]:
        return self.study.get_trials(deepcopy=False)

    def any_success(self) -> bool:
        """Whether any trial of the study completed or was pruned (i.e. the base config can train)."""
        from optuna.trial import TrialState

        return bool(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    # -- crashed trials ------------------------------------------------------------
    def reap(self) -> None:
        """Fail and retry RUNNING trials whose owner process on this host is gone (and stale ones on RDB)."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = t.user_attrs.get("owner")
            if owner_alive(owner) is False:
                reason = f"its worker (pid {owner.get('pid')} on {owner.get('host')}) died"
                self._fail(t, reason)
                new = retry_trial(self.study, self._frozen(t.number), max_retries=self.spec.retries, reason=reason)
                self._say(f"trial {t.number} was left RUNNING: {reason}; marked FAILED"
                          + (f", retrying it as trial {new}" if new is not None else ""))
        if self.heartbeat:
            import optuna

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                optuna.storages.fail_stale_trials(self.study)

    def _on_stale(self, study: Any, trial: Any) -> None:
        """Heartbeat callback (RDB): the trial missed its heartbeats and is FAILED already."""
        new = retry_trial(study, trial, max_retries=self.spec.retries, reason="its heartbeat stopped")
        self._say(f"trial {trial.number} stopped sending heartbeats; marked FAILED"
                  + (f", retrying it as trial {new}" if new is not None else ""))

    def _fail(self, t: Any, reason: str) -> None:
        from optuna.trial import TrialState

        try:
            self.study._storage.set_trial_user_attr(t._trial_id, "error", reason)
            tell(self.study, t.number, state=TrialState.FAIL)
        except (ValueError, RuntimeError):  # finished meanwhile
            pass

    def _frozen(self, number: int) -> Any:
        for t in self.study.get_trials(deepcopy=False):
            if t.number == number:
                return t
        raise KeyError(number)

    # -- next trial ----------------------------------------------------------------
    def next_trial(self) -> TrialPlan | None:
        """The next trial to run, or ``None`` when the study's budget is used up (waiting for others' trials first)."""
        from optuna.trial import TrialState

        while True:
            with self.lock.hold():
                self.reap()
                trials = self.trials()
                used = budget_used(trials)
                waiting = any(t.state == TrialState.WAITING for t in trials)
                timed_out = self.deadline is not None and time.time() >= self.deadline
                n = self.spec.n_trials
                if not timed_out and (waiting or n is None or used < n):
                    return self._ask()
                running = [t for t in trials if t.state == TrialState.RUNNING]
            if timed_out or not self.wait_for_others or not running:
                return None
            time.sleep(POLL_SECONDS)  # another worker may still crash; its retry would be ours to run

    def _ask(self) -> TrialPlan:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = self.study.ask()
        run_dir = self.study_dir / f"trial-{trial.number}"
        trial.set_user_attr("owner", owner_record(self.worker))
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        params = {d.name: d.suggest(trial) for d in self.spec.search}
        self._current = trial
        attrs = trial.user_attrs
        retry_of = attrs.get("retry_of")
        resume = False
        if retry_of is not None:
            resume = self._prepare_resume(trial, run_dir, attrs.get("resume_dir"))
        if self.heartbeat:
            self._beat = _Heartbeat(self.storage, trial._trial_id, self.spec.heartbeat_interval)
        teacher = str((self.study_dir / "teacher").resolve()) if self.spec.teacher is not None else None
        mapping = self.spec.trial_mapping(params, teacher)
        return TrialPlan(trial.number, trial._trial_id, params, mapping, str(run_dir), resume, retry_of, self.spec.study,
                         attrs.get("resume_dir") if retry_of is not None else None)

    def _prepare_resume(self, trial: Any, run_dir: Path, resume_dir: str | None) -> bool:
        """Give the retry the failed trial's checkpoints (hard links) so it continues from its last epoch."""
        from ..checkpoint import latest_checkpoint

        if not resume_dir or not (Path(resume_dir) / "checkpoints").is_dir():
            self._say(f"trial {trial.number} retries trial {trial.user_attrs.get('retry_of')} from scratch (no checkpoint here)")
            return False
        src = Path(resume_dir) / "checkpoints"
        dst = run_dir / "checkpoints"
        if dst.exists():
            shutil.rmtree(dst)
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(".tmp-*"))
        ckpt = latest_checkpoint(dst)
        if ckpt is None:
            return False
        trial.set_user_attr("resumed_from", {"trial": trial.user_attrs.get("retry_of"), "epoch": ckpt.epoch, "step": ckpt.step})
        self._say(f"trial {trial.number} retries trial {trial.user_attrs.get('retry_of')} from its epoch-{ckpt.epoch} checkpoint")
        return True

    # -- during a trial ------------------------------------------------------------
    def report(self, value: float, step: int) -> bool:
        """Report the objective after epoch ``step`` (1-based); ``True`` when the pruner stops the trial."""
        trial = self._current
        if trial is None:
            return False
        if value is None or not math.isfinite(value):
            return False
        trial.report(float(value), step)
        return bool(trial.should_prune())

    # -- end of a trial ------------------------------------------------------------
    def finish(self, plan: TrialPlan, outcome: Outcome) -> None:
        from optuna.trial import TrialState

        if self._beat is not None:
            self._beat.stop()
            self._beat = None
        self._current = None
        storage = self.study._storage
        attrs = {"seconds": round(outcome.seconds, 3), "epochs": outcome.epochs, **outcome.attrs}
        if outcome.state == "failed":
            attrs["error"] = outcome.error[:1000]
            if outcome.failed_rank is not None:
                attrs["failed_rank"] = outcome.failed_rank
        for k, v in attrs.items():
            try:
                storage.set_trial_user_attr(plan.trial_id, k, v)
            except Exception:  # the trial was finished by someone else (reaped)
                break
        try:
            if outcome.state == "complete" and outcome.value is not None and math.isfinite(outcome.value):
                tell(self.study, plan.number, values=outcome.value)
            elif outcome.state == "pruned":
                tell(self.study, plan.number, state=TrialState.PRUNED)
            else:
                tell(self.study, plan.number, state=TrialState.FAIL)
        except ValueError:
            self._say(f"trial {plan.number} was already finished by another worker (declared dead?); its result is dropped")
            return
        if outcome.state == "failed" and outcome.retry:
            with self.lock.hold():
                new = retry_trial(self.study, self._frozen(plan.number), max_retries=self.spec.retries, reason=outcome.error or "crashed")
            if new is not None:
                self._say(f"trial {plan.number} will be retried as trial {new}")
        if outcome.state in ("complete", "pruned") and not self.spec.keep_checkpoints:
            shutil.rmtree(Path(plan.run_dir) / "checkpoints", ignore_errors=True)

    def close(self) -> None:
        if self._beat is not None:
            self._beat.stop()
        self.lock.close()

    def _say(self, msg: str) -> None:
        print(f"trickbox sweep [{self.worker}]: {msg}", file=sys.stderr, flush=True)


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


class _Heartbeat:
    """Record an RDB heartbeat for one trial every ``interval`` seconds, in a daemon thread."""

    def __init__(self, storage: Any, trial_id: int, interval: int) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(storage, trial_id, interval), daemon=True)
        self._thread.start()

    def _run(self, storage: Any, trial_id: int, interval: int) -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception as exc:  # a blip must not kill the trial; the grace period covers it
                print(f"trickbox sweep: heartbeat failed ({type(exc).__name__}); retrying", file=sys.stderr)
            if self._stop.wait(interval):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
