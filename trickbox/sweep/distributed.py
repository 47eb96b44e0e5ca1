"""Trials spanning several processes: rank 0 owns the trial, every rank trains it.

``accelerate launch train.py --sweep SPEC`` runs ``trickbox sweep SPEC
--distributed-trial`` on every rank with one Accelerator for the whole
process. Per trial:

1. rank 0 asks the study for a trial and **broadcasts** its plan (number,
   parameters, run directory) with ``broadcast_object_list``; ``None`` ends
   the sweep on every rank;
2. every rank trains it with ``train(cfg, accelerator=acc, reporter=...)``;
3. after each epoch every rank's reporter joins one ``all_gather_object`` of
   ``(ok, message, decision)``: rank 0's decision is the pruner's (it alone
   calls ``trial.report``/``should_prune``), and a rank whose epoch-end
   checks failed says so. All ranks then raise the same thing at the same
   point: ``TrialPruned`` (pruned) or :class:`TrialFailedOnRank` (failed);
4. rank 0 tells the study how the trial ended.

A trial that fails on one rank *between* those points (inside a training
step, say) leaves the other ranks inside a collective they can never finish.
The failing rank writes its error to ``<run_dir>/ranks/rank-<r>.json``, then
waits up to ``distributed.failure_wait`` seconds on a separate gloo group
for the other ranks to leave the trial too. If they all do (the error hit
every rank at the same point) the trial is FAILED and the sweep goes on. If
not, the failing rank exits; the others' collective then fails (at once with
gloo; with NCCL after the process-group timeout ``distributed.timeout``,
the backstop), rank 0 marks the trial FAILED with the failing rank's message
and the launch exits non-zero. Run the same command again to continue the
study; a trial lost to a killed rank (no message) is retried from its last
epoch checkpoint.
"""
from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any


class TrialFailedOnRank(RuntimeError):
    """A rank reported a failure at an epoch boundary; raised on every rank at the same point."""

    def __init__(self, message: str, rank: int, config_error: bool = False) -> None:
        super().__init__(message)
        self.rank = rank
        self.config_error = config_error


class LocalChannel:
    """One process: every collective is trivial."""

    rank = 0
    world_size = 1

    def broadcast(self, obj: Any) -> Any:
        return obj

    def all_gather(self, obj: Any) -> list[Any]:
        return [obj]

    def all_left(self, run_dir: str, message: str) -> bool:
        return True

    def peer_errors(self, run_dir: str) -> dict[int, str]:
        return {}

    def barrier(self) -> None:
        pass


class ProcessGroupChannel:
    """Control messages between the ranks of one Accelerate launch."""

    def __init__(self, accelerator: Any, failure_wait: float) -> None:
        import torch.distributed as dist

        self.acc = accelerator
        self.rank = accelerator.process_index
        self.world_size = accelerator.num_processes
        self.failure_wait = failure_wait
        # A side group with a short timeout: the failure exchange must not wait for the main group's.
        self.ctl = dist.new_group(backend="gloo", timeout=timedelta(seconds=failure_wait))

    def broadcast(self, obj: Any) -> Any:
        from accelerate.utils import broadcast_object_list

        holder = [obj]
        broadcast_object_list(holder, from_process=0)
        return holder[0]

    def all_gather(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        self.acc.wait_for_everyone()

    def all_left(self, run_dir: str, message: str) -> bool:
        """After an error: tell the others, and wait (``failure_wait``) until every rank has left the trial."""
        import torch.distributed as dist

        write_rank_file(run_dir, self.rank, {"error": message, "time": time.time()})
        out: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(out, (self.rank, message), group=self.ctl)
        except Exception:
            return False
        return True

    def peer_errors(self, run_dir: str) -> dict[int, str]:
        """Errors other ranks wrote for this trial (same machine or shared file system)."""
        out = {}
        for r in range(self.world_size):
            if r == self.rank:
                continue
            info = read_rank_file(run_dir, r)
            if info.get("error"):
                out[r] = str(info["error"])
        return out


def make_channel(accelerator: Any, failure_wait: float) -> LocalChannel | ProcessGroupChannel:
    if accelerator is None or accelerator.num_processes == 1:
        return LocalChannel()
    return ProcessGroupChannel(accelerator, failure_wait)


def rank_file(run_dir: str, rank: int) -> Path:
    return Path(run_dir) / "ranks" / f"rank-{rank}.json"


def read_rank_file(run_dir: str, rank: int) -> dict[str, Any]:
    try:
        return json.loads(rank_file(run_dir, rank).read_text())
    except (OSError, ValueError):
        return {}


def write_rank_file(run_dir: str, rank: int, update: dict[str, Any]) -> None:
    """Merge ``update`` into this rank's record of the trial (parameters, epochs, decisions, error)."""
    path = rank_file(run_dir, rank)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = read_rank_file(run_dir, rank)
        data.update(update)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(path)
    except OSError:
        pass
