"""``trickbox predict RUN_DIR PATH…``: the trained model's top-k classes for images or folders of them.

    trickbox predict runs/cifar-… photo.jpg holiday/ --topk 3 --out preds.csv

Class names come from the run; each image takes the evaluation view ``trickbox eval`` measures. The command prints
the first predictions and writes them all as CSV (default ``RUN_DIR/predict-<hash>.csv``).
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from ..errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``trickbox predict``."""
    p = subparsers.add_parser("predict", help="top-k classes of a trained run for images or folders",
                              description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by trickbox train (its final model)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of them (searched recursively)")
    p.add_argument("--topk", default="5", metavar="K", help="classes per image (default 5)")
    p.add_argument("--batch-size", default="64", metavar="B", help="images per forward pass (default 64)")
    p.add_argument("--out", default=None, metavar="FILE.csv", help="where to write the CSV (default "
                   "RUN_DIR/predict-<hash of the paths>.csv)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from .eval import _parse_int

    topk = _parse_int("--topk", args.topk, 1)
    batch = _parse_int("--batch-size", args.batch_size, 1)
    run_dir = Path(args.run_dir)
    if not ((run_dir / "model.json").is_file() and (run_dir / "model.safetensors").is_file()):
        raise ConfigError(f"RUN_DIR {args.run_dir!r} has no final model (model.json, model.safetensors); give a run "
                          "trickbox train finished")
    from ..evaluation.predictions import image_files, lines, predict_files, write_csv

    files = image_files(args.paths)
    rows = predict_files(run_dir, files, topk=topk, batch_size=batch, progress=not args.no_progress)
    for line in lines(rows):
        print(line)
    tag = hashlib.blake2b("\n".join(str(f.resolve()) for f in files).encode(), digest_size=4).hexdigest()
    out = Path(args.out) if args.out else run_dir / f"predict-{tag}.csv"
    write_csv(rows, out, min(topk, len(rows[0].classes) if rows and rows[0].classes else topk))
    bad = sum(1 for r in rows if r.error)
    print(f"trickbox: wrote {len(rows)} predictions to {out}" + (f" ({bad} images could not be read)" if bad else ""))
    return 0
