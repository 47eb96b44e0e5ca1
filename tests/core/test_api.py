"""TrickSet, the bring-your-own-loop API, driven by a hand-written loop (no Accelerate unless a test says so)."""
from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

import trickbox
from trickbox import Batch, ConfigError, NonFiniteError, RunContext, Trick, hookimpl, load_tricks
from trickbox.registry import Catalog

K = 10


def loop(tricks: trickbox.TrickSet, model: nn.Module, optimizer: torch.optim.Optimizer, steps: int,
         x_shape: tuple[int, ...] = (8, 1, 8, 8)) -> list[float]:
    """The ten-line loop of the README; returns the LR each optimizer step used."""
    used = []
    for _ in range(steps):
        x, labels = torch.randn(*x_shape), torch.randint(0, K, (x_shape[0],))
        batch = tricks.batch(x, labels)
        loss = tricks.loss(tricks.forward(model, batch), batch).total
        loss.backward()
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        optimizer.zero_grad()
        tricks.step()
    return used


def small_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, K))


def builtin(config: dict[str, Any]) -> trickbox.TrickSet:
    return load_tricks(config, autoload=False)  # trickbox's own tricks only: installed plugins cannot interfere


# -- SGDR ------------------------------------------------------------------------------------------


def sgdr_by_hand(step: int, steps_per_epoch: int, base_lr: float, t0: float, t_mult: float) -> float:
    """Loshchilov & Hutter's formula, written out independently of trickbox.functional."""
    t, start, period = step / steps_per_epoch, 0.0, t0
    while t >= start + period:
        start, period = start + period, period * t_mult
    return 0.5 * base_lr * (1 + math.cos(math.pi * (t - start) / period))


def test_lr_follows_the_sgdr_formula_at_every_step():
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tricks = builtin({"sgdr": {"t0": 1, "t_mult": 2}})
    tricks.setup(model, optimizer, num_classes=K, epochs=7, steps_per_epoch=4)
    used = loop(tricks, model, optimizer, steps=28)
    expected = [sgdr_by_hand(s, 4, 0.1, t0=1, t_mult=2) for s in range(28)]
    assert used == pytest.approx(expected, abs=1e-12)
    restarts = [s for s in range(1, 28) if used[s] > used[s - 1]]
    assert restarts == [4, 12]  # epochs 1 and 3: periods of 1, 2, 4 epochs
    assert tricks.ctx.step == 28 and tricks.lr() == pytest.approx(sgdr_by_hand(28, 4, 0.1, 1, 2))


def test_lr_respects_each_group_lr_scale():
    model = small_model()
    optimizer = torch.optim.SGD([{"params": model[1].weight}, {"params": model[1].bias, "lr_scale": 0.1}], lr=0.2)
    tricks = builtin({"sgdr": {}})
    tricks.setup(model, optimizer, num_classes=K, epochs=2, steps_per_epoch=5)
    loop(tricks, model, optimizer, steps=3)
    full, scaled = (g["lr"] for g in optimizer.param_groups)
    assert full == pytest.approx(sgdr_by_hand(3, 5, 0.2, t0=2, t_mult=1)) and scaled == pytest.approx(0.1 * full)


def test_without_a_schedule_the_lr_stays_put():
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.03)
    tricks = builtin({})
    tricks.setup(model, optimizer, num_classes=K, epochs=1, steps_per_epoch=3)
    assert loop(tricks, model, optimizer, steps=3) == [0.03] * 3


def test_without_a_schedule_trick_the_users_own_scheduler_keeps_working():
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    tricks = builtin({"label_smoothing": {}})
    tricks.setup(model, optimizer, num_classes=K, epochs=1, steps_per_epoch=4)
    used = []
    for _ in range(4):
        batch = tricks.batch(torch.randn(8, 1, 8, 8), torch.randint(0, K, (8,)))
        tricks.loss(tricks.forward(model, batch), batch).total.backward()
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        tricks.step()
    assert used == pytest.approx([0.1, 0.05, 0.025, 0.0125])
    assert tricks.lr() == pytest.approx(0.00625)


# -- targets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_order", [("mixup", "label_smoothing"), ("label_smoothing", "mixup")])
def test_label_smoothing_applies_after_mixup_to_both_mixed_labels(config_order):
    eps = 0.1
    values = {"mixup": {"alpha": 1.0}, "label_smoothing": {"eps": eps}}
    tricks = builtin({name: values[name] for name in config_order})
    model = small_model()
    tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=K, epochs=1, steps_per_epoch=1)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    batch = tricks.batch(torch.randn(8, 1, 8, 8), labels)
    lam, perm = batch.meta["lam"], batch.meta["perm"]
    assert 0 < lam < 1 and not torch.equal(perm, torch.arange(8))
    onehot = torch.nn.functional.one_hot(labels, K).float()
    expected = (1 - eps) * (lam * onehot + (1 - lam) * onehot[perm]) + eps / K
    assert torch.allclose(batch.y, expected, atol=1e-6)
    assert torch.allclose(batch.y.sum(dim=1), torch.ones(8))


# -- loss ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A trickbox run directory as ``trickbox train`` writes it: model.safetensors + model.json."""
    from trickbox.build import create_model
    from trickbox.checkpoint import save_model

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("teacher")
    save_model(create_model("cifar_resnet8", num_classes=K, in_chans=1), out,
               {"name": "cifar_resnet8", "num_classes": K, "in_chans": 1, "kwargs": {}})
    return out


def test_loss_parts_are_named_ce_and_kd(teacher_dir):
    from trickbox.build import load_trained
    from trickbox.functional import distillation_loss, soft_cross_entropy

    tricks = builtin({"distillation": {"teacher": str(teacher_dir), "temperature": 3.0, "weight": 0.5}})
    model = small_model()
    tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=K, epochs=1, steps_per_epoch=2,
                 in_chans=1)
    batch = tricks.batch(torch.randn(8, 1, 8, 8), torch.randint(0, K, (8,)))
    logits = tricks.forward(model, batch)
    parts = tricks.loss(logits, batch)
    assert set(parts.parts) == {"ce", "kd"}
    teacher = load_trained(str(teacher_dir), num_classes=K, in_chans=1).eval()
    with torch.no_grad():
        kd = 0.5 * distillation_loss(logits, teacher(batch.x), 3.0)
    assert torch.allclose(parts.parts["kd"], kd, rtol=1e-5)
    assert torch.allclose(parts.parts["ce"], soft_cross_entropy(logits, batch.y))
    assert torch.allclose(parts.total, parts.parts["ce"] + parts.parts["kd"])
    assert set(parts.detached()) == {"loss", "loss/ce", "loss/kd", "loss/kd_kl"}  # kd_kl: logged, not summed


def test_a_nan_loss_raises_before_backward():
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tricks = builtin({"label_smoothing": {}})
    tricks.setup(model, optimizer, num_classes=K, epochs=1, steps_per_epoch=2)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(8, 1, 8, 8)
    x[3, 0, 2, 2] = float("nan")
    batch = tricks.batch(x, torch.randint(0, K, (8,)))
    with pytest.raises(NonFiniteError, match=r"loss is not finite at step 0 \(ce=nan\)"):
        tricks.loss(tricks.forward(model, batch), batch)
    # the loop never reached backward or the optimizer: nothing changed
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert tricks.ctx.step == 0


# -- step() without arguments (the README's loop) ---------------------------------------------------


class Recorder(Trick):
    name = "recorder"

    def check(self) -> None:
        self.after: list[tuple[int, set[str]]] = []

    @hookimpl
    def trickbox_after_step(self, batch: Batch, parts: trickbox.LossParts, ctx: RunContext) -> None:
        self.after.append((ctx.step, set(parts.parts)))


def test_step_without_arguments_logs_the_latest_loss_and_runs_after_step_hooks():
    cat = Catalog()
    cat.add(Recorder)
    tricks = load_tricks({"recorder": {}}, catalog=cat)
    logged: list[tuple[int, dict[str, Any]]] = []
    model = small_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tricks.setup(model, optimizer, num_classes=K, epochs=1, steps_per_epoch=3, log_every=2,
                 log=lambda values, step=None: logged.append((step, dict(values))))
    loop(tricks, model, optimizer, steps=3)
    assert tricks.tricks[0].after == [(1, {"ce"}), (2, {"ce"}), (3, {"ce"})]
    assert [step for step, _ in logged] == [0, 1, 2]  # row s: what optimizer step s used
    assert all("lr" in values for _, values in logged)
    assert [("loss/ce" in values) for _, values in logged] == [True, False, True]  # every log_every steps


# -- configure hooks and prepare ---------------------------------------------------------------------


class NewModel(Trick):
    name = "new_model"

    @hookimpl
    def trickbox_configure_model(self, model: nn.Module, ctx: RunContext) -> nn.Module:
        return nn.Sequential(model, nn.Identity())


class NewOptimizer(Trick):
    name = "new_optimizer"

    @hookimpl
    def trickbox_configure_optimizer(self, optimizer: torch.optim.Optimizer, model: nn.Module,
                                     ctx: RunContext) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=optimizer.param_groups[0]["lr"])


def _catalog() -> Catalog:
    cat = Catalog()
    for cls in (NewModel, NewOptimizer):
        cat.add(cls)
    return cat


class Wrapped(nn.Module):
    """What DDP looks like from outside: the real model is ``.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def test_configure_hooks_may_replace_model_and_optimizer_before_prepare():
    tricks = load_tricks({"new_model": {}, "new_optimizer": {}}, catalog=_catalog())
    model = small_model()
    new_model, new_optimizer = tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=K, epochs=1,
                                            steps_per_epoch=1)
    assert isinstance(new_model, nn.Sequential) and new_model[0] is model
    assert isinstance(new_optimizer, torch.optim.AdamW) and tricks.optimizer is new_optimizer


def test_replacing_a_wrapped_model_raises():
    tricks = load_tricks({"new_model": {}}, catalog=_catalog())
    model = Wrapped(small_model())
    with pytest.raises(ConfigError, match="replaced the model after accelerator.prepare; call tricks.setup before "
                                          "prepare"):
        tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=K, epochs=1, steps_per_epoch=1)


@pytest.fixture
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.mark.parametrize("trick,what", [("new_model", "model"), ("new_optimizer", "optimizer")])
def test_replacing_after_prepare_raises_even_with_one_unwrapped_process(accelerator, trick, what):
    tricks = load_tricks({trick: {}}, catalog=_catalog())
    model = small_model()
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert accelerator.unwrap_model(model) is model  # one process: prepare does not wrap the model
    with pytest.raises(ConfigError, match=f"replaced the {what} after accelerator.prepare"):
        tricks.setup(model, optimizer, accelerator=accelerator, num_classes=K, epochs=1, steps_per_epoch=1)


def test_setup_after_prepare_with_in_place_tricks_trains(accelerator):
    """The own_loop.py order: prepare first, then setup; the LR lands on the prepared optimizer."""
    tricks = builtin({"sgdr": {"t0": 1}, "mixup": {"alpha": 0.2}, "label_smoothing": {}})
    model = small_model()
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    tricks.setup(model, optimizer, accelerator=accelerator, num_classes=K, epochs=2, steps_per_epoch=3)
    used = []
    for _ in range(6):
        batch = tricks.batch(torch.randn(8, 1, 8, 8), torch.randint(0, K, (8,)))
        accelerator.backward(tricks.loss(tricks.forward(model, batch), batch).total)
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        optimizer.zero_grad()
        tricks.step()
    assert used == pytest.approx([sgdr_by_hand(s, 3, 0.1, 1, 1) for s in range(6)])


# -- ordering -----------------------------------------------------------------------------------------


def _order_trick(trick_name: str, **marker: bool) -> type[Trick]:
    def trickbox_transform_batch(self: Trick, batch: Batch, ctx: RunContext) -> Batch:
        return batch.replace(meta={"order": [*batch.meta.get("order", []), self.name]})

    hook = hookimpl(**marker)(trickbox_transform_batch) if marker else hookimpl(trickbox_transform_batch)
    return type(f"Order_{trick_name}", (Trick,), {"name": trick_name, "trickbox_transform_batch": hook})


@pytest.fixture
def order_catalog() -> Catalog:
    cat = Catalog()
    for cls in (_order_trick("a"), _order_trick("b"), _order_trick("first", tryfirst=True), _order_trick("last",
                                                                                                         trylast=True)):
        cat.add(cls)
    assert not cat.broken, cat.broken
    return cat


def _order(cat: Catalog, names: list[str]) -> list[str]:
    tricks = load_tricks(names, catalog=cat)
    model = small_model()
    tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=K, epochs=1, steps_per_epoch=1)
    return tricks.batch(torch.randn(2, 1, 8, 8), torch.tensor([0, 1])).meta["order"]


def test_equal_tricks_run_in_config_order(order_catalog):
    assert _order(order_catalog, ["a", "b"]) == ["a", "b"]
    assert _order(order_catalog, ["b", "a"]) == ["b", "a"]


def test_tryfirst_and_trylast_beat_config_order(order_catalog):
    assert _order(order_catalog, ["last", "a", "first", "b"]) == ["first", "a", "b", "last"]
    assert _order(order_catalog, ["b", "last", "first"]) == ["first", "b", "last"]


# -- misuse ---------------------------------------------------------------------------------------------


def test_misuse_is_reported_clearly():
    tricks = builtin({"mixup": {}})
    with pytest.raises(RuntimeError, match=r"call tricks.setup"):
        tricks.batch(torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))
    model = small_model()
    with pytest.raises(ConfigError, match="steps_per_epoch must be >= 1, got 0"):
        tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=K, epochs=1, steps_per_epoch=0)
    with pytest.raises(ConfigError, match=r"unknown parameter tricks.mixup.alpah; did you mean 'alpha'\?"):
        builtin({"mixup": {"alpah": 0.2}})


def test_the_trickset_checkpoints_with_the_users_run(tmp_path):
    """accelerator.register_for_checkpointing(tricks): save_state/load_state resume the schedule and the draws."""
    from accelerate import Accelerator

    def make():
        model = small_model()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        tricks = builtin({"sgdr": {"t0": 1}, "mixup": {"alpha": 0.4}})
        accelerator = Accelerator(cpu=True)
        model, optimizer = accelerator.prepare(model, optimizer)
        tricks.setup(model, optimizer, accelerator=accelerator, num_classes=K, epochs=2, steps_per_epoch=5)
        accelerator.register_for_checkpointing(tricks)
        return accelerator, model, optimizer, tricks

    accelerator, model, optimizer, tricks = make()
    loop(tricks, model, optimizer, steps=3)
    accelerator.save_state(str(tmp_path / "state"))
    x, labels = torch.randn(8, 1, 8, 8), torch.randint(0, K, (8,))
    expected_lr, expected_lam = tricks.lr(), tricks.batch(x, labels).meta["lam"]
    accelerator2, model2, optimizer2, fresh = make()
    assert fresh.ctx.step == 0
    accelerator2.load_state(str(tmp_path / "state"))
    assert fresh.ctx.step == 3 and fresh.lr() == pytest.approx(expected_lr)
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(expected_lr)
    assert fresh.batch(x, labels).meta["lam"] == expected_lam  # the same seeded draw at the same step
