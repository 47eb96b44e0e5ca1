"""CIFAR models: timm registration, shapes, parameter counts, feature_info, kwargs."""
from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import trickbox.models  # noqa: F401  (registers the models)

NAMES = ["preact_resnet18", "cifar_resnet20", "cifar_resnet8"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registered_in_timm() -> None:
    assert set(NAMES) <= set(timm.list_models(module="cifar"))
    assert {"cifar_resnet20", "cifar_resnet8", "cifar_preact_resnet18"} <= set(timm.list_models("*cifar*"))
    assert not timm.is_model_pretrained("cifar_resnet20")


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes(name: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).eval()
    assert model.num_classes == 10
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        grey = timm.create_model(name, num_classes=7, in_chans=1).eval()
        assert grey(torch.rand(2, 1, 8, 8)).shape == (2, 7)
        feats = model.forward_features(torch.rand(2, 3, 32, 32))
        assert feats.shape[1] == model.num_features
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)


def test_parameter_counts() -> None:
    assert 0.26e6 < n_params(timm.create_model("cifar_resnet20")) < 0.28e6
    assert n_params(timm.create_model("cifar_resnet8")) < n_params(timm.create_model("cifar_resnet20"))
    assert 11.0e6 < n_params(timm.create_model("preact_resnet18")) < 11.3e6


def test_width_kwarg() -> None:
    narrow = timm.create_model("cifar_resnet8")
    wide = timm.create_model("cifar_resnet8", width=32)
    assert [i["num_chs"] for i in wide.feature_info] == [32, 64, 128]
    assert n_params(wide) > 3 * n_params(narrow)
    with pytest.raises(ValueError, match="width"):
        timm.create_model("cifar_resnet8", width=0)


@pytest.mark.parametrize("name", ["preact_resnet18", "cifar_resnet8"])
def test_feature_info_matches_stage_outputs(name: str) -> None:
    model = timm.create_model(name, in_chans=1).eval()
    outputs: dict[str, torch.Tensor] = {}
    for info in model.feature_info:
        module = model.get_submodule(info["module"])
        module.register_forward_hook(lambda m, i, o, key=info["module"]: outputs.__setitem__(key, o))
    with torch.no_grad():
        model(torch.rand(2, 1, 32, 32))
    assert [info["module"] for info in model.feature_info] == [f"stages.{k}" for k in range(len(model.stages))]
    for info in model.feature_info:
        out = outputs[info["module"]]
        assert out.shape[1] == info["num_chs"]
        assert out.shape[-1] == 32 // info["reduction"]


def test_features_only() -> None:
    model = timm.create_model("cifar_resnet8", features_only=True).eval()
    with torch.no_grad():
        feats = model(torch.rand(2, 3, 32, 32))
    assert [f.shape[1] for f in feats] == model.feature_info.channels() == [16, 32, 64]


def test_pretrained_raises() -> None:
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model("cifar_resnet20", pretrained=True)


def test_drop_rate_and_bad_args() -> None:
    torch.manual_seed(0)
    model = timm.create_model("cifar_resnet8", drop_rate=0.5)
    assert isinstance(model.head_drop, nn.Dropout) and model.head_drop.p == 0.5
    x = torch.rand(4, 3, 8, 8)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
        model.train()
        dropped = model.forward_head(model.forward_features(x), pre_logits=True)
    assert (dropped == 0).any() and not (pre == 0).all()
    with pytest.raises(ValueError, match="drop_rate"):
        timm.create_model("cifar_resnet8", drop_rate=1.5)
    with pytest.raises(ValueError, match="in_chans"):
        timm.create_model("cifar_resnet8", in_chans=0)


def test_classifier_api_and_zero_init() -> None:
    model = timm.create_model("cifar_resnet8", num_classes=10)
    assert model.get_classifier() is model.fc and model.get_classifier(name_only=True) == "fc"
    model.reset_classifier(3)
    assert model.num_classes == 3 and model(torch.rand(1, 3, 8, 8)).shape == (1, 3)
    model.reset_classifier(0)
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, model.num_features)
    zeroed = timm.create_model("cifar_resnet8", zero_init_last=True)
    assert all(not stage[0].bn2.weight.detach().any() for stage in zeroed.stages)
    assert set(zeroed.group_matcher()) == {"stem", "blocks"}
