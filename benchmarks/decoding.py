"""Low resolution first, measured in one run on photo-like data (``make_photo_like.py``):

(a) trickbox's stream loader (``data.fast_decode=true``, the default) against timm's ``create_dataset`` +
    ``create_loader`` over the same class folders, with the same transforms (RandomResizedCrop, flip, no colour
    jitter), batch size and workers, at 224 and at 128 px; trickbox with ``data.fast_decode=false`` runs beside
    them as the control. Rounds alternate the order; each number is the loader's median round.
(b) two whole ``trickbox train`` runs on the stream path, the same epochs and model: fixed 224 px against
    ``progressive_resize`` from 128 to 224 px (``ramp=1.0``), each in a fresh process, alternating, median wall
    time; 40 validation and 40 test images, so training, not evaluation, takes the time.

(c) with ``--costs``, instead: what one image costs in this process (best of 5 passes over 300 images): decoding
    whole and at 1/2, 1/4 and 1/8 with simplejpeg and with Pillow, and the whole training transform at 224 and
    128 px with ``fast_decode`` on and off; into its own block.

    python benchmarks/make_photo_like.py /tmp/photo_like                     # 2,500 JPEGs, ~1 min
    python benchmarks/decoding.py /tmp/photo_like --out docs/performance.md  # ~10 min on 2 cores
    python benchmarks/decoding.py /tmp/photo_like --costs --out docs/performance.md   # ~30 s
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from common import load_average, machine_lines
from streaming import images_per_s, write_block

BLOCK = "decoding"


def loaders(folder: Path, size: int, *, batch_size: int, workers: int) -> dict[str, Callable[[], Iterable[Any]]]:
    """Fresh epochs of trickbox's stream loader (fast decode on and off) and timm's loader at ``size`` px."""
    from timm.data import create_dataset, create_loader

    from trickbox.data import DataConfig, LoaderOptions, open_run_data

    def ours(fast: bool) -> Callable[[], Iterable[Any]]:
        cfg = DataConfig(name="imagefolder", root=str(folder), loader="stream", image_size=size, workers=workers,
                         val_fraction=0.0 if (folder / "val").is_dir() else 0.1, fast_decode=fast)
        train = open_run_data(cfg, LoaderOptions(batch_size=batch_size, eval_batch_size=batch_size, seed=0)).train
        epoch = [0]

        def next_epoch() -> Iterable[Any]:
            epoch[0] += 1
            train.set_epoch(epoch[0])
            return train.batches()

        return next_epoch

    dataset = create_dataset("", root=str(folder / "train"), is_training=True)
    theirs = create_loader(dataset, input_size=(3, size, size), batch_size=batch_size, is_training=True,
                           use_prefetcher=True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5, color_jitter=0.0,
                           num_workers=workers, device=torch.device("cpu"), pin_memory=False, persistent_workers=True)
    return {"trickbox": ours(True), "timm": lambda: iter(theirs), "trickbox, fast_decode=false": ours(False)}


def bench(folder: Path, size: int, *, rounds: int, batches: int, batch_size: int, workers: int) -> dict[str, float]:
    pair = loaders(folder, size, batch_size=batch_size, workers=workers)
    results: dict[str, list[float]] = {name: [] for name in pair}
    for r in range(rounds):
        for name in (list(pair) if r % 2 == 0 else list(reversed(pair))):
            results[name].append(images_per_s(pair[name](), batches))
            print(f"  {size} px round {r + 1}/{rounds} {name}: {results[name][-1]:.0f} images/s", file=sys.stderr)
    return {name: statistics.median(v) for name, v in results.items()}


def run_seconds(folder: Path, work: Path, name: str, extra: list[str], *, epochs: int, workers: int,
                model: str) -> float:
    """Wall time of one ``trickbox train`` run in a fresh process."""
    args = [sys.executable, "-m", "trickbox", "train", "--tracker", "none", "data.name=imagefolder",
            f"data.root={folder}", "data.loader=stream", "data.image_size=224", f"data.workers={workers}",
            f"model.name={model}", f"train.epochs={epochs}", "train.batch_size=32", "train.eval_batch_size=64",
            "train.progress=false", f"train.out_dir={work}", f"train.run_name={name}", *extra]
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=work, env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"benchmarks/decoding.py: the {name} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def bench_runs(folder: Path, work: Path, *, rounds: int, epochs: int, workers: int, model: str,
               subset: int) -> dict[str, float]:
    common = [f"data.train_subset={subset}", "data.val_fraction=0.02", "data.test_subset=40"]  # training dominates
    runs = {"fixed 224": common, "progressive 128 → 224": [*common, "tricks.progressive_resize.start=128",
                                                           "tricks.progressive_resize.ramp=1.0"]}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(rounds):
        for name in (list(runs) if r % 2 == 0 else list(reversed(runs))):
            times[name].append(run_seconds(folder, work, f"{name.split()[0]}-{r}", runs[name], epochs=epochs,
                                           workers=workers, model=model))
            print(f"  run round {r + 1}/{rounds} {name}: {times[name][-1]:.1f} s", file=sys.stderr)
    return {k: statistics.median(v) for k, v in times.items()}


def per_image_ms(files: list[Path], fn: Callable[[int, Path], Any]) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for i, f in enumerate(files):
            fn(i, f)
        best = min(best, time.perf_counter() - t0)
    return best / len(files) * 1e3


def costs(folder: Path) -> str:
    """(c): milliseconds per image of each way to decode, and of the training transform."""
    import io

    from PIL import Image

    from trickbox.data import DataConfig
    from trickbox.data.streaming import read_image, seed_sample, transforms

    files = sorted((folder / "train").rglob("*.jpg"))[:300]
    raw = {f: f.read_bytes() for f in files}
    rows = ["| per image, ms | whole | 1/2 | 1/4 | 1/8 |", "|---|---|---|---|---|"]
    import trickbox.data.decoding as decoding

    def pillow(f: Path, r: int) -> Any:
        img = Image.open(io.BytesIO(raw[f]))
        if r > 1:
            img.draft("RGB", (img.width // r, img.height // r))
        return img.convert("RGB")

    decoders = {"Pillow (`draft`)": pillow}
    try:
        import simplejpeg

        def turbo(f: Path, r: int) -> Any:
            h, w, _, _ = simplejpeg.decode_jpeg_header(raw[f])
            return simplejpeg.decode_jpeg(raw[f], colorspace="RGB", min_factor=r, min_height=-(-h // r),
                                          min_width=-(-w // r))

        decoders["simplejpeg"] = turbo
    except ImportError:
        pass
    for name, fn in decoders.items():
        cells = [per_image_ms(files, lambda i, f, r=r, fn=fn: fn(f, r)) for r in (1, 2, 4, 8)]
        rows.append(f"| decode, {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    rows += ["", "| training transform (read, decode, crop, flip, to tensor), ms per image | fast_decode=true | "
             "fast_decode=false | crops decoded at 1/2 or less |", "|---|---|---|---|"]

    for size in (224, 128):
        cells = []
        for fast in (True, False):
            cfg = DataConfig(name="imagefolder", root=str(folder), crop="resized", image_size=size, fast_decode=fast)
            tf = transforms(cfg, (0.5,) * 3, (0.25,) * 3)[0]
            cells.append(per_image_ms(files, lambda i, f, tf=tf: (seed_sample(0, i), read_image(str(f), tf))))
        seen, keep = [], decoding.decode
        decoding.decode = lambda source, r, seen=seen, keep=keep: (seen.append(r), keep(source, r))[1]  # type: ignore[assignment]
        try:
            fast_tf = transforms(DataConfig(name="imagefolder", root=str(folder), crop="resized", image_size=size),
                                 (0.5,) * 3, (0.25,) * 3)[0]
            for i, f in enumerate(files):
                seed_sample(0, i)
                read_image(str(f), fast_tf)
        finally:
            decoding.decode = keep
        share = sum(r > 1 for r in seen) / max(len(seen), 1)
        rows.append(f"| {size} px | {cells[0]:.2f} | {cells[1]:.2f} | {share:.0%} |")
    return "\n".join(rows)


def table(args: argparse.Namespace, by_size: dict[int, dict[str, float]], runs: dict[str, float],
          minutes: float, kib: float) -> str:
    from trickbox.data.decoding import decoder

    lines = [f"Command: `python benchmarks/decoding.py {' '.join(sys.argv[1:])}` ({minutes:.1f} min); photo-like "
             f"JPEGs of {kib:.0f} KiB on average; decoder: {decoder()}",
             *machine_lines(load_start=args.load_start), "",
             "| measure | trickbox | timm `create_loader` | ratio | target |", "|---|---|---|---|---|"]
    for size, target in ((224, "≥ 1.25"), (128, "≥ 2")):
        r = by_size[size]
        lines.append(f"| (a) stream loader, images/s, {size} px (batch {args.batch_size}, {args.workers} workers) | "
                     f"{r['trickbox']:.0f} (fast_decode=false: {r['trickbox, fast_decode=false']:.0f}) | "
                     f"{r['timm']:.0f} | {r['trickbox'] / r['timm']:.2f} | {target} |")
    fixed, prog = runs["fixed 224"], runs["progressive 128 → 224"]
    lines.append(f"| (b) whole run, {args.epochs} epochs of {args.subset} images, `{args.model}`: progressive "
                 f"128 → 224 against fixed 224, s | {prog:.1f} | fixed {fixed:.1f} | {prog / fixed:.2f} | ≤ 0.70 |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="the output folder of make_photo_like.py (holds train/ and val/)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batches", type=int, default=15, help="timed batches per round and loader")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each whole run in (b)")
    parser.add_argument("--subset", type=int, default=256, help="training images of each whole run in (b)")
    parser.add_argument("--run-rounds", type=int, default=2, help="runs of each kind in (b)")
    parser.add_argument("--model", default="resnet10t", help="the timm model of (b)")
    parser.add_argument("--costs", action="store_true", help="only (c), the per-image costs, into its own block")
    parser.add_argument("--out", type=Path, help="write the table into this Markdown file's decoding block")
    args = parser.parse_args(argv)
    if not (args.data / "train").is_dir():
        parser.error(f"{args.data}/train does not exist: make it with python benchmarks/make_photo_like.py "
                     f"{args.data}")
    args.load_start = load_average()
    if args.costs:
        t0 = time.perf_counter()
        table_c = costs(args.data)
        body = "\n".join([f"Command: `python benchmarks/decoding.py {' '.join(sys.argv[1:])}` "
                          f"({time.perf_counter() - t0:.0f} s)", *machine_lines(load_start=args.load_start), "",
                          table_c])
        print(body)
        if args.out:
            write_block(args.out, body, "decoding-costs", "What one photo-like image costs (CPU, one process)")
        return 0
    t0 = time.perf_counter()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"trickbox-decoding-{os.getpid()}"
    work.mkdir(parents=True)
    files = list((args.data / "train").rglob("*.jpg"))
    kib = sum(f.stat().st_size for f in files) / max(len(files), 1) / 1024
    by_size = {size: bench(args.data, size, rounds=args.rounds, batches=args.batches, batch_size=args.batch_size,
                           workers=args.workers) for size in (224, 128)}
    runs = bench_runs(args.data, work, rounds=args.run_rounds, epochs=args.epochs, workers=args.workers,
                      model=args.model, subset=args.subset)
    body = table(args, by_size, runs, (time.perf_counter() - t0) / 60, kib)
    print(body)
    if args.out:
        write_block(args.out, body, BLOCK, "Low resolution first (photo-like data, CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
