"""trickbox's CPU benchmarks: overhead against a plain loop and timm's parts, data loading, KNN, sweeps.

    python benchmarks/run.py                          # full run (~15 min on 2 cores), writes docs/performance.md
    python benchmarks/run.py --threads 1 --block results-threads1 --skip knn --skip sweep
    python benchmarks/run.py --quick --out /tmp/p.md  # tiny settings, for the smoke test

Everything compared runs in this one process on the same model, data and batch
size, with the variants alternating in rounds (see ``common.interleave``); a
variant's number is its median step time. The Markdown table (targets next to
measured values) goes to stdout and to ``--out``: between the markers
``<!-- results:start -->`` and ``<!-- results:end -->`` (``--block`` names
another pair), which are appended if missing; the rest of the file, the
hand-written notes, is kept.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
try:
    import trickbox  # noqa: F401
except ImportError:  # pragma: no cover - run from a checkout without pip install
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from common import DEFAULT_ZIP, Row, human_bytes, machine_lines, markdown_table, ms, rows_table, save_teacher  # noqa: E402

KNN_SECONDS = 120.0
KNN_BYTES = 2 * 2**30
SWEEP_SECONDS = 2.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="trickbox CPU benchmarks (see docs/performance.md)")
    p.add_argument("--quick", action="store_true",
                   help="tiny settings: checks that everything runs, numbers mean nothing")
    p.add_argument("--out", default=str(REPO / "docs" / "performance.md"),
                   help="Markdown file to write (default docs/performance.md)")
    p.add_argument("--data", default=str(DEFAULT_ZIP), help="CIFAR-10 ImageFolder zip (default: the shared one)")
    p.add_argument("--model", default="cifar_resnet8", help="student model (default cifar_resnet8)")
    p.add_argument("--teacher", default="cifar_resnet20",
                   help="teacher model for distillation, random weights (default cifar_resnet20)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default 128; quick 16)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--rounds", type=int, default=None, help="rounds of the step benchmark (default 10; quick 1)")
    p.add_argument("--steps", type=int, default=None, help="steps per variant per round (default 5; quick 1)")
    p.add_argument("--loader-per-class", type=int, default=None,
                   help="images per class for the loader row (default 800; quick 10)")
    p.add_argument("--loader-rounds", type=int, default=None, help="epochs per loader (default 5; quick 1)")
    p.add_argument("--knn-n", type=int, default=None, help="images for the KNN row (default 50000; quick 500)")
    p.add_argument("--knn-k", type=int, default=None, help="neighbours for the KNN row (default 200; quick 5)")
    p.add_argument("--block", default="results", help="name of the marked block of --out to replace (default results)")
    p.add_argument("--skip", action="append", default=[], choices=("steps", "loaders", "knn", "sweep"),
                   help="leave a section out")
    args = p.parse_args(argv)
    q = args.quick
    defaults = {"batch_size": (128, 16), "rounds": (10, 1), "steps": (5, 1), "loader_per_class": (800, 10),
                "loader_rounds": (5, 1), "knn_n": (50000, 500), "knn_k": (200, 5)}
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if q else full)
    return args


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------


def step_batches(data_zip: Path | None, work: Path, batch_size: int,
                 count: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], str]:
    """``count`` augmented, normalised CIFAR batches (random images when there is no data)."""
    if data_zip is not None:
        from make_subset_zip import make_subset_zip

        from trickbox.data import DataConfig, InMemoryLoader, load_dataset

        sub = work / "steps.zip"
        make_subset_zip(data_zip, sub, per_class=-(-count * batch_size // 10), test_per_class=1)
        data = load_dataset(DataConfig(name="imagefolder", root=str(sub), val_fraction=0.0,
                                       cache_dir=str(work / "cache")), progress=False)
        loader = InMemoryLoader(data.train_x, data.train_y, batch_size=batch_size, device="cpu", mean=data.mean,
                                std=data.std, drop_last=True)
        return [(x, y) for x, y, _ in loader][:count], "CIFAR-10 training images"
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(batch_size, 3, 32, 32, generator=g),
             torch.randint(0, 10, (batch_size,), generator=g)) for _ in range(count)], "random tensors (no CIFAR zip)"


def bench_steps(args: argparse.Namespace, data_zip: Path | None, work: Path) -> tuple[list[Row], str]:
    from common import interleave
    from steps import StepSetup, build_variants

    batches, source = step_batches(data_zip, work, args.batch_size, 4)
    teacher_dir = save_teacher(args.teacher, work / "teacher")
    setup = StepSetup(model_name=args.model, teacher_dir=teacher_dir, batches=batches)
    variants = build_variants(setup)
    log(f"steps: {len(variants)} variants x {args.rounds} rounds x {args.steps} steps, batch {args.batch_size}, "
        f"{source}")
    t = interleave(variants, rounds=args.rounds, calls=args.steps, warmup=1 if args.quick else 2, progress=log)
    med = {k: v.median for k, v in t.items()}
    a, b, c, c3, d, d3, tf = (med[k] for k in ("a_plain", "b_trickbox", "c_tricks", "c_nokd", "d_timm", "d_nokd",
                                               "teacher"))
    cpu = {k: v.cpu_median for k, v in t.items()}
    kd_extra = c - c3
    three = (c3 - b) / b
    rows = [
        Row("(b)/(a) step time: TrickSet without tricks vs plain Accelerate loop", f"{b / a:.3f} ({ms(b)} vs {ms(a)})",
            "≤ 1.03", b / a <= 1.03, f"CPU-time ratio {cpu['b_trickbox'] / cpu['a_plain']:.3f}"),
        Row("(c)/(d) step time: trickbox's four tricks vs the same from timm parts",
            f"{c / d:.3f} ({ms(c)} vs {ms(d)})", "≤ 1.00", c / d <= 1.00,
            f"CPU-time ratio {cpu['c_tricks'] / cpu['d_timm']:.3f}; without distillation: {c3 / d3:.3f} ({ms(c3)} vs "
            f"{ms(d3)})"),
        Row("mixup + label smoothing + SGDR over (b), share of step time",
            f"{three * 100:+.1f} % ({ms(c3)} vs {ms(b)})", "≤ 3 %", three <= 0.03,
            f"CPU time {(cpu['c_nokd'] - cpu['b_trickbox']) / cpu['b_trickbox'] * 100:+.1f} %; timm's parts over (a): "
            f"{(d3 - a) / a * 100:+.1f} %"),
        Row("distillation: extra step time of (c) over (c without distillation)",
            f"{ms(kd_extra)} = {kd_extra / tf:.2f} teacher forwards", f"≤ 1 teacher forward ({ms(tf)})", kd_extra <= tf,
            f"CPU time {(cpu['c_tricks'] - cpu['c_nokd']) / cpu['teacher']:.2f} teacher forwards; timm inline: "
            f"{(d - d3) / tf:.2f}; teacher {args.teacher}"),
    ]
    detail = markdown_table(
        ("variant", "median step", "IQR", "median CPU time", "images/s", "page faults/step", "steps timed"),
        ((k, ms(v.median), f"{ms(v.iqr[0])} – {ms(v.iqr[1])}", ms(v.cpu_median), f"{args.batch_size / v.median:.0f}",
          f"{v.faults_per_call:,.0f}", str(len(v.seconds))) for k, v in t.items()),
    )
    return rows, (f"Step times ({args.model}, batch {args.batch_size}, {source}; `teacher` is one {args.teacher} "
                  f"forward pass):\n\n{detail}")


def bench_loader_section(args: argparse.Namespace, data_zip: Path, work: Path) -> list[Row]:
    from loading import bench_loaders

    r = bench_loaders(data_zip, work / "loaders", per_class=args.loader_per_class, rounds=args.loader_rounds,
                      batch_size=args.batch_size, log=log)
    return [
        Row(f"(e) loader images/s, trickbox InMemoryLoader vs ImageFolder+DataLoader(2 workers), {r.images} images",
            f"{r.ratio:.1f}x ({r.trickbox_ips:,.0f} vs {r.torchvision_ips:,.0f} img/s)", "≥ 3x", r.ratio >= 3.0,
            f"crop+flip+normalise, batch {args.batch_size}"),
        Row("(e) trickbox one-time JPEG decode (not in the number above)",
            f"{r.decode_s:.1f} s = {r.images / r.decode_s:,.0f} img/s", "", None,
            f"zip extraction for ImageFolder: {r.extract_s:.1f} s"),
    ]


def bench_knn_section(args: argparse.Namespace, data_zip: Path, work: Path) -> list[Row]:
    cache: list[str] = []
    if args.quick:  # a small subset instead of decoding all 60,000 images
        from make_subset_zip import make_subset_zip

        data_zip = work / "knn.zip"
        make_subset_zip(args.data, data_zip, per_class=-(-args.knn_n // 10), test_per_class=1)
        cache = ["--cache-dir", str(work / "cache")]
    rows = []
    for same in (False, True):
        cmd = [sys.executable, str(HERE / "knn.py"), "--data", str(data_zip), "--n", str(args.knn_n), "--k",
               str(args.knn_k), "--threads", str(args.threads), *cache]
        if same:
            cmd.append("--same-class")
        log("knn: " + " ".join(shlex.quote(c) for c in cmd[1:]))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            rows.append(Row(f"KNN table ({'same class' if same else 'all classes'})", "failed", "", False, tail))
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        what = (f"KNN table, {r['n']:,} images x {r['dim']} dims, k={r['k']}, "
                + ("same class (SC+KNN)" if same else "all classes"))
        ok = r["seconds"] < KNN_SECONDS and r["extra_rss"] < KNN_BYTES
        rows.append(Row(what, f"{r['seconds']:.1f} s, +{human_bytes(r['extra_rss'])} peak RSS", "< 2 min, < 2 GiB", ok,
                        f"RSS after loading {human_bytes(r['baseline_rss'])}, peak {human_bytes(r['peak_rss'])}; "
                        f"loading took {r['load_s']:.0f} s"))
    return rows


def bench_sweep_section(args: argparse.Namespace) -> tuple[list[Row], str]:
    script = HERE / "sweep_overhead.py"
    if not script.is_file():
        return [Row("sweep-trial overhead", "see sweep_overhead.py", "< 2 s", None, "script not present")], ""
    cmd = [sys.executable, str(script)] + (["--quick"] if args.quick else [])
    log("sweep: " + " ".join(cmd[1:]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=REPO)
    except subprocess.TimeoutExpired:
        return [Row("sweep-trial overhead", "timed out", "< 2 s", False, "see sweep_overhead.py")], ""
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        return [Row("sweep-trial overhead", "failed to run", "< 2 s", None, f"see sweep_overhead.py: {tail}")], ""
    lines = proc.stdout.strip().splitlines()
    table = "\n".join(ln for ln in lines if ln.lstrip().startswith("|"))
    for line in reversed(lines):  # the script ends with a JSON summary line
        try:
            r = json.loads(line)
        except ValueError:
            continue
        sec = r.get("overhead_s") if isinstance(r, dict) else None
        if isinstance(sec, (int, float)):
            start = r.get("startup_s")
            note = "from sweep_overhead.py" + (f"; once per sweep: {start:.1f} s start-up"
                                               if isinstance(start, (int, float)) else "")
            return [Row("sweep-trial overhead per trial", f"{sec:.2f} s", "< 2 s", sec < SWEEP_SECONDS, note)], table
    return [Row("sweep-trial overhead", "see table below", "< 2 s", None, "from sweep_overhead.py")], table


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def render(args: argparse.Namespace, rows: list[Row], extras: list[str], argv: list[str], seconds: float,
           load_start: str, load_end: str) -> str:
    env = "".join(f"{k}={os.environ[k]} " for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
                  if k in os.environ)
    command = env + "python benchmarks/run.py" + "".join(" " + shlex.quote(a) for a in argv)
    parts = [
        f"Command: `{command}` ({seconds / 60:.1f} min)",
        "",
        *machine_lines([f"load average at end: {load_end}"] + _env_lines()
                       + (["QUICK MODE: tiny settings, the numbers are not meaningful"] if args.quick else []),
                       load_start=load_start),
        "",
        rows_table(rows),
    ]
    for e in extras:
        if e:
            parts += ["", e]
    return "\n".join(parts) + "\n"


def _env_lines() -> list[str]:
    keys = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD", "OMP_NUM_THREADS")
    found = [f"{k}={os.environ[k]}" for k in keys if k in os.environ]
    return [f"environment: {' '.join(found)}"] if found else ["environment: default glibc malloc"]


def write_out(path: Path, body: str, name: str = "results") -> None:
    """Replace the block between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` of ``path``, or append it."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body}{end}\n"
    text = path.read_text() if path.is_file() else "# Performance\n\nGenerated by `benchmarks/run.py`.\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        path.write_text(head + block + ("\n" + tail if tail else ""))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n\n" + block)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data_zip: Path | None = Path(args.data) if args.data and Path(args.data).is_file() else None
    if data_zip is None:
        log(f"no CIFAR zip at {args.data}: steps use random tensors, loader and KNN rows are skipped")
    from common import load_average

    load_start = load_average()
    t_start = time.perf_counter()
    rows: list[Row] = []
    extras: list[str] = []
    with tempfile.TemporaryDirectory(prefix="trickbox-bench-") as tmp:
        work = Path(tmp)
        if "steps" not in args.skip:
            r, detail = bench_steps(args, data_zip, work)
            rows += r
            extras.append(detail)
        if "loaders" not in args.skip:
            rows += (bench_loader_section(args, data_zip, work) if data_zip
                     else [Row("(e) loaders", "skipped: no CIFAR zip", "≥ 3x")])
        if "knn" not in args.skip:
            rows += (bench_knn_section(args, data_zip, work) if data_zip
                     else [Row("KNN table", "skipped: no CIFAR zip", "< 2 min, < 2 GiB")])
        if "sweep" not in args.skip:
            r, table = bench_sweep_section(args)
            rows += r
            extras.append(f"From `benchmarks/sweep_overhead.py`:\n\n{table}" if table else "")
    body = render(args, rows, extras, argv, time.perf_counter() - t_start, load_start, load_average())
    print(body)
    write_out(Path(args.out), body, args.block)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
