"""The stream path, measured in one run on ImageNet-shaped data (``make_imagenet_like.py``):

(a) trickbox's streaming training loader against timm's own (``create_dataset`` + ``create_loader``) over the same
    class folders, with the same transforms (RandomResizedCrop 224, flip, no colour jitter), batch size and
    workers; rounds alternate which loader goes first, and each loader's number is its median round.
(b) peak RSS of ``trickbox train`` (one epoch, stream path) on 2,000 training images against all of them: the
    training process and its largest DataLoader worker, each run in a fresh process.
(c) the CIFAR-10 zip under ``data.loader=auto``: which path it takes, and the time to open its data against
    ``data.loader=memory`` (decode cache warm, alternating rounds).

    python benchmarks/make_imagenet_like.py /tmp/imagenet_like        # 20,000 JPEGs + shards, ~30 s
    python benchmarks/streaming.py /tmp/imagenet_like --out docs/performance.md   # ~6 min on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from common import DEFAULT_ZIP, load_average, machine_lines

HERE = Path(__file__).resolve().parent
BLOCK = "streaming"


def images_per_s(batches: Iterable[Any], count: int) -> float:
    """Images per second over ``count`` batches after the first (which pays for starting the workers)."""
    it = iter(batches)
    next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(count):
        x = next(it)[0]
        n += len(x)
    return n / (time.perf_counter() - t0)


def loader_pair(folder: Path, *, batch_size: int, workers: int) -> dict[str, Callable[[], Iterable[Any]]]:
    """Fresh epochs of trickbox's stream loader and timm's loader over ``folder/train``."""
    from timm.data import create_dataset, create_loader

    from trickbox.data import DataConfig, LoaderOptions, open_run_data

    cfg = DataConfig(name="imagefolder", root=str(folder), loader="stream", image_size=224, workers=workers)
    ours = open_run_data(cfg, LoaderOptions(batch_size=batch_size, eval_batch_size=batch_size, seed=0)).train
    dataset = create_dataset("", root=str(folder / "train"), is_training=True)
    theirs = create_loader(dataset, input_size=(3, 224, 224), batch_size=batch_size, is_training=True,
                           use_prefetcher=True, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5, color_jitter=0.0,
                           num_workers=workers, device=torch.device("cpu"), pin_memory=False, persistent_workers=True)
    epoch = [0]

    def trickbox_epoch() -> Iterable[Any]:
        epoch[0] += 1
        ours.set_epoch(epoch[0])
        return ours.batches()

    return {"trickbox": trickbox_epoch, "timm": lambda: iter(theirs)}


def bench_loaders(folder: Path, *, rounds: int, batches: int, batch_size: int, workers: int) -> dict[str, float]:
    """Median images/s of each loader over ``rounds`` alternating rounds of ``batches`` batches."""
    pair = loader_pair(folder, batch_size=batch_size, workers=workers)
    results: dict[str, list[float]] = {name: [] for name in pair}
    for r in range(rounds):
        names = list(pair) if r % 2 == 0 else list(reversed(pair))
        for name in names:
            results[name].append(images_per_s(pair[name](), batches))
            print(f"  round {r + 1}/{rounds} {name}: {results[name][-1]:.0f} images/s", file=sys.stderr)
    return {name: statistics.median(v) for name, v in results.items()}


PEAK = """
import json, resource, sys
from trickbox.cli import main
code = main(sys.argv[2:])
print(json.dumps({"main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "code": code}),
      file=open(sys.argv[1], "w"))
"""


def peak_rss(folder: Path, work: Path, subset: int | None, *, workers: int) -> dict[str, float]:
    """Peak RSS (MiB) of one streamed epoch of ``trickbox train`` in a fresh process, and its largest worker."""
    out = work / f"peak-{subset or 'all'}.json"
    args = ["train", "--tracker", "none", "data.name=imagefolder", f"data.root={folder}", "data.loader=stream",
            "data.image_size=64", f"data.workers={workers}", "model.name=cifar_resnet8", "train.epochs=1",
            "train.batch_size=64", "train.eval_batch_size=256", "train.progress=false",
            f"train.out_dir={work / 'runs'}", *([f"data.train_subset={subset}"] if subset else [])]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", PEAK, str(out), *args], check=True, cwd=work,
                   env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"})
    peak = json.loads(out.read_text())
    return {"main": peak["main"] / 1024, "worker": peak["worker"] / 1024, "seconds": time.perf_counter() - t0}


def bench_cifar_auto(zip_path: Path, *, rounds: int) -> dict[str, Any]:
    """The path ``auto`` takes for the CIFAR-10 zip, and its median data-open time against ``loader=memory``."""
    from trickbox.data import DataConfig, LoaderOptions, open_run_data

    def open_with(loader: str) -> tuple[str, float]:
        cfg = DataConfig(name="imagefolder", root=str(zip_path), loader=loader)
        t0 = time.perf_counter()
        data = open_run_data(cfg, LoaderOptions(batch_size=128, eval_batch_size=256, seed=0))
        return data.path, time.perf_counter() - t0

    open_with("memory")  # fills the decode cache both then read
    times: dict[str, list[float]] = {"auto": [], "memory": []}
    path = ""
    for r in range(rounds):
        for loader in (("auto", "memory") if r % 2 == 0 else ("memory", "auto")):
            chosen, seconds = open_with(loader)
            path = chosen if loader == "auto" else path
            times[loader].append(seconds)
    return {"path": path, **{k: statistics.median(v) for k, v in times.items()}}


def table(args: argparse.Namespace, loaders: dict[str, float], small: dict[str, float], full: dict[str, float],
          n_small: int, n_full: int, cifar: dict[str, Any], minutes: float) -> str:
    ratio = loaders["trickbox"] / loaders["timm"]
    rss = full["main"] / small["main"]
    lines = [
        f"Command: `python benchmarks/streaming.py {' '.join(sys.argv[1:])}` ({minutes:.1f} min)",
        *machine_lines(load_start=args.load_start),
        "",
        "| measure | trickbox | reference | ratio | target |",
        "|---|---|---|---|---|",
        f"| (a) streaming loader, images/s (224 px, batch {args.batch_size}, {args.workers} workers) | "
        f"{loaders['trickbox']:.0f} | timm `create_loader` {loaders['timm']:.0f} | {ratio:.3f} | ≥ 0.95 |",
        f"| (b) peak RSS of `trickbox train`, 1 epoch streamed, MiB: training process | {n_full:,} images: "
        f"{full['main']:.0f} | {n_small:,} images: {small['main']:.0f} | {rss:.3f} | within 1 ± 0.15 |",
        f"| (b) largest DataLoader worker, MiB | {full['worker']:.0f} | {small['worker']:.0f} | "
        f"{full['worker'] / small['worker']:.3f} | |",
        f"| (c) CIFAR-10 zip under `data.loader=auto`: path | {cifar['path']} | | | memory |",
        f"| (c) data open (decode cache warm), s | auto {cifar['auto']:.2f} | memory {cifar['memory']:.2f} | "
        f"{cifar['auto'] / cifar['memory']:.3f} | ≤ 1.05 |",
    ]
    return "\n".join(lines)


def write_block(path: Path, body: str, block: str = BLOCK,
                title: str = "Streaming (ImageNet-shaped data, CPU)") -> None:
    """Replace the text between ``<!-- block -->`` and ``<!-- /block -->`` in ``path`` (appended under ``## title``
    if absent)."""
    start, end = f"<!-- {block} -->", f"<!-- /{block} -->"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    marked = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + marked + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + f"\n\n## {title}\n\n{marked}\n"
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="the output folder of make_imagenet_like.py (holds folder/ and wds/)")
    parser.add_argument("--zip", type=Path, default=DEFAULT_ZIP, help="the CIFAR-10 JPEG zip for (c)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per round and loader")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--small", type=int, default=2000, help="training images of the small run in (b)")
    parser.add_argument("--out", type=Path, help="write the table into this Markdown file's streaming block")
    args = parser.parse_args(argv)
    folder = args.data / "folder"
    if not (folder / "train").is_dir():
        parser.error(f"{folder}/train does not exist: make it with python benchmarks/make_imagenet_like.py {args.data}")
    if not args.zip.is_file():
        parser.error(f"--zip {args.zip} does not exist: give the CIFAR-10 JPEG zip")
    args.load_start = load_average()
    t0 = time.perf_counter()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"trickbox-streaming-{os.getpid()}"
    work.mkdir(parents=True)
    print("(a) loaders", file=sys.stderr)
    loaders = bench_loaders(folder, rounds=args.rounds, batches=args.batches, batch_size=args.batch_size,
                            workers=args.workers)
    print("(b) peak RSS", file=sys.stderr)
    small = peak_rss(folder, work, args.small, workers=args.workers)
    full = peak_rss(folder, work, None, workers=args.workers)
    n_full = sum(1 for _ in (folder / "train").rglob("*.jpg"))
    n_full -= round(0.1 * n_full)  # the validation images carved from train/
    print("(c) CIFAR-10 zip under auto", file=sys.stderr)
    cifar = bench_cifar_auto(args.zip, rounds=args.rounds)
    body = table(args, loaders, small, full, args.small, n_full, cifar, (time.perf_counter() - t0) / 60)
    print(body)
    if args.out:
        write_block(args.out, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
