"""Gaussian input noise and timm feature stages."""
from __future__ import annotations

import pytest
import timm
import torch

from trickbox.functional import feature_stages, gaussian_noise

from ..conftest import raises_one_line


def test_gaussian_noise() -> None:
    x = torch.zeros(20000)
    assert gaussian_noise(x, 0.0) is x
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a, b = gaussian_noise(x, 0.5, g1), gaussian_noise(x, 0.5, g2)
    assert torch.equal(a, b)
    assert a.mean().item() == pytest.approx(0.0, abs=0.02)
    assert a.std().item() == pytest.approx(0.5, abs=0.02)
    assert gaussian_noise(x.bfloat16(), 0.1).dtype == torch.bfloat16


def test_gaussian_noise_errors() -> None:
    with raises_one_line("sigma must be >= 0"):
        gaussian_noise(torch.zeros(3), -0.1)
    with raises_one_line("x must be floating point"):
        gaussian_noise(torch.zeros(3, dtype=torch.uint8), 0.1)


def test_feature_stages_from_timm_feature_info() -> None:
    model = timm.create_model("test_resnet", pretrained=False)
    stages = feature_stages(model)
    assert [name for name, _ in stages] == [d["module"] for d in model.feature_info]
    assert stages[1][1] is model.layer1 and stages[-1][1] is model.layer4


def test_feature_stages_from_feature_info_object() -> None:
    model = timm.create_model("test_resnet", pretrained=False, features_only=True, out_indices=(1, 3))
    stages = feature_stages(model)
    assert [name for name, _ in stages] == ["layer1", "layer3"]
    assert all(isinstance(m, torch.nn.Module) for _, m in stages)


def test_feature_stages_dotted_names() -> None:
    model = timm.create_model("test_vit", pretrained=False)
    stages = feature_stages(model)
    assert stages[0] == ("blocks.0", model.blocks[0])


def test_feature_stages_errors() -> None:
    with raises_one_line("model Linear exposes no feature stages"):
        feature_stages(torch.nn.Linear(2, 2))
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model.feature_info = [{"module": "missing", "num_chs": 2, "reduction": 1}]  # type: ignore[assignment]
    with raises_one_line("names module 'missing'"):
        feature_stages(model)
    model.feature_info = [{"num_chs": 2, "reduction": 1}]  # type: ignore[assignment]
    with raises_one_line("without a 'module' name"):
        feature_stages(model)
