"""What a sweep adds to a training run: per-trial overhead inside a worker, and start-up per sweep.

    python benchmarks/sweep_overhead.py            # 5 rounds, smoke config (digits, 2 epochs)
    python benchmarks/sweep_overhead.py --quick    # 2 rounds, 1 epoch on 300 images

In one process, rounds alternate (A B, B A, ...) between

* A: ``train(cfg)`` as ``trickbox train`` runs it (its own Accelerator), and
* B: one trial of a sweep in a worker: ``Coordinator.next_trial`` (lock, reap, ask,
  sample, user attrs) → ``run_trial`` (config, tricks, ``train`` with the epoch
  reporter and ``trial.report``) → ``Coordinator.finish`` (tell, clean-up),

on the same config. The per-trial overhead is timed directly inside B (ask, report,
the work around ``train()``, finish), since A and B differ by seconds of training
noise on a busy machine; median(B) − median(A) is shown too. Then, once,
the whole commands in fresh processes: ``trickbox train`` against ``trickbox sweep
--n-trials 1`` (one worker runs inside the sweep process; journal storage), whose
difference is paid once per sweep, not per trial (each extra worker process of
``--workers N`` adds its own start-up, in parallel). Tracking is off
in both (W&B costs the same in and out of a sweep). Prints a Markdown table and,
last, a JSON line ``{"overhead_s": ...}``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SPEC = REPO / "sweeps" / "smoke.yaml"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 rounds, 1 epoch on 300 images")
    p.add_argument("--rounds", type=int, default=None)
    args = p.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    overrides = ["train.epochs=1", "data.train_subset=300", "data.test_subset=100"] if args.quick else []
    os.environ.setdefault("WANDB_MODE", "disabled")

    import torch

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    from trickbox.config import load_config
    from trickbox.loop import train
    from trickbox.sweep.distributed import LocalChannel
    from trickbox.sweep.spec import load_spec
    from trickbox.sweep.storage import resolve_storage
    from trickbox.sweep.study import Coordinator
    from trickbox.sweep.trials import TrainRunner
    from trickbox.sweep.workers import make_sweep_accelerator

    tmp = Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    spec = load_spec(SPEC, overrides, study="overhead", n_trials=10_000)
    study_dir = tmp / "out" / "overhead"
    t0 = time.perf_counter()
    coordinator = Coordinator(spec, resolve_storage(None, study_dir), study_dir, worker="bench")
    create_s = time.perf_counter() - t0
    accelerator = make_sweep_accelerator(spec, distributed=False)

    def plain() -> float:
        cfg = load_config(base=spec.trial_mapping({}))
        cfg.train.out_dir, cfg.train.progress = str(tmp / "plain"), False
        start = time.perf_counter()
        train(cfg)
        return time.perf_counter() - start

    import trickbox.loop as loop

    parts: list[dict[str, float]] = []
    inner = {"train": 0.0, "report": 0.0}
    real_train, real_report = loop.train, coordinator.report

    def timed_train(*a, **k):  # TrainRunner imports loop.train when it runs, so this wrapper is what it calls
        start = time.perf_counter()
        try:
            return real_train(*a, **k)
        finally:
            inner["train"] += time.perf_counter() - start

    def timed_report(*a, **k):
        start = time.perf_counter()
        try:
            return real_report(*a, **k)
        finally:
            inner["report"] += time.perf_counter() - start

    loop.train, coordinator.report = timed_train, timed_report

    runner = TrainRunner(spec, accelerator, LocalChannel(), coordinator.report, progress=False)

    def trial() -> float:
        inner.update(train=0.0, report=0.0)
        start = time.perf_counter()
        done = coordinator.run_one(runner)
        assert done is not None
        end = time.perf_counter()
        parts.append({"around_train": end - start - inner["train"] - inner["report"], "report": inner["report"],
                      "train": inner["train"]})
        return end - start

    plain()  # warm-up: imports, dataset cache, first allocations
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds):
        order = (plain, trial) if r % 2 == 0 else (trial, plain)
        for fn in order:
            (a if fn is plain else b).append(fn())
    coordinator.close()
    loop.train = real_train
    a_med, b_med = statistics.median(a), statistics.median(b)
    part = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
    # What the sweep adds to a trial, timed directly (training time, which is noisy, is left out).
    overhead = part["around_train"] + part["report"]

    cfg_file = tmp / "plain.yaml"
    import yaml

    cfg_file.write_text(yaml.safe_dump(load_config(base=spec.trial_mapping({})).to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}

    def cli(cmd: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "trickbox", *cmd], check=True, env=env, capture_output=True)
        return time.perf_counter() - t0

    cli_rounds = 1 if args.quick else 3
    c_train: list[float] = []
    c_sweep: list[float] = []
    for r in range(cli_rounds):  # alternate, like the in-process rounds
        jobs = [("train", ["train", "-c", str(cfg_file), f"train.out_dir={tmp / 'cli'}"]),
                ("sweep", ["sweep", str(SPEC), *overrides, "--n-trials", "1", "--study", f"cli{r}",
                           "--out-dir", str(tmp / "cli-sweep")])]
        for kind, cmd in (jobs if r % 2 == 0 else jobs[::-1]):
            (c_train if kind == "train" else c_sweep).append(cli(cmd))
    cli_train, cli_sweep = statistics.median(c_train), statistics.median(c_sweep)

    startup = cli_sweep - cli_train
    rows = [
        (f"train(cfg) alone (`trickbox train` in-process), median of {rounds}", a_med),
        (f"one sweep trial in a worker, median of {rounds}", b_med),
        ("  of which train() itself", part["train"]),
        ("  trial.report + should_prune, every epoch", part["report"]),
        ("  the rest: lock, reap, ask, sample, attrs, config, tricks, rank files, tell, free_memory",
         part["around_train"]),
        ("**overhead per trial** (the two lines above)", overhead),
        ("create/join the study (once per worker)", create_s),
        (f"`trickbox train` (new process), median of {cli_rounds}", cli_train),
        (f"`trickbox sweep --n-trials 1` (one worker, inside the sweep process), median of {cli_rounds}", cli_sweep),
        ("start-up per sweep: the difference (paid once, not per trial; within noise)", startup),
    ]
    print(f"Sweep overhead ({'quick' if args.quick else 'full'}; {spec.base.get('data', {}).get('name')}, "
          f"load average {', '.join(f'{v:.1f}' for v in os.getloadavg())}):\n")
    print("| what | seconds |")
    print("|---|---|")
    for what, sec in rows:
        print(f"| {what} | {sec:.2f} |")
    print(f"\nall A (train): {', '.join(f'{x:.2f}' for x in a)}; all B (trial): {', '.join(f'{x:.2f}' for x in b)}")
    print(f"median(B) - median(A) = {b_med - a_med:.2f} s (training noise included)")
    print(json.dumps({"overhead_s": round(overhead, 3), "startup_s": round(startup, 3), "train_s": round(a_med, 3),
                      "trial_s": round(b_med, 3), "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
