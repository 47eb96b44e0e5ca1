"""A trained run's top-k classes for image files, as ``trickbox predict`` writes them.

Each image takes the evaluation view of the run's own data path, the one ``trickbox eval`` measures: on the memory
path the decode of :func:`trickbox.data.sources.decode_chunk` and :func:`trickbox.data.memory.eval_images`, on the
stream path the evaluation transform of :func:`trickbox.data.streaming.transforms`; then the run's normalisation.
So predict's top-1 on a test folder is eval's.
"""
from __future__ import annotations

import csv
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class Prediction:
    path: str
    classes: list[str]
    probs: list[float]
    error: str = ""


def image_files(paths: Sequence[str]) -> list[Path]:
    """Every image named, or under a folder named (recursively, regular files, sorted); one line for a bad path."""
    found: list[Path] = []
    for text in paths:
        p = Path(text).expanduser()
        if p.is_dir():
            found.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        elif p.is_file():
            found.append(p)
        else:
            raise ConfigError(f"{text!r} is neither an image file nor a folder; give images or folders of them")
    if not found:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES[:4])} …) in {', '.join(map(repr, paths))}")
    return found


def predict_files(run_dir: Path, files: list[Path], *, topk: int = 5, batch_size: int = 64,
                  progress: bool = False) -> list[Prediction]:
    """The run's ``topk`` classes and probabilities for each file (a file that cannot be read: its error)."""
    import torch

    from ..build import load_trained
    from ..checkpoint import read_card
    from ..config import load_config
    from .attacks import make_normalize

    cfg = load_config([run_dir / "config.yaml"])
    if cfg.data.name not in ("imagefolder", "wds"):
        raise ConfigError(f"the run in {str(run_dir)!r} trained on data.name={cfg.data.name}, not on image files; "
                          "predict takes runs trained with data.name=imagefolder or wds")
    card = read_card(run_dir)
    classes = list(card.get("classes") or [str(i) for i in range(card["num_classes"])])
    model = load_trained(str(run_dir), num_classes=card["num_classes"], in_chans=card["in_chans"]).eval()
    normalize = make_normalize(card.get("mean") or cfg.data.mean, card.get("std") or cfg.data.std)
    k = min(topk, len(classes))
    out: list[Prediction] = []
    from tqdm.auto import tqdm

    evaluation = _stream_view(cfg.data) if cfg.data.loader == "stream" else None  # built once, not per chunk
    with torch.no_grad(), tqdm(total=len(files), desc="predict", unit="image", file=sys.stderr,
                               disable=not progress) as bar:
        for chunk in (files[i:i + batch_size] for i in range(0, len(files), batch_size)):
            views, failures = _views(cfg.data, chunk, evaluation)
            if views:
                x = torch.stack([v for _, v in views]).to(torch.float32) / 255.0
                probs = torch.softmax(model(normalize(x)).float(), dim=1)
                top = probs.topk(k, dim=1)
                for (name, _), p, i in zip(views, top.values.tolist(), top.indices.tolist(), strict=True):
                    out.append(Prediction(name, [classes[j] for j in i], p))
            out.extend(Prediction(name, [], [], error) for name, error in failures)
            bar.update(len(chunk))
    order = {str(f): n for n, f in enumerate(files)}
    return sorted(out, key=lambda r: order[r.path])


def _stream_view(cfg: Any) -> Any:
    """The stream path's evaluation transform of settled data config ``cfg``."""
    from ..data.streaming import transforms

    return transforms(cfg, cfg.mean or (), cfg.std or ())[1]


def _views(cfg: Any, files: list[Path], evaluation: Any = None) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """Each readable file's uint8 evaluation view, as the run's data path makes it (``evaluation``: the stream
    path's transform), and the unreadable ones."""
    import torch

    if evaluation is not None:
        from ..data.streaming import read_image

        views, failures = [], []
        for f in files:
            image, bad = read_image(str(f), evaluation)
            if image is None:
                failures.append((str(f), bad))
            else:
                views.append((str(f), torch.as_tensor(image)))
        return views, failures
    from ..data.memory import eval_images
    from ..data.sources import decode_chunk

    views, failures = [], []
    for f in files:  # one at a time: the memory path's decode wants one size per chunk, photos differ
        try:
            blob = f.read_bytes()
        except OSError as exc:
            failures.append((str(f), f"cannot be read ({exc.strerror or exc})"))
            continue
        x, bad = decode_chunk([str(f)], [blob], cfg.image_size if cfg.crop == "pad" else None, cfg.interpolation)
        if bad:
            failures.extend(bad)
        else:
            views.append((str(f), eval_images(torch.from_numpy(x), cfg)[0]))
    return views, failures


def write_csv(rows: list[Prediction], path: Path, topk: int) -> None:
    """``path,class,prob,class2,prob2,…,error``: the top-k of each image, most likely first."""
    header = ["path"] + [f"{w}{n}" for n in range(1, topk + 1) for w in ("class", "prob")] + ["error"]
    header[1:3] = ["class", "prob"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for r in rows:
            pairs = [v for c, p in zip(r.classes, r.probs) for v in (c, f"{p:.6f}")]
            writer.writerow([r.path, *pairs, *[""] * (2 * topk - len(pairs)), r.error])


def lines(rows: list[Prediction], limit: int = 10) -> Iterator[str]:
    """The first ``limit`` predictions, one line each, for the console."""
    for r in rows[:limit]:
        yield f"{r.path}: {r.error}" if r.error else f"{r.path}: {r.classes[0]} ({r.probs[0]:.3f})"
    if len(rows) > limit:
        yield f"… {len(rows) - limit} more"
