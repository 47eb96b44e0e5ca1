"""random_erasing is timm's RandomErasing on the batch: the same erased pixels as timm's own object on a fixed seed,
in every mode; seeded per step (a resume erases alike); the inputs, targets and global generators are left alone."""
from __future__ import annotations

import random

import pytest
import torch
from timm.data.random_erasing import RandomErasing as TimmErasing

from trickbox import load_tricks

K = 10


def _set(**params):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, K))
    ts = load_tricks({"random_erasing": params}, autoload=False)
    ts.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=K, epochs=1, steps_per_epoch=100)
    return ts


@pytest.mark.parametrize("mode", ["const", "rand", "pixel"])
def test_erased_pixels_are_timms_on_a_fixed_seed(mode):
    ts = _set(prob=1.0, mode=mode, count=3)
    ts.ctx.step = 5
    torch.manual_seed(0)
    x, labels = torch.randn(8, 3, 16, 16), torch.randint(0, K, (8,))
    before = x.clone()
    got = ts.batch(x, labels)
    seed = ts.tricks[0].seed(ts.ctx)
    random.seed(seed)
    torch.manual_seed(seed)
    want = TimmErasing(probability=1.0, mode=mode, max_count=3, device="cpu")(before.clone())
    assert torch.equal(got.x, want) and not torch.equal(got.x, before)
    assert torch.equal(x, before)  # the loader's tensor is not written
    assert torch.equal(got.y, torch.nn.functional.one_hot(labels, K).float())


def test_draws_follow_the_step_and_leave_the_global_generators_alone():
    ts = _set(prob=0.5)
    x, labels = torch.randn(16, 3, 16, 16), torch.randint(0, K, (16,))
    random.seed(1)
    torch.manual_seed(1)
    ts.ctx.step = 3
    first = ts.batch(x, labels).x
    after = (random.random(), torch.rand(()).item())
    random.seed(1)
    torch.manual_seed(1)
    assert after == (random.random(), torch.rand(()).item())  # as if nothing had drawn
    ts.ctx.step = 4
    other = ts.batch(x, labels).x
    ts.ctx.step = 3
    assert torch.equal(ts.batch(x, labels).x, first) and not torch.equal(other, first)
