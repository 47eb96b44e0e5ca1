"""Model EMA against timm's ModelEmaV3, and through the loop: evaluated each epoch, saved only when training
completed."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from timm.utils import ModelEmaV3

from trickbox import load_tricks
from trickbox.build import create_model
from trickbox.config import load_config
from trickbox.loop import train

K = 10
SETTINGS = [
    {"decay": 0.9},
    {"decay": 0.99, "warmup": True, "warmup_gamma": 2.0, "warmup_power": 0.75, "min_decay": 0.2},
    {"decay": 0.95, "update_after_step": 4, "exclude_buffers": True},
]


def timm_kwargs(s: dict) -> dict:
    """The same settings in ModelEmaV3's words."""
    names = {"warmup": "use_warmup"}
    return {names.get(k, k): v for k, v in s.items()}


@pytest.mark.parametrize("settings", SETTINGS, ids=["plain", "warmup", "after-step-4,params-only"])
def test_equals_timm_model_ema_v3_after_20_steps(settings):
    torch.manual_seed(0)
    model = create_model("cifar_resnet8", num_classes=K, in_chans=3)  # BatchNorm: buffers are averaged (or copied)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    reference = ModelEmaV3(model, **timm_kwargs(settings))
    tricks = load_tricks({"ema": settings}, autoload=False)
    tricks.setup(model, optimizer, num_classes=K, epochs=1, steps_per_epoch=20)
    for step in range(1, 21):
        batch = tricks.batch(torch.randn(8, 3, 16, 16), torch.randint(0, K, (8,)))
        tricks.loss(tricks.forward(model, batch), batch).total.backward()
        optimizer.step()
        optimizer.zero_grad()
        tricks.step()
        reference.update(model, step=step)  # timm's train.py: num_updates after the step
    ours = tricks.tricks[0].ema_model.state_dict()
    theirs = reference.module.state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert torch.allclose(ours[key].float(), value.float(), atol=1e-6, rtol=0), key
    moved = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.allclose(v, ours[k])]
    assert moved  # an average, not a copy of the last weights


def test_decay_schedule_equals_timm():
    settings = {"decay": 0.999, "warmup": True, "warmup_gamma": 1.0, "warmup_power": 2 / 3, "min_decay": 0.1,
                "update_after_step": 2}
    trick = load_tricks({"ema": settings}, autoload=False).tricks[0]
    reference = ModelEmaV3(torch.nn.Linear(2, 2), **timm_kwargs(settings))
    assert [trick.decay_at(s) for s in range(0, 200)] == pytest.approx([reference.get_decay(s) for s in range(0, 200)])


BASE = ["data.name=digits", "data.train_subset=256", "train.batch_size=64", "train.tracker=none",
        "train.progress=false",
        "optim.lr=0.05", "tricks.sgdr={}", "tricks.ema.decay=0.8"]


def test_through_the_loop_evaluated_and_saved(tmp_path):
    cfg = load_config([], [*BASE, "train.epochs=2", f"train.out_dir={tmp_path}", "train.run_name=r"])
    res = train(cfg)
    assert all({"val/ema_top1", "val/ema_nll", "val/top1"} <= set(h) for h in res.history)
    assert {"ema_top1", "ema_nll", "top1"} <= set(res.test)
    ema, final = load_file(res.run_dir / "ema.safetensors"), load_file(res.run_dir / "model.safetensors")
    assert ema.keys() == final.keys()
    assert any(not torch.equal(ema[k], final[k]) for k in final if final[k].is_floating_point())


def test_not_saved_when_training_stops_early(tmp_path):
    cfg = load_config([], [*BASE, "train.epochs=2", "train.stop_after_epoch=1", f"train.out_dir={tmp_path}",
                           "train.run_name=r"])
    res = train(cfg)
    assert "val/ema_top1" in res.history[-1]
    assert not (res.run_dir / "ema.safetensors").exists()
