"""Knowledge distillation (Hinton et al., 2015) as used in "Bag of Tricks"."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .targets import soft_cross_entropy

__all__ = ["distillation_kl", "distillation_loss", "distillation_objective"]


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Distillation term ``T^2 * CE(softmax(r/T), softmax(z/T))``.

    With student logits ``z`` and teacher logits ``r`` (class dim last):
    ``T^2 * mean_b( -sum_k softmax(r_b/T)_k * log_softmax(z_b/T)_k )``.

    This is the cross-entropy of the formula, not the KL divergence: it exceeds
    ``KL(softmax(r/T) || softmax(z/T))`` by the teacher entropy, a constant with
    no gradient for the student, so both give the same updates. The ``T^2``
    factor keeps gradient magnitudes comparable across temperatures. The teacher
    logits are detached; the result is float32.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; use e.g. temperature=20 (Bag of Tricks)")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student_logits and teacher_logits must have the same shape, got {tuple(student_logits.shape)} and "
            f"{tuple(teacher_logits.shape)}; teacher and student must predict the same classes"
        )
    p_teacher = F.softmax(teacher_logits.detach().float() / temperature, dim=-1)
    log_q_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    ce = -(p_teacher * log_q_student).sum(dim=-1).mean()
    return ce * temperature**2


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T^2 * KL(softmax(r/T) || softmax(z/T))``: :func:`distillation_loss` minus the teacher's entropy term.

    It goes to 0 as the student matches the teacher, where the cross-entropy stays at ``T^2 * H(teacher)``
    (about 921 at T = 20 on CIFAR-10's near-uniform softened teachers). For logging; same gradient.
    """
    log_p = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1).mean() * temperature**2


def distillation_objective(
    student_logits: Tensor,
    targets: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    weight: float = 1.0,
) -> dict[str, Tensor]:
    """Both terms of the distillation objective ``H = ce + kd``.

    ``ce = soft_cross_entropy(student_logits, targets)`` (targets soft, (B, K)) and
    ``kd = weight * distillation_loss(student_logits, teacher_logits, temperature)``.
    """
    if not weight >= 0:
        raise ValueError(f"weight must be >= 0, got {weight}; use weight=0 to switch distillation off")
    return {
        "ce": soft_cross_entropy(student_logits, targets),
        "kd": weight * distillation_loss(student_logits, teacher_logits, temperature),
    }
