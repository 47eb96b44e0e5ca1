"""The rows of an ablation and the comparisons between them, built from a run config and a list of tricks.

The **baseline** is the config with every listed trick switched off (``tricks.<name>: null``); tricks the config
enables but the list does not name stay on in every row. Then, by design:

- ``stack``: each trick added on top of the row above, in the order given (He et al., Table 6); each row is
  compared with the row above it.
- ``leave-one-out``: the full stack, and the full stack without one trick per row; the full stack is compared with
  each row without a trick (so "helps" says that trick helps *within* the stack).
- ``single``: each trick alone on the baseline, compared with the baseline.

A comparison's difference is always *with the trick − without it*, in the metric's direction of "better".
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

DESIGNS = ("stack", "leave-one-out", "single")
BASELINE = "baseline"
FULL = "all listed tricks"


@dataclass(frozen=True)
class Row:
    name: str
    on: tuple[str, ...]
    """The listed tricks this row switches on (the others listed are off)."""


@dataclass(frozen=True)
class Contrast:
    """One comparison: the row with ``trick`` against the row without it, paired by seed."""

    trick: str
    with_row: str
    without_row: str

    @property
    def name(self) -> str:
        return self.trick


@dataclass(frozen=True)
class Design:
    kind: str
    tricks: tuple[str, ...]
    rows: tuple[Row, ...]
    contrasts: tuple[Contrast, ...]

    def fragment(self, row: Row) -> dict[str, Any]:
        """The config fragment that turns the base config into ``row``: the listed tricks it leaves off, nulled."""
        return {"tricks": {t: None for t in self.tricks if t not in row.on}}

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    def contrast_of(self, row: Row) -> Contrast | None:
        """The comparison the table shows on ``row``: the trick it adds (stack, single) or leaves out
        (leave-one-out); ``None`` for a row that is only a reference."""
        side = "without_row" if self.kind == "leave-one-out" else "with_row"
        return next((c for c in self.contrasts if getattr(c, side) == row.name), None)


def parse_tricks(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError(f"--tricks {text!r} names no trick; list them comma-separated, e.g. --tricks "
                          "mixup,label_smoothing")
    dupes = sorted({t for t in names if names.count(t) > 1})
    if dupes:
        raise ConfigError(f"--tricks names {dupes[0]!r} twice; list each trick once")
    return names


def build_design(kind: str, tricks: Sequence[str]) -> Design:
    if kind not in DESIGNS:
        raise ConfigError(f"--design {kind!r} is not one of {', '.join(DESIGNS)}")
    listed = tuple(tricks)
    base = Row(BASELINE, ())
    if kind == "stack":
        rows = [base] + [Row(f"+ {t}", listed[: i + 1]) for i, t in enumerate(listed)]
        contrasts = [Contrast(t, rows[i + 1].name, rows[i].name) for i, t in enumerate(listed)]
    elif kind == "single":
        rows = [base] + [Row(f"+ {t} alone", (t,)) for t in listed]
        contrasts = [Contrast(t, rows[i + 1].name, BASELINE) for i, t in enumerate(listed)]
    else:
        if len(listed) < 2:
            raise ConfigError("--design leave-one-out needs at least two tricks (with one, use --design single)")
        full = Row(FULL, listed)
        rows = [base, full] + [Row(f"- {t}", tuple(x for x in listed if x != t)) for t in listed]
        contrasts = [Contrast(t, FULL, f"- {t}") for t in listed]
    return Design(kind, listed, tuple(rows), tuple(contrasts))


def with_listed(base: Mapping[str, Any], tricks: Sequence[str], catalog: Any) -> dict[str, Any]:
    """``base`` with every listed trick enabled: those the config does not enable get their defaults, after the
    config's own tricks (the config's order is the call order)."""
    out = copy.deepcopy(dict(base))
    section = dict(out.get("tricks") or {}) if isinstance(out.get("tricks"), Mapping) else {}
    for t in tricks:
        catalog.get(t)  # an unknown name: one line with the closest installed trick
        if section.get(t) is None:
            section[t] = {}
    out["tricks"] = section
    return out
