"""SGDR's warmup runs before the first cycle: the sgdr trick equals timm's CosineLRScheduler with warmup_prefix=True
(the arguments docs/recipes.md gives), and differs from timm's default, where warmup replaces the cycle's first
steps."""
from __future__ import annotations

import pytest
import torch
from timm.scheduler import CosineLRScheduler

from trickbox import load_tricks

SPE, EPOCHS = 4, 12
SGDR = {"t0": 2, "t_mult": 2, "min_lr": 0.001, "warmup_epochs": 1.5, "warmup_start_lr": 0.01, "cycle_decay": 0.5,
        "plot": False}


def trick_lrs(base_lr: float) -> list[float]:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=base_lr)
    tricks = load_tricks({"sgdr": SGDR}, autoload=False)
    tricks.setup(model, optimizer, num_classes=2, epochs=EPOCHS, steps_per_epoch=SPE)
    return [tricks.lr(s) for s in range(EPOCHS * SPE)]


def timm_lrs(base_lr: float, warmup_prefix: bool) -> list[float]:
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=base_lr)
    sched = CosineLRScheduler(optimizer, t_initial=SGDR["t0"] * SPE, warmup_t=int(SGDR["warmup_epochs"] * SPE),
                              warmup_lr_init=SGDR["warmup_start_lr"], warmup_prefix=warmup_prefix,
                              lr_min=SGDR["min_lr"],
                              cycle_mul=SGDR["t_mult"], cycle_decay=SGDR["cycle_decay"], cycle_limit=100,
                              t_in_epochs=False)
    out = []
    for step in range(EPOCHS * SPE):
        sched.step_update(num_updates=step)
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_equals_timm_with_warmup_prefix():
    assert trick_lrs(0.2) == pytest.approx(timm_lrs(0.2, warmup_prefix=True), abs=1e-12)


def test_differs_from_timms_default_warmup():
    ours, theirs = trick_lrs(0.2), timm_lrs(0.2, warmup_prefix=False)
    warmup = int(SGDR["warmup_epochs"] * SPE)
    assert ours[:warmup] == pytest.approx(theirs[:warmup])  # the same ramp
    assert ours[warmup] == pytest.approx(0.2)  # ours starts the cycle at its peak after the ramp ...
    assert theirs[warmup] < 0.2 - 1e-3  # ... timm's default is already 6 steps into it
