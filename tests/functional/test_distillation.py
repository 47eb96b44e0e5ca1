"""Distillation loss against the formula computed by hand with explicit loops."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trickbox.functional import distillation_loss, distillation_objective, one_hot, soft_cross_entropy

from ..conftest import raises_one_line

STUDENT = [[1.0, -0.5, 2.0], [0.3, 0.0, -1.2]]
TEACHER = [[2.5, 0.1, 0.4], [-0.7, 1.9, 0.2]]


def _by_hand(student: list[list[float]], teacher: list[list[float]], temperature: float) -> float:
    total = 0.0
    for z, r in zip(student, teacher):
        exp_r = [math.exp(v / temperature) for v in r]
        p = [e / sum(exp_r) for e in exp_r]
        log_norm = math.log(sum(math.exp(v / temperature) for v in z))
        log_q = [v / temperature - log_norm for v in z]
        total += -sum(pk * lqk for pk, lqk in zip(p, log_q))
    return temperature**2 * total / len(student)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 20.0])
def test_matches_hand_computation(temperature: float) -> None:
    ours = distillation_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature)
    assert ours.dtype == torch.float32
    assert ours.item() == pytest.approx(_by_hand(STUDENT, TEACHER, temperature), rel=1e-6)


def test_differs_from_kl_by_teacher_entropy() -> None:
    t = 3.0
    z, r = torch.tensor(STUDENT), torch.tensor(TEACHER)
    p = F.softmax(r / t, dim=1)
    teacher_entropy = -(p * p.log()).sum(1).mean()
    kl = F.kl_div(F.log_softmax(z / t, dim=1), p, reduction="batchmean")
    assert distillation_loss(z, r, t).item() == pytest.approx((t**2 * (kl + teacher_entropy)).item(), rel=1e-6)


def test_gradient_reaches_student_only() -> None:
    z = torch.tensor(STUDENT, requires_grad=True)
    r = torch.tensor(TEACHER, requires_grad=True)
    distillation_loss(z, r, 4.0).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert r.grad is None


def test_bf16_inputs_give_float32() -> None:
    z, r = torch.tensor(STUDENT).bfloat16(), torch.tensor(TEACHER).bfloat16()
    out = distillation_loss(z, r, 2.0)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(distillation_loss(z.float(), r.float(), 2.0).item(), rel=1e-6)


def test_objective_terms() -> None:
    z, r = torch.tensor(STUDENT), torch.tensor(TEACHER)
    targets = one_hot(torch.tensor([2, 0]), 3)
    out = distillation_objective(z, targets, r, temperature=2.0, weight=0.5)
    assert set(out) == {"ce", "kd"}
    assert out["ce"].item() == pytest.approx(soft_cross_entropy(z, targets).item())
    assert out["kd"].item() == pytest.approx(0.5 * _by_hand(STUDENT, TEACHER, 2.0), rel=1e-6)
    assert distillation_objective(z, targets, r, 2.0, weight=0.0)["kd"].item() == 0.0


def test_value_errors() -> None:
    z, r = torch.tensor(STUDENT), torch.tensor(TEACHER)
    with raises_one_line("temperature must be > 0"):
        distillation_loss(z, r, 0.0)
    with raises_one_line("student_logits and teacher_logits must have the same shape"):
        distillation_loss(z, r[:, :2], 1.0)
    with raises_one_line("weight must be >= 0"):
        distillation_objective(z, one_hot(torch.tensor([0, 1]), 3), r, 1.0, weight=-1.0)
