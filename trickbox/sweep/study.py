"""One worker's handle on a study: joins it, starts trials under the study lock, records how they end.

Each trial runs inside Optuna's own ``study.optimize(objective, n_trials=1)``, which asks, records the state from
what the objective returns or raises, and on RDB storages runs its heartbeats and fails stale trials. trickbox adds
what Optuna lacks (``docs/architecture.md`` says why): an exact trial count under concurrent workers (the study lock
is taken before Optuna asks and released as soon as the trial exists), the reaper of dead owners for the journal
storage, which has no heartbeat, and a retry's resume from the failed trial's checkpoint.
"""
from __future__ import annotations

import math
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..seeding import derive_seed
from .leases import Lease, owner_gone, owner_record
from .locks import StudyLock
from .spec import FIRST_DIR, PRUNERS, SAMPLERS, SweepSpec
from .storage import JournalWatch, StaleRetry, StorageTarget, budget_used, open_storage, retry_history

POLL_SECONDS = 1.0


@dataclass
class TrialPlan:
    """Everything a worker (and every rank) needs to run one trial; picklable."""

    number: int
    params: dict[str, Any]
    mapping: dict[str, Any]
    run_dir: str
    study: str = ""
    resume: bool = False
    retry_of: int | None = None
    resume_from: str | None = None
    """The failed trial's run directory, whose newest checkpoint this retry continues from."""


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


class TrialFailed(Exception):
    """What the objective raises for a failed trial: Optuna records FAIL and the worker goes on."""


def build_sampler(spec: SweepSpec, worker_index: int, start: int = 0) -> Any:
    """The spec's sampler; a seeded TPE/random sampler is reseeded per worker and per study size at start-up."""
    import optuna

    opts = dict(spec.sampler.options)
    seed = opts.pop("seed", None)
    if spec.sampler.name == "grid":  # every worker must shuffle the grid the same way: grid ids index it
        return optuna.samplers.GridSampler({d.name: d.bounds() for d in spec.search}, seed=seed)
    if seed is not None:  # workers (and a restarted worker) must not draw the same random points
        seed = derive_seed(int(seed), worker_index, start) % (2**31)
    sampler = getattr(optuna.samplers, SAMPLERS[spec.sampler.name])  # the spec's one table of names
    if spec.sampler.name == "random":
        return sampler(seed=seed)
    opts.setdefault("constant_liar", True)  # concurrent workers: don't all sample next to the same running trial
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sampler(seed=seed, **opts)


def build_pruner(name: str, options: dict[str, Any]) -> Any:
    """Optuna's pruner that the spec's table names (``none``: Optuna's ``NopPruner``, which takes no options)."""
    import optuna

    pruner = getattr(optuna.pruners, PRUNERS[name])
    return pruner() if name == "none" else pruner(**options)


class Coordinator:
    """One worker's (or rank 0's) handle on the study."""

    def __init__(self, spec: SweepSpec, target: StorageTarget, study_dir: Path, *, worker: str = "0",
                 worker_index: int = 0, deadline: float | None = None, wait_for_others: bool = True) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)  # trickbox prints one line per trial itself
        self.spec, self.target, self.study_dir, self.worker = spec, target, study_dir, worker
        self.deadline, self.wait_for_others = deadline, wait_for_others
        self.lock = StudyLock(target, spec.study)
        heartbeat = spec.heartbeat if target.kind != "journal" else None
        self.storage = open_storage(target, heartbeat=heartbeat, retries=spec.retries)
        self.trial: Any = None  # the optuna.Trial running now
        with self.lock.hold():
            self.study = self._create_or_join(build_sampler(spec, worker_index))
            self.study.sampler = build_sampler(spec, worker_index, len(self.trials()))
            self.watch = JournalWatch(target, study_dir)
            self.reap()

    def _create_or_join(self, sampler: Any) -> Any:
        import optuna

        try:
            study = optuna.create_study(storage=self.storage, study_name=self.spec.study, sampler=sampler,
                                        pruner=build_pruner(self.spec.pruner.name, self.spec.pruner.options),
                                        direction=self.spec.direction, load_if_exists=True)
        except ValueError as exc:  # e.g. an existing study with another direction
            raise ConfigError(f"study {self.spec.study!r} in {self.target.display()}: {exc}") from None
        mine, theirs = self.spec.summary(), study.user_attrs.get("trickbox")
        if theirs is None:
            if study.trials:
                raise ConfigError(f"study {self.spec.study!r} in {self.target.display()} was not made by trickbox "
                                  "sweep; use --study NEW_NAME")
            study.set_user_attr("trickbox", {**mine, "created": time.time(), "storage": self.target.display()})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning
                study.set_metric_names([self.spec.objective])  # the dashboard and the report say val/top1
        elif theirs.get("fingerprint") != mine["fingerprint"]:
            raise ConfigError(
                f"study {self.spec.study!r} in {self.target.display()} was created from a different spec "
                f"(base, search space, objective or seeds differ); use --study NEW_NAME or the original spec"
            )
        return study

    def trials(self, states: Any = None) -> list[Any]:
        return self.study.get_trials(deepcopy=False, states=states)

    def any_success(self) -> bool:
        """Whether any trial completed or was pruned (i.e. the base config can train)."""
        from optuna.trial import TrialState

        return bool(self.trials((TrialState.COMPLETE, TrialState.PRUNED)))

    def reap(self) -> None:
        """Fail and retry RUNNING trials whose owner is gone (call with the lock held)."""
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        self.watch.check()

        if self.target.kind != "journal" and self.spec.heartbeat is not None:
            fail_stale_trials(self.study)  # RDB: Optuna's heartbeats; a worker that only waits must check them too
        now = time.time()
        for t in self.trials((TrialState.RUNNING,)):
            why = owner_gone(t.user_attrs.get("owner"), t.user_attrs.get("lease"), now)
            if why is None:
                continue
            try:
                self.study.tell(t.number, state=TrialState.FAIL)
            except (ValueError, RuntimeError):  # finished meanwhile
                continue
            StaleRetry(self.spec.retries, why)(self.study, self._frozen(t.number))

    def _frozen(self, number: int) -> Any:
        return next(t for t in self.trials() if t.number == number)

    def budget_left(self) -> bool:
        """Whether another trial may start now (call with the lock held)."""
        from optuna.trial import TrialState

        trials = self.trials()
        if self.deadline is not None and time.time() >= self.deadline:
            return False
        n = self.spec.n_trials
        return any(t.state == TrialState.WAITING for t in trials) or n is None or budget_used(trials) < n

    # -- one trial -----------------------------------------------------------------
    def run_one(self, runner: Callable[[TrialPlan], Outcome],
                stopping: Callable[[], bool] = lambda: False) -> tuple[TrialPlan, Outcome] | None:
        """Run the next trial with ``runner``; ``None`` when the study's budget is used up (after waiting for the
        other workers' trials, one of which might crash and need a retry)."""
        from optuna.trial import TrialState

        while True:
            self.lock.acquire()
            self.reap()
            if self.budget_left() and not stopping():
                break
            self.lock.release()
            if stopping() or not self.wait_for_others or not self.trials((TrialState.RUNNING,)) or (
                    self.deadline is not None and time.time() >= self.deadline):
                return None
            time.sleep(POLL_SECONDS)
        done: list[Any] = []

        def objective(trial: Any) -> float:
            self.trial = trial
            plan = self._plan(trial)
            self.lock.release()  # the trial exists: the next worker may ask for its own
            lease = Lease(trial, *self.spec.heartbeat) if self.target.kind == "journal" else None
            try:
                outcome = runner(plan)
            finally:
                if lease is not None:
                    lease.stop()
            done.extend([plan, outcome])
            return self._verdict(trial, outcome)

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
        finally:
            self.lock.release()
            self.trial = None
        plan, outcome = done
        self._after(plan, outcome)
        return plan, outcome

    def _plan(self, trial: Any) -> TrialPlan:
        frozen = self._frozen(trial.number)  # a retry inherits its failed trial's attributes, run_dir included
        history = retry_history(frozen)
        retry_of = history[-1] if history else None
        inherited = frozen.user_attrs.get("run_dir") if retry_of is not None else None
        run_dir = self.study_dir / f"trial-{trial.number}"
        trial.set_user_attr("owner", owner_record(self.worker))
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        if retry_of is not None:
            trial.set_user_attr("retry_of", retry_of)
            trial.set_user_attr("error", "")  # inherited from the failed trial
        params = {d.name: d.suggest(trial) for d in self.spec.search}
        first = str((self.study_dir / FIRST_DIR).resolve()) if self.spec.train_first is not None else None
        plan = TrialPlan(trial.number, params, self.spec.trial_mapping(params, first), str(run_dir), self.spec.study,
                         retry_of=retry_of, resume_from=inherited)
        if plan.resume_from:
            plan.resume = self._resumable(trial, Path(plan.resume_from))
        return plan

    def _resumable(self, trial: Any, failed_dir: Path) -> bool:
        """Whether the failed trial left a checkpoint for its retry to continue from (the loop reads it there)."""
        from ..checkpoint import latest_checkpoint

        ckpt = latest_checkpoint(failed_dir / "checkpoints")
        retried = trial.user_attrs.get("retry_of")
        if ckpt is not None:
            trial.set_user_attr("resumed_from", {"trial": retried, "epoch": ckpt.epoch, "step": ckpt.step})
        self.say(f"trial {trial.number} retries trial {retried} " + (f"from its epoch-{ckpt.epoch} checkpoint" if ckpt
                                                                     else "from scratch (no checkpoint here)"))
        return ckpt is not None

    def report(self, value: float, epoch: int) -> bool:
        """Report the objective after ``epoch`` (1-based); ``True`` when the pruner stops the trial."""
        if self.trial is None or value is None or not math.isfinite(value):
            return False
        self.trial.report(float(value), epoch)
        return bool(self.trial.should_prune())

    def _verdict(self, trial: Any, outcome: Outcome) -> float:
        """Record the outcome on the trial and turn it into what Optuna expects from an objective."""
        import optuna

        attrs = {"seconds": round(outcome.seconds, 3), "epochs": outcome.epochs, **outcome.attrs}
        if outcome.state == "failed":
            attrs.update(error=outcome.error[:1000],
                         **({"failed_rank": outcome.failed_rank} if outcome.failed_rank is not None else {}))
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if outcome.state == "complete" and outcome.value is not None and math.isfinite(outcome.value):
            return outcome.value
        if outcome.state == "pruned":
            raise optuna.TrialPruned(outcome.error)
        raise TrialFailed(outcome.error or f"objective {self.spec.objective} is {outcome.value!r}")

    def _after(self, plan: TrialPlan, outcome: Outcome) -> None:
        if outcome.state == "failed" and outcome.retry:
            with self.lock.hold():
                StaleRetry(self.spec.retries, outcome.error or "it crashed")(self.study, self._frozen(plan.number))
        if outcome.state in ("complete", "pruned") and not self.spec.options.keep_checkpoints:
            shutil.rmtree(Path(plan.run_dir) / "checkpoints", ignore_errors=True)

    def close(self) -> None:
        self.lock.close()

    def say(self, msg: str) -> None:
        print(f"trickbox sweep [{self.worker}]: {msg}", file=sys.stderr, flush=True)


def wandb_names(plan: TrialPlan) -> dict[str, Any]:
    """The W&B run of a trial: named ``trial-<n>``, grouped by its study, job type ``trial``."""
    return {"name": f"trial-{plan.number}", "group": plan.study, "job_type": "trial", "tags": [f"study:{plan.study}"]}
