"""The one check of a single value: type, finiteness, range and choices, with a one-line error.

Trick parameters (:class:`trickbox.Param`), the run configuration
(:mod:`trickbox.config`, :mod:`trickbox.data.config`) and the sweep spec's
ranges and options (:mod:`trickbox.sweep.spec`) all call :func:`check_scalar`,
so every bad number reads the same way::

    train.epochs must be an integer >= 1, got 0
    optim.lr must be a finite number, got nan
    tricks.mixup.alpha must be > 0, got -1.0
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """A ``"; did you mean 'x'?"`` suffix, or ``""``, plus the valid choices."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (valid: {', '.join(sorted(str(c) for c in choices)) or 'none'})"



def _number(value: float) -> str:
    """A limit as people write it: ``1048576`` for an integer (not ``1.04858e+06``), ``0.5`` for a fraction."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


@dataclass(frozen=True)
class Limits:
    """The valid values of one scalar: a range (either end open or closed, either end absent) or a set of choices."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        """``> 0``, ``>= 1``, ``in [0, 1)``, ``one of 'a', 'b'`` or ``""`` (no limit)."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is not None and self.high is not None:
            lo = "(" if self.low_open else "["
            hi = ")" if self.high_open else "]"
            return f"in {lo}{_number(self.low)}, {_number(self.high)}{hi}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_number(self.low)}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {_number(self.high)}"
        return ""

    def admits(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))


KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _converted(where: str, value: Any, kind: type, error: type[ConfigError]) -> Any:
    wrong = error(f"{where} must be {KIND_WORDS.get(kind, kind.__name__)}, got {value!r}")
    if kind is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    if kind is int:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (isinstance(value, float) and not value.is_integer())):
            raise wrong
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise wrong
        return value
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise wrong from None


def check_scalar(where: str, value: Any, kind: type, limits: Limits = Limits(), *, optional: bool = False,
                 error: type[ConfigError] = ConfigError) -> Any:
    """``value`` converted to ``kind`` (bool, int, float, str, or a callable type) and checked against ``limits``.

    Raises ``error`` (a :class:`~trickbox.errors.ConfigError`) whose one line names ``where``. Floats must be finite.
    """
    if value is None:
        if optional:
            return None
        shown = limits.describe() or KIND_WORDS.get(kind, kind.__name__)
        raise error(f"{where} must be set ({shown}), got null")
    if kind is str and value is False and limits.choices is not None and "no" in limits.choices:
        value = "no"  # YAML reads a bare ``no`` (e.g. train.mixed_precision=no) as false
    conv = _converted(where, value, kind, error)
    if limits.choices is not None and conv not in limits.choices:
        raise error(f"{where} must be {limits.describe()}, got "
                    f"{conv!r}{did_you_mean(str(conv), [str(c) for c in limits.choices])}")
    if isinstance(conv, float) and not math.isfinite(conv):
        raise error(f"{where} must be a finite number, got {conv!r}")
    if isinstance(conv, (int, float)) and not isinstance(conv, bool) and not limits.admits(conv):
        what = "an integer " if kind is int else ""
        raise error(f"{where} must be {what}{limits.describe()}, got {conv!r}")
    return conv


def bounded(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **limits: Any) -> Any:
    """A dataclass field whose value :func:`check_fields` checks against ``Limits(**limits)``."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"limits": Limits(**limits)})


def check_fields(obj: Any, prefix: str, error: type[ConfigError] = ConfigError) -> None:
    """Check (and convert in place) every scalar field of dataclass ``obj``: its type, and its :func:`bounded`
    limits where it has them. Errors name ``prefix.field``; lists, mappings and nested dataclasses are left alone."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) < len(typing.get_args(hint))
        kind = args[0] if optional and len(args) == 1 else hint
        if kind not in KIND_WORDS:
            continue
        limits = f.metadata.get("limits", Limits())
        value = check_scalar(f"{prefix}.{f.name}", getattr(obj, f.name), kind, limits, optional=optional, error=error)
        setattr(obj, f.name, value)
