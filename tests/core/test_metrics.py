"""Metrics vs hand-computed values on tiny inputs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trickbox.evaluation.metrics import (
    MetricAccumulator,
    classification_metrics,
    expected_calibration_error,
    topk_accuracy,
)

# 4 samples, 3 classes. Max probs 0.9, 0.8, 0.58, 0.55; predictions 0, 1, 2, 0; labels 0, 0, 2, 1.
PROBS = torch.tensor(
    [[0.90, 0.05, 0.05], [0.10, 0.80, 0.10], [0.21, 0.21, 0.58], [0.55, 0.40, 0.05]], dtype=torch.float64
)
LABELS = torch.tensor([0, 0, 2, 1])


def test_topk_accuracy_and_clamp() -> None:
    acc = topk_accuracy(PROBS.log(), LABELS, ks=(1, 2, 5))
    assert acc[1] == pytest.approx(0.5)  # samples 0 and 2
    assert acc[2] == pytest.approx(1.0)  # sample 1's label 0 and sample 3's label 1 are 2nd
    assert acc[5] == pytest.approx(1.0)  # k clamps to 3 classes
    with pytest.raises(ValueError, match="k"):
        topk_accuracy(PROBS, LABELS, ks=(0,))


def test_ece_by_hand() -> None:
    # 2 bins (0, .5], (.5, 1]: all four land in bin 2, acc 0.5, conf 0.7075 -> ECE 0.2075.
    assert expected_calibration_error(PROBS, LABELS, n_bins=2) == pytest.approx(0.2075)
    # 5 bins: (.4,.6] holds 0.58 & 0.55 (acc 1/2, conf .565); (.6,.8] holds 0.8 (acc 0);
    # (.8,1] holds 0.9 (acc 1). ECE = 2/4*.065 + 1/4*.8 + 1/4*.1 = 0.2575.
    assert expected_calibration_error(PROBS, LABELS, n_bins=5) == pytest.approx(0.2575)


def test_ece_rejects_logits_and_bad_bins() -> None:
    with pytest.raises(ValueError, match="softmax"):
        expected_calibration_error(PROBS.log(), LABELS)
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(PROBS, LABELS, n_bins=0)


def test_accumulator_matches_one_shot_and_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(37, 7)
    labels = torch.randint(0, 7, (37,))
    acc = MetricAccumulator(n_bins=15)
    for chunk in range(0, 37, 10):
        acc.update(logits[chunk : chunk + 10].float(), labels[chunk : chunk + 10])
    out = acc.compute()
    assert out["n"] == 37
    assert out["nll"] == pytest.approx(float(F.cross_entropy(logits.double(), labels)), rel=1e-6)
    shot = topk_accuracy(logits, labels)
    assert out["top1"] == pytest.approx(shot[1]) and out["top5"] == pytest.approx(shot[5])
    assert out["ece"] == pytest.approx(expected_calibration_error(logits.softmax(1), labels), abs=1e-6)
    assert classification_metrics(logits, labels) == pytest.approx(out)


def test_accumulator_hand_values_and_reset() -> None:
    acc = MetricAccumulator(n_bins=5)
    acc.update(PROBS.log(), LABELS)
    out = acc.compute()
    nll = -(math.log(0.9) + math.log(0.1) + math.log(0.58) + math.log(0.4)) / 4
    assert out == pytest.approx({"top1": 0.5, "top5": 1.0, "nll": nll, "ece": 0.2575, "n": 4.0})
    acc.reset()
    empty = acc.compute()
    assert empty["n"] == 0 and math.isnan(empty["top1"])


def test_bad_shapes_raise() -> None:
    acc = MetricAccumulator()
    with pytest.raises(ValueError, match="labels"):
        acc.update(torch.randn(4, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        acc.update(torch.randn(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="labels must lie"):
        acc.update(torch.randn(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="logits"):
        acc.update(torch.randn(3), torch.tensor([0, 1, 2]))
