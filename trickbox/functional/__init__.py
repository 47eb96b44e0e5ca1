"""Pure tensor functions behind the tricks: no trickbox state, only torch / numpy / math.

One topic per module: :mod:`.schedule` (SGDR), :mod:`.decay` (step, multistep, poly, warmup),
:mod:`.targets` (one-hot, label smoothing, soft cross-entropy), :mod:`.distillation`, :mod:`.mixup` (mixup and
its ablation variants), :mod:`.noise`, :mod:`.stages` (timm feature stages),
:mod:`.ema` (model EMA), :mod:`.init` (zero-γ), :mod:`.optim` (linear
scaling, no bias decay) and :mod:`.resize` (progressive resizing).
"""
from __future__ import annotations

from .decay import multistep_lr, poly_lr, step_lr, warmup_lr
from .distillation import distillation_kl, distillation_loss, distillation_objective
from .ema import ema_decay, ema_update_
from .init import zero_init_residuals_
from .mixup import (
    knn_partners,
    knn_table,
    kway_weights,
    mix,
    mix_k,
    random_partners,
    same_class_partners,
    sample_lambda,
)
from .noise import gaussian_noise
from .optim import is_no_decay, linear_scaled_lr, split_no_decay
from .resize import progressive_size, resize_batch, size_ladder
from .schedule import lr_curve, sgdr_cycle, sgdr_lr, sgdr_restarts
from .stages import feature_stages
from .targets import one_hot, smooth_targets, soft_cross_entropy

__all__ = [
    "progressive_size",
    "resize_batch",
    "size_ladder",
    "sgdr_cycle",
    "sgdr_lr",
    "sgdr_restarts",
    "lr_curve",
    "step_lr",
    "multistep_lr",
    "poly_lr",
    "warmup_lr",
    "one_hot",
    "smooth_targets",
    "soft_cross_entropy",
    "distillation_kl",
    "distillation_loss",
    "distillation_objective",
    "sample_lambda",
    "random_partners",
    "same_class_partners",
    "mix",
    "kway_weights",
    "mix_k",
    "knn_table",
    "knn_partners",
    "gaussian_noise",
    "feature_stages",
    "ema_decay",
    "ema_update_",
    "zero_init_residuals_",
    "linear_scaled_lr",
    "is_no_decay",
    "split_no_decay",
]
