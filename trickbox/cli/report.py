"""``trickbox report STUDY``: best parameters, an HTML report and (grids) a Markdown table, from the storage alone."""
from __future__ import annotations

import argparse
from pathlib import Path

from .sweep import DEFAULT_OUT


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    r = subparsers.add_parser("report", help="a study's best parameters and HTML report (from its storage alone), "
                                             "or an ablation's answer")
    r.add_argument("study", metavar="STUDY", help="study name")
    r.add_argument("--storage", metavar="URL", help="the study's storage (default: OUT_DIR/STUDY/journal.log)")
    r.add_argument("--out-dir", default=DEFAULT_OUT, metavar="DIR",
                   help=f"sweep output directory (default {DEFAULT_OUT})")
    r.add_argument("--html", metavar="PATH", help="where to write the HTML report (default: OUT_DIR/STUDY/report.html)")
    r.add_argument("--no-wandb", action="store_true", help="do not log the plots to a W&B summary run")
    r.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from ..sweep.report import write_report

    answer = Path(args.out_dir) / args.study / "ablation.md"
    if (Path(args.out_dir) / args.study / "ablation.json").is_file():  # an ablation: its answer, as last written
        if not answer.is_file():
            print(f"ablation {args.study}: no look has finished yet; its studies are "
                  f"{args.study}.look-1, ... under {Path(args.out_dir) / args.study}")
            return 0
        print(answer.read_text(), end="")
        print(f"HTML report: {answer.with_name('report.html')}\nforest plot: {answer.with_name('forest.png')}")
        return 0

    result = write_report(args.study, storage=args.storage, out_dir=Path(args.out_dir),
                          html=Path(args.html) if args.html else None, use_wandb=not args.no_wandb)
    print(result.text)
    return 0
