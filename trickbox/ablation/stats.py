"""The statistics behind the verdicts and the reruns: Welch's t-test, the paired t-test and a prediction interval.

Every comparison is over training seeds (one number per seed and row). Two rows trained on different
seeds' runs are compared with Welch's t-test (unequal variances); two numbers of the same runs (the
last epoch against the epoch validation picks, or a gain computed seed by seed) with the paired
t-test. The level is :data:`LEVEL` for all of them, two-sided, so the opposite of a claim can be
significant too. The tests are scipy's (here through scikit-learn); this module only turns their
results to the claimed direction and adds the prediction interval, which scipy has no function for.
"""
from __future__ import annotations

import contextlib
import math
import statistics
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

LEVEL = 0.05
"""Two-sided significance level of every test, and 1 − coverage of every interval."""


@dataclass(frozen=True)
class Comparison:
    """Row a against row b in the claimed direction: ``diff`` > 0 means the claim holds in the means."""

    test: str
    diff: float
    """Mean difference in the claimed direction (points of error, or whatever the inputs measure)."""
    ci_low: float
    ci_high: float
    """The (1 − LEVEL) confidence interval of ``diff``."""
    p: float
    """Two-sided p-value; nan when it cannot be computed (fewer than two seeds a side)."""
    n_a: int
    n_b: int

    @property
    def verdict(self) -> str:
        """reproduced: significant in the claimed direction; not reproduced: significant against it; else
        inconclusive."""
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
        return f"{self.test}: Δ {self.diff:+.1f} [{self.ci_low:+.1f}, {self.ci_high:+.1f}], p = {p}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Nearly identical seeds on a side make scipy warn about precision; the numbers it returns are still right."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _from_scipy(test: str, result: object, sign: float, n_a: int, n_b: int) -> Comparison:
    """A scipy t-test result (difference a − b, or mean of differences) turned to the claimed direction."""
    ci = result.confidence_interval(1 - LEVEL)  # type: ignore[attr-defined]
    low, high = sorted((sign * float(ci.low), sign * float(ci.high)))
    diff = (low + high) / 2 if math.isfinite(low + high) else float("nan")
    return Comparison(test, diff, low, high, float(result.pvalue), n_a, n_b)  # type: ignore[attr-defined]


def welch(a: Sequence[float], b: Sequence[float], *, higher: bool = True) -> Comparison:
    """Welch's t-test of mean(a) against mean(b) (scipy's ``ttest_ind(equal_var=False)``); ``higher``: the claim
    is a > b."""
    from scipy.stats import ttest_ind

    a, b = list(a), list(b)
    sign = 1.0 if higher else -1.0
    if len(a) < 2 or len(b) < 2:
        d = sign * (statistics.mean(a) - statistics.mean(b)) if a and b else float("nan")
        return Comparison("Welch t", d, float("nan"), float("nan"), float("nan"), len(a), len(b))
    d = sign * (statistics.mean(a) - statistics.mean(b))
    # every seed alike on both sides: the difference is exact
    if statistics.variance(a) == statistics.variance(b) == 0.0:
        return Comparison("Welch t", d, d, d, 0.0 if d != 0 else 1.0, len(a), len(b))
    with _quiet():
        c = _from_scipy("Welch t", ttest_ind(a, b, equal_var=False), sign, len(a), len(b))
    return Comparison(c.test, d, c.ci_low, c.ci_high, c.p, c.n_a, c.n_b)


def paired(diffs: Sequence[float]) -> Comparison:
    """Paired t-test of per-seed differences (already in the claimed direction) against 0 (scipy's ``ttest_1samp``)."""
    from scipy.stats import ttest_1samp

    x = list(diffs)
    if len(x) < 2:
        d = statistics.mean(x) if x else float("nan")
        return Comparison("paired t", d, float("nan"), float("nan"), float("nan"), len(x), len(x))
    d = statistics.mean(x)
    if statistics.variance(x) == 0.0:
        return Comparison("paired t", d, d, d, 0.0 if d != 0 else 1.0, len(x), len(x))
    with _quiet():
        c = _from_scipy("paired t", ttest_1samp(x, 0.0), 1.0, len(x), len(x))
    return Comparison(c.test, d, c.ci_low, c.ci_high, c.p, c.n_a, c.n_b)


def prediction_interval(values: Sequence[float]) -> tuple[float, float]:
    """Where one new seed's number should fall with probability 1 − LEVEL, from n committed seeds (normal model):
    mean ± t(1 − LEVEL/2, n − 1) · s · √(1 + 1/n)."""
    v = list(values)
    if len(v) < 2:
        raise ValueError(f"a prediction interval needs at least 2 committed seeds, got {len(v)}")
    from scipy.stats import t

    m, s = statistics.mean(v), statistics.stdev(v)
    half = float(t.ppf(1 - LEVEL / 2, len(v) - 1)) * s * math.sqrt(1 + 1 / len(v))
    return m - half, m + half
