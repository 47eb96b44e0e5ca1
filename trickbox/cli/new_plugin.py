"""``trickbox new-plugin NAME``: scaffold a third-party trick package (templates in :mod:`trickbox.scaffold`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from ..scaffold import write_plugin

    name, *extra = args.names
    target = write_plugin(name, Path(args.dir) if args.dir else None, tuple(extra))
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    print(f"trickbox: wrote plugin package {target}/ ({', '.join(files)})")
    print("next:")
    print(f"  {sys.executable} -m pip install -e \"{target}[test]\"   # the package and what its tests need")
    print(f"  (cd {target} && {sys.executable} -m pytest -q)")
    print(f"  trickbox list                      # shows {', '.join(args.names)}")
    print(f"  trickbox train tricks.{name}.weight=0.1")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "new-plugin", help="write a third-party trick package (pyproject entry point, trick, test, README)",
        description="Write a pip-installable package that adds the trick NAME to trickbox through an entry point.",
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="the trick's name and config key, e.g. confidence_penalty; "
                   "more names put more tricks in the same package (the first one names it)")
    p.add_argument("--dir", metavar="DIR",
                   help="the package directory to create (default: ./trickbox-NAME); must not exist")
    p.set_defaults(func=cmd_new_plugin)
