"""``trickbox sweep SPEC``: run an Optuna study with N worker processes, or as one rank of distributed trials."""
from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError

DEFAULT_OUT = "sweeps_out"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep", help="run an Optuna study from a spec (sweeps/*.yaml) with N worker processes",
        description="Run the study SPEC describes. Workers share the study through its storage: a journal file "
                    "under --out-dir by default, or --storage postgresql://... for workers on many machines.",
    )
    p.add_argument("spec", metavar="SPEC", help="study spec, e.g. sweeps/smoke.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the spec's base config, e.g. train.epochs=1")
    p.add_argument("--workers", default="1", metavar="N",
                   help="worker processes (auto: one per GPU, 1 on CPU); default 1")
    p.add_argument("--workers-per-gpu", type=int, default=1, metavar="K",
                   help="with --workers auto: K workers share each GPU (small models that cannot fill one); default 1")
    p.add_argument("--storage", metavar="URL", help="postgresql://USER@HOST/DB, sqlite:///FILE or a journal file "
                   "(default: OUT_DIR/STUDY/journal.log)")
    p.add_argument("--study", metavar="NAME", help="study name (default: the spec's study:, else its file name)")
    p.add_argument("--n-trials", type=int, metavar="K", help="override the spec's n_trials")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="override the spec's timeout (from now)")
    p.add_argument("--out-dir", default=DEFAULT_OUT, metavar="DIR",
                   help=f"where trial runs and the journal go (default {DEFAULT_OUT})")
    p.add_argument("--script", metavar="PATH",
                   help="run this training script for each trial, e.g. \"examples/own_loop.py --epochs 2\" (it reads "
                        "trickbox.sweep.current_trial())")
    p.add_argument("--launch", metavar="CMD",
                   help='with --script: launcher command, e.g. "accelerate launch --multi_gpu --num_processes 2"')
    p.add_argument("--max-restarts", type=int, default=3, metavar="R",
                   help="restart a crashed worker at most R times (default 3)")
    p.add_argument("--distributed-trial", action="store_true",
                   help="this process is one rank of every trial (what `accelerate launch train.py --sweep SPEC` runs)")
    p.add_argument("--as-worker", type=int, metavar="I", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    p.add_argument("--quiet-trials", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..sweep.spec import load_spec
    from ..sweep.storage import resolve_storage

    if args.launch and not args.script:
        raise ConfigError("--launch starts --script under a launcher; give --script PATH too")
    if args.script and (not shlex.split(args.script) or not Path(shlex.split(args.script)[0]).is_file()):
        raise ConfigError(f"--script {args.script!r} does not exist; pass the path of your training script (and its "
                          "arguments, quoted)")
    if args.distributed_trial and args.script:
        raise ConfigError("--distributed-trial trains trickbox's own loop on every rank; for your script use --script "
                          "with --launch")
    if args.distributed_trial and args.workers != "1":
        raise ConfigError("--workers starts worker processes; under accelerate launch every rank runs each trial, so "
                          "drop --workers")
    if args.max_restarts < 0:
        raise ConfigError(f"--max-restarts must be >= 0, got {args.max_restarts}")
    if args.workers_per_gpu < 1 or (args.workers_per_gpu > 1 and args.workers != "auto"):
        raise ConfigError(f"--workers-per-gpu {args.workers_per_gpu} needs --workers auto and must be >= 1; "
                          "e.g. --workers auto --workers-per-gpu 4")
    spec = load_spec(args.spec, args.overrides, study=args.study, n_trials=args.n_trials, timeout=args.timeout,
                     script=bool(args.script))
    study_dir = Path(args.out_dir).resolve() / spec.study
    target = resolve_storage(args.storage, study_dir)
    deadline = args.deadline if args.deadline is not None else (time.time() + spec.timeout if spec.timeout else None)
    try:
        return _dispatch(args, spec, target, study_dir, deadline)
    except Exception as exc:
        from ..sweep.storage import journal_damage

        damage = journal_damage(target, study_dir, exc)
        if damage is None:
            raise
        raise damage from None


def _dispatch(args: argparse.Namespace, spec: Any, target: Any, study_dir: Path, deadline: float | None) -> int:
    """Run as a worker, as one rank of a distributed trial, or as the supervisor of ``--workers`` workers."""
    if args.as_worker is not None:
        from ..sweep.workers import run_worker

        return run_worker(spec, target, study_dir, index=args.as_worker, deadline=deadline,
                          progress=not args.quiet_trials, script=args.script, launch=args.launch)
    if args.distributed_trial:
        from ..sweep.workers import run_distributed

        return run_distributed(spec, target, study_dir, deadline=deadline)
    from ..sweep.workers import supervise

    storage = str(target.journal) if target.kind == "journal" else target.url
    worker_args = [args.spec, *args.overrides, "--storage", storage, "--study", spec.study, "--out-dir",
                   str(Path(args.out_dir).resolve())]
    if args.n_trials is not None:
        worker_args += ["--n-trials", str(args.n_trials)]
    if deadline is not None:
        worker_args += ["--deadline", repr(deadline)]
    if args.script:
        worker_args += ["--script", args.script]
    if args.launch:
        worker_args += ["--launch", args.launch]
    return supervise(spec, target, study_dir, workers=args.workers, worker_args=worker_args, deadline=deadline,
                     max_restarts=args.max_restarts, script=args.script, launch=args.launch,
                     per_gpu=args.workers_per_gpu)
