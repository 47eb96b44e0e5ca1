"""``trickbox predict``: top-k classes for images and folders, with the run's class names; on the test folder its
top-1 equals eval's, on the memory and the stream path, from another working directory."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from trickbox.config import load_config
from trickbox.loop import train


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_predict_top1_on_the_test_folder_equals_eval(imagenet_like: Path, tmp_path: Path, cli, loader) -> None:
    folder = imagenet_like / "folder" if loader == "stream" else _same_size(imagenet_like / "folder", tmp_path / "sq")
    cfg = load_config([], ["data.name=imagefolder", f"data.root={folder}", "data.image_size=32",
                           f"data.loader={loader}", "data.workers=0", "train.epochs=2", "train.batch_size=16",
                           "train.tracker=none", "train.progress=false", f"train.out_dir={tmp_path / 'runs'}",
                           "train.run_name=r"])
    run = train(cfg).run_dir
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    evaluated = cli("eval", str(run), "--no-progress", "--out", "e.json", cwd=elsewhere)
    assert evaluated.returncode == 0, evaluated.stderr
    import json

    error = json.loads((elsewhere / "e.json").read_text())["clean"]["top1_error"]
    out = cli("predict", str(run), str(folder / "val"), "--topk", "3", "--no-progress", "--out", "p.csv")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((elsewhere / "p.csv").open()))
    assert rows and list(rows[0])[:5] == ["path", "class", "prob", "class2", "prob2"]
    classes = sorted(p.name for p in (folder / "val").iterdir())
    assert all(r["class"] in classes and float(r["prob"]) >= float(r["prob2"]) for r in rows)
    right = sum(Path(r["path"]).parent.name == r["class"] for r in rows)
    assert 1 - right / len(rows) == pytest.approx(error, abs=1e-9)
    assert f"wrote {len(rows)} predictions to p.csv" in out.stdout
    assert [r["class"] for r in rows] == _eval_classes(run)  # image by image, not only the count


def _eval_classes(run: Path) -> list[str]:
    """Each test image's top-1 class as eval's own batches give it."""
    import torch

    from trickbox.build import load_trained
    from trickbox.checkpoint import read_card
    from trickbox.data.opening import eval_split
    from trickbox.evaluation.attacks import make_normalize

    card = read_card(run)
    data = eval_split(load_config([run / "config.yaml"]).data, "test", batch_size=64)
    model = load_trained(str(run), num_classes=card["num_classes"], in_chans=card["in_chans"]).eval()
    normalize = make_normalize(card["mean"], card["std"])
    with torch.no_grad():
        top = [i for x, _ in data.batches() for i in model(normalize(x.float() / 255)).argmax(1).tolist()]
    return [card["classes"][i] for i in top]


def _same_size(src: Path, dst: Path) -> Path:
    """The folder with every image at 48x40 (the memory path holds images of one size)."""
    from PIL import Image

    for f in src.rglob("*.jpg"):
        out = dst / f.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as img:
            img.convert("RGB").resize((48, 40)).save(out, quality=90)
    return dst


def test_predict_refuses_a_bad_path_in_one_line(tmp_path: Path, cli) -> None:
    run = tmp_path / "run"
    run.mkdir()
    res = cli("predict", str(run), "nowhere.jpg")
    assert res.returncode == 2 and "has no final model" in res.stderr and len(res.stderr.strip().splitlines()) == 1
