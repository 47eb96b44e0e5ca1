"""Fine-tuning from a weights file is strict and reported: the five files that used to load silently (another depth,
a foreign prefix, missing layers, another family, a training checkpoint dict), containers and wrapper prefixes, the
report line, models at any input size, stochastic depth, and old checkpoints resuming past the new keys."""
from __future__ import annotations

import warnings

import pytest
import timm
import torch
from safetensors.torch import save_file

from trickbox.build import create_model_reported, model_from_config
from trickbox.config import ModelConfig, load_config
from trickbox.errors import ConfigError
from trickbox.loop import train

from ..conftest import SMALL_RUN, told

NAME = "resnet10t"  # timm's smallest ResNet: the family of resnet18/34, in a fraction of the time


def _state(name: str = NAME, **kwargs) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {k: v.contiguous() for k, v in timm.create_model(name, num_classes=1000, **kwargs).state_dict().items()}


def _save(tmp_path, state, name="w.safetensors"):
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return str(path)


def _load(path, *, classes=4, strict=True, prefix=None):
    return create_model_reported(NAME, num_classes=classes, in_chans=3, pretrained_file=path, strict=strict,
                                 prefix=prefix)


def _refusal(path, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        _load(path, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_weights_of_another_depth_are_refused_naming_the_keys(tmp_path):
    path = _save(tmp_path, _state("resnet34"))
    with pytest.raises(ConfigError) as info:
        create_model_reported("resnet18", num_classes=4, in_chans=3, pretrained_file=path)
    msg = str(info.value)
    assert "\n" not in msg and "does not fit model 'resnet18'" in msg and "unexpected (layer1.2." in msg
    assert "model.pretrained_strict=false" in msg and "missing" not in msg  # resnet34 holds all of resnet18


def test_a_foreign_prefix_is_refused_with_the_prefix_to_strip_and_loads_with_it(tmp_path):
    state = _state()
    path = _save(tmp_path, {f"backbone.{k}": v for k, v in state.items()})
    msg = _refusal(path)
    assert "carry the prefix 'backbone.'" in msg and "model.pretrained_prefix=backbone." in msg
    model, report = _load(path, prefix="backbone.")
    assert torch.equal(model.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])
    assert report.stripped == ["backbone."] and report.classifier == (1000, 4)


def test_missing_layers_are_refused_and_a_partial_load_warns_with_the_same_list(tmp_path):
    state = {k: v for k, v in _state().items() if not k.startswith(("layer3.", "layer4."))}
    path = _save(tmp_path, state)
    msg = _refusal(path)
    assert "missing (layer3.0." in msg
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, report = _load(path, strict=False)
    said = " ".join(str(w.message) for w in caught)
    assert "fits model 'resnet10t' only in part" in said and "missing (layer3.0." in said
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert report.missing and report.loaded == len(state) - 2  # all but the 1000-class head


def test_weights_of_another_family_are_refused_naming_keys(tmp_path):
    path = _save(tmp_path, _state("mobilenetv3_small_050"))
    msg = _refusal(path)
    assert "holds no tensor of model 'resnet10t'" in msg or "does not fit" in msg
    assert "missing (" in msg and "unexpected (" in msg


def test_a_training_checkpoint_dict_loads_with_the_report(tmp_path):
    state = _state()
    path = _save(tmp_path, {"model": state, "optimizer": {}, "epoch": 90}, name="checkpoint.pth.tar")
    model, report = _load(path)
    for key in ("conv1.0.weight", "layer4.0.conv2.weight", "layer3.0.bn1.running_mean"):
        assert torch.equal(model.state_dict()[key], state[key]), key
    line = report.line()
    assert line.startswith(f"loaded {len(state) - 2} tensors from {path} (its 'model')")
    assert line.endswith("classifier reset (1000 → 4 classes)")


@pytest.mark.parametrize("wrapper", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_and_ema_containers_are_recognised(tmp_path, wrapper):
    state = _state()
    path = _save(tmp_path, {"state_dict_ema": {wrapper + k: v for k, v in state.items()}}, name="ema.pth")
    model, report = _load(path, classes=1000)
    assert report.container == "state_dict_ema" and "".join(report.stripped) == wrapper
    assert report.classifier is None and report.loaded == len(state)
    assert torch.equal(model.fc.weight, state["fc.weight"])  # the same classes: the head is kept


def test_other_input_channels_adapt_the_stem(tmp_path):
    state = _state()
    model, report = create_model_reported(NAME, num_classes=4, in_chans=1, pretrained_file=_save(tmp_path, state))
    assert report.stem == (3, 1) and model.conv1[0].weight.shape[1] == 1
    assert torch.allclose(model.conv1[0].weight, state["conv1.0.weight"].sum(1, keepdim=True))


def test_a_fine_tune_prints_the_line_and_records_it_in_the_model_card(tmp_path, capsys):
    state = _state()
    path = _save(tmp_path, state)
    cfg = load_config([], [*SMALL_RUN, f"train.out_dir={tmp_path}", "train.run_name=ft", f"model.name={NAME}",
                           f"model.pretrained_file={path}", "train.epochs=1"])
    result = train(cfg)
    err = told(capsys.readouterr().err)
    assert f"trickbox: loaded {len(state) - 2} tensors from {path}; classifier reset (1000 → 10 classes)" in err
    import json

    card = json.loads((result.run_dir / "model.json").read_text())
    assert card["pretrained_load"]["loaded"] == len(state) - 2 and card["pretrained_load"]["classifier"] == [1000, 10]


def test_a_fixed_size_model_is_built_for_the_data(tmp_path, imagenet_like):
    cfg = load_config([], ["data.name=imagefolder", f"data.root={imagenet_like / 'folder'}", "data.image_size=32",
                           "model.name=vit_tiny_patch16_224", "train.epochs=1", "train.batch_size=16",
                           "train.tracker=none", "train.progress=false", f"train.out_dir={tmp_path}",
                           "train.run_name=vit", "optim.name=adamw", "optim.lr=0.001"])
    result = train(cfg)
    assert result.steps > 0 and result.test
    import json

    assert json.loads((result.run_dir / "model.json").read_text())["kwargs"]["img_size"] == 32  # rebuilt at 32 px


def test_a_model_that_cannot_take_the_size_is_one_line(monkeypatch):
    import trickbox.build as build

    monkeypatch.setattr(build, "_fixed_size", lambda name: (224, 224))  # a fixed-size model without img_size
    with pytest.raises(ConfigError) as info:
        model_from_config(ModelConfig(name=NAME), num_classes=4, in_chans=3, image_size=32)
    assert "takes 224x224 inputs only" in str(info.value) and "data.image_size=224" in str(info.value)


def test_drop_path_rate_is_first_class_and_refused_where_there_is_none():
    model, _ = model_from_config(ModelConfig(name=NAME, drop_path_rate=0.1), num_classes=4, in_chans=3)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="has no stochastic depth to set"):
        model_from_config(ModelConfig(name="cifar_resnet8", drop_path_rate=0.1), num_classes=4, in_chans=3)


def test_a_checkpoint_from_before_the_new_model_keys_resumes():
    from trickbox.run_dir import check_resume

    now = {"model.name": NAME, "model.drop_path_rate": 0.0, "model.pretrained_strict": True,
           "model.pretrained_prefix": None, "optim.betas": None, "optim.eps": None, "data.color_jitter": 0.0}
    saved = {"model.name": NAME}
    assert check_resume(saved, now, [], where=None) == []  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="model.drop_path_rate"):
        check_resume(saved, {**now, "model.drop_path_rate": 0.2}, [], where=None)  # type: ignore[arg-type]
