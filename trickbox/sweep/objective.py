"""One trial, in-process, on every rank: the plan's config → ``train()`` → an :class:`Outcome`.

Each trial is an ordinary trickbox run in ``sweeps_out/<study>/trial-<n>``
(checkpoints every epoch, ``metrics.jsonl``, one W&B run named
``trial-<n>`` in group ``<study>`` with job type ``trial``). The reporter
passed to ``train`` reports the objective after each epoch (or only at the end
of each SGDR cycle with ``pruning.restart_aware``) and turns the pruner's
decision into ``optuna.TrialPruned`` with ``trickbox_state = "pruned"``, so the
W&B run is tagged ``pruned``.
"""
from __future__ import annotations

import gc
import math
import time
from pathlib import Path
from typing import Any

from ..trick import ConfigError
from .coordinator import Coordinator, Outcome, TrialPlan
from .distributed import LocalChannel, ProcessGroupChannel, TrialFailedOnRank, write_rank_file
from .faults import Fault, InjectedFault, StepFault, fault_from_env
from .spec import SweepSpec

Channel = LocalChannel | ProcessGroupChannel


class EpochReporter:
    """``train``'s reporter: exchange status, report to the pruner (rank 0), act on the decision everywhere."""

    def __init__(self, plan: TrialPlan, spec: SweepSpec, channel: Channel, coordinator: Coordinator | None,
                 report_epochs: list[int] | None, fault: Fault | None) -> None:
        self.plan = plan
        self.spec = spec
        self.channel = channel
        self.coordinator = coordinator
        self.report_epochs = report_epochs
        self.fault = fault
        self.epochs: list[int] = []
        self.decisions: list[str] = []

    def __call__(self, epoch: int, metrics: dict[str, Any]) -> None:
        import optuna

        step = epoch + 1
        rank = self.channel.rank
        objective = self.spec.objective
        ok, message, config_error, decision = True, "", False, "continue"
        value = metrics.get(objective)
        try:
            if self.fault is not None and self.fault.hits(rank, self.plan.number, "epoch_end", step):
                raise InjectedFault(f"injected fault on rank {rank} after epoch {step} of trial {self.plan.number}")
            if value is None:
                config_error = True
                have = ", ".join(sorted(k for k in metrics if k.startswith("val/")))
                raise ConfigError(f"objective {objective!r} is not among the epoch's metrics ({have}); fix objective: in the spec")
        except Exception as exc:
            ok, message = False, f"rank {rank}: {_describe(exc)}"
        if rank == 0 and ok and (self.report_epochs is None or step in self.report_epochs):
            try:
                assert self.coordinator is not None
                decision = "prune" if self.coordinator.report(float(value), step) else "continue"  # type: ignore[arg-type]
            except Exception as exc:
                ok, message = False, f"rank 0: reporting to the study failed: {_describe(exc)}"
        statuses = self.channel.all_gather((ok, message, config_error, decision))
        decision = statuses[0][3]
        self.epochs.append(step)
        self.decisions.append(decision)
        write_rank_file(self.plan.run_dir, rank, {"epochs": self.epochs, "decisions": self.decisions})
        bad = [(r, s) for r, s in enumerate(statuses) if not s[0]]
        if bad:
            r, s = bad[0]
            raise TrialFailedOnRank(s[1], r, s[2])
        if decision == "prune":
            shown = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
            exc = optuna.TrialPruned(f"pruned after epoch {step} ({objective}={shown})")
            exc.trickbox_state = "pruned"  # type: ignore[attr-defined]
            raise exc


def trial_metrics(result: Any) -> dict[str, float]:
    """What a finished trial keeps for ``report`` columns: the last epoch's metrics, the final test
    metrics, the metrics of the best-validation epoch (``at_best_val/...``) and the wall time."""
    from ..loop import at_best_val

    last = result.history[-1] if result.history else {}
    out = {k: float(v) for k, v in last.items() if isinstance(v, (int, float)) and k != "epoch"}
    out.update({f"test/{k}": float(v) for k, v in result.test.items()})
    out.update(at_best_val(result.history))
    out["seconds"] = float(result.seconds)
    return out


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:400]}" if text else type(exc).__name__


def _is_comm_error(exc: BaseException) -> bool:
    """A failed collective (a peer died or timed out), not an error of this rank's own work."""
    try:
        import torch.distributed as dist

        if isinstance(exc, getattr(dist, "DistError", ())):
            return True
    except ImportError:
        pass
    text = str(exc).lower()
    return any(s in text for s in ("connection closed by peer", "connection reset", "gloo", "nccl", "timed out", "broken pipe"))


def tracking_kwargs(plan: TrialPlan) -> dict[str, Any]:
    return {"name": f"trial-{plan.number}", "group": plan.study, "job_type": "trial", "tags": [f"study:{plan.study}"]}


def trial_config_extra(plan: TrialPlan) -> dict[str, Any]:
    return {"trial": {"number": plan.number, "study": plan.study, "params": dict(plan.params), "retry_of": plan.retry_of}}


def run_trial(plan: TrialPlan, spec: SweepSpec, *, accelerator: Any, channel: Channel,
              coordinator: Coordinator | None, progress: bool = True) -> Outcome:
    """Train one trial on this rank; every rank returns the same state unless a rank broke off mid-step."""
    import optuna

    from ..api import TrickSet
    from ..config import load_config
    from ..loop import Preempted, prepare_tricks, train

    start = time.perf_counter()
    rank = channel.rank
    fault = fault_from_env()
    write_rank_file(plan.run_dir, rank, {"trial": plan.number, "params": plan.params, "epochs": [], "decisions": []})
    reporter: EpochReporter | None = None
    try:
        cfg = load_config(base=plan.mapping)
        cfg.train.out_dir = str(Path(plan.run_dir).parent)
        cfg.train.run_name = Path(plan.run_dir).name
        cfg.train.progress = progress and cfg.train.progress
        tricks = prepare_tricks(cfg)
        if fault is not None and fault.where == "step" and fault.trial == plan.number:
            tricks = TrickSet([*tricks.tricks, StepFault(fault, plan.number)])
        reporter = EpochReporter(plan, spec, channel, coordinator, spec.report_epochs(cfg.train.epochs, cfg.tricks.get("sgdr")), fault)
        result = train(cfg, resume=plan.resume, tricks=tricks, accelerator=accelerator, reporter=reporter,
                       tracking_kwargs=tracking_kwargs(plan), extra_config=trial_config_extra(plan))
        value = result.history[-1].get(spec.objective) if result.history else None
        if value is None or not math.isfinite(float(value)):
            outcome = Outcome("failed", error=f"objective {spec.objective} is {value!r} at the end of training")
        else:
            outcome = Outcome("complete", float(value), attrs={"test": {k: float(v) for k, v in result.test.items()},
                                                                "metrics": trial_metrics(result)})
    except optuna.TrialPruned as exc:
        outcome = Outcome("pruned", error=str(exc))
    except TrialFailedOnRank as exc:
        outcome = Outcome("failed", error=str(exc), failed_rank=exc.rank, fatal=exc.config_error, exit_code=2 if exc.config_error else 0)
    except (Preempted, KeyboardInterrupt) as exc:
        why = "preempted" if isinstance(exc, Preempted) else "interrupted"
        code = int(exc.code) if isinstance(exc, Preempted) and isinstance(exc.code, int) else 130
        outcome = Outcome("failed", error=why, retry=True, fatal=True, exit_code=code)
    except Exception as exc:
        outcome = _after_error(plan, channel, rank, exc)
    finally:
        if accelerator is not None:
            accelerator.free_memory()  # drops the prepared model/optimizer and collects garbage (one gc pass)
        else:
            gc.collect()
    outcome.seconds = time.perf_counter() - start
    outcome.epochs = len(reporter.epochs) if reporter is not None else 0
    write_rank_file(plan.run_dir, rank, {"state": outcome.state, "error": outcome.error if outcome.state == "failed" else ""})
    return outcome


def _after_error(plan: TrialPlan, channel: Channel, rank: int, exc: Exception) -> Outcome:
    """An error outside the synchronized points: can the ranks go on together?"""
    mine = f"rank {rank}: {_describe(exc)}"
    if channel.all_left(plan.run_dir, mine):
        config_error = isinstance(exc, ConfigError) or type(exc).__name__ == "DataError"
        return Outcome("failed", error=mine, failed_rank=rank, config_error=config_error)
    peers = channel.peer_errors(plan.run_dir)
    if peers:
        r = min(peers)
        return Outcome("failed", error=peers[r], failed_rank=r, fatal=True, exit_code=1)
    if _is_comm_error(exc):
        return Outcome("failed", error=f"a peer rank died or lost its connection ({mine})", retry=True, fatal=True, exit_code=1)
    return Outcome("failed", error=mine, failed_rank=rank, fatal=True, exit_code=1)
