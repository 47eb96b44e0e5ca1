"""Distillation logs the KL divergence beside its cross-entropy term, and says which is which."""
from __future__ import annotations

import math

import torch

import trickbox
from trickbox.build import create_model
from trickbox.checkpoint import save_model
from trickbox.functional import distillation_kl, distillation_loss


def test_kl_is_the_cross_entropy_minus_the_teacher_entropy():
    z, r, t = torch.randn(8, 10), torch.randn(8, 10), 20.0
    p = torch.softmax(r / t, dim=-1)
    entropy = -(p * p.log()).sum(-1).mean() * t**2
    assert torch.allclose(distillation_loss(z, r, t) - distillation_kl(z, r, t), entropy, atol=1e-3)
    # the student that matches its teacher: KL 0, cross-entropy ≈ T² log K
    assert float(distillation_kl(r, r, t)) < 1e-5
    assert float(distillation_loss(r, r, t)) > 0.9 * t**2 * math.log(10)


def test_the_trick_returns_kd_for_the_total_and_kd_kl_for_the_log(tmp_path):
    model = create_model("cifar_resnet8", num_classes=10, in_chans=1)
    save_model(model, tmp_path, {"name": "cifar_resnet8", "num_classes": 10, "in_chans": 1})
    tricks = trickbox.load_tricks({"distillation": {"teacher": str(tmp_path), "temperature": 20.0}})
    tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=10, epochs=1, steps_per_epoch=1,
                 in_chans=1)
    batch = tricks.batch(torch.randn(4, 1, 8, 8), torch.arange(4))
    parts = tricks.loss(model.eval()(batch.x), batch)  # the student is its own teacher here (both in eval mode)
    assert set(parts.parts) == {"ce", "kd"} and set(parts.logged) == {"kd_kl"}
    assert float(parts.logged["kd_kl"]) < 1e-4 and float(parts.parts["kd"].detach()) > 100  # ≈ 400 · log 10 ≈ 921
    assert torch.allclose(parts.total, parts.parts["ce"] + parts.parts["kd"])
    assert {"loss/kd", "loss/kd_kl", "loss/ce"} <= set(parts.detached())
