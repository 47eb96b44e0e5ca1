"""``trickbox list``: the installed tricks with their package, version, parameters and ranges."""
from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="installed tricks with their package, version and parameters")
    p.add_argument("--models", action="store_true", help="list trickbox's CIFAR models registered in timm")
    p.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    from ..registry import discover

    if args.models:
        import timm

        from .. import models  # noqa: F401

        for name in sorted(set(timm.list_models("*cifar*")) | {"preact_resnet18"}):
            print(name)
        return 0
    cat = discover()
    for info in sorted(cat.tricks.values(), key=lambda i: i.name):
        print(f"{info.name}  ({info.package} {info.version})  {info.cls.summary}")
        for p in info.cls.params:
            search = f"  search {p.search.describe()}" if p.search is not None else ""
            print(f"    {p.name}: {p.type.__name__} = {p.default!r}  valid {p.describe_range()}{search}  {p.help}")
    for b in cat.broken:
        print(f"! {b.name} ({b.package}) not loaded: {b.reason}")
    for name in sorted(cat.blocked):
        print(f"- {name} blocked")
    if cat.skipped:
        print(f"- installed plugins not loaded ({', '.join(cat.skipped)}): TRICKBOX_DISABLE_PLUGIN_AUTOLOAD is set; "
              "unset it to load them")
    return 0
