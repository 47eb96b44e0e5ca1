"""The embedded ImageNet recipe (``--config imagenet_bot``) composes and trains one epoch on a tiny ImageNet-layout
folder."""
from __future__ import annotations

import json

import pytest
import yaml

from trickbox.api import load_tricks
from trickbox.config import load_config, read_yaml
from trickbox.loop import train


def test_the_recipe_holds_the_papers_settings():
    raw = read_yaml("imagenet_bot")
    cfg = load_config(["imagenet_bot"], [])
    assert cfg.model.name == "resnet50d" and cfg.optim.lr == 0.1 and cfg.optim.weight_decay == 1e-4
    assert cfg.data.name == "imagefolder" and cfg.data.loader == "stream" and cfg.data.image_size == 224
    assert cfg.train.epochs == 120 and cfg.train.batch_size * 8 == 1024
    t = cfg.tricks
    assert t["sgdr"] == {"warmup_epochs": 5} and t["label_smoothing"] == {"eps": 0.1} and t["mixup"]["alpha"] == 0.2
    assert t["linear_scaling"] == {"reference_batch": 256} and "zero_gamma" in t and "no_bias_decay" in t
    assert "distillation" not in raw["tricks"]  # optional: commented out
    load_tricks(cfg.tricks)  # every trick and parameter is valid


@pytest.mark.slow
def test_one_epoch_of_the_recipe_trains_on_imagenet_shaped_data_streamed(tmp_path, imagenet_like):
    cfg = load_config(["imagenet_bot"], [  # the recipe's own data.loader=stream, on make_imagenet_like.py's folders
        f"data.root={imagenet_like / 'folder'}", "data.image_size=32", "data.workers=1",
        # the first of 6 epochs (a warmup of 5 needs a longer run; train.stop_after_epoch stops after one)
        "train.epochs=6", "train.stop_after_epoch=1", "train.batch_size=8", "train.eval_batch_size=16",
        "train.tracker=none", "train.progress=false", "train.log_every=1", f"train.out_dir={tmp_path / 'runs'}",
        "train.run_name=bot",
    ])
    res = train(cfg)
    n = len(list((imagenet_like / "folder" / "train").rglob("*.jpg")))
    spe = -(-(n - round(0.1 * n)) // 8)  # train/ less the 10 % carved for validation, in batches of 8
    assert res.steps == spe and 0.0 <= res.val["top1"] <= 1.0
    assert yaml.safe_load((res.run_dir / "config.yaml").read_text())["runtime"]["data_path"] == "stream"
    rows = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    # 1 epoch of the 5 warmup epochs: lr = 0.1 x 8/256 (linear scaling) x step / (5 epochs x 6 steps)
    assert lrs == pytest.approx([0.1 * 8 / 256 * s / (5 * spe) for s in range(spe)], abs=1e-12)
    assert {"loss/ce", "val/top1"} <= set().union(*rows)
