"""Trials spanning several processes (``accelerate launch train.py --sweep SPEC``): rank 0 owns each trial.

Rank 0 asks the study for a trial and broadcasts its plan; every rank trains it; after each epoch the ranks
exchange their status in one ``all_gather_object`` (:class:`~trickbox.sweep.trials.EpochReporter`), so all prune
or fail at the same point. A rank failing *inside* a step writes its error to ``<run_dir>/ranks/rank-<r>.json``
and waits ``distributed.failure_wait`` seconds on a side gloo group: if every rank left the trial there, it is
FAILED and the sweep goes on; if not, the failing rank exits, the others' collective fails (gloo at once, NCCL
after ``distributed.timeout``), rank 0 fails the trial with that message and the launch exits non-zero.

Not optuna-integration's ``TorchDistributedTrial``: it broadcasts every ``suggest_*`` and ``report``; these ranks
need the whole plan once and one decision per epoch.
"""
from __future__ import annotations

import contextlib
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


class Channel:
    """Control messages between the ranks of one Accelerate launch (every collective trivial on one process)."""

    def __init__(self, accelerator: Any = None, failure_wait: float = 30.0) -> None:
        import torch.distributed as dist

        self.rank = accelerator.process_index if accelerator is not None else 0
        self.world_size = accelerator.num_processes if accelerator is not None else 1
        # A side group with a short timeout: the failure exchange must not wait for the main group's.
        self.ctl = (dist.new_group(backend="gloo", timeout=timedelta(seconds=failure_wait)) if self.world_size > 1
                    else None)

    def close(self) -> None:
        """End the side group (every rank, after the study's last trial); the main group is the accelerator's."""
        import torch.distributed as dist

        if self.ctl is not None and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group(self.ctl)
        self.ctl = None

    def broadcast(self, obj: Any) -> Any:
        from accelerate.utils import broadcast_object_list

        return obj if self.world_size == 1 else broadcast_object_list([obj], from_process=0)[0]

    def all_gather(self, obj: Any) -> list[Any]:
        from accelerate.utils import gather_object

        return [obj] if self.world_size == 1 else list(gather_object([obj]))

    def all_left(self, run_dir: str, message: str) -> bool:
        """After an error: tell the others, and wait (``failure_wait``) until every rank has left the trial."""
        import torch.distributed as dist

        if self.world_size == 1:
            return True
        write_rank_file(run_dir, self.rank, {"error": message, "time": time.time()})
        try:
            dist.all_gather_object([None] * self.world_size, (self.rank, message), group=self.ctl)
        except Exception:
            return False
        return True

    def peer_errors(self, run_dir: str) -> dict[int, str]:
        """Errors other ranks wrote for this trial (same machine or shared file system)."""
        return {r: str(e) for r in range(self.world_size)
                if r != self.rank and (e := read_rank_file(run_dir, r).get("error"))}


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
