"""SGDR schedule against torch's CosineAnnealingWarmRestarts and timm's CosineLRScheduler."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from timm.scheduler import CosineLRScheduler

from trickbox.functional import lr_curve, sgdr_cycle, sgdr_lr, sgdr_restarts

from ..conftest import raises_one_line


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


@pytest.mark.parametrize("steps_per_epoch", [1, 7])
@pytest.mark.parametrize("t0,t_mult", [(1, 1), (3, 1), (2, 2), (5, 3)])
def test_matches_torch_cosine_warm_restarts(t0: int, t_mult: int, steps_per_epoch: int) -> None:
    base_lr, min_lr = 0.4, 0.01
    opt = _optimizer(base_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=t0 * steps_per_epoch, T_mult=t_mult, eta_min=min_lr
    )
    n_steps = 150
    ours = lr_curve(n_steps, steps_per_epoch=steps_per_epoch, base_lr=base_lr, min_lr=min_lr, t0=t0, t_mult=t_mult)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(n_steps):
            assert ours[step] == pytest.approx(opt.param_groups[0]["lr"], abs=1e-6), step
            opt.step()
            sched.step()


@pytest.mark.parametrize("steps_per_epoch", [1, 5])
@pytest.mark.parametrize(
    "t0,t_mult,cycle_decay,warmup_epochs,warmup_start_lr,cycle_limit",
    [
        (10, 1.0, 0.5, 0, 0.0, 100),
        (4, 2.0, 0.7, 3, 1e-4, 100),
        (3, 1.5, 0.8, 2, 0.0, 100),
        (6, 1.0, 1.0, 1, 0.05, 2),
        (2, 3.0, 0.9, 0, 0.0, 2),
    ],
)
def test_matches_timm_cosine_scheduler(
    t0: int,
    t_mult: float,
    cycle_decay: float,
    warmup_epochs: int,
    warmup_start_lr: float,
    cycle_limit: int,
    steps_per_epoch: int,
) -> None:
    base_lr, min_lr = 0.1, 1e-3
    opt = _optimizer(base_lr)
    sched = CosineLRScheduler(
        opt,
        t_initial=t0 * steps_per_epoch,
        lr_min=min_lr,
        cycle_mul=t_mult,
        cycle_decay=cycle_decay,
        cycle_limit=cycle_limit,
        warmup_t=warmup_epochs * steps_per_epoch,
        warmup_lr_init=warmup_start_lr,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    for step in range(160):
        sched.step_update(step)
        ours = sgdr_lr(
            step,
            steps_per_epoch=steps_per_epoch,
            base_lr=base_lr,
            min_lr=min_lr,
            t0=t0,
            t_mult=t_mult,
            warmup_epochs=warmup_epochs,
            warmup_start_lr=warmup_start_lr,
            cycle_decay=cycle_decay,
            cycle_limit=cycle_limit,
        )
        assert ours == pytest.approx(opt.param_groups[0]["lr"], abs=1e-6), step


@pytest.mark.parametrize("t0,t_mult", [(1.0, 2.0), (5.0, 3.0), (0.1, 1.0), (0.3, 1.0), (2.5, 1.5), (7.0, 1.0)])
def test_cycle_exact_at_and_around_boundaries(t0: float, t_mult: float) -> None:
    start = 0.0
    for i in range(12):
        length = t0 * t_mult**i
        assert sgdr_cycle(start, t0, t_mult) == (i, pytest.approx(0.0, abs=1e-9), pytest.approx(length))
        mid_i, mid_cur, _ = sgdr_cycle(start + 0.5 * length, t0, t_mult)
        assert mid_i == i and mid_cur == pytest.approx(0.5 * length)
        before_i, before_cur, _ = sgdr_cycle(start + length * (1 - 1e-6), t0, t_mult)
        assert before_i == i and before_cur == pytest.approx(length * (1 - 1e-6))
        start += length


def test_cycle_snaps_rounding_error_onto_the_boundary() -> None:
    # 0.1 * 3 == 0.30000000000000004 > 0.3, yet 0.3 starts cycle 3 of length 0.1.
    i, t_cur, t_i = sgdr_cycle(0.3, 0.1, 1.0)
    assert i == 3 and t_cur == pytest.approx(0.0, abs=1e-12) and t_i == 0.1
    # t0 * steps_per_epoch = 0.1 * 30 = 3.0000000000000004 steps: step 3 is a restart.
    assert sgdr_lr(3, steps_per_epoch=30, base_lr=1.0, t0=0.1) == pytest.approx(1.0)


def test_formula_by_hand_with_fractional_epochs() -> None:
    # 4 steps per epoch, 1 warmup epoch from 0.0, then cycles of 2.5 and 5 epochs.
    kw = dict(steps_per_epoch=4, base_lr=1.0, min_lr=0.1, t0=2.5, t_mult=2.0, warmup_epochs=1.0, cycle_decay=0.5)
    assert sgdr_lr(0, **kw) == 0.0
    assert sgdr_lr(2, **kw) == pytest.approx(0.5)
    assert sgdr_lr(4, **kw) == pytest.approx(1.0)
    t_cur = 9 / 4 - 1.0  # step 9: 2.25 epochs, 1.25 into the first cycle
    assert sgdr_lr(9, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * t_cur / 2.5)))
    # step 14 = 3.5 epochs: the second cycle (peak 0.5) just started
    assert sgdr_lr(14, **kw) == pytest.approx(0.5)


def test_plain_cosine_is_one_cycle() -> None:
    kw = dict(steps_per_epoch=10, base_lr=0.2, min_lr=0.0, t0=5, cycle_limit=1)
    curve = lr_curve(60, **kw)
    assert curve[0] == pytest.approx(0.2)
    assert curve[25] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(curve[:50], curve[1:50]))
    assert curve[50:] == [0.0] * 10


def test_restarts() -> None:
    assert sgdr_restarts(30, 10) == [10, 20, 30]
    assert sgdr_restarts(29.5, 10) == [10, 20]
    assert sgdr_restarts(100, 10, 2.0, warmup_epochs=5) == [15, 35, 75]
    assert sgdr_restarts(0.3, 0.1) == pytest.approx([0.1, 0.2, 0.3])
    assert sgdr_restarts(5, 10) == []
    # at each restart time the rate jumps from ~min_lr back to base_lr
    spe = 4
    for end in sgdr_restarts(60, 3, 2.0, warmup_epochs=2):
        step = round(end * spe)
        kw = dict(steps_per_epoch=spe, base_lr=1.0, min_lr=0.0, t0=3, t_mult=2.0, warmup_epochs=2)
        assert sgdr_lr(step, **kw) == pytest.approx(1.0)
        assert sgdr_lr(step - 1, **kw) < 0.1


def test_lr_curve_matches_sgdr_lr() -> None:
    kw = dict(steps_per_epoch=3, base_lr=0.1, t0=2, t_mult=2.0, warmup_epochs=1)
    assert lr_curve(40, **kw) == [sgdr_lr(s, **kw) for s in range(40)]
    assert lr_curve(0, **kw) == []


def test_value_errors() -> None:
    ok = dict(steps_per_epoch=10, base_lr=0.1, t0=5)
    with raises_one_line("t0 must be > 0"):
        sgdr_lr(0, **{**ok, "t0": 0})
    with raises_one_line("t_mult must be >= 1"):
        sgdr_lr(0, **ok, t_mult=0.5)
    with raises_one_line("steps_per_epoch must be > 0"):
        sgdr_lr(0, **{**ok, "steps_per_epoch": 0})
    with raises_one_line("min_lr must be <= base_lr"):
        sgdr_lr(0, **ok, min_lr=0.2)
    with raises_one_line("min_lr must be >= 0"):
        sgdr_lr(0, **ok, min_lr=-0.1)
    with raises_one_line("cycle_decay must be > 0"):
        sgdr_lr(0, **ok, cycle_decay=0)
    with raises_one_line("warmup_epochs must be >= 0"):
        sgdr_lr(0, **ok, warmup_epochs=-1)
    with raises_one_line("cycle_limit must be >= 1"):
        sgdr_lr(0, **ok, cycle_limit=0)
    with raises_one_line("step must be >= 0"):
        sgdr_lr(-1, **ok)
    with raises_one_line("t must be >= 0"):
        sgdr_cycle(-0.5, 1, 1)
    with raises_one_line("total_epochs must be >= 0"):
        sgdr_restarts(-1, 10)
    with raises_one_line("warmup_epochs must be >= 0"):
        sgdr_restarts(10, 10, warmup_epochs=-1)
    with raises_one_line("n_steps must be >= 0"):
        lr_curve(-1, **ok)
