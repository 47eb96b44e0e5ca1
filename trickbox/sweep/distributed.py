"""Trials spanning several processes (``accelerate launch train.py --sweep SPEC``): rank 0 owns each trial.

Rank 0 asks the study for a trial and broadcasts its plan; every rank trains
it; after each epoch the ranks exchange their status in one
``all_gather_object`` (:class:`~trickbox.sweep.trials.EpochReporter`), so all
of them prune or fail at the same point. A rank that fails *between* those
points (inside a training step) leaves the others in a collective they can
never finish: it writes its error to ``<run_dir>/ranks/rank-<r>.json`` and
waits ``distributed.failure_wait`` seconds on a side gloo group for the
others to leave the trial too. If they do (the error hit every rank at the
same point) the trial is FAILED and the sweep goes on; if not, the failing
rank exits, the others' collective fails (at once with gloo; with NCCL after
``distributed.timeout``, the backstop), rank 0 marks the trial FAILED with
the failing rank's message and the launch exits non-zero: run the same
command again to continue the study.

Why not optuna-integration's ``TorchDistributedTrial``: it broadcasts every
``suggest_*`` call and every ``report``; trickbox's ranks need the whole plan
once (parameters and the config they make) and one decision per epoch, which
this small channel sends.
"""
from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Union


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


class ProcessGroupChannel:
    """Control messages between the ranks of one Accelerate launch."""

    def __init__(self, accelerator: Any, failure_wait: float) -> None:
        import torch.distributed as dist

        self.rank = accelerator.process_index
        self.world_size = accelerator.num_processes
        # A side group with a short timeout: the failure exchange must not wait for the main group's.
        self.ctl = dist.new_group(backend="gloo", timeout=timedelta(seconds=failure_wait))

    def broadcast(self, obj: Any) -> Any:
        import torch.distributed as dist

        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def all_gather(self, obj: Any) -> list[Any]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_left(self, run_dir: str, message: str) -> bool:
        """After an error: tell the others, and wait (``failure_wait``) until every rank has left the trial."""
        import torch.distributed as dist

        write_rank_file(run_dir, self.rank, {"error": message, "time": time.time()})
        try:
            dist.all_gather_object([None] * self.world_size, (self.rank, message), group=self.ctl)
        except Exception:
            return False
        return True

    def peer_errors(self, run_dir: str) -> dict[int, str]:
        """Errors other ranks wrote for this trial (same machine or shared file system)."""
        found = {r: read_rank_file(run_dir, r).get("error") for r in range(self.world_size) if r != self.rank}
        return {r: str(e) for r, e in found.items() if e}


Channel = Union[LocalChannel, ProcessGroupChannel]


def make_channel(accelerator: Any, failure_wait: float) -> Channel:
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
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**read_rank_file(run_dir, rank), **update}, indent=1, default=str))
        tmp.replace(path)
    except OSError:
        pass
