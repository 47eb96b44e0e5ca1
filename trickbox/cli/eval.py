"""``trickbox eval RUN_DIR``: clean and adversarial (white-box FGSM / I-FGSM) error of a trained model.

    trickbox eval runs/digits-… --attack fgsm --eps 1,2,4,8
    trickbox eval runs/cifar-… --split val --attack ifgsm --eps 2,8 --iterations 10 --out robust.json
    trickbox eval runs/cifar-… data.root=other.zip        # the same model on other data

Every argument is checked before anything is loaded; the numbers come from
:func:`trickbox.evaluation.saved_runs.evaluate_run`. The command prints a
small table and writes the numbers as JSON (default
``RUN_DIR/eval-<split>-<attack>.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..scalars import KIND_WORDS, Limits, check_scalar

ATTACK_CHOICES = ("none", "fgsm", "ifgsm")
DEFAULT_EPS = "1,2,4,8"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``trickbox eval``."""
    p = subparsers.add_parser("eval", help="clean and FGSM / I-FGSM error of a trained run",
                              description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a directory written by trickbox train (its final model; without one, its latest "
                   "checkpoint), or one of its checkpoints/step-N")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="which split of the run's data (default test)")
    p.add_argument("--attack", choices=ATTACK_CHOICES, default="none",
                   help="white-box attack (default none: clean error only)")
    p.add_argument("--eps", default=DEFAULT_EPS, metavar="E1,E2,…",
                   help=f"attack radii in pixel units of 1/255, comma-separated (default {DEFAULT_EPS})")
    p.add_argument("--iterations", default="10", metavar="N", help="I-FGSM steps (default 10)")
    p.add_argument("--step-size", default=None, metavar="S",
                   help="I-FGSM step in pixel units of 1/255 (default eps/iterations)")
    p.add_argument("--batch-size", default=None, metavar="B",
                   help="images per batch (default: the run's train.eval_batch_size)")
    p.add_argument("--out", default=None, metavar="FILE.json",
                   help="where to write the JSON (default RUN_DIR/eval-<split>-<attack>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="data.KEY=VALUE",
                   help="evaluate on other data than the run's: data.root=OTHER, data.image_size=…, "
                   "train.eval_batch_size=…")
    p.set_defaults(func=cmd_eval)


EVAL_KEYS = ("data.", "train.eval_batch_size=")


def check_overrides(overrides: list[str]) -> list[str]:
    """Only the data (and the evaluation batch size) can change: the model is the run's."""
    for item in overrides:
        if "=" not in item or not item.startswith(EVAL_KEYS):
            raise ConfigError(f"trickbox eval takes data.KEY=VALUE overrides (e.g. data.root=OTHER), got {item!r}; "
                              "the model and its training settings are the run's")
    return overrides


# ---------------------------------------------------------------------------
# argument checks (before anything is loaded)
# ---------------------------------------------------------------------------


PIXELS = Limits(low=0, low_open=True, high=255)
"""ε and step sizes are in pixel units of 1/255: 8 means 8/255."""


def _number(name: str, text: str, kind: type, limits: Limits, hint: str) -> Any:
    """``text`` as a ``kind`` checked against ``limits`` by the shared scalar validator; one line naming ``name``."""
    try:
        value = kind(str(text).strip())
    except ValueError:
        raise ConfigError(f"{name} must be {KIND_WORDS[kind]} {limits.describe()}, got {text!r}; {hint}") from None
    try:
        return check_scalar(name, value, kind, limits)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; {hint}") from None


def parse_eps(text: str) -> list[float]:
    """``"1,2,4,8"`` → ``[1.0, 2.0, 4.0, 8.0]``; each must be a number in (0, 255] (pixel units of 1/255)."""
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(t == "" for t in items):
        raise ConfigError(f"--eps must be comma-separated numbers in (0, 255] (pixel units of 1/255), got {text!r}; "
                          "e.g. --eps 1,2,4,8")
    return [_number("--eps value", t, float, PIXELS,
                    "pixel units of 1/255 (8 means 8/255), e.g. --eps 1,2,4,8") for t in items]


def _parse_int(name: str, text: str, minimum: int) -> int:
    return int(_number(name, text, int, Limits(low=minimum), f"e.g. {name} {max(minimum, 10)}"))


def _parse_step(text: str | None) -> float | None:
    if text is None:
        return None
    return float(_number("--step-size", text, float, PIXELS,
                         "pixel units of 1/255, or leave it out for eps/iterations"))


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    eps = parse_eps(args.eps)  # checked even with --attack none: a typo should not pass silently
    iterations = _parse_int("--iterations", args.iterations, 1)
    step_size = _parse_step(args.step_size)
    batch_override = None if args.batch_size is None else _parse_int("--batch-size", args.batch_size, 1)
    overrides = check_overrides(list(args.overrides))
    from ..evaluation.saved_runs import evaluate_run, format_table, resolve_target

    run_dir, checkpoint = resolve_target(Path(args.run_dir))
    if checkpoint is not None:
        print(f"trickbox: evaluating the epoch checkpoint {checkpoint}", file=sys.stderr)

    result = evaluate_run(
        run_dir, split=args.split, attack=args.attack, eps=eps if args.attack != "none" else [], iterations=iterations,
        step_size=step_size, batch_size=batch_override, progress=not args.no_progress, checkpoint=checkpoint,
        overrides=overrides,
    )
    print(format_table(result))
    tag = ""
    if overrides:  # other data: its own file, never over the run's own numbers
        import hashlib

        tag = "-" + hashlib.blake2b(" ".join(overrides).encode(), digest_size=4).hexdigest()
    default_name = f"eval-{args.split}-{args.attack}" + (f"-{checkpoint.name}" if checkpoint is not None
                                                         else "") + tag + ".json"
    out = Path(args.out) if args.out else run_dir / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"trickbox: wrote {out}")
    return 0
