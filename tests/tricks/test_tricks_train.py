"""Every built-in trick, alone, in variants and all together, trains through the real loop."""
from __future__ import annotations

import json

import pytest
import torch

from trickbox.api import TrickSet, load_tricks
from trickbox.batch import hard_batch
from trickbox.config import load_config
from trickbox.context import RunContext
from trickbox.loop import train
from trickbox.registry import discover

BASE = ["train.tracker=none", "train.progress=false", "train.epochs=1", "train.batch_size=64", "optim.lr=0.05",
        "data.name=digits"]


def _run(tmp_path, name, *overrides):
    cfg = load_config([], [*BASE, f"train.out_dir={tmp_path}", f"train.run_name={name}", *overrides])
    return train(cfg, tricks=load_tricks(cfg.tricks, block=cfg.plugins.block))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    cfg = load_config([], [*BASE, f"train.out_dir={out}", "train.run_name=t", "train.epochs=3", "optim.lr=0.05",
                           "tricks.sgdr={}"])
    return train(cfg).run_dir


@pytest.mark.parametrize(
    "overrides",
    [
        ["tricks.sgdr.t0=1", "tricks.sgdr.warmup_epochs=0.5"],
        ["tricks.label_smoothing.eps=0.1"],
        ["tricks.mixup.alpha=0.4"],
        ["tricks.mixup.alpha=0.4", "tricks.mixup.per_sample=true"],
        ["tricks.mixup.scope=same"],
        ["tricks.mixup.pairing=knn", "tricks.mixup.k=10"],
        ["tricks.mixup.pairing=knn", "tricks.mixup.k=10", "tricks.mixup.scope=same"],
        ["tricks.mixup.layer=1"],
        ["tricks.mixup.layer=3", "tricks.mixup.mix_labels=false"],
        ["tricks.mixup.ways=3", "tricks.mixup.alpha=1.0"],
        ["tricks.noise.sigma=0.1"],
    ],
    ids=lambda o: ",".join(x.split("=", 1)[0].removeprefix("tricks.") + "=" + x.split("=", 1)[1] for x in o),
)
def test_trick_trains(tmp_path, overrides):
    res = _run(tmp_path, "r", *overrides)
    assert res.steps > 0
    assert res.test["top1"] > 0.2  # one epoch of digits is far above chance (0.1)
    rows = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/ce" in r for r in rows) and all(r.get("lr", 0) >= 0 for r in rows)


def test_all_four_tricks_together(tmp_path, teacher):
    res = _run(tmp_path, "all", "train.epochs=2", "optim.lr=0.05", "tricks.sgdr.t0=1", "tricks.mixup.alpha=0.2",
               "tricks.label_smoothing.eps=0.1",
               f"tricks.distillation.teacher={teacher}", "tricks.distillation.temperature=4")
    rows = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = set().union(*rows)
    assert {"loss/ce", "loss/kd", "loss", "lr"} <= logged
    assert (res.run_dir / "lr_curve.png").stat().st_size > 1000
    assert (res.run_dir / "mixup_epoch000.png").stat().st_size > 1000
    assert res.test["top1"] > 0.5


def test_mixup_can_switch_off_for_the_last_epochs(tmp_path):
    cfg = load_config([], [*BASE, "train.epochs=2", "tricks.mixup.off_last_epochs=1"])
    tricks = load_tricks(cfg.tricks, block=cfg.plugins.block)
    x = torch.randn(8, 1, 8, 8)
    labels = torch.arange(8) % 10
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=10, epochs=2, steps_per_epoch=3)
    assert "lam" in tricks.batch(x, labels).meta
    tricks.ctx.step = 3  # first step of the last epoch
    b = tricks.batch(x, labels)
    assert "lam" not in b.meta and torch.equal(b.x, x)


def test_manifold_mixup_leaves_earlier_stages_unmixed():
    from trickbox.build import create_model
    from trickbox.functional import feature_stages

    torch.manual_seed(0)
    model = create_model("cifar_resnet8", num_classes=10, in_chans=3).eval()
    tricks = TrickSet(discover().build({"mixup": {"alpha": 1.0, "layer": 2}}))
    tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=10, epochs=1, steps_per_epoch=1)
    stages = [m for _, m in feature_stages(model)]
    seen: dict[int, torch.Tensor] = {}
    # stage outputs, and what stage 3 actually receives (after any mixing of stage 2's output)
    handles = [s.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out.detach().clone())) for i,
               s in enumerate(stages)]
    handles.append(stages[2].register_forward_pre_hook(lambda m, a: seen.__setitem__("into3", a[0].detach().clone())))
    x = torch.randn(6, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    batch = tricks.batch(x, labels)
    assert torch.equal(batch.x, x)  # inputs untouched at layer 2
    tricks.forward(model, batch)
    mixed = dict(seen)
    model(x)
    plain = dict(seen)
    for h in handles:
        h.remove()
    lam, perm = batch.meta["lam"], batch.meta["perm"]
    assert torch.equal(mixed[0], plain[0])  # stage 1 unmixed
    assert torch.equal(mixed[1], plain[1])  # stage 2 itself computes on unmixed inputs
    assert torch.allclose(mixed["into3"], lam * plain[1] + (1 - lam) * plain[1][perm], atol=1e-5)  # its output is mixed
    onehot = torch.zeros(6, 10).scatter_(1, labels[:, None], 1.0)
    assert torch.allclose(batch.y, lam * onehot + (1 - lam) * onehot[perm])


def test_manifold_mixup_without_stages_says_so():
    from trickbox.trick import ConfigError

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    tricks = TrickSet(discover().build({"mixup": {"layer": 1}}))
    with pytest.raises((ConfigError, ValueError), match="no feature stages"):
        tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=10, epochs=1, steps_per_epoch=1)


def test_same_seed_same_draws_across_resume_points():
    ctx = RunContext(num_classes=10, epochs=2, steps_per_epoch=5, base_lr=0.1, seed=3, step=7)
    a = ctx.rng("mixup").random(3)
    b = RunContext(num_classes=10, epochs=2, steps_per_epoch=5, base_lr=0.1, seed=3, step=7).rng("mixup").random(3)
    assert (a == b).all()
    ctx.step = 8
    assert not (ctx.rng("mixup").random(3) == a).all()


def test_hard_batch_targets_are_one_hot():
    b = hard_batch(torch.zeros(3, 1), torch.tensor([2, 0, 1]), 4)
    assert b.y.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0]]
