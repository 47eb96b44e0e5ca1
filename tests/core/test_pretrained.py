"""model.pretrained / model.pretrained_file: timm loads the weights (offline: the Hugging Face cache), resets the
classifier, adapts the stem; missing weights are one line and exit code 2. Weights are saved random timm models."""
from __future__ import annotations

import copy
from pathlib import Path

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import trickbox.cli
from trickbox import ConfigError, hookimpl
from trickbox.build import check_model_config, create_model, pretrained_source
from trickbox.config import ModelConfig, load_config
from trickbox.loop import train

HUB_ID = "timm/test_resnet.r160_in1k"  # timm's default pretrained tag of test_resnet (a 0.5 M-parameter ResNet)


def save_weights(model: torch.nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, used by this process (and by subprocesses through HF_HUB_CACHE)."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def cached_test_resnet(hf_cache) -> dict[str, torch.Tensor]:
    """Random 1000-class test_resnet weights put where huggingface_hub keeps a download of HUB_ID."""
    torch.manual_seed(0)
    repo = hf_cache / f"models--{HUB_ID.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    save_weights(timm.create_model("test_resnet", num_classes=1000), repo / "snapshots" / commit / "model.safetensors")
    return load_file(repo / "snapshots" / commit / "model.safetensors")


class FirstWeights:
    """The weights the loop's model starts training from."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] = {}

    @hookimpl(tryfirst=True)
    def trickbox_configure_model(self, model: torch.nn.Module) -> None:
        self.state = copy.deepcopy(model.state_dict())


def test_timm_weights_from_the_hf_cache_start_the_run(tmp_path, cached_test_resnet):
    probe = FirstWeights()
    cfg = load_config([], ["data.name=digits", "data.train_subset=64", "train.batch_size=32", "train.epochs=1",
                           "train.tracker=none", "train.progress=false", f"train.out_dir={tmp_path}",
                           "model.name=test_resnet",
                           "model.pretrained=true"])
    train(cfg, plugins=[probe])
    start, ref = probe.state, cached_test_resnet
    # digits: 10 classes and 1 channel. The head is new; the stem is the RGB filters summed; the rest is as saved.
    assert start["fc.weight"].shape == (10, ref["fc.weight"].shape[1])
    assert torch.allclose(start["conv1.0.weight"], ref["conv1.0.weight"].sum(dim=1, keepdim=True))
    for key in ("layer1.0.conv1.weight", "layer3.0.bn3.weight", "layer4.0.bn2.running_var"):
        assert torch.equal(start[key], ref[key]), key


def test_pretrained_file_keeps_a_matching_head(tmp_path):
    torch.manual_seed(1)
    source = create_model("cifar_resnet8", num_classes=10, in_chans=3)  # trickbox's own model: no published weights
    path = save_weights(source, tmp_path / "w.safetensors")
    same = create_model("cifar_resnet8", num_classes=10, in_chans=3, pretrained_file=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key
    other = create_model("cifar_resnet8", num_classes=4, in_chans=3, pretrained_file=str(path))
    assert other.fc.weight.shape == (4, 64) and torch.equal(other.stem.conv.weight, source.stem.conv.weight)


def test_a_trickbox_run_is_a_pretrained_file(tmp_path):
    base = ["data.name=digits", "data.train_subset=64", "train.batch_size=32", "train.epochs=1", "train.tracker=none",
            "train.progress=false", f"train.out_dir={tmp_path}"]
    first = train(load_config([], [*base, "train.run_name=a"]))
    probe = FirstWeights()
    train(load_config([], [*base, "train.run_name=b", f"model.pretrained_file={first.run_dir / 'model.safetensors'}"]),
          plugins=[probe])
    trained = load_file(first.run_dir / "model.safetensors")
    assert all(torch.equal(probe.state[k], v) for k, v in trained.items())


def test_missing_offline_is_one_line_naming_the_cache_and_the_fix(hf_cache):
    with pytest.raises(ConfigError) as info:
        pretrained_source("test_resnet")
    message = str(info.value)
    assert "\n" not in message
    assert str(hf_cache / "models--timm--test_resnet.r160_in1k") in message and "model.pretrained_file=PATH" in message


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = trickbox.cli.main(["train", "--tracker", "none", *args])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("args, fragment", [
    (["model.name=test_resnet", "model.pretrained=true"], "looked in the Hugging Face cache"),
    (["model.name=cifar_resnet8", "model.pretrained=true"],
     "model 'cifar_resnet8' has no pretrained weights (trickbox's CIFAR models are trained from scratch); give your "
     "own "
     "with model.pretrained_file=PATH"),
    (["model.pretrained_file=/no/such/weights.safetensors"], "model.pretrained_file='/no/such/weights.safetensors' "
                                                             "does "
                                                              "not exist"),
])
def test_cli_exits_2_with_one_line(tmp_path, hf_cache, capsys, args, fragment):
    code, err = run_cli([f"train.out_dir={tmp_path / 'runs'}", "train.progress=false", *args], capsys)
    assert code == 2 and err.count("\n") == 0 and fragment in err, err


def test_missing_weights_stop_before_anything_is_written(tmp_path, hf_cache, capsys):
    code, _ = run_cli([f"train.out_dir={tmp_path / 'runs'}", "model.name=test_resnet", "model.pretrained=true"], capsys)
    assert code == 2 and not (tmp_path / "runs").exists()


def test_kwargs_pretrained_points_to_model_pretrained(capsys):
    code, err = run_cli(["model.kwargs.pretrained=true"], capsys)
    assert code == 2 and "use model.pretrained=true" in err


def test_check_model_config_refuses_kwargs_pretrained_with_the_way_to_do_it():
    with pytest.raises(ConfigError, match=r"model.kwargs.pretrained is not allowed; use model.pretrained=true"):
        check_model_config(ModelConfig(kwargs={"pretrained": True}))
