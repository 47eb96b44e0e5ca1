"""CutMix's invariants, checked with trickbox's public API only (no trickbox internals)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from trickbox_cutmix import CutMix, box_lambda, cutmix, sample_box

import trickbox
from trickbox import Batch, RunContext

K = 10


def ctx(step: int = 0, seed: int = 0) -> RunContext:
    return RunContext(num_classes=K, epochs=1, steps_per_epoch=100, base_lr=0.1, seed=seed, step=step)


def image_batch(b: int = 8, c: int = 3, h: int = 16, w: int = 12) -> Batch:
    """Image i is filled with the value i, so every pixel says where it came from."""
    labels = torch.arange(b) % K
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, c, h, w).contiguous()
    y = torch.nn.functional.one_hot(labels, K).float()
    return Batch(x=x, y=y, labels=labels, index=torch.arange(b))


def test_lambda_is_the_exact_share_of_pixels_each_image_keeps():
    batch = image_batch()
    trick = CutMix(alpha=1.0, prob=1.0)
    for step in range(20):
        out = trick.trickbox_transform_batch(batch=batch, ctx=ctx(step))
        lam, perm = out.meta["cutmix_lam"], out.meta["cutmix_perm"]
        for i in range(batch.size):
            own = (out.x[i] == i).float().mean().item()
            if perm[i] != i:
                assert own == pytest.approx(lam, abs=1e-6)
            expected = lam * batch.y[i] + (1 - lam) * batch.y[perm[i]]
            assert torch.allclose(out.y[i], expected)
        assert torch.allclose(out.y.sum(dim=1), torch.ones(batch.size))


def test_box_lies_inside_the_image_and_its_area_follows_lambda():
    rng = np.random.default_rng(0)
    for lam in (0.0, 0.3, 0.75, 1.0):
        for _ in range(50):
            top, bottom, left, right = box = sample_box(32, 32, lam, rng)
            assert 0 <= top <= bottom <= 32 and 0 <= left <= right <= 32
            assert box_lambda(box, 32, 32) >= lam - 0.05  # clipping only shrinks the box
    assert box_lambda((0, 32, 0, 32), 32, 32) == 0.0
    assert box_lambda((5, 5, 0, 32), 32, 32) == 1.0


def test_inputs_are_not_modified_and_prob_zero_leaves_batches_alone():
    batch = image_batch()
    before = batch.x.clone()
    CutMix(alpha=1.0, prob=1.0).trickbox_transform_batch(batch=batch, ctx=ctx())
    assert torch.equal(batch.x, before)
    never = CutMix(alpha=1.0, prob=0.0)
    assert all(never.trickbox_transform_batch(batch=batch, ctx=ctx(s)) is None for s in range(20))


def test_prob_is_the_share_of_batches_that_are_mixed():
    trick = CutMix(alpha=1.0, prob=0.3)
    applied = sum(trick.trickbox_transform_batch(batch=image_batch(), ctx=ctx(s)) is not None for s in range(400))
    assert 80 <= applied <= 160


def test_same_step_and_seed_draw_the_same_box_so_a_resumed_run_repeats():
    trick = CutMix(alpha=1.0, prob=1.0)
    a = trick.trickbox_transform_batch(batch=image_batch(), ctx=ctx(step=7))
    b = trick.trickbox_transform_batch(batch=image_batch(), ctx=ctx(step=7))
    assert a.meta["cutmix_box"] == b.meta["cutmix_box"] and torch.equal(a.x, b.x)
    boxes = {trick.trickbox_transform_batch(batch=image_batch(), ctx=ctx(step=s)).meta["cutmix_box"] for s in range(10)}
    assert len(boxes) > 1


def test_parameters_are_validated_with_one_line_errors():
    with pytest.raises(trickbox.ConfigError, match=r"tricks\.cutmix\.alpha must be > 0"):
        CutMix(alpha=0.0)
    with pytest.raises(trickbox.ConfigError, match=r"tricks\.cutmix\.prob must be in \[0, 1\]"):
        CutMix(prob=1.5)
    with pytest.raises(trickbox.ConfigError, match="unknown parameter tricks.cutmix.alpah"):
        CutMix(alpah=1.0)


def test_non_image_inputs_are_refused():
    flat = Batch(x=torch.zeros(4, 64), y=torch.full((4, K), 1 / K), labels=torch.zeros(4, dtype=torch.long),
                 index=torch.arange(4))
    with pytest.raises(trickbox.ConfigError, match=r"needs image batches"):
        CutMix(prob=1.0).trickbox_transform_batch(batch=flat, ctx=ctx())
    with pytest.raises(ValueError):
        cutmix(flat.x, flat.y, torch.arange(4), (0, 1, 0, 1))


def test_in_a_hand_written_loop_with_label_smoothing_after_it():
    """trickbox validates the class's hooks, runs CutMix before label smoothing and trains through it."""
    tricks = trickbox.load_tricks({"cutmix": {"alpha": 1.0, "prob": 1.0}, "label_smoothing": {"eps": 0.1}},
                                  extra=[CutMix])
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                torch.nn.Linear(4, K))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tricks.setup(model, optimizer, num_classes=K, epochs=1, steps_per_epoch=3)
    for _ in range(3):
        x, labels = torch.randn(8, 3, 16, 16), torch.randint(0, K, (8,))
        batch = tricks.batch(x, labels)
        assert "cutmix_lam" in batch.meta
        assert float(batch.y.min()) >= 0.1 / K - 1e-6  # smoothed after mixing: no target is below ε/K
        loss = tricks.loss(tricks.forward(model, batch), batch).total
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        tricks.step()


def test_installed_entry_point_is_found():
    """After `pip install trickbox-cutmix`, trickbox finds the trick by its name alone."""
    tricks = trickbox.load_tricks(["cutmix"])
    assert tricks.names == ["cutmix"]
    assert type(tricks.tricks[0]) is CutMix
