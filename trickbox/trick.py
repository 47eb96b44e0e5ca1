"""What a trick is: a pluggy plugin object with declared, validated hyperparameters.

A trick is a class with a ``name``, a tuple of :class:`Param` declarations and
methods marked with :data:`hookimpl` that implement hooks from
:mod:`trickbox.hookspecs`. The registry builds one instance per run from the
validated parameter values; the instance is what pluggy calls.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Sequence

import pluggy

PROJECT = "trickbox"
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a method of a trick as an implementation of a hook in :mod:`trickbox.hookspecs`."""


class ConfigError(ValueError):
    """A configuration value is wrong. The message is one line that names the value and the fix."""


def did_you_mean(name: str, choices: Sequence[str]) -> str:
    """A ``"; did you mean 'x'?"`` suffix, or ``""``, plus the valid choices."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (valid: {', '.join(sorted(choices)) or 'none'})"


@dataclass(frozen=True)
class Search:
    """The range a sweep searches for a parameter when the study spec gives none."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Param:
    """One hyperparameter of a trick: its type, default, valid range and search range."""

    name: str
    type: type
    default: Any
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    search: Search | None = None

    def describe_range(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.low is None and self.high is None:
            return self.type.__name__
        lo = "(" if self.low_open else "["
        hi = ")" if self.high_open else "]"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{lo}{low}, {high}{hi}"

    def validate(self, value: Any, where: str) -> Any:
        """Return ``value`` converted to the declared type, or raise :class:`ConfigError`."""
        if value is None:
            if self.optional:
                return None
            raise ConfigError(f"{where} must be set ({self.describe_range()}); got null")
        typ = self.type
        try:
            if typ is bool:
                if not isinstance(value, bool):
                    raise TypeError
                conv: Any = value
            elif typ is int:
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise TypeError
                conv = int(value)
            elif typ is float:
                if isinstance(value, bool):
                    raise TypeError
                conv = float(value)
            elif typ is str:
                if not isinstance(value, str):
                    raise TypeError
                conv = value
            else:
                conv = typ(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where} must be {typ.__name__}, got {value!r} ({type(value).__name__})"
            ) from None
        if self.choices is not None and conv not in self.choices:
            raise ConfigError(f"{where} must be {self.describe_range()}, got {conv!r}")
        if isinstance(conv, float) and not math.isfinite(conv):
            raise ConfigError(f"{where} must be finite, got {conv!r}")
        if isinstance(conv, (int, float)) and not isinstance(conv, bool):
            bad_low = self.low is not None and (conv <= self.low if self.low_open else conv < self.low)
            bad_high = self.high is not None and (conv >= self.high if self.high_open else conv > self.high)
            if bad_low or bad_high:
                raise ConfigError(f"{where} must be in {self.describe_range()}, got {conv!r}")
        return conv


class Trick:
    """Base class of every trick plugin.

    Subclasses set ``name`` (the config key, e.g. ``mixup``), ``params`` and
    implement hooks with :data:`hookimpl`. Parameter values arrive validated
    as attributes of the instance (``self.alpha``) and in ``self.values``.
    A trick may also override :meth:`check` for rules that span several
    parameters; it runs before anything is built.
    """

    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()
    summary: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        self.values: dict[str, Any] = self.resolve(values)
        for key, val in self.values.items():
            setattr(self, key, val)
        self.check()

    @classmethod
    def resolve(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``values`` against :attr:`params` and fill in defaults."""
        known = {p.name: p for p in cls.params}
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"unknown parameter tricks.{cls.name}.{key}{did_you_mean(key, list(known))}"
                )
        return {
            p.name: p.validate(values.get(p.name, p.default), f"tricks.{cls.name}.{p.name}")
            for p in cls.params
        }

    def check(self) -> None:
        """Cross-parameter validation; raise :class:`ConfigError`."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        return f"{type(self).__name__}({args})"


class NonFiniteError(FloatingPointError):
    """A loss, λ or teacher output is NaN or infinite; the step is not applied."""
