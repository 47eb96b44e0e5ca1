"""No bias decay: with zero gradients and lr > 0, biases and norm parameters stay put while the other weights decay."""
from __future__ import annotations

import pytest
import torch

from trickbox import load_tricks
from trickbox.build import create_model, create_optimizer
from trickbox.config import OptimConfig, load_config, read_yaml

from ..conftest import REPO

LR, WD, MOMENTUM = 0.1, 0.01, 0.9


def one_step_with_zero_gradients(tricks: dict) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    torch.manual_seed(0)
    model = create_model("cifar_resnet8", num_classes=10, in_chans=3)
    for m in model.modules():  # BN's β starts at 0, where decay is invisible; move it
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(m.bias)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = create_optimizer(model, OptimConfig(lr=LR, weight_decay=WD, momentum=MOMENTUM, nesterov=True))
    ts = load_tricks(tricks, autoload=False)
    _, optimizer = ts.setup(model, optimizer, num_classes=10, epochs=1, steps_per_epoch=1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    return before, model


def decayed(w: torch.Tensor) -> torch.Tensor:
    """One Nesterov SGD step on the gradient wd·w alone: buf = wd·w, update = wd·w + m·buf."""
    return w - LR * (1 + MOMENTUM) * WD * w


def test_biases_and_norm_parameters_do_not_move_the_rest_decays():
    before, model = one_step_with_zero_gradients({"no_bias_decay": {}})
    exempt = [n for n, p in model.named_parameters() if p.ndim <= 1]
    assert any(n.endswith("bn1.weight") for n in exempt) and "fc.bias" in exempt
    for name, p in model.named_parameters():
        expected = before[name] if name in exempt else decayed(before[name])
        assert torch.allclose(p.detach(), expected, rtol=1e-6, atol=0), name
        if name not in exempt:
            assert not torch.equal(p.detach(), before[name]), name


def test_without_the_trick_every_parameter_decays():
    before, model = one_step_with_zero_gradients({})
    for name, p in model.named_parameters():
        assert torch.allclose(p.detach(), decayed(before[name]), rtol=1e-6, atol=0), name


def test_groups_keep_the_order_older_checkpoints_have():
    """Before the trick existed the optimizer always had [decayed weights, (biases, norms) at 0]; checkpoints
    written then must still load into a run with the trick."""
    model = create_model("cifar_resnet8", num_classes=10, in_chans=3)
    optimizer = create_optimizer(model, OptimConfig())
    load_tricks({"no_bias_decay": {}}, autoload=False).setup(model, optimizer, num_classes=10, epochs=1,
                                                             steps_per_epoch=1)
    old = [[p for p in model.parameters() if p.ndim > 1], [p for p in model.parameters() if p.ndim <= 1]]
    assert [g["params"] for g in optimizer.param_groups] == old
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 0.0]


def test_exclude_and_the_models_own_no_weight_decay_list():
    import timm

    model = timm.create_model("test_vit", num_classes=10)
    assert "pos_embed" in model.no_weight_decay()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    tricks = load_tricks({"no_bias_decay": {"exclude": ["patch_embed.*"]}}, autoload=False)
    tricks.setup(model, optimizer, num_classes=10, epochs=1, steps_per_epoch=1)
    names = {id(p): n for n, p in model.named_parameters()}
    free = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert {"pos_embed", "cls_token", "patch_embed.proj.weight"} <= free
    assert "blocks.0.attn.qkv.weight" not in free


@pytest.mark.parametrize("config", ["default", "cifar10", "imagenet_bot"])
def test_the_embedded_configs_keep_it(config):
    assert "no_bias_decay" in load_config([config]).tricks


@pytest.mark.parametrize("spec", ["bag_of_tricks", "distillation", "label_smoothing", "mixup", "sgdr", "smoke"])
def test_the_sweeps_base_and_teacher_configs_keep_it(spec):
    raw = read_yaml(REPO / "sweeps" / f"{spec}.yaml")
    for section in ("base", "teacher"):
        if section in raw:
            assert "no_bias_decay" in raw[section]["tricks"], section


def test_the_paper_grids_keep_it():
    assert "no_bias_decay" in read_yaml(REPO / "sweeps" / "paper" / "cifar_paper.yaml")["tricks"]
