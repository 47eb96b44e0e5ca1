"""What a hook can see of the run: sizes, position, device, seeded randomness, logging."""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .seeding import generator, numpy_rng


def _no_log(values: dict[str, Any], step: int | None = None) -> None:
    return None


@dataclass
class RunContext:
    """State of the run that tricks may read. Only the loop (or api.TrickSet) writes it.

    ``step`` counts optimizer steps of this process, the same on every rank, so a
    schedule that reads it does not depend on the number of processes.
    ``steps_per_epoch`` is optimizer steps per epoch *per process*: with 2
    processes each sees half the batches, and an epoch is still an epoch.
    """

    num_classes: int
    epochs: int
    steps_per_epoch: int
    base_lr: float
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    in_chans: int = 3
    batch_size: int = 0
    """Images per batch on this process (0: unknown, a user's loop that did not say)."""
    grad_accum: int = 1
    """Batches per optimizer step (gradient accumulation)."""
    classes: list[str] = field(default_factory=list)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    run_dir: Path | None = None
    step: int = 0
    warmup_steps: int = 0
    """Optimizer steps the ``warmup`` trick runs before the schedule starts (``prefix``); a schedule trick spans
    ``total_steps - warmup_steps`` by default."""
    muted: set[str] = field(default_factory=set)
    """Tricks whose ``trickbox_transform_batch`` sits out the current batch (set per batch by ``one_of``)."""
    row: dict[str, Any] = field(default_factory=dict)
    """Values that join the log row of the current optimizer step (the gradient norm): device tensors are welcome,
    they are read with the row, without a host sync of their own."""
    draw_lr: bool = True
    """Whether the loop draws the schedule's LR curve (``lr_curve.png``, W&B ``lr_curve``) before training; a
    trick's setup may switch it off (``tricks.sgdr.plot=false``)."""
    image_sizes: dict[int, int] = field(default_factory=dict)
    """The training images' side per 0-based epoch when a trick changes it (``progressive_resize``, in its setup);
    drawn under the LR curve."""
    train_data: Any = None
    """The training set (``trickbox.data.DatasetArrays``) when the loop has one; ``None`` in a user's loop."""
    train_loader: Any = None
    """The training loader; tricks that fetch extra samples (KNN partners) use its ``fetch``."""
    accelerator: Any = None
    log: Callable[..., None] = _no_log
    """``log({"name": value}, step=None)``: scalars to every tracker, main process only."""
    log_images: Callable[..., None] = _no_log
    """``log_images({"name": [PIL.Image or path]}, step=None)``."""
    autocast: Callable[[], AbstractContextManager[Any]] = contextlib.nullcontext
    evaluate: Callable[..., dict[str, float]] | None = None
    """``evaluate(model, split)``: the loop's metrics (top1, top5, nll, ece) of any model on ``"val"`` or
    ``"test"`` (a trick's EMA weights, say); ``None`` in a user's loop."""

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def global_batch(self) -> int:
        """Images per optimizer step over every process and accumulation step (0 when ``batch_size`` is unknown)."""
        return self.batch_size * self.world_size * self.grad_accum

    @property
    def epoch(self) -> int:
        """The epoch the current step belongs to (0-based)."""
        return self.step // max(self.steps_per_epoch, 1)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def epoch_float(self) -> float:
        """Training progress in (fractional) epochs."""
        return self.step / max(self.steps_per_epoch, 1)

    @classmethod
    def from_accelerator(cls, accelerator: Any, **fields: Any) -> RunContext:
        """A context for a run on ``accelerator`` (None: one process, on the CPU unless ``device`` says): its device,
        rank, process count and autocast, and logging to its trackers unless ``log``/``log_images`` are given."""
        ctx = cls(**fields)
        if accelerator is not None:
            ctx.accelerator, ctx.device, ctx.autocast = accelerator, accelerator.device, accelerator.autocast
            ctx.rank, ctx.world_size = accelerator.process_index, accelerator.num_processes
            if "log" not in fields or "log_images" not in fields:
                from .tracking import Tracking

                tracking = Tracking.attached(accelerator)
                ctx.log = fields.get("log", tracking.log)
                ctx.log_images = fields.get("log_images", tracking.log_images)
        return ctx

    def pop_row(self) -> dict[str, Any]:
        """This step's :attr:`row`, emptied for the next one."""
        row, self.row = self.row, {}
        return row

    def generator(self, name: str, device: torch.device | str | None = None) -> torch.Generator:
        """A torch generator seeded by (seed, name, step, rank): the same draws after a resume."""
        return generator(self.seed, name, self.step, self.rank, device=device or self.device)

    def rng(self, name: str) -> np.random.Generator:
        """A numpy generator seeded by (seed, name, step, rank)."""
        return numpy_rng(self.seed, name, self.step, self.rank)
