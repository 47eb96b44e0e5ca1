"""``trickbox ablate``: which of these tricks help on my data? Rows from the run config, seeds until decided."""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .sweep import DEFAULT_OUT

SEEDS_AUTO_FIRST = 3


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ablate", help="which tricks help on your data: a baseline, rows with and without each trick, verdicts",
        description="Train the baseline (the config without --tricks) and one row per trick, paired by seed, as grid "
                    "studies on the sweep engine, and decide per trick: helps, hurts, no effect > δ or undecided "
                    "(budget). The answer: OUT_DIR/STUDY/ablation.md, report.html and forest.png.")
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="YAML run config (repeatable; later files win). Default: the embedded digits config")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the run config, e.g. "
                   "train.epochs=5 tricks.mixup.alpha=0.2")
    p.add_argument("--tricks", required=True, metavar="A,B,...", help="the tricks to judge, in order (the stack's "
                   "order); each is enabled with the config's parameters, or its defaults")
    p.add_argument("--design", default="stack", metavar="D",
                   help="stack (each trick on top of the row above), leave-one-out (the full stack minus one) or "
                        "single (each trick alone); default stack")
    p.add_argument("--seeds", default="auto", metavar="N|auto",
                   help=f"N: seeds 0..N-1 for every row, judged once; auto (default): {SEEDS_AUTO_FIRST} seeds, then "
                        "more only for comparisons still undecided, up to --max-seeds")
    p.add_argument("--max-seeds", type=int, default=8, metavar="M", help="with --seeds auto: at most M seeds (8)")
    p.add_argument("--budget", type=int, metavar="RUNS", help="train at most RUNS runs in all (rows x seeds)")
    p.add_argument("--min-effect", type=float, default=0.5, metavar="δ",
                   help="an interval within ±δ is \"no effect > δ\"; in points for accuracies (default 0.5)")
    p.add_argument("--alpha", type=float, default=0.05, metavar="A",
                   help="family-wise level of helps/hurts over the ablation's comparisons (default 0.05)")
    p.add_argument("--metric", default="val/top1", metavar="KEY",
                   help="the validation metric judged (default val/top1; the test split is only reported)")
    p.add_argument("--train-first", action="append", default=[], metavar="FILE|KEY=VALUE",
                   help="the run a trick needs trained first (distillation's teacher): the baseline config with these "
                        "files and overrides, e.g. --train-first model.name=cifar_resnet20")
    p.add_argument("--workers", default="1", metavar="N", help="worker processes (auto: one per GPU); default 1")
    p.add_argument("--storage", metavar="URL", help="postgresql://... to share the looks' studies with other machines "
                   "(default: journal files under OUT_DIR/STUDY)")
    p.add_argument("--study", metavar="NAME", help="the ablation's name (default: ablate-DESIGN-<hash of the request>, "
                   "so the same command continues the same ablation)")
    p.add_argument("--out-dir", default=DEFAULT_OUT, metavar="DIR", help=f"where it goes (default {DEFAULT_OUT})")
    p.set_defaults(func=cmd_ablate)


def _rule(args: argparse.Namespace, scale: float) -> Any:
    from ..ablation.rule import Rule

    if not 0 < args.alpha < 1:
        raise ConfigError(f"--alpha must be between 0 and 1, got {args.alpha:g}")
    if not args.min_effect > 0:
        raise ConfigError(f"--min-effect must be > 0, got {args.min_effect:g}; e.g. --min-effect 0.5")
    delta = args.min_effect / scale
    if args.seeds == "auto":
        if args.max_seeds < SEEDS_AUTO_FIRST:
            raise ConfigError(f"--max-seeds {args.max_seeds} is below the first look's {SEEDS_AUTO_FIRST} seeds; "
                              f"give --max-seeds {SEEDS_AUTO_FIRST} or more")
        return Rule(args.alpha, delta, SEEDS_AUTO_FIRST, args.max_seeds)
    if not args.seeds.isdigit() or int(args.seeds) < 2:
        raise ConfigError(f"--seeds must be auto or a number of seeds >= 2 (a paired test needs two), got "
                          f"{args.seeds!r}")
    return Rule(args.alpha, delta, int(args.seeds), int(args.seeds))


def _teacher(args: argparse.Namespace, baseline: dict[str, Any]) -> dict[str, Any] | None:
    from ..config import merged_mapping

    if not args.train_first:
        return None
    files = [a for a in args.train_first if "=" not in a]
    for f in files:
        if not Path(f).is_file():
            raise ConfigError(f"--train-first {f!r} is neither a file nor KEY=VALUE; e.g. --train-first "
                              "model.name=cifar_resnet20")
    start = copy.deepcopy(baseline)
    start["tricks"] = {k: v for k, v in (start.get("tricks") or {}).items() if v is not None}
    return merged_mapping(files, [a for a in args.train_first if "=" in a], start)


def build_request(args: argparse.Namespace) -> Any:
    from ..ablation.design import build_design, parse_tricks, with_listed
    from ..ablation.looks import Request, planned_runs
    from ..config import default_config_path, merged_mapping
    from ..registry import discover
    from ..sweep.spec import STUDY_NAME, _artifacts, _objective
    from ..sweep.workers import worker_count

    tricks = parse_tricks(args.tricks)
    design = build_design(args.design, tricks)
    metric, direction = _objective(args.metric, None)
    worker_count(args.workers, ["gpu"] if args.workers == "auto" else [])  # the one-line complaint, early
    for f in args.config:
        if not Path(f).is_file():
            raise ConfigError(f"--config {f!r} does not exist; pass a YAML run config")
    base = merged_mapping(args.config or [default_config_path()], args.overrides)
    plugins = base.get("plugins") if isinstance(base.get("plugins"), dict) else {}
    catalog = discover(block=[str(b) for b in (plugins or {}).get("block") or []])
    base = with_listed(base, tricks, catalog)
    baseline = copy.deepcopy(base)
    baseline["tricks"].update({t: None for t in tricks})
    teacher = _teacher(args, baseline)
    artifacts = _artifacts(catalog)
    for t, names in artifacts.items():
        for n in names:
            if (base["tricks"].get(t) is not None and not (base["tricks"][t] or {}).get(n)) and teacher is None:
                raise ConfigError(f"tricks.{t}.{n} names a run trained first; give it (tricks.{t}.{n}=RUN_DIR) or let "
                                  "the ablation train it from the baseline: --train-first KEY=VALUE, e.g. "
                                  "--train-first model.name=cifar_resnet20")
    scale = 100.0 if metric.split("/")[-1] in ("top1", "top5", "acc", "accuracy") else 1.0
    rule = _rule(args, scale)
    req = Request(study=args.study or "pending", base=base, design=design, metric=metric, direction=direction,
                  rule=rule, budget=args.budget, train_first=teacher,
                  artifacts={t: n for t, n in artifacts.items() if base["tricks"].get(t) is not None},
                  out_dir=Path(args.out_dir).resolve(), storage=args.storage, workers=args.workers)
    if args.study is None:
        req.study = f"ablate-{design.kind}-{req.fingerprint()[:8]}"
    if not STUDY_NAME.match(req.study) or len(req.study) > 90:
        raise ConfigError(f"--study {req.study!r} must be 1-90 letters, digits, '_', '.' or '-'")
    first = planned_runs(req, 1, design.rows)[1]
    if args.budget is not None and args.budget < first:
        raise ConfigError(f"--budget {args.budget} is below the first look's {first} runs ({len(design.rows)} rows x "
                          f"{rule.looks()[0]} seeds); raise --budget to {first} or more")
    return req


def _end_launch(code: int) -> None:
    """Under accelerate launch: the process group ends once, after the last look (never between them)."""
    if code == 0:
        from accelerate import PartialState

        state = PartialState()
        state.wait_for_everyone()  # rank 0 writes the answer first; no rank leaves while another still reads
        state.destroy_process_group()  # what Accelerator.end_training does (the trials' trackers are finished)
        import gc

        gc.collect()  # gloo work still referenced from Python must not die at interpreter shutdown (SIGABRT)


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..ablation.answer import write_record
    from ..ablation.looks import ablate, check_look, check_record, distributed, look_mapping, main_rank, say

    req = build_request(args)
    if distributed() and args.workers != "1":
        raise ConfigError("--workers starts worker processes; under accelerate launch every rank runs each trial, so "
                          "drop --workers")
    check_look(look_mapping(req, 1, req.design.rows, list(range(req.rule.looks()[0]))))  # before anything is written
    check_record(req)
    record = write_record if main_rank() else (lambda *a: None)
    record(req, None, None, {})
    looks = req.rule.looks()
    seeds = f"seeds added at looks of {', '.join(map(str, looks))}" if len(looks) > 1 else f"{looks[0]} seeds"
    if main_rank():
        say(f"{req.study}: {req.design.kind} of {', '.join(req.design.tricks)} ({len(req.design.rows)} rows, "
            f"{len(req.design.contrasts)} comparisons, {seeds}) in {req.dir}")
    code, state, _res, _compute = ablate(req, record)
    if distributed():
        _end_launch(code)
    if code != 0 or state is None or not main_rank():
        return code
    print((req.dir / "ablation.md").read_text(), end="")
    print(f"trickbox ablate: answer: {req.dir / 'ablation.md'}, {req.dir / 'report.html'}, {req.dir / 'forest.png'}")
    return 0
