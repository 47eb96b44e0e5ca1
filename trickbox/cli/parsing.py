"""The argument parser of every ``trickbox`` command: one line and exit 2 on misuse; ``KEY=VALUE`` anywhere."""
from __future__ import annotations

import argparse
from typing import Any

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """``error`` prints one line and exits 2. ``KEY=VALUE`` overrides may stand before, between or after options
    (``train.epochs=1 --tracker none train.seed=1``): positionals are parsed intermixed with options."""

    _inner = False

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        if self._inner or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False
