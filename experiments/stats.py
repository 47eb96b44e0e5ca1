"""The statistics behind the verdicts and the reruns: Welch's t-test, the paired t-test and a prediction interval.

Every comparison is over training seeds (one number per seed and row). Two rows trained on different
seeds' runs are compared with Welch's t-test (unequal variances); two numbers of the same runs (the
last epoch against the epoch validation picks, or a gain computed seed by seed) with the paired
t-test. The level is :data:`LEVEL` for all of them, two-sided, so the opposite of a claim can be
significant too. scipy is here through scikit-learn; its t distribution gives the p-values.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

LEVEL = 0.05
"""Two-sided significance level of every test, and 1 − coverage of every interval."""


@dataclass(frozen=True)
class Comparison:
    """Row a against row b in the claimed direction: ``diff`` > 0 means the claim holds in the means."""

    test: str
    diff: float
    """Mean difference in the claimed direction (points of error, or whatever the inputs measure)."""
    low: float
    high: float
    """The (1 − LEVEL) confidence interval of ``diff``."""
    p: float
    """Two-sided p-value; nan when it cannot be computed (fewer than two seeds a side)."""
    n_a: int
    n_b: int

    @property
    def verdict(self) -> str:
        """reproduced: significant in the claimed direction; not reproduced: significant against it; else inconclusive."""
        if self.n_a < 2 or self.n_b < 2 or math.isnan(self.p):
            return "not run" if min(self.n_a, self.n_b) < 2 else "inconclusive"
        if self.p < LEVEL:
            return "reproduced" if self.diff > 0 else "not reproduced"
        return "inconclusive"

    def describe(self) -> str:
        """One cell: the test, the difference with its interval, and p."""
        if math.isnan(self.p):
            return f"{self.test}: n={self.n_a}/{self.n_b}"
        p = f"{self.p:.3f}" if self.p >= 0.001 else f"{self.p:.1e}"
        return f"{self.test}: Δ {self.diff:+.1f} [{self.low:+.1f}, {self.high:+.1f}], p = {p}"


def _t_ppf(q: float, df: float) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def _t_sf(x: float, df: float) -> float:
    from scipy.stats import t

    return float(t.sf(x, df))


def welch(a: Sequence[float], b: Sequence[float], *, higher: bool = True) -> Comparison:
    """Welch's t-test of mean(a) against mean(b); ``higher``: the claim is a > b, else a < b."""
    a, b = list(a), list(b)
    sign = 1.0 if higher else -1.0
    if len(a) < 2 or len(b) < 2:
        d = sign * (statistics.mean(a) - statistics.mean(b)) if a and b else float("nan")
        return Comparison("Welch t", d, float("nan"), float("nan"), float("nan"), len(a), len(b))
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    d = sign * (statistics.mean(a) - statistics.mean(b))
    se = math.sqrt(va + vb)
    if se == 0.0:  # identical seeds on both sides: any difference is exact, none is no difference
        p = 0.0 if d != 0 else 1.0
        return Comparison("Welch t", d, d, d, p, len(a), len(b))
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = _t_ppf(1 - LEVEL / 2, df) * se
    p = min(1.0, 2 * _t_sf(abs(d) / se, df))
    return Comparison("Welch t", d, d - half, d + half, p, len(a), len(b))


def paired(diffs: Sequence[float]) -> Comparison:
    """Paired t-test of per-seed differences (already in the claimed direction) against 0."""
    x = list(diffs)
    if len(x) < 2:
        d = statistics.mean(x) if x else float("nan")
        return Comparison("paired t", d, float("nan"), float("nan"), float("nan"), len(x), len(x))
    d, sd = statistics.mean(x), statistics.stdev(x)
    se = sd / math.sqrt(len(x))
    if se == 0.0:
        return Comparison("paired t", d, d, d, 0.0 if d != 0 else 1.0, len(x), len(x))
    half = _t_ppf(1 - LEVEL / 2, len(x) - 1) * se
    p = min(1.0, 2 * _t_sf(abs(d) / se, len(x) - 1))
    return Comparison("paired t", d, d - half, d + half, p, len(x), len(x))


def prediction_interval(values: Sequence[float]) -> tuple[float, float]:
    """Where one new seed's number should fall with probability 1 − LEVEL, from n committed seeds (normal model):
    mean ± t(1 − LEVEL/2, n − 1) · s · √(1 + 1/n)."""
    v = list(values)
    if len(v) < 2:
        raise ValueError(f"a prediction interval needs at least 2 committed seeds, got {len(v)}")
    m, s = statistics.mean(v), statistics.stdev(v)
    half = _t_ppf(1 - LEVEL / 2, len(v) - 1) * s * math.sqrt(1 + 1 / len(v))
    return m - half, m + half
