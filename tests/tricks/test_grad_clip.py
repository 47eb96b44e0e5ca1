"""Gradient clipping equals torch's on the same gradients: by hand, and in the loop under gradient accumulation."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from trickbox import hookimpl, load_tricks
from trickbox.config import load_config
from trickbox.functional import soft_cross_entropy
from trickbox.loop import train

K = 10


def model_with_grads(scale: float = 10.0) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, K))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * scale
    return model


def clip_with_trick(model: nn.Module, settings: dict) -> None:
    tricks = load_tricks({"grad_clip": settings}, autoload=False)
    tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=K, epochs=1, steps_per_epoch=1)
    tricks.before_optimizer_step(model)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0])
def test_by_norm_equals_torch(norm_type):
    model, reference = model_with_grads(), model_with_grads()
    norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 5.0, norm_type=norm_type)
    assert norm > 5.0  # clipping is active
    clip_with_trick(model, {"max_norm": 5.0, "norm_type": norm_type})
    for p, r in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p.grad, r.grad, rtol=1e-6, atol=0)


def test_by_value_equals_torch():
    model, reference = model_with_grads(), model_with_grads()
    torch.nn.utils.clip_grad_value_(reference.parameters(), 0.5)
    clip_with_trick(model, {"mode": "value", "max_value": 0.5})
    for p, r in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p.grad, r.grad)
    assert max(float(p.grad.abs().max()) for p in model.parameters()) == 0.5


class Probe:
    """Records the initial weights, every micro-batch, and the gradients before and after the tricks' clipping."""

    def __init__(self) -> None:
        self.initial: nn.Module | None = None
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.before: list[list[torch.Tensor]] = []
        self.after: list[list[torch.Tensor]] = []

    @hookimpl(tryfirst=True)
    def trickbox_configure_model(self, model: nn.Module) -> None:
        self.initial = copy.deepcopy(model)

    @hookimpl(trylast=True)
    def trickbox_transform_batch(self, batch) -> None:
        self.batches.append((batch.x.clone(), batch.y.clone()))

    @hookimpl(tryfirst=True)
    def trickbox_before_optimizer_step(self, model: nn.Module) -> None:
        self.before.append([p.grad.clone() for p in model.parameters()])


class Clipped:
    """Records the gradients after every other implementation of the hook (the clipping) ran."""

    def __init__(self) -> None:
        self.grads: list[list[torch.Tensor]] = []

    @hookimpl(trylast=True)
    def trickbox_before_optimizer_step(self, model: nn.Module) -> None:
        self.grads.append([p.grad.clone() for p in model.parameters()])


def test_in_the_loop_under_gradient_accumulation_equals_a_hand_written_reference(tmp_path):
    probe, clipped = Probe(), Clipped()
    max_norm = 0.05
    cfg = load_config([], ["data.name=digits", "data.train_subset=128", "train.batch_size=32", "train.grad_accum=2",
                           "train.epochs=1", "train.tracker=none", "train.progress=false", f"train.out_dir={tmp_path}",
                           "optim.lr=0.05", f"tricks.grad_clip.max_norm={max_norm}"])
    res = train(cfg, plugins=[probe, clipped])
    assert res.steps == 2 and len(probe.before) == 2 == len(clipped.grads)  # once per optimizer step, not per batch
    assert len(probe.batches) == 4

    # by hand: the accumulated gradient of the first two micro-batches, from the initial weights
    ref = probe.initial
    ref.train()
    for x, y in probe.batches[:2]:
        (soft_cross_entropy(ref(x), y) / 2).backward()
    grads = [p.grad for p in ref.parameters()]
    for g, seen in zip(grads, probe.before[0]):
        assert torch.allclose(g, seen, rtol=1e-4, atol=1e-7)  # the loop accumulated what we did
    total = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    assert total > max_norm
    factor = max_norm / (total + 1e-6)
    for g, seen in zip(grads, clipped.grads[0]):
        assert torch.allclose(seen, g * factor, rtol=1e-4, atol=1e-8)
