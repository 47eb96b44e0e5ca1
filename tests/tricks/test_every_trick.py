"""Every trick that :func:`trickbox.registry.discover` finds shows its own effect in a tiny training run.

One test per discovered trick (built-in or installed plugin): the trick is built through the public API
(:func:`trickbox.load_tricks`, :class:`trickbox.TrickSet`), a tiny model trains a few steps on random images, and a
check from :data:`EFFECTS` asserts what that trick is meant to do (the LR it sets, the targets it makes, the
gradients it clips, ...). Each check would fail if its trick were a no-op. A discovered trick without an entry in
:data:`EFFECTS` fails, so a new trick cannot slip in untested.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from trickbox import Batch, LossParts, TrickSet, load_tricks
from trickbox.registry import discover

K = 4  # classes
SHAPE = (8, 3, 16, 16)  # a batch of random images
LR = 0.1


# -- a tiny run ------------------------------------------------------------------------------------


@dataclass
class Step:
    """What one optimizer step of :func:`train` saw."""

    x: Tensor
    labels: Tensor
    batch: Batch
    logits: Tensor
    parts: LossParts
    lrs: list[float]
    grad_norm: float
    """Global gradient norm after backward, before ``before_optimizer_step``."""
    clipped_norm: float
    """Global gradient norm after ``before_optimizer_step``, as ``optimizer.step()`` sees it."""
    max_abs_grad: float
    """Largest gradient entry after ``before_optimizer_step``."""


def tiny_model(seed: int = 0) -> nn.Module:
    """trickbox's CIFAR ResNet-8 at width 8: residual blocks, BatchNorm, a biased classifier."""
    from trickbox.build import create_model

    torch.manual_seed(seed)
    return create_model("cifar_resnet8", num_classes=K, in_chans=SHAPE[1], width=8)


def build(config: dict[str, dict[str, Any]], model: nn.Module | None = None, *, groups: list[dict[str,
                                                                                                  Any]] | None = None,
          weight_decay: float = 0.0, epochs: int = 2, steps_per_epoch: int = 3,
          **context: Any) -> tuple[TrickSet, nn.Module, torch.optim.Optimizer]:
    """``load_tricks(config)`` set up on ``model`` (default :func:`tiny_model`) and a plain SGD."""
    model = model if model is not None else tiny_model()
    optimizer = torch.optim.SGD(groups if groups is not None else model.parameters(), lr=LR, weight_decay=weight_decay)
    tricks = load_tricks(config)
    model, optimizer = tricks.setup(model, optimizer, num_classes=K, epochs=epochs, steps_per_epoch=steps_per_epoch,
                                    **context)
    return tricks, model, optimizer


def grad_norm(model: nn.Module) -> float:
    grads = [p.grad.detach().flatten() for p in model.parameters() if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.cat(grads)))


def max_abs_grad(model: nn.Module) -> float:
    return max(float(p.grad.detach().abs().max()) for p in model.parameters() if p.grad is not None)


def data(step: int, shape: tuple[int, ...] = SHAPE) -> tuple[Tensor, Tensor]:
    """Random images and labels, a fixed function of the step."""
    gen = torch.Generator().manual_seed(1000 + step)
    return torch.randn(*shape, generator=gen), torch.randint(0, K, (shape[0],), generator=gen)


def train(tricks: TrickSet, model: nn.Module, optimizer: torch.optim.Optimizer, steps: int,
          shape: tuple[int, ...] = SHAPE) -> list[Step]:
    """The README's loop with every hook a trick can use; returns what each step saw."""
    assert tricks.ctx is not None
    seen: list[Step] = []
    for _ in range(steps):
        x, labels = data(tricks.ctx.step, shape)
        batch = tricks.batch(x, labels)
        logits = tricks.forward(model, batch)
        parts = tricks.loss(logits, batch)
        parts.total.backward()
        raw = grad_norm(model)
        tricks.before_optimizer_step(model)
        lrs = [float(g["lr"]) for g in optimizer.param_groups]
        seen.append(Step(x, labels, batch, logits.detach(), parts, lrs, raw, grad_norm(model), max_abs_grad(model)))
        optimizer.step()
        optimizer.zero_grad()
        tricks.step()
    return seen


def one_hot(labels: Tensor) -> Tensor:
    return torch.nn.functional.one_hot(labels, K).float()


def float_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


# -- one check per trick ---------------------------------------------------------------------------


def sgdr_by_hand(step: int, spe: int, base: float, low: float, t0: float, t_mult: float, warmup: float) -> float:
    """Linear warmup, then Loshchilov & Hutter's cosine with restarts, written out independently."""
    t = step / spe
    if t < warmup:
        return base * t / warmup
    t, start, period = t - warmup, 0.0, t0
    while t >= start + period - 1e-12:
        start, period = start + period, period * t_mult
    return low + 0.5 * (base - low) * (1 + math.cos(math.pi * (t - start) / period))


def check_sgdr(tmp_path: Path) -> None:
    """Every step's LR is ``sgdr_lr`` of the step, in every group at the group's ratio to the base rate."""
    from trickbox.functional import sgdr_lr

    params = {"t0": 1, "t_mult": 2, "min_lr": 0.001, "warmup_epochs": 0.5}
    model = tiny_model()
    head = list(model.get_classifier().parameters())
    body = [p for p in model.parameters() if all(p is not h for h in head)]
    tricks, model, optimizer = build({"sgdr": params}, model, groups=[{"params": body}, {"params": head, "lr": LR / 2}],
                                     epochs=3, steps_per_epoch=4)
    used = [s.lrs for s in train(tricks, model, optimizer, steps=12)]
    expected = [sgdr_lr(s, steps_per_epoch=4, base_lr=LR, min_lr=0.001, t0=1, t_mult=2,
                        warmup_epochs=0.5) for s in range(12)]
    assert [lr for lr, _ in used] == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx([sgdr_by_hand(s, 4, LR, 0.001, 1, 2, 0.5) for s in range(12)], abs=1e-12)
    assert [half for _, half in used] == pytest.approx([lr / 2 for lr in expected], abs=1e-12)
    assert used[0][0] == 0.0 and used[6][0] == pytest.approx(LR)  # warmup from 0; the restart after 1.5 epochs
    assert tricks.lr() == pytest.approx(sgdr_lr(12, steps_per_epoch=4, base_lr=LR, min_lr=0.001, t0=1, t_mult=2,
                                                warmup_epochs=0.5))


def check_label_smoothing(tmp_path: Path) -> None:
    """Targets are ``(1 − ε)·onehot + ε/K``; inputs and hard labels stay; the CE is taken against them."""
    eps = 0.2
    tricks, model, optimizer = build({"label_smoothing": {"eps": eps}})
    for s in train(tricks, model, optimizer, steps=3):
        expected = (1 - eps) * one_hot(s.labels) + eps / K
        assert torch.allclose(s.batch.y, expected, atol=1e-7)
        assert torch.equal(s.batch.x, s.x) and torch.equal(s.batch.labels, s.labels)
        ce = -(expected * torch.log_softmax(s.logits, dim=1)).sum(dim=1).mean()
        assert torch.allclose(s.parts.parts["ce"].detach(), ce, rtol=1e-5)


def check_mixup(tmp_path: Path) -> None:
    """Inputs are ``λ·x + (1 − λ)·x[perm]`` and targets mixed with the same λ and partners."""
    tricks, model, optimizer = build({"mixup": {"alpha": 1.0}})
    steps = train(tricks, model, optimizer, steps=3)
    for s in steps:
        lam, perm = s.batch.meta["lam"], s.batch.meta["perm"]
        assert 0.0 < lam < 1.0 and sorted(perm.tolist()) == list(range(SHAPE[0]))
        assert torch.allclose(s.batch.x, lam * s.x + (1 - lam) * s.x[perm], atol=1e-6)
        assert torch.allclose(s.batch.y, lam * one_hot(s.labels) + (1 - lam) * one_hot(s.labels)[perm], atol=1e-6)
        assert torch.allclose(s.batch.y.sum(dim=1), torch.ones(SHAPE[0]))
    assert any(not torch.equal(s.batch.meta["perm"], torch.arange(SHAPE[0])) for s in steps)
    assert len({s.batch.meta["lam"] for s in steps}) == len(steps)  # a fresh λ each step


def check_noise(tmp_path: Path) -> None:
    """Inputs gain zero-mean Gaussian noise of std σ, fresh each step; targets stay one-hot."""
    sigma = 0.3
    tricks, model, optimizer = build({"noise": {"sigma": sigma}})
    steps = train(tricks, model, optimizer, steps=3)
    for s in steps:
        delta = s.batch.x - s.x
        assert abs(float(delta.std()) - sigma) < 0.03 and abs(float(delta.mean())) < 0.04
        assert torch.equal(s.batch.y, one_hot(s.labels)) and torch.equal(s.batch.labels, s.labels)
    assert not torch.allclose(steps[0].batch.x - steps[0].x, steps[1].batch.x - steps[1].x)


def teacher_dir(root: Path) -> Path:
    """A trickbox run directory as ``trickbox train`` writes it (model.safetensors + model.json), untrained."""
    from trickbox.checkpoint import save_model

    out = root / "teacher"
    save_model(tiny_model(seed=1), out, {"name": "cifar_resnet8", "num_classes": K, "in_chans": SHAPE[1],
                                         "kwargs": {"width": 8}})
    return out


def kd_by_hand(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """``T² · mean_b(−Σ_k softmax(r/T)_k · log softmax(z/T)_k)``."""
    p = torch.softmax(teacher / temperature, dim=1)
    return -(p * torch.log_softmax(student / temperature, dim=1)).sum(dim=1).mean() * temperature**2


def check_distillation(tmp_path: Path) -> None:
    """The loss gains ``kd = w · T² · CE(softmax(r/T), softmax(z/T))`` from a frozen teacher; total = ce + kd."""
    from trickbox.build import load_trained
    from trickbox.functional import distillation_loss

    source, temperature, weight = teacher_dir(tmp_path), 3.0, 0.5
    config = {"distillation": {"teacher": str(source), "temperature": temperature, "weight": weight}}
    tricks, model, optimizer = build(config, in_chans=SHAPE[1])
    teacher = load_trained(str(source), num_classes=K, in_chans=SHAPE[1]).eval()
    for s in train(tricks, model, optimizer, steps=3):
        with torch.no_grad():
            r = teacher(s.batch.x)
        kd = s.parts.parts["kd"].detach()
        assert torch.allclose(kd, weight * distillation_loss(s.logits, r, temperature), rtol=1e-5)
        assert torch.allclose(kd, weight * kd_by_hand(s.logits, r, temperature), rtol=1e-5)
        assert torch.allclose(s.parts.total, s.parts.parts["ce"] + s.parts.parts["kd"])
        assert float(s.parts.logged["kd_kl"]) > 0  # student and teacher differ
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(),
                                                 tricks.tricks[0].teacher_model.state_dict().values()))


def check_ema(tmp_path: Path) -> None:
    """The first update copies the weights; each later one is ``decay·ema + (1 − decay)·model``."""
    decay = 0.9
    tricks, model, optimizer = build({"ema": {"decay": decay}})
    ema = tricks.tricks[0].ema_model
    assert ema is not None and ema is not model
    train(tricks, model, optimizer, steps=1)
    assert all(torch.equal(ema.state_dict()[k], v) for k, v in float_state(model).items())  # step 1: a copy
    for _ in range(2):
        before = float_state(ema)
        train(tricks, model, optimizer, steps=1)
        live = float_state(model)
        for k, v in float_state(ema).items():
            assert torch.allclose(v, decay * before[k] + (1 - decay) * live[k], atol=1e-6), k
        assert not torch.allclose(ema.get_classifier().weight, model.get_classifier().weight)
    assert all(not p.requires_grad for p in ema.parameters())


def check_grad_clip(tmp_path: Path) -> None:
    """By norm: the optimizer sees a global norm of max_norm where it was larger. By value: entries within
    ±max_value."""
    max_norm = 0.05
    tricks, model, optimizer = build({"grad_clip": {"max_norm": max_norm}})
    for s in train(tricks, model, optimizer, steps=3):
        assert s.grad_norm > 2 * max_norm  # the clip had work to do
        assert s.clipped_norm <= max_norm * (1 + 1e-5) and s.clipped_norm == pytest.approx(max_norm, rel=1e-3)
    max_value = 1e-3
    tricks, model, optimizer = build({"grad_clip": {"mode": "value", "max_value": max_value}})
    for s in train(tricks, model, optimizer, steps=2):
        assert s.max_abs_grad == pytest.approx(max_value, rel=1e-6) and s.grad_norm > 100 * max_value  # float32 1e-3


def check_linear_scaling(tmp_path: Path) -> None:
    """Every group's LR is multiplied by global batch / reference_batch (8 / 256), keeping the groups' ratio."""
    factor = SHAPE[0] / 256
    model = tiny_model()
    head = list(model.get_classifier().parameters())
    body = [p for p in model.parameters() if all(p is not h for h in head)]
    tricks, model, optimizer = build({"linear_scaling": {}}, model, groups=[{"params": body}, {"params": head,
                                                                                               "lr": LR / 2}],
                                     batch_size=SHAPE[0])
    assert tricks.ctx is not None and tricks.ctx.base_lr == pytest.approx(LR * factor)
    for s in train(tricks, model, optimizer, steps=3):
        assert s.lrs == pytest.approx([LR * factor, LR / 2 * factor])


def check_zero_gamma(tmp_path: Path) -> None:
    """On a timm ResNet built without it, every residual block's last BN γ becomes 0; other norms keep theirs."""
    import timm
    from timm.models.resnet import BasicBlock, Bottleneck

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=K, in_chans=SHAPE[1], zero_init_last=False)
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, Bottleneck))]
    last = [b.bn3 if isinstance(b, Bottleneck) else b.bn2 for b in blocks]
    others = [b.bn1 for b in blocks]
    assert blocks and all(bool((bn.weight != 0).all()) for bn in last + others)
    tricks, model, optimizer = build({"zero_gamma": {}}, model)
    assert all(bool((bn.weight == 0).all()) for bn in last)
    assert all(bool((bn.weight == 1).all()) for bn in others)
    steps = train(tricks, model, optimizer, steps=2)
    assert all(math.isfinite(float(s.parts.total.detach())) for s in steps)


def check_no_bias_decay(tmp_path: Path) -> None:
    """Biases and norm parameters land in weight_decay=0 groups and do not decay; weights keep the decay."""
    wd = 0.01
    tricks, model, optimizer = build({"no_bias_decay": {}}, weight_decay=wd)
    train(tricks, model, optimizer, steps=2)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert len(decay_of) == sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    for name, p in model.named_parameters():
        assert decay_of[id(p)] == (0.0 if p.ndim <= 1 else wd), name
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():  # a step on zero gradients does only the decay
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        expected = before[name] if p.ndim <= 1 else before[name] * (1 - LR * wd)
        assert torch.allclose(p.detach(), expected, atol=1e-7), name


def check_cutmix(tmp_path: Path) -> None:
    """A box of each image comes from its partner; targets are mixed by the share of the image each keeps."""
    tricks, model, optimizer = build({"cutmix": {"alpha": 1.0, "prob": 1.0}})
    steps = train(tricks, model, optimizer, steps=3)
    height, width = SHAPE[-2:]
    for s in steps:
        (top, bottom, left, right), perm = s.batch.meta["cutmix_box"], s.batch.meta["cutmix_perm"]
        inside = torch.zeros(height, width, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        assert torch.equal(s.batch.x[..., inside], s.x[perm][..., inside])
        assert torch.equal(s.batch.x[..., ~inside], s.x[..., ~inside])
        lam = 1.0 - float(inside.sum()) / (height * width)
        assert s.batch.meta["cutmix_lam"] == pytest.approx(lam)
        assert torch.allclose(s.batch.y, lam * one_hot(s.labels) + (1 - lam) * one_hot(s.labels)[perm], atol=1e-6)
    assert any(not torch.equal(s.batch.x, s.x) for s in steps)
    tricks, model, optimizer = build({"cutmix": {"prob": 0.0}})
    for s in train(tricks, model, optimizer, steps=2):
        assert torch.equal(s.batch.x, s.x) and torch.equal(s.batch.y, one_hot(s.labels))


def _groups_follow(tricks_cfg: dict, expected: Callable[[int], float], steps: int = 12) -> None:
    """Every step's LR is ``expected(step)`` in the base group and half of it in the head's group."""
    model = tiny_model()
    head = list(model.get_classifier().parameters())
    body = [p for p in model.parameters() if all(p is not h for h in head)]
    tricks, model, optimizer = build(tricks_cfg, model, groups=[{"params": body}, {"params": head, "lr": LR / 2}],
                                     epochs=3, steps_per_epoch=4)
    used = [s.lrs for s in train(tricks, model, optimizer, steps=steps)]
    assert [lr for lr, _ in used] == pytest.approx([expected(s) for s in range(steps)], abs=1e-12)
    assert [half for _, half in used] == pytest.approx([expected(s) / 2 for s in range(steps)], abs=1e-12)


def check_step_lr(tmp_path: Path) -> None:
    """Halved every epoch (4 steps), written out by hand."""
    _groups_follow({"step_lr": {"decay_epochs": 1, "decay_rate": 0.5}}, lambda s: LR * 0.5 ** (s // 4))


def check_multistep_lr(tmp_path: Path) -> None:
    """×0.1 from one step before each milestone (epochs 1 and 2: steps 4 and 8), timm's convention."""
    _groups_follow({"multistep_lr": {"milestones": [1, 2], "decay_rate": 0.1}},
                   lambda s: LR * 0.1 ** ((s + 1 >= 4) + (s + 1 >= 8)))


def check_poly_lr(tmp_path: Path) -> None:
    """``LR·(1 − s/12)²`` over the 12 steps."""
    _groups_follow({"poly_lr": {"power": 2.0}}, lambda s: LR * (1 - s / 12) ** 2)


def check_warmup(tmp_path: Path) -> None:
    """Linear from 0 over the first epoch (4 steps), then the base rate."""
    _groups_follow({"warmup": {"epochs": 1}}, lambda s: LR * min(s / 4, 1.0))


def check_one_of(tmp_path: Path) -> None:
    """``choices: {mixup: 1}`` mixes every batch; ``{mixup: 0}`` leaves every batch as it came."""
    tricks, model, optimizer = build({"mixup": {"alpha": 1.0}, "one_of": {"choices": {"mixup": 1.0}}})
    assert all(not torch.equal(s.batch.x, s.x) for s in train(tricks, model, optimizer, steps=3))
    tricks, model, optimizer = build({"mixup": {"alpha": 1.0}, "one_of": {"choices": {"mixup": 0.0}}})
    for s in train(tricks, model, optimizer, steps=3):
        assert torch.equal(s.batch.x, s.x) and torch.equal(s.batch.y, one_hot(s.labels))


def check_random_erasing(tmp_path: Path) -> None:
    """With prob=1 every image loses a box (zeros in const mode); the targets stay one-hot."""
    tricks, model, optimizer = build({"random_erasing": {"prob": 1.0, "mode": "const"}})
    for s in train(tricks, model, optimizer, steps=2):
        changed = (s.batch.x != s.x).flatten(1).any(1)
        assert bool(changed.all()) and bool((s.batch.x[s.batch.x != s.x] == 0).all())
        assert torch.equal(s.batch.y, one_hot(s.labels))


def check_progressive_resize(tmp_path: Path) -> None:
    """In a loop of your own: the first epoch's batches at start (8 px), the last at full size (16 px)."""
    tricks, model, optimizer = build({"progressive_resize": {"start": 8, "multiple": 4}}, epochs=2, steps_per_epoch=3)
    sides = [tuple(s.batch.x.shape[-2:]) for s in train(tricks, model, optimizer, steps=6)]
    assert sides == [(8, 8)] * 3 + [(16, 16)] * 3


EFFECTS: dict[str, Callable[[Path], None]] = {
    "progressive_resize": check_progressive_resize,
    "random_erasing": check_random_erasing,
    "one_of": check_one_of,
    "step_lr": check_step_lr,
    "multistep_lr": check_multistep_lr,
    "poly_lr": check_poly_lr,
    "warmup": check_warmup,
    "sgdr": check_sgdr,
    "label_smoothing": check_label_smoothing,
    "mixup": check_mixup,
    "noise": check_noise,
    "distillation": check_distillation,
    "ema": check_ema,
    "grad_clip": check_grad_clip,
    "linear_scaling": check_linear_scaling,
    "zero_gamma": check_zero_gamma,
    "no_bias_decay": check_no_bias_decay,
    "cutmix": check_cutmix,
}
"""Trick name → a check that trains with that trick alone and asserts its effect."""


@pytest.mark.parametrize("name", sorted(discover().tricks))
def test_trick_has_its_effect(name: str, tmp_path: Path) -> None:
    check = EFFECTS.get(name)
    if check is None:
        pytest.fail(f"add an effect check for trick {name} to EFFECTS in {Path(__file__).name}")
    check(tmp_path)
