"""The trial loop of a worker (:func:`run_trials`), and the two ways a trial runs.

:class:`TrainRunner` trains it with :func:`trickbox.loop.train` in this process (on every rank of a distributed
trial: rank 0 broadcasts the plan, :func:`follow_trials` is the other ranks' side); its :class:`EpochReporter`
wraps the tricks' epoch-end hooks, reports to the pruner and makes every rank act on one decision.
:class:`~trickbox.sweep.script.ScriptRunner` (in :mod:`trickbox.sweep.script`, with the script's side of the
protocol) runs a user's script instead.
"""
from __future__ import annotations

import gc
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..trick import hookimpl
from .distributed import Channel, TrialFailedOnRank, write_rank_file
from .script import ScriptRunner
from .spec import SweepSpec
from .study import Coordinator, Outcome, TrialPlan, wandb_names

Report = Callable[[float, int], bool]
"""``report(value, epoch) -> prune?``: the study's pruner, on rank 0 only."""


def run_trials(coordinator: Coordinator, runner: Callable[[TrialPlan], Outcome], *, stopping: Callable[[], bool],
               channel: Channel | None = None) -> int:
    """Trial after trial until the budget is used up (this process owns the study); the exit code."""
    while (done := coordinator.run_one(runner, stopping)) is not None:
        plan, outcome = done
        print_outcome(coordinator.worker, plan, outcome, coordinator.spec.objective)
        if outcome.fatal:
            return outcome.exit_code or 1  # the other ranks (if any) stop on the same outcome
        if outcome.state == "failed" and not outcome.retry and not coordinator.any_success() and (
                outcome.config_error or isinstance(runner, ScriptRunner)):
            print(f"trickbox sweep: trial {plan.number} failed and no trial has trained yet; stopping "
                  f"(fix the spec, the data or the script): {outcome.error}", file=sys.stderr, flush=True)
            break
    if channel is not None and channel.world_size > 1:
        channel.broadcast(None)  # the other ranks leave follow_trials
    return 0 if done is None else 2 if outcome.config_error else 1


def follow_trials(runner: TrainRunner, channel: Channel) -> int:
    """Ranks other than 0: train each plan rank 0 broadcasts, until it sends ``None``."""
    while (plan := channel.broadcast(None)) is not None:
        outcome = runner.run(plan)
        if outcome.fatal:
            return outcome.exit_code or 1
    return 0


def print_outcome(worker: str, plan: TrialPlan, outcome: Outcome, objective: str) -> None:
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in plan.params.items())
    what = {"complete": f"complete {objective}={outcome.value or 0:.4f}", "pruned": outcome.error or "pruned"}.get(
        outcome.state, f"FAILED: {outcome.error}" + (" (will be retried)" if outcome.retry else ""))
    print(f"trickbox sweep [{worker}]: trial {plan.number} {what} in {outcome.seconds:.1f}s ({params})",
          file=sys.stderr, flush=True)


# -- trickbox's own loop, in this process ---------------------------------------------------
class EpochReporter:
    """A plugin wrapping every trick's ``trickbox_epoch_end``: reports the objective (rank 0), then every rank
    raises the same thing at the same point (``TrialPruned``, or :class:`TrialFailedOnRank` if any rank failed)."""

    def __init__(self, plan: TrialPlan, spec: SweepSpec, channel: Channel, report: Report | None) -> None:
        self.plan, self.spec, self.channel, self.report = plan, spec, channel, report
        self.tricks: Any = None  # the TrickSet, for its report epochs
        self.epochs: list[int] = []
        self.decisions: list[str] = []

    @hookimpl(wrapper=True)
    def trickbox_epoch_end(self, metrics: dict[str, Any], ctx: Any) -> Any:
        import optuna

        epoch, rank, objective = int(metrics["epoch"]), self.channel.rank, self.spec.objective
        ok, message, config_error, decision = True, "", False, "continue"
        value = metrics.get(objective)
        try:
            yield  # the tricks' own epoch-end hooks
            if value is None:
                config_error = True
                have = ", ".join(sorted(k for k in metrics if k.startswith("val/")))
                raise ConfigError(f"objective {objective!r} is not among the epoch's metrics ({have}); fix objective: "
                                  "in the spec")
        except Exception as exc:
            ok, message = False, f"rank {rank}: {describe(exc)}"
        allowed = self.tricks.report_epochs() if self.spec.restart_aware else None
        if rank == 0 and ok and self.report is not None and (allowed is None or epoch in allowed):
            try:
                prune = self.report(float(value), epoch)  # type: ignore[arg-type]
                decision = "prune" if prune and epoch < ctx.epochs else "continue"  # a finished trial completes
            except Exception as exc:
                ok, message = False, f"rank 0: reporting to the study failed: {describe(exc)}"
        statuses = self.channel.all_gather((ok, message, config_error, decision))
        decision = statuses[0][3]
        self.epochs.append(epoch)
        self.decisions.append(decision)
        write_rank_file(self.plan.run_dir, rank, {"epochs": self.epochs, "decisions": self.decisions})
        bad = [(r, s) for r, s in enumerate(statuses) if not s[0]]
        if bad:
            raise TrialFailedOnRank(bad[0][1][1], bad[0][0], bad[0][1][2])
        if decision == "prune":
            shown = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
            exc = optuna.TrialPruned(f"pruned after epoch {epoch} ({objective}={shown})")
            exc.trickbox_state = "pruned"  # type: ignore[attr-defined]
            raise exc
        return None


class TrainRunner:
    """A trial as a run of :func:`trickbox.loop.train` on this process's Accelerator (every rank runs it)."""

    def __init__(self, spec: SweepSpec, accelerator: Any, channel: Channel, report: Report | None = None,
                 progress: bool = True) -> None:
        self.spec, self.accelerator, self.channel = spec, accelerator, channel
        self.report, self.progress = report, progress

    def __call__(self, plan: TrialPlan) -> Outcome:  # rank 0: tell the other ranks first
        if self.channel.world_size > 1:
            self.channel.broadcast(plan)
        return self.run(plan)

    def run(self, plan: TrialPlan) -> Outcome:
        """Train one trial on this rank; every rank returns the same state unless a rank broke off mid-step."""
        import optuna

        from ..api import load_tricks
        from ..config import load_config
        from ..loop import Preempted, at_best_val, train

        start, rank = time.perf_counter(), self.channel.rank
        write_rank_file(plan.run_dir, rank,
                        {"trial": plan.number, "params": plan.params, "epochs": [], "decisions": []})
        reporter = EpochReporter(plan, self.spec, self.channel, self.report)
        try:
            cfg = load_config(base=plan.mapping)
            cfg.train.out_dir, cfg.train.run_name = str(Path(plan.run_dir).parent), Path(plan.run_dir).name
            cfg.train.progress = self.progress and cfg.train.progress
            reporter.tricks = load_tricks(cfg.tricks, block=cfg.plugins.block).with_plugins(reporter)
            trial = {"number": plan.number, "study": plan.study, "params": dict(plan.params), "retry_of": plan.retry_of}
            result = train(cfg, resume=plan.resume, resume_from=Path(plan.resume_from) if plan.resume else None,
                           tricks=reporter.tricks, accelerator=self.accelerator, tracking_kwargs=wandb_names(plan),
                           extra_config={"trial": trial})
            value = result.history[-1].get(self.spec.objective) if result.history else None
            last = {k: float(v) for k, v in (result.history[-1] if result.history else {}).items()
                    if isinstance(v, (int, float)) and k != "epoch"}
            metrics = {**last, **{f"test/{k}": float(v) for k, v in result.test.items()}, **at_best_val(result.history),
                       "seconds": float(result.seconds)}
            outcome = (Outcome("complete", float(value), attrs={"test": {k: float(v) for k, v in result.test.items()},
                                                                 "metrics": metrics})
                       if value is not None and math.isfinite(float(value))
                       else Outcome("failed",
                                    error=f"objective {self.spec.objective} is {value!r} at the end of training"))
        except optuna.TrialPruned as exc:
            outcome = Outcome("pruned", error=str(exc))
        except TrialFailedOnRank as exc:
            outcome = Outcome("failed", error=str(exc), failed_rank=exc.rank, fatal=exc.config_error,
                              config_error=exc.config_error, exit_code=2 if exc.config_error else 0)
        except (Preempted, KeyboardInterrupt) as exc:
            code = int(exc.code) if isinstance(exc, Preempted) and isinstance(exc.code, int) else 130
            outcome = Outcome("failed", error="preempted" if isinstance(exc, Preempted) else "interrupted", retry=True,
                              fatal=True, exit_code=code)
        except Exception as exc:
            outcome = self._after_error(plan, rank, exc)
        finally:
            if self.accelerator is not None:
                self.accelerator.free_memory()  # drops the prepared model/optimizer and collects garbage (one gc pass)
            else:
                gc.collect()
        outcome.seconds, outcome.epochs = time.perf_counter() - start, len(reporter.epochs)
        write_rank_file(plan.run_dir, rank,
                        {"state": outcome.state, "error": outcome.error if outcome.state == "failed" else ""})
        return outcome

    def _after_error(self, plan: TrialPlan, rank: int, exc: Exception) -> Outcome:
        """An error outside the synchronised points: can the ranks go on together?"""
        mine = f"rank {rank}: {describe(exc)}"
        if self.channel.all_left(plan.run_dir, mine):
            return Outcome("failed", error=mine, failed_rank=rank, config_error=isinstance(exc, ConfigError))
        peers = self.channel.peer_errors(plan.run_dir)
        if peers:
            return Outcome("failed", error=peers[min(peers)], failed_rank=min(peers), fatal=True, exit_code=1)
        if is_comm_error(exc):
            return Outcome("failed", error=f"a peer rank died or lost its connection ({mine})", retry=True, fatal=True,
                           exit_code=1)
        return Outcome("failed", error=mine, failed_rank=rank, fatal=True, exit_code=1)


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:400]}" if text else type(exc).__name__


def is_comm_error(exc: BaseException) -> bool:
    """A failed collective (a peer died or timed out), not an error of this rank's own work."""
    import torch.distributed as dist

    text = str(exc).lower()
    return isinstance(exc, getattr(dist, "DistError", ())) or any(
        s in text for s in ("connection closed by peer", "connection reset", "gloo", "nccl", "timed out",
                            "broken pipe"))
