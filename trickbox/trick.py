"""What a trick is: a pluggy plugin object with declared, validated hyperparameters.

A trick is a class with a ``name``, a tuple of :class:`Param` declarations and
methods marked with :data:`hookimpl` that implement hooks from
:mod:`trickbox.hookspecs`. The registry builds one instance per run from the
validated parameter values; the instance is what pluggy calls.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pluggy

from .errors import ConfigError, NonFiniteError
from .scalars import Limits, check_scalar, did_you_mean

__all__ = ["PROJECT", "ConfigError", "NonFiniteError", "Param", "Search", "Trick", "did_you_mean", "hookimpl"]

PROJECT = "trickbox"
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Marks a method of a trick as an implementation of a hook in :mod:`trickbox.hookspecs`."""


@dataclass(frozen=True)
class Search:
    """A search range, the one spelling of it in trickbox: a trick's default (``Param(search=...)``) and every range
    of a study spec. :meth:`distribution` turns it into the Optuna distribution the sampler draws from."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def distribution(self, kind: str) -> Any:
        """Optuna's ``CategoricalDistribution``, ``IntDistribution`` or ``FloatDistribution`` (``kind`` is
        ``"categorical"``, ``"int"`` or ``"float"``)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices is not None or kind == "categorical":
            return CategoricalDistribution(list(self.choices or ()))
        if kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))  # type: ignore[arg-type]
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)  # type: ignore[arg-type]

    @classmethod
    def of(cls, distribution: Any) -> Search:
        """The range an Optuna distribution draws from (the inverse of :meth:`distribution`)."""
        if hasattr(distribution, "choices"):
            return cls(choices=tuple(distribution.choices))
        return cls(distribution.low, distribution.high, distribution.log, distribution.step)

    def describe(self) -> str:
        """``[0.05, 4] log``, ``[1, 15] step 1`` or ``[0.1, 0.2, 0.4]``."""
        if self.choices is not None:
            return str(list(self.choices))
        extra = " log" if self.log else (f" step {self.step:g}" if self.step else "")
        return f"[{self.low:g}, {self.high:g}]{extra}"


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
    artifact: bool = False
    """The value names a run directory trained before this one (a distillation teacher). A sweep whose spec has a
    ``train_first:`` section trains that run once and fills every such parameter the trials leave unset."""

    @property
    def limits(self) -> Limits:
        return Limits(self.low, self.high, self.low_open, self.high_open, self.choices)

    def describe_range(self) -> str:
        return self.limits.describe() or self.type.__name__

    def validate(self, value: Any, where: str) -> Any:
        """Return ``value`` converted to the declared type, or raise :class:`ConfigError` (with the parameter's
        help)."""
        try:
            return check_scalar(where, value, self.type, self.limits, optional=self.optional)
        except ConfigError as exc:
            raise ConfigError(f"{exc} ({self.help})" if self.help else str(exc)) from None

    def search_problem(self) -> str | None:
        """Why the declared ``search`` range holds values the parameter refuses (``None`` when it is sound)."""
        s = self.search
        if s is None:
            return None
        values = list(s.choices) if s.choices is not None else [s.low, s.high]
        for v in values:
            try:
                self.validate(int(v) if self.type is int and isinstance(v, float) else v, f"its search value {v!r}")
            except ConfigError as exc:
                return f"parameter {self.name}: {exc}"
        return None


class Trick:
    """Base class of every trick plugin.

    Subclasses set ``name`` (the config key, e.g. ``cutmix``), ``params`` and
    implement hooks with :data:`hookimpl`. Parameter values arrive validated
    as attributes of the instance (``self.alpha``) and in ``self.values``.
    A trick may also override :meth:`check` for rules that span several
    parameters; it runs before anything is built and only reads. State a
    trick keeps during a run (a loaded teacher, a table) starts in its own
    ``__init__``, after ``super().__init__(**values)``.
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
        """Cross-parameter validation; raise :class:`ConfigError`. Reads the parameters, sets nothing."""

    def check_among(self, tricks: list[Trick]) -> None:
        """Rules that involve the run's other tricks (all of them, this one included), e.g. that a trick this one
        names is enabled; raise :class:`ConfigError`. Runs once every trick is built, before anything else."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.values.items())
        return f"{type(self).__name__}({args})"

