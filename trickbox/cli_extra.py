"""Subcommands that live in their own modules register here (sweep, report, eval, new-plugin)."""
from __future__ import annotations

import argparse
import importlib
from typing import Callable

MODULES = ("trickbox.sweep.cli", "trickbox.eval_cli", "trickbox.scaffold")


def extra_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    out = []
    for name in MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue
            raise
        out.append(mod.add_parser)
    return out
