"""``optim.name`` is any optimizer of timm's ``create_optimizer_v2``, with betas, eps and momentum, and trickbox's
parameter groups (lr_mult, layer_decay, no_bias_decay) on top: checked against timm's own object."""
from __future__ import annotations

import pytest
import torch
from timm.optim import create_optimizer_v2

from trickbox import load_tricks
from trickbox.build import check_optim_config, create_model, create_optimizer
from trickbox.config import OptimConfig
from trickbox.errors import ConfigError

NEW = ["lamb", "lars", "lion", "adan", "adopt", "nadamw", "rmsprop", "adamp"]


def _model():
    torch.manual_seed(0)
    return create_model("cifar_resnet8", num_classes=10, in_chans=3)


def _step(model, optimizer):
    torch.manual_seed(1)
    loss = model(torch.randn(4, 3, 16, 16)).logsumexp(1).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


@pytest.mark.parametrize("name", NEW)
def test_each_optimizer_is_timms_and_steps_as_timms_does(name):
    ours_model, timm_model = _model(), _model()
    cfg = OptimConfig(name=name, lr=0.01, weight_decay=0.01)
    check_optim_config(cfg)
    ours = create_optimizer(ours_model, cfg)
    theirs = create_optimizer_v2(timm_model.parameters(), opt=name, lr=0.01, weight_decay=0.01, momentum=0.9)
    assert type(ours) is type(theirs)
    assert {k: v for k, v in ours.defaults.items()} == theirs.defaults
    for _ in range(3):
        _step(ours_model, ours)
        _step(timm_model, theirs)
    for (k, a), b in zip(ours_model.state_dict().items(), timm_model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7), (name, k)


def test_betas_eps_and_momentum_reach_the_optimizer():
    opt = create_optimizer(_model(), OptimConfig(name="lamb", betas=[0.8, 0.95], eps=1e-7))
    assert opt.defaults["betas"] == (0.8, 0.95) and opt.defaults["eps"] == 1e-7
    adan = create_optimizer(_model(), OptimConfig(name="adan", betas=[0.9, 0.92, 0.99]))
    assert adan.defaults["betas"] == (0.9, 0.92, 0.99)
    lars = create_optimizer(_model(), OptimConfig(name="lars", momentum=0.8))
    assert lars.defaults["momentum"] == 0.8
    adamw = create_optimizer(_model(), OptimConfig(name="adamw", betas=[0.9, 0.95], eps=1e-6))
    assert adamw.defaults["betas"] == (0.9, 0.95) and adamw.defaults["eps"] == 1e-6


@pytest.mark.parametrize("cfg, fragment", [
    (OptimConfig(name="lionn"), "did you mean 'lion'?"),
    (OptimConfig(name="sgd", betas=[0.9, 0.99]), "optimizer 'sgd' has no betas"),
    (OptimConfig(name="adan", betas=[0.9, 0.99]), "must be 3 numbers in [0, 1)"),
    (OptimConfig(name="lamb", betas=[0.9, 1.5]), "must be 2 numbers in [0, 1)"),
    (OptimConfig(name="sgd", eps=1e-8), "optimizer 'sgd' has no eps"),
])
def test_a_bad_optimizer_setting_is_one_line(cfg, fragment):
    with pytest.raises(ConfigError) as info:
        check_optim_config(cfg)
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["lamb", "lion", "adopt"])
def test_parameter_groups_and_no_bias_decay_keep_working(name):
    model = _model()
    cfg = OptimConfig(name=name, lr=0.01, weight_decay=0.05, lr_mult={"fc.*": 10.0})
    optimizer = create_optimizer(model, cfg)
    lrs = sorted({g["lr"] for g in optimizer.param_groups})
    assert lrs == pytest.approx([0.01, 0.1])  # the head's group at 10x
    tricks = load_tricks({"no_bias_decay": {}}, autoload=False)
    model2, optimizer2 = tricks.setup(model, optimizer, num_classes=10,
                                      epochs=1, steps_per_epoch=1)
    names = {id(p): n for n, p in model2.named_parameters()}
    for group in optimizer2.param_groups:
        one_d = [p.ndim <= 1 for p in group["params"]]
        assert all(one_d) or not any(one_d), [names[id(p)] for p in group["params"]]
        assert group["weight_decay"] == (0.0 if all(one_d) else 0.05)
    assert type(optimizer2).__name__ == type(create_optimizer_v2(model.parameters(), opt=name)).__name__


@pytest.mark.parametrize("name", ["lamb", "adan"])
def test_layer_decay_and_linear_scaling_keep_working(name):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=10)
    ours = create_optimizer(model, OptimConfig(name=name, lr=0.01, layer_decay=0.75))
    sgd = create_optimizer(model, OptimConfig(name="sgd", lr=0.01, layer_decay=0.75))
    assert len(ours.param_groups) > 2
    assert [g["lr"] for g in ours.param_groups] == pytest.approx([g["lr"] for g in sgd.param_groups])
    tricks = load_tricks({"linear_scaling": {"reference_batch": 256}}, autoload=False)
    tricks.setup(model, ours, num_classes=10, epochs=1, steps_per_epoch=1, batch_size=64)
    assert [g["lr"] for g in ours.param_groups] == pytest.approx([g["lr"] / 4 for g in sgd.param_groups])
