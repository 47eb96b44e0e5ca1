"""step_lr, multistep_lr and poly_lr, alone and inside the warmup trick, give timm's scheduler of the same name
(updated per optimizer step) at every step of the run; the warmup composes with SGDR too, and the loop draws the
composed curve before training."""
from __future__ import annotations

import pytest
import torch
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler, PolyLRScheduler, StepLRScheduler

from trickbox import load_tricks
from trickbox.config import load_config
from trickbox.errors import ConfigError
from trickbox.loop import train

from ..conftest import SMALL_RUN

LR, EPOCHS, SPE = 0.2, 12, 5


def ours(tricks: dict, epochs: int = EPOCHS) -> list[float]:
    model = torch.nn.Linear(2, 2)
    ts = load_tricks(tricks, autoload=False)
    ts.setup(model, torch.optim.SGD(model.parameters(), lr=LR), num_classes=2, epochs=epochs, steps_per_epoch=SPE)
    return [ts.rate.at(s) for s in range(epochs * SPE)]


def timms(make, epochs: int = EPOCHS) -> list[float]:
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=LR)
    sched = make(opt)
    lrs = []
    for s in range(epochs * SPE):  # timm's train.py: step_update(num_updates) after each step sets the next LR
        sched.step_update(num_updates=s)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


WARMUPS = [None, {"epochs": 2, "start_lr": 0.01, "prefix": True}, {"epochs": 2, "start_lr": 0.01, "prefix": False}]


def _warm(w):
    return {} if w is None else {"warmup_t": w["epochs"] * SPE, "warmup_lr_init": w["start_lr"],
                                 "warmup_prefix": w["prefix"]}


def _with(w, tricks):
    return {**tricks, **({"warmup": w} if w else {})}


@pytest.mark.parametrize("w", WARMUPS, ids=["plain", "warmup-prefix", "warmup-over"])
def test_step_lr_is_timms_step_scheduler(w):
    got = ours(_with(w, {"step_lr": {"decay_epochs": 3, "decay_rate": 0.5}}))
    want = timms(lambda o: StepLRScheduler(o, decay_t=3 * SPE, decay_rate=0.5, t_in_epochs=False, **_warm(w)))
    assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("w", WARMUPS, ids=["plain", "warmup-prefix", "warmup-over"])
def test_multistep_lr_is_timms_multistep_scheduler(w):
    got = ours(_with(w, {"multistep_lr": {"milestones": [3, 5, 8], "decay_rate": 0.3}}))
    want = timms(lambda o: MultiStepLRScheduler(o, decay_t=[3 * SPE, 5 * SPE, 8 * SPE], decay_rate=0.3,
                                                t_in_epochs=False, **_warm(w)))
    assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize("w", WARMUPS, ids=["plain", "warmup-prefix", "warmup-over"])
def test_poly_lr_is_timms_poly_scheduler(w):
    got = ours(_with(w, {"poly_lr": {"power": 2.0, "min_lr": 0.001}}))
    t_initial = (EPOCHS - (w["epochs"] if w and w["prefix"] else 0)) * SPE
    want = timms(lambda o: PolyLRScheduler(o, t_initial=t_initial, power=2.0, lr_min=0.001, t_in_epochs=False,
                                           **_warm(w)))
    assert got == pytest.approx(want, abs=1e-12)
    assert got[-1] > 0.001 and got[-1] < got[len(got) // 2]  # decays all run long, to min_lr at the end


def test_warmup_around_sgdr_with_restarts_is_timms_cosine_and_sgdrs_own_warmup():
    got = ours({"sgdr": {"t0": 2, "t_mult": 2, "min_lr": 0.002}, "warmup": {"epochs": 1, "start_lr": 0.0}}, epochs=15)
    own = ours({"sgdr": {"t0": 2, "t_mult": 2, "min_lr": 0.002, "warmup_epochs": 1}}, epochs=15)
    want = timms(lambda o: CosineLRScheduler(o, t_initial=2 * SPE, cycle_mul=2, lr_min=0.002, warmup_t=SPE,
                                             warmup_lr_init=0.0, warmup_prefix=True, cycle_limit=3,
                                             t_in_epochs=False), epochs=15)
    assert got == pytest.approx(want, abs=1e-12) and got == pytest.approx(own, abs=1e-12)


def test_warmup_alone_rises_to_the_base_rate_and_stays():
    got = ours({"warmup": {"epochs": 2}})
    assert got[0] == 0.0 and got[SPE] == pytest.approx(LR / 2) and set(got[2 * SPE:]) == {LR}


@pytest.mark.parametrize("tricks, fragment", [
    ({"warmup": {"epochs": 12}}, "tricks.warmup.epochs=12 is not shorter than the run"),
    ({"multistep_lr": {"milestones": [5, 3]}}, "must be ascending epochs > 0"),
    ({"poly_lr": {"min_lr": 1.0}}, "tricks.poly_lr.min_lr=1.0 exceeds optim.lr=0.2"),
])
def test_bad_schedules_are_one_line(tricks, fragment):
    with pytest.raises(ConfigError) as info:
        ours(tricks)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_a_run_draws_the_composed_curve_and_logs_the_scheduled_rate(tmp_path):
    import json

    cfg = load_config([], [*SMALL_RUN, f"train.out_dir={tmp_path}", "train.run_name=s", "train.epochs=3",
                           "train.log_every=1", "tricks.step_lr={decay_epochs: 1, decay_rate: 0.5}",
                           "tricks.warmup={epochs: 1}", "optim.lr=0.1"])
    result = train(cfg)
    assert (result.run_dir / "lr_curve.png").stat().st_size > 1000
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["lr"] for r in rows if "lr" in r}
    spe = result.steps // 3
    assert logged and all(v == pytest.approx(_expected(s, spe)) for s, v in logged.items()), logged


def _expected(step: int, spe: int) -> float:
    """The rate an optimizer step used, as the log records it (warmup 1 epoch, then halving each epoch)."""
    from trickbox.functional import step_lr, warmup_lr

    return warmup_lr(step, schedule=lambda s: step_lr(s, base_lr=0.1, decay_steps=spe, decay_rate=0.5), base_lr=0.1,
                     warmup_steps=spe, start_lr=0.0, prefix=True)
