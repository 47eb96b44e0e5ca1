"""Parameter groups from the config (optim.lr_mult, optim.layer_decay) keep their LR ratios under the schedule."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trickbox import ConfigError, hookimpl, load_tricks
from trickbox.build import create_model, create_optimizer
from trickbox.config import OptimConfig, load_config
from trickbox.loop import train

K = 10


def sgdr_by_hand(step: int, steps_per_epoch: int, base_lr: float, t0: float, t_mult: float) -> float:
    """Loshchilov & Hutter's formula, written out independently of trickbox.functional."""
    t, start, period = step / steps_per_epoch, 0.0, t0
    while t >= start + period:
        start, period = start + period, period * t_mult
    return 0.5 * base_lr * (1 + math.cos(math.pi * (t - start) / period))


def test_two_groups_keep_a_ratio_of_10_at_every_sgdr_step():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, K))
    optimizer = torch.optim.SGD([{"params": model[1].parameters(), "lr": 0.1}, {"params": model[3].parameters(),
                                                                                "lr": 0.01}])
    tricks = load_tricks({"sgdr": {"t0": 1, "t_mult": 2}}, autoload=False)
    tricks.setup(model, optimizer, num_classes=K, epochs=7, steps_per_epoch=4)
    for step in range(28):
        x, labels = torch.randn(8, 1, 8, 8), torch.randint(0, K, (8,))
        batch = tricks.batch(x, labels)
        tricks.loss(tricks.forward(model, batch), batch).total.backward()
        fast, slow = (g["lr"] for g in optimizer.param_groups)
        assert fast == pytest.approx(sgdr_by_hand(step, 4, 0.1, 1, 2), abs=1e-12)
        assert fast / slow == pytest.approx(10, rel=1e-12), step  # 10 up to float rounding
        optimizer.step()
        optimizer.zero_grad()
        tricks.step()


class GroupLRs:
    """Records every group's learning rate at each optimizer step of the loop."""

    def __init__(self) -> None:
        self.rows: list[list[float]] = []
        self.groups: list[list[int]] = []

    @hookimpl
    def trickbox_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.rows.append([g["lr"] for g in optimizer.param_groups])
        if not self.groups:
            self.groups = [[id(p) for p in g["params"]] for g in optimizer.param_groups]


def test_through_the_loop_the_head_keeps_its_multiplier(tmp_path):
    probe = GroupLRs()
    cfg = load_config([], ["data.name=digits", "data.train_subset=128", "train.batch_size=32", "train.epochs=3",
                           "train.tracker=none", "train.progress=false", f"train.out_dir={tmp_path}", "optim.lr=0.1",
                           "optim.lr_mult={fc.*: 0.1}", "tricks.sgdr.t0=1", "tricks.sgdr.t_mult=2"])
    res = train(cfg, plugins=[probe])
    assert len(probe.rows) == res.steps == 12
    for step, (body, head) in enumerate(probe.rows):
        assert body == pytest.approx(sgdr_by_hand(step, 4, 0.1, 1, 2), abs=1e-12)
        if body > 0:
            assert body / head == pytest.approx(10, rel=1e-12), step


def test_lr_mult_puts_the_matching_parameters_in_their_own_group():
    model = create_model("cifar_resnet8", num_classes=K, in_chans=3)
    optimizer = create_optimizer(model, OptimConfig(lr=0.01, lr_mult={"fc.*": 10, "stem.*": 0.5}))
    names = {id(p): n for n, p in model.named_parameters()}
    by_lr = {g["lr"]: sorted(names[id(p)] for p in g["params"]) for g in optimizer.param_groups}
    assert by_lr[0.1] == ["fc.bias", "fc.weight"]
    assert by_lr[0.005] == ["stem.bn.bias", "stem.bn.weight", "stem.conv.weight"]
    assert len(by_lr[0.01]) == len(names) - 5


def test_layer_decay_scales_each_layer_below_the_head():
    model = create_model("cifar_resnet8", num_classes=K, in_chans=3)  # stem, 3 blocks, head: 5 layers
    optimizer = create_optimizer(model, OptimConfig(lr=0.1, layer_decay=0.5, lr_mult={"fc.*": 10}))
    lr_of = {n: g["lr"] for g in optimizer.param_groups for n,
             p in model.named_parameters() if any(p is q for q in g["params"])}
    assert lr_of["fc.weight"] == pytest.approx(0.1 * 10)
    assert lr_of["stages.2.0.conv1.weight"] == pytest.approx(0.1 * 0.5)
    assert lr_of["stages.1.0.bn2.bias"] == pytest.approx(0.1 * 0.25)
    assert lr_of["stages.0.0.conv2.weight"] == pytest.approx(0.1 * 0.125)
    assert lr_of["stem.conv.weight"] == pytest.approx(0.1 * 0.0625)
    assert all(g["weight_decay"] == 5e-4 for g in optimizer.param_groups)  # every parameter decays by default


@pytest.mark.parametrize("lr_mult, message", [
    ({"head.*": 10}, r"optim.lr_mult glob 'head.\*' matches no parameter of model 'cifar_resnet8' \(its parameters "
                     r"start with fc, stages, stem\); e.g. optim.lr_mult='\{fc.\*: 10\}'"),
    ({"fc.*": -1}, r"optim.lr_mult\['fc.\*'\] must be >= 0, got -1.0"),
    ({"fc": {"*": 10}}, r"write the glob whole"),
    ({"fc.*": "ten"}, r"optim.lr_mult\['fc.\*'\] must be a number, got 'ten'"),
])
def test_bad_lr_mult_is_one_line(lr_mult, message):
    model = create_model("cifar_resnet8", num_classes=K, in_chans=3)
    with pytest.raises(ConfigError, match=message) as info:
        create_optimizer(model, OptimConfig(lr_mult=lr_mult))
    assert "\n" not in str(info.value)


def test_layer_decay_without_layers_says_so():
    with pytest.raises(ConfigError, match="has no effect on the model"):
        create_optimizer(nn.Linear(3, 3), OptimConfig(layer_decay=0.7))
