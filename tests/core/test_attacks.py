"""FGSM / I-FGSM on tiny models: perturbation size, sign, loss increase, no param grads."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trickbox.evaluation.attacks import attack_metrics, fgsm, ifgsm, make_normalize

NORM = make_normalize([0.5], [0.25])


def tiny_linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def data(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(n, 1, 4, 4, generator=g) * 0.8 + 0.1  # far from 0/1: no clamping at eps<=8
    return pixels, torch.randint(0, 3, (n,), generator=g)


def trained_tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear model fitted to a separable rule (label = brightest quarter)."""
    model = tiny_linear()
    pixels, _ = data(64, seed=2)
    labels = pixels.view(64, 4, 4)[:, :, :3].mean(dim=1).argmax(dim=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(NORM(pixels)), labels).backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    return model, pixels, labels


def test_fgsm_is_eps_sign_grad() -> None:
    model = tiny_linear()
    pixels, labels = data()
    x = pixels.clone().requires_grad_(True)
    F.cross_entropy(model(NORM(x)), labels).backward()
    expected = pixels + 4 / 255 * x.grad.sign()
    for p in model.parameters():
        p.grad = None
    adv = fgsm(model, pixels, labels, 4, normalize=NORM)
    assert torch.allclose(adv, expected, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("eps", [1.0, 8.0, 255.0])
def test_linf_bound_and_range(eps: float) -> None:
    model = tiny_linear()
    pixels, labels = data()
    for adv in (
        fgsm(model, pixels, labels, eps, normalize=NORM),
        ifgsm(model, pixels, labels, eps, iterations=5, normalize=NORM),
        ifgsm(model, pixels, labels, eps, iterations=3, step_size=eps, normalize=NORM),
    ):
        assert float((adv - pixels).abs().max()) <= eps / 255 + 1e-6
        assert float(adv.min()) >= 0 and float(adv.max()) <= 1
    assert all(p.grad is None for p in model.parameters())


def test_ifgsm_one_step_equals_fgsm() -> None:
    model = tiny_linear()
    pixels, labels = data()
    one = ifgsm(model, pixels, labels, 6, iterations=1, step_size=6, normalize=NORM)
    assert torch.equal(one, fgsm(model, pixels, labels, 6, normalize=NORM))


def test_attacks_raise_loss_and_restore_mode() -> None:
    model, pixels, labels = trained_tiny()
    model.train()
    with torch.no_grad():
        clean = float(F.cross_entropy(model(NORM(pixels)), labels))
    for adv in (
        fgsm(model, pixels, labels, 8, normalize=NORM),
        ifgsm(model, pixels, labels, 8, iterations=5, normalize=NORM),
    ):
        with torch.no_grad():
            assert float(F.cross_entropy(model(NORM(adv)), labels)) > clean + 0.05
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_attack_metrics() -> None:
    model, pixels, labels = trained_tiny()
    batches = [(pixels[:32], labels[:32]), (pixels[32:], labels[32:])]
    clean = attack_metrics(model, batches, attack="fgsm", eps=1e-3, normalize=NORM)
    strong = attack_metrics(model, batches, attack="ifgsm", eps=16, iterations=4, normalize=NORM)
    assert clean["n"] == strong["n"] == 64
    assert strong["top1_error"] > clean["top1_error"]
    assert strong["top1_error"] == pytest.approx(1 - strong["top1"])
    assert strong["top5_error"] == 0.0  # 3 classes: top-5 clamps to all
    with pytest.raises(ValueError, match="fgsm"):
        attack_metrics(model, batches, attack="pgd", eps=4, normalize=NORM)


def test_bad_arguments_raise() -> None:
    model = tiny_linear()
    pixels, labels = data()
    for eps in (0, -1, 256):
        with pytest.raises(ValueError, match="eps"):
            fgsm(model, pixels, labels, eps, normalize=NORM)
    with pytest.raises(ValueError, match="iterations"):
        ifgsm(model, pixels, labels, 4, iterations=0, normalize=NORM)
    with pytest.raises(ValueError, match="step_size"):
        ifgsm(model, pixels, labels, 4, step_size=0, normalize=NORM)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fgsm(model, NORM(pixels), labels, 4, normalize=NORM)
    with pytest.raises(ValueError, match="std"):
        make_normalize([0.5], [0.0])
    with pytest.raises(ValueError, match="channel"):
        make_normalize([0.5, 0.5], [0.2])
