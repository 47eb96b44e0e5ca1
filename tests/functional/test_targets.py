"""One-hot, label smoothing and soft cross-entropy against torch and timm."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.data.mixup import mixup_target
from timm.loss import LabelSmoothingCrossEntropy

from trickbox.functional import one_hot, smooth_targets, soft_cross_entropy

from ..conftest import raises_one_line


def _data(b: int = 6, k: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, generator=g) * 3, torch.randint(0, k, (b,), generator=g)


def test_one_hot_matches_torch() -> None:
    _, y = _data()
    out = one_hot(y, 5)
    assert out.dtype == torch.float32 and out.shape == (6, 5)
    assert torch.equal(out, F.one_hot(y, 5).float())
    assert one_hot(y.int(), 7, dtype=torch.float64).dtype == torch.float64
    assert one_hot(torch.empty(0, dtype=torch.long), 3).shape == (0, 3)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35])
def test_label_smoothing_matches_torch_and_timm(eps: float) -> None:
    logits, y = _data()
    ours = soft_cross_entropy(logits, smooth_targets(one_hot(y, 5), eps))
    torch_ref = F.cross_entropy(logits, y, label_smoothing=eps)
    timm_ref = LabelSmoothingCrossEntropy(smoothing=eps)(logits, y)
    assert ours.item() == pytest.approx(torch_ref.item(), abs=1e-6)
    assert ours.item() == pytest.approx(timm_ref.item(), abs=1e-6)
    # timm's smoothed one-hot (off = eps/K, on = 1 - eps + eps/K) is the same target
    assert torch.allclose(smooth_targets(one_hot(y, 5), eps), mixup_target(y, 5, smoothing=eps), atol=1e-7)


def test_non_uniform_prior_by_hand() -> None:
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.25, 0.75]])
    prior = torch.tensor([0.5, 0.3, 0.2])
    out = smooth_targets(targets, 0.2, prior=prior)
    expected = torch.tensor([[0.8 + 0.1, 0.06, 0.04], [0.1, 0.2 + 0.06, 0.6 + 0.04]])
    assert torch.allclose(out, expected, atol=1e-7)
    assert torch.allclose(out.sum(1), torch.ones(2))


def test_smoothing_commutes_with_mixing() -> None:
    # smoothing a mixed target smooths both mixed labels alike
    y1, y2 = one_hot(torch.tensor([0, 2]), 4), one_hot(torch.tensor([3, 2]), 4)
    lam, eps = 0.3, 0.1
    mixed_then_smoothed = smooth_targets(lam * y1 + (1 - lam) * y2, eps)
    smoothed_then_mixed = lam * smooth_targets(y1, eps) + (1 - lam) * smooth_targets(y2, eps)
    assert torch.allclose(mixed_then_smoothed, smoothed_then_mixed, atol=1e-7)


def test_eps_zero_is_identity() -> None:
    t = one_hot(torch.tensor([1, 0]), 3)
    assert smooth_targets(t, 0.0) is t


def test_soft_cross_entropy_reductions_and_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    lse = torch.log(torch.tensor(1.0 + torch.e**2)).item()
    per = torch.tensor([torch.log(torch.tensor(2.0)).item(), 0.5 * (lse - 2.0) + 0.5 * lse])
    assert torch.allclose(soft_cross_entropy(logits, targets, reduction="none"), per, atol=1e-6)
    assert soft_cross_entropy(logits, targets, reduction="sum").item() == pytest.approx(per.sum().item(), abs=1e-6)
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(per.mean().item(), abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_soft_cross_entropy_in_float32_for_low_precision(dtype: torch.dtype) -> None:
    logits, y = _data(k=50)
    low = logits.to(dtype).requires_grad_()
    targets = smooth_targets(one_hot(y, 50), 0.1)
    loss = soft_cross_entropy(low, targets)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(soft_cross_entropy(low.detach().float(), targets).item(), abs=1e-6)
    loss.backward()
    assert low.grad is not None and low.grad.dtype == dtype


def test_value_errors() -> None:
    logits, y = _data()
    t = one_hot(y, 5)
    with raises_one_line("num_classes must be >= 1"):
        one_hot(y, 0)
    with raises_one_line("labels must be a 1-D integer tensor"):
        one_hot(y.float(), 5)
    with raises_one_line("labels must be a 1-D integer tensor"):
        one_hot(y.view(2, 3), 5)
    with raises_one_line(r"labels must lie in \[0, 5\), got label 5"):
        one_hot(torch.tensor([0, 5]), 5)
    with raises_one_line(r"labels must lie in \[0, 5\), got label -1"):
        one_hot(torch.tensor([-1, 2]), 5)
    with raises_one_line(r"eps must be in \[0, 1\)"):
        smooth_targets(t, 1.0)
    with raises_one_line(r"eps must be in \[0, 1\)"):
        smooth_targets(t, -0.1)
    with raises_one_line("targets must be floating-point soft targets"):
        smooth_targets(y, 0.1)
    with raises_one_line("prior must have shape"):
        smooth_targets(t, 0.1, prior=torch.full((4,), 0.25))
    with raises_one_line("prior must be non-negative"):
        smooth_targets(t, 0.1, prior=torch.tensor([0.6, 0.6, -0.2, 0.0, 0.0]))
    with raises_one_line("prior must sum to 1"):
        smooth_targets(t, 0.1, prior=torch.full((5,), 0.3))
    with raises_one_line("reduction must be one of"):
        soft_cross_entropy(logits, t, reduction="avg")
    with raises_one_line("logits and targets must have the same shape"):
        soft_cross_entropy(logits, t[:, :4])
    with raises_one_line("targets must be floating-point soft targets"):
        soft_cross_entropy(logits, y)
