"""Fault injection for reliability tests: make one rank fail inside a chosen trial.

``TRICKBOX_SWEEP_FAULT="rank=1,trial=0,where=step,at=3"`` raises on rank 1 of
trial 0 after optimizer step 3 (``where=step``, inside training, where the
other ranks are in a collective) or after epoch ``at`` (``where=epoch_end``,
in the reporter, where the ranks exchange their status). Unset in normal use.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..trick import Trick, hookimpl

ENV = "TRICKBOX_SWEEP_FAULT"


class InjectedFault(RuntimeError):
    """The error a fault injection raises."""


@dataclass(frozen=True)
class Fault:
    rank: int
    trial: int
    where: str
    at: int

    def hits(self, rank: int, trial: int, where: str, at: int) -> bool:
        return (rank, trial, where) == (self.rank, self.trial, self.where) and at >= self.at


def fault_from_env() -> Fault | None:
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    items = dict(part.split("=", 1) for part in text.split(",") if "=" in part)
    where = items.get("where", "step")
    if where not in ("step", "epoch_end"):
        raise ValueError(f"{ENV}: where must be step or epoch_end, got {where!r}")
    return Fault(int(items.get("rank", 0)), int(items.get("trial", 0)), where, int(items.get("at", 1)))


class StepFault(Trick):
    """Raises after the chosen optimizer step on the chosen rank."""

    name = "sweep_fault"

    def __init__(self, fault: Fault, trial: int) -> None:
        super().__init__()
        self.fault = fault
        self.trial = trial

    @hookimpl
    def trickbox_after_step(self, ctx: Any) -> None:
        if self.fault.hits(ctx.rank, self.trial, "step", ctx.step):
            raise InjectedFault(f"injected fault on rank {ctx.rank} after step {ctx.step} of trial {self.trial}")
