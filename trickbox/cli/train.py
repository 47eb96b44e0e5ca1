"""``trickbox train``: one run from the embedded defaults, YAML files and ``key=value`` overrides."""
from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a model (the default digits run needs no data or server)",
                              description="Train one model. --print-config shows the fully resolved config (every key, "
                                          "every trick parameter with its default) and exits.")
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="YAML config (repeatable; later files win). Default: the embedded digits config")
    p.add_argument("--resume", action="store_true",
                   help="continue train.run_name's run from its newest complete checkpoint")
    p.add_argument("--tracker", choices=("wandb", "none"), help="shortcut for train.tracker=…")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as YAML (every key, each trick's parameters with defaults) and exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides parsed as YAML, e.g. train.epochs=5 tricks.<trick>.<param>=0.2 "
                        "tricks.<trick>=null")
    p.set_defaults(func=cmd_train)


def config_from_args(args: argparse.Namespace) -> Any:
    from ..config import default_config_path, load_config

    files = args.config or [default_config_path()]
    overrides = list(args.overrides)
    if getattr(args, "tracker", None):
        overrides.append(f"train.tracker={args.tracker}")
    return load_config(files, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)  # a refused config is said before torch is even imported
    if args.resume and not cfg.train.run_name:
        raise ConfigError("--resume needs the run's name: add train.run_name=NAME (the folder under train.out_dir)")
    from ..api import load_tricks
    from ..loop import train

    tricks = load_tricks(cfg.tricks, block=cfg.plugins.block)  # validates every trick before anything is built
    if args.print_config:
        from ..config import dump_config

        cfg.tricks = tricks.resolved()
        print(dump_config(cfg), end="")
        return 0
    result = train(cfg, resume=args.resume, tricks=tricks)
    if int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))) == 0:
        test = " ".join(f"{k}={v:.4f}" for k, v in result.test.items() if k in ("top1", "top5", "nll", "ece"))
        where = f"run: {result.run_dir}"
        print(f"trickbox: done in {result.seconds:.1f}s; test {test}; {where}" if test
              else f"trickbox: stopped; {where}")
    return 0
