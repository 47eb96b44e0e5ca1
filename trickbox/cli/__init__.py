"""The ``trickbox`` command: train, list, sweep, ablate, report, eval, predict, new-plugin (a module each, here).

Misuse exits with code 2 and one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ..errors import ConfigError, NonFiniteError, OutputError
from . import ablate, new_plugin, predict, report, sweep, train
from . import eval as eval_command
from . import list as list_command
from .parsing import EXIT_USAGE, Parser

EXIT_NONFINITE = 3
EXIT_OUTPUT = 4
EXIT_LOADER = 5
COMMANDS = (train, list_command, sweep, ablate, report, eval_command, predict, new_plugin)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="trickbox", description="Bag-of-tricks training on timm models and Accelerate.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:  # DataError too
        _say(exc, f"trickbox: error: {exc}")
        return EXIT_USAGE
    except NonFiniteError as exc:
        _say(exc, f"trickbox: stopped: {exc}; no optimizer step or checkpoint was written with it")
        return EXIT_NONFINITE
    except OutputError as exc:
        _say(exc, f"trickbox: stopped: {exc}")
        return EXIT_OUTPUT
    except RuntimeError as exc:
        if "DataLoader worker" not in str(exc):
            raise  # torch raises a worker's death from its SIGCHLD handler, wherever the main process is
        print(f"trickbox: stopped: a data-loading worker died ({str(exc).splitlines()[0].rstrip('. ')}); if it ran out "
              "of memory, lower data.workers or data.prefetch_factor. The checkpoints written so far are intact: run "
              "the same command with --resume and the same train.run_name to continue", file=sys.stderr)
        return EXIT_LOADER
    except KeyboardInterrupt:
        print("trickbox: interrupted", file=sys.stderr)
        return 130


def _say(exc: BaseException, line: str) -> None:
    """``line`` on stderr: once for an error every process raised together (on the main one), else here."""
    if not getattr(exc, "on_every_rank", False) or os.environ.get("RANK", "0") == "0":
        print(" ".join(line.splitlines()), file=sys.stderr)


def run() -> None:
    """Console-script entry point."""
    from ..loop import Preempted

    try:
        code = main()
    except Preempted as exc:
        signum = int(exc.code) - 128
        if os.environ.get("RANK", "0") == "0":
            print(f"trickbox: preempted (signal {signum}); checkpoint written, resume with --resume" if exc.checkpointed
                  else f"trickbox: stopped by signal {signum} before training began; nothing was trained: run the "
                  "same command again", file=sys.stderr)
        code = int(exc.code)
    except BrokenPipeError:  # `trickbox list | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
