"""The ``trickbox`` command: train, list (and, as they land, sweep, report, eval, new-plugin).

Misuse exits with code 2 and one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

from .trick import ConfigError, NonFiniteError

EXIT_USAGE = 2
EXIT_NONFINITE = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def default_config_path() -> Path:
    return Path(str(resources.files("trickbox") / "configs" / "default.yaml"))


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", action="append", default=[], metavar="FILE",
                   help="YAML config (repeatable; later files win). Default: the embedded digits config")
    p.add_argument("--resume", action="store_true", help="continue train.run_name's run from its newest complete checkpoint")
    p.add_argument("--tracker", choices=("wandb", "none"), help="shortcut for train.tracker=…")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides parsed as YAML, e.g. train.epochs=5 tricks.mixup.alpha=0.2 tricks.sgdr=null")


def build_parser(extra: Sequence[Callable[[argparse._SubParsersAction], None]] = ()) -> argparse.ArgumentParser:
    parser = _Parser(prog="trickbox", description="Bag-of-tricks training on timm models and Accelerate.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train a model (the default digits run needs no data or server)")
    _add_train_args(t)
    t.set_defaults(func=cmd_train)
    ls = sub.add_parser("list", help="installed tricks with their package, version and parameters")
    ls.add_argument("--models", action="store_true", help="list trickbox's CIFAR models registered in timm")
    ls.set_defaults(func=cmd_list)
    for add in extra:
        add(sub)
    return parser


def config_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from .config import load_config

    files = args.config or [default_config_path()]
    overrides = list(args.overrides)
    if getattr(args, "tracker", None):
        overrides.append(f"train.tracker={args.tracker}")
    return load_config(files, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from .loop import prepare_tricks, train

    cfg = config_from_args(args)
    if args.resume and not cfg.train.run_name:
        raise ConfigError("--resume needs the run's name: add train.run_name=NAME (the folder under train.out_dir)")
    tricks = prepare_tricks(cfg)  # validates every trick before anything is built
    result = train(cfg, resume=args.resume, tricks=tricks)
    if int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))) == 0:
        test = " ".join(f"{k}={v:.4f}" for k, v in result.test.items() if k in ("top1", "top5", "nll", "ece"))
        where = f"run: {result.run_dir}"
        print(f"trickbox: done in {result.seconds:.1f}s; test {test}; {where}" if test else f"trickbox: stopped; {where}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import discover

    if args.models:
        import timm

        from . import models  # noqa: F401

        for name in sorted(set(timm.list_models("*cifar*")) | {"preact_resnet18"}):
            print(name)
        return 0
    cat = discover()
    for info in sorted(cat.tricks.values(), key=lambda i: i.name):
        print(f"{info.name}  ({info.package} {info.version})  {info.cls.summary}")
        for p in info.cls.params:
            search = ""
            if p.search is not None:
                s = p.search
                search = f"  search {list(s.choices)}" if s.choices else f"  search [{s.low:g}, {s.high:g}]{' log' if s.log else ''}"
            print(f"    {p.name}: {p.type.__name__} = {p.default!r}  valid {p.describe_range()}{search}  {p.help}")
    for b in cat.broken:
        print(f"! {b.name} ({b.package}) not loaded: {b.reason}")
    for name in sorted(cat.blocked):
        print(f"- {name} blocked")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from .cli_extra import extra_commands

    parser = build_parser(extra_commands())
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"trickbox: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteError as exc:
        print(f"trickbox: stopped: {exc}; no optimizer step or checkpoint was written with it", file=sys.stderr)
        return EXIT_NONFINITE
    except ValueError as exc:
        if type(exc).__name__ == "DataError":
            print(f"trickbox: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise
    except KeyboardInterrupt:
        print("trickbox: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    from .loop import Preempted

    try:
        code = main()
    except Preempted as exc:
        print(f"trickbox: preempted (signal {int(exc.code) - 128}); checkpoint written, resume with --resume", file=sys.stderr)
        code = int(exc.code)
    sys.exit(code)
