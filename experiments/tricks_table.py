"""The tricks table of issue 3: baseline, +cosine, +label smoothing, +mixup, +distillation, all of them.

    python experiments/tricks_table.py --zip ../shared/datasets/cifar10-jpeg.zip

Each row trains the small CIFAR ResNet on a CIFAR-10 subset for a few epochs
(sized for a 2-core CPU), for every seed; the table reports validation and
test top-1, NLL and ECE as mean ± std over seeds. Finished runs are reused, so
an interrupted table continues where it stopped.
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

from common import REPO, commit, machine, mean_std, run_training

ROWS: dict[str, list[str]] = {
    "baseline (constant LR)": [],
    "+ cosine": ["tricks.sgdr={}"],
    "+ cosine + label smoothing (ε=0.1)": ["tricks.sgdr={}", "tricks.label_smoothing.eps=0.1"],
    "+ cosine + mixup (α=0.2)": ["tricks.sgdr={}", "tricks.mixup.alpha=0.2"],
    "+ cosine + distillation (T=4)": ["tricks.sgdr={}", "tricks.distillation.teacher={teacher}", "tricks.distillation.temperature=4"],
    "all four": ["tricks.sgdr={}", "tricks.label_smoothing.eps=0.1", "tricks.mixup.alpha=0.2",
                 "tricks.distillation.teacher={teacher}", "tricks.distillation.temperature=4"],
}
COLUMNS = [("val/top1", "val top-1"), ("test/top1", "test top-1"), ("test/nll", "test NLL"), ("test/ece", "test ECE")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zip", default="../shared/datasets/cifar10-jpeg.zip")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--train-subset", type=int, default=10000)
    p.add_argument("--model", default="cifar_resnet8")
    p.add_argument("--teacher-model", default="cifar_resnet20")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--work", default="runs/tricks_table")
    p.add_argument("--out", default="docs/results/tricks.md")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (a GPU has room for several small runs)")
    args = p.parse_args()
    work = (REPO / args.work).resolve()
    base = ["data.name=imagefolder", f"data.root={Path(args.zip).resolve()}", f"data.train_subset={args.train_subset}",
            f"train.epochs={args.epochs}", "train.batch_size=128", "optim.lr=0.1", "tricks=null"]
    t_start = time.perf_counter()
    _, teacher_s = run_training([*base, f"model.name={args.teacher_model}", "tricks.sgdr={}"], work, "teacher")
    teacher = work / "teacher"
    jobs = []
    for row, extra in ROWS.items():
        for seed in args.seeds:
            name = f"{row.split('(')[0].strip().replace(' ', '').replace('+', 'p')}-s{seed}"
            overrides = [*base, f"model.name={args.model}", f"train.seed={seed}", *(e.replace("{teacher}", str(teacher)) for e in extra)]
            jobs.append((row, seed, overrides, name))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(lambda j: run_training(j[2], work, j[3]), jobs))
    results: dict[str, list[dict]] = {}
    walls: dict[str, float] = {}
    for (row, seed, _, _), (summary, secs) in zip(jobs, done):
        results.setdefault(row, []).append(summary)
        walls[row] = walls.get(row, 0.0) + secs
        print(f"{row} seed {seed}: test top-1 {summary['test/top1']:.4f}", flush=True)
    total = time.perf_counter() - t_start
    lines = [
        "# The tricks on CIFAR-10 (JPEG copy), CPU scale",
        "",
        f"`{args.model}` on {args.train_subset:,} training images, {args.epochs} epochs, batch 128, SGD (Nesterov, lr 0.1, "
        f"wd 5e-4); validation = 10 % of the training images in the zip, carved first (seeded); test = the test images in the zip. "
        f"Mean ± std over seeds {args.seeds}. Distillation teacher: `{args.teacher_model}`, same data and epochs, "
        f"cosine decay ({teacher_s:.0f} s).",
        "",
        "| row | " + " | ".join(c[1] for c in COLUMNS) + " | wall time (all seeds) |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for row, runs in results.items():
        cells = [mean_std([r[key] for r in runs]) for key, _ in COLUMNS]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {walls[row]:.0f} s |")
    lines += [
        "",
        f"- Command: `python experiments/tricks_table.py --zip {args.zip} --epochs {args.epochs} "
        f"--train-subset {args.train_subset} --seeds {' '.join(map(str, args.seeds))} --jobs {args.jobs}`",
        f"- Commit: {commit()}; date: {date.today()}",
        f"- Machine: {machine()}",
        f"- Wall time: {total / 60:.1f} min in all (runs reused from an earlier invocation count with their own time).",
        "",
    ]
    out = Path(args.out) if Path(args.out).is_absolute() else REPO / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
