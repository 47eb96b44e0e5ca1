"""How good a trained model is: classification metrics, white-box attacks, and evaluating a saved run."""
from __future__ import annotations

from .attacks import ATTACKS, attack_metrics, fgsm, ifgsm, make_normalize
from .metrics import MetricAccumulator, classification_metrics, expected_calibration_error, topk_accuracy

__all__ = [
    "ATTACKS",
    "MetricAccumulator",
    "attack_metrics",
    "classification_metrics",
    "expected_calibration_error",
    "fgsm",
    "ifgsm",
    "make_normalize",
    "topk_accuracy",
]
