"""Training-step variants on the same model, data and batch size (rows a–d of the benchmark).

Each variant is a callable ``step(i)`` that trains on batch ``i % len(batches)``:

- ``a_plain``:   a hand-written Accelerate loop (model, SGD, cross-entropy, backward, step);
- ``b_trickbox``: the same loop through ``trickbox.TrickSet`` with no tricks;
- ``c_tricks``:   TrickSet with mixup, label smoothing, SGDR and distillation;
- ``c_nokd``:     the same without distillation (for the "three tricks cost" and distillation rows);
- ``d_timm``:     the same four tricks from timm parts (``Mixup`` with ``label_smoothing``,
  ``SoftTargetCrossEntropy``, ``CosineLRScheduler``) plus distillation written inline;
- ``d_nokd``:     that without distillation;
- ``teacher``:    one teacher forward pass alone (eval mode, no grad), the unit of the distillation row.

Every step starts from ``x.clone()`` (a fresh batch, as a loader would give, and
timm's Mixup works in place), so all variants pay the same copy.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from common import four_tricks_config, load_builtin_tricks
from torch import Tensor

LR = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
ALPHA = 0.2
EPS = 0.1
TEMPERATURE = 4.0


@dataclass
class StepSetup:
    """What every variant shares."""

    model_name: str
    teacher_dir: Path
    batches: list[tuple[Tensor, Tensor]]
    num_classes: int = 10
    epochs: int = 10
    steps_per_epoch: int = 100
    """Sets the SGDR / cosine period (epochs x steps); the benchmark runs fewer steps than that."""
    seed: int = 0


def _model(setup: StepSetup) -> torch.nn.Module:
    from trickbox.build import create_model

    torch.manual_seed(setup.seed)  # identical initial weights in every variant
    return create_model(setup.model_name, num_classes=setup.num_classes, in_chans=3).train()


def _sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WEIGHT_DECAY)


def _teacher(setup: StepSetup) -> torch.nn.Module:
    from trickbox.build import load_trained

    return load_trained(str(setup.teacher_dir), num_classes=setup.num_classes, in_chans=3).eval().requires_grad_(False)


def plain_step(setup: StepSetup, accelerator: Any) -> Callable[[int], None]:
    """(a) The minimal hand-written Accelerate loop."""
    model, opt = _prepared(setup, accelerator)
    batches = setup.batches

    def step(i: int) -> None:
        xb, yb = batches[i % len(batches)]
        x = xb.clone()
        loss = F.cross_entropy(model(x), yb)
        accelerator.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _prepared(setup: StepSetup, accelerator: Any) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = _model(setup)
    return accelerator.prepare(model, _sgd(model))


def trickbox_step(setup: StepSetup, accelerator: Any, tricks_config: dict) -> Callable[[int], None]:
    """(b)/(c) The bring-your-own-loop API: batch → forward → loss → backward → step."""
    model, opt = _prepared(setup, accelerator)
    tricks = load_builtin_tricks(tricks_config)
    model, opt = tricks.setup(
        model, opt, accelerator=accelerator, num_classes=setup.num_classes, epochs=setup.epochs,
        steps_per_epoch=setup.steps_per_epoch, in_chans=3, seed=setup.seed,
    )
    batches = setup.batches

    def step(i: int) -> None:
        xb, yb = batches[i % len(batches)]
        batch = tricks.batch(xb.clone(), yb)
        parts = tricks.loss(tricks.forward(model, batch), batch)
        accelerator.backward(parts.total)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tricks.step(parts, batch)

    return step


def timm_step(setup: StepSetup, accelerator: Any, *, distill: bool) -> Callable[[int], None]:
    """(d) The same tricks from timm's parts, distillation inline."""
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.scheduler import CosineLRScheduler

    model, opt = _prepared(setup, accelerator)
    mixup = Mixup(mixup_alpha=ALPHA, cutmix_alpha=0.0, label_smoothing=EPS, num_classes=setup.num_classes)
    criterion = SoftTargetCrossEntropy()
    total = setup.epochs * setup.steps_per_epoch
    sched = CosineLRScheduler(opt, t_initial=total, lr_min=0.0, t_in_epochs=False)
    teacher = _teacher(setup) if distill else None
    batches = setup.batches
    t2 = TEMPERATURE * TEMPERATURE
    updates = [0]

    def step(i: int) -> None:
        xb, yb = batches[i % len(batches)]
        x, y = mixup(xb.clone(), yb)
        logits = model(x)
        loss = criterion(logits, y)
        if teacher is not None:
            with torch.no_grad():
                soft = F.softmax(teacher(x) / TEMPERATURE, dim=-1)
            loss = loss + t2 * -(soft * F.log_softmax(logits / TEMPERATURE, dim=-1)).sum(-1).mean()
        accelerator.backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        updates[0] += 1
        sched.step_update(num_updates=updates[0])

    return step


def teacher_forward(setup: StepSetup) -> Callable[[int], None]:
    """One teacher forward pass on a training batch, as the distillation trick runs it."""
    teacher = _teacher(setup)
    batches = setup.batches

    def step(i: int) -> None:
        xb, _ = batches[i % len(batches)]
        with torch.no_grad():
            teacher(xb.clone())

    return step


def build_variants(setup: StepSetup) -> dict[str, Callable[[int], None]]:
    """Every step variant of the benchmark, keyed by its short name (see the module docstring)."""
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
    three = four_tricks_config(None, alpha=ALPHA, eps=EPS, temperature=TEMPERATURE)
    four = four_tricks_config(setup.teacher_dir, alpha=ALPHA, eps=EPS, temperature=TEMPERATURE)
    return {
        "a_plain": plain_step(setup, accelerator),
        "b_trickbox": trickbox_step(setup, accelerator, {}),
        "c_tricks": trickbox_step(setup, accelerator, four),
        "c_nokd": trickbox_step(setup, accelerator, three),
        "d_timm": timm_step(setup, accelerator, distill=True),
        "d_nokd": timm_step(setup, accelerator, distill=False),
        "teacher": teacher_forward(setup),
    }
