"""The learning-rate driver: the schedule a trick returned (``trickbox_lr_schedule``), applied to an optimizer.

``lr(step)`` is a pure function of the optimizer step, so the rate after a resume is the rate of an uninterrupted
run. Every parameter group keeps its ratio to the base rate (a head at 10x stays at 10x; ``optim.lr_mult``, layer
decay). Without a schedule trick the driver leaves the rate alone: a user's own scheduler keeps working.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class LearningRate:
    """``schedule`` (or None) over the optimizer it is attached to; ``base_lr`` is the rate groups are scaled from."""

    def __init__(self, schedule: Callable[[int], float] | None, base_lr: float) -> None:
        self.schedule, self.base_lr = schedule, base_lr
        self.optimizer: torch.optim.Optimizer | None = None

    @classmethod
    def for_run(cls, schedule: Callable[[int], float] | None, ctx: Any) -> LearningRate:
        """The driver of ``schedule`` (what ``trickbox_lr_schedule`` returned), its curve drawn before training: the
        schedule as composed (a ``warmup`` around any schedule trick), into ``lr_curve.png`` and the trackers."""
        rate = cls(schedule, ctx.base_lr)
        sizes = ctx.image_sizes or None
        if (schedule is not None or sizes) and ctx.draw_lr and ctx.is_main and ctx.run_dir is not None:
            from .plots import plot_lr_curve

            path = plot_lr_curve(schedule, ctx.total_steps, ctx.steps_per_epoch, ctx.run_dir / "lr_curve.png",
                                 sizes=sizes)
            ctx.log_images({"lr_curve": [path]}, step=0)
        return rate

    def groups(self) -> dict[str, float]:
        """Each parameter group's current rate, ``lr/group0`` …, when the optimizer has more than one group."""
        groups = self.optimizer.param_groups if self.optimizer is not None else []
        return {f"lr/group{i}": float(g["lr"]) for i, g in enumerate(groups)} if len(groups) > 1 else {}

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Drive ``optimizer``: each group remembers its ratio to the base rate once."""
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group.setdefault("lr_scale", group["initial_lr"] / self.base_lr if self.base_lr > 0 else 1.0)

    def at(self, step: int | None) -> float:
        """The scheduled rate at ``step``; without a schedule, the optimizer's current rate (``step`` None) or the base
        rate."""
        if self.schedule is not None and step is not None:
            return float(self.schedule(step))
        if self.optimizer is not None:
            return float(self.optimizer.param_groups[0]["lr"])
        return self.base_lr

    def apply(self, step: int) -> float:
        """Set every group's rate for ``step`` (its ratio times the schedule); returns the base group's rate."""
        lr = self.at(step if self.schedule is not None else None)
        if self.optimizer is not None and self.schedule is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr
