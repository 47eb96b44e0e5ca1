"""The embedded ImageNet recipe (``--config imagenet_bot``) composes and trains one epoch on a tiny ImageNet-layout folder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trickbox.api import load_tricks
from trickbox.config import load_config, read_yaml
from trickbox.loop import train


def imagenet_tree(root: Path, classes: int = 3, per_class: dict[str, int] | None = None, size: int = 40) -> Path:
    """train/<wnid>/*.JPEG and val/<wnid>/*.JPEG with random RGB images, ImageNet's layout."""
    rng = np.random.default_rng(0)
    for split, count in (per_class or {"train": 16, "val": 4}).items():
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                img = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
                img.save(folder / f"img_{i:04d}.JPEG", format="JPEG")
    return root


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
def test_one_epoch_of_the_recipe_trains(tmp_path):
    root = imagenet_tree(tmp_path / "imagenet")
    (root / "test").symlink_to(root / "val")  # the memory path reads train/ + test/ only; the stream path reads val/
    cfg = load_config(["imagenet_bot"], [
        f"data.root={root}", "data.loader=memory", "data.image_size=32", f"data.cache_dir={tmp_path / 'cache'}",
        "train.epochs=1", "train.batch_size=8", "train.eval_batch_size=16",
        "train.tracker=none", "train.progress=false", "train.log_every=1", f"train.out_dir={tmp_path / 'runs'}",
        "train.run_name=bot",
    ])
    res = train(cfg)
    spe = 6  # 48 training images less 10 % validation, in batches of 8
    assert res.steps == spe and 0.0 <= res.test["top1"] <= 1.0
    rows = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    # 1 epoch of the 5 warmup epochs: lr = 0.1 x 8/256 (linear scaling) x step / (5 epochs x 6 steps)
    assert lrs == pytest.approx([0.1 * 8 / 256 * s / (5 * spe) for s in range(spe)], abs=1e-12)
    assert {"loss/ce", "val/top1"} <= set().union(*rows)
