"""When an ablation's comparison is decided: a group-sequential paired t-test with Holm's correction, and TOST.

Each comparison is a row against its reference, paired by seed (the same seed: the same initialisation and data
order), so its data are the per-seed differences ``d_1 … d_n`` (row − reference, in the metric's direction of
"better"). Seeds are added in *looks*, at ``n = n_1 < n_2 < … < n_L`` seeds (:meth:`Rule.looks`).

**Helps / hurts** (a group-sequential test). Look ``k`` spends ``α_k = α · n_k³ / Σ_j n_j³`` of the level, most of
it at the last look (the shape of O'Brien–Fleming's boundaries); ``Σ α_k = α``. A comparison's sequential p-value is
``q = min_k p_k · α / α_k`` over the looks it reached, ``p_k`` the two-sided paired t-test's p at look ``k``; by the
union bound ``q`` is a valid p-value whenever the comparison stops. **Holm's** step-down procedure over the
ablation's comparisons turns the ``q`` into adjusted p-values; a comparison is decided at level ``α`` when its
adjusted p is ≤ ``α``. Since every ``q`` only falls as looks are added, the union of all decisions made along the
way is contained in Holm's decisions on the final values, so the family-wise error rate stays ≤ ``α``.

**No effect > δ** (TOST, two one-sided tests). At look ``k`` the comparison is equivalent when the
``1 − 2·α_k/m`` confidence interval of the mean difference lies inside ``(−δ, δ)``, ``m`` the number of comparisons
(Bonferroni across them, the union bound across looks).

**Undecided (budget)**: neither, at the last look or when the run budget is spent.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

HELPS, HURTS, EQUIVALENT, UNDECIDED = "helps", "hurts", "no effect > δ", "undecided (budget)"


@dataclass(frozen=True)
class Rule:
    alpha: float = 0.05
    """Family-wise level of helps/hurts over one ablation's comparisons."""
    min_effect: float = 0.005
    """δ of "no effect > δ", in the metric's units (0.005 of top-1 accuracy: half a point)."""
    min_seeds: int = 3
    max_seeds: int = 8

    def looks(self) -> list[int]:
        """The seed counts at which comparisons are judged: the first, the middle and the last."""
        middle = (self.min_seeds + self.max_seeds + 1) // 2
        return sorted({self.min_seeds, middle, self.max_seeds})

    def spent(self) -> dict[int, float]:
        """``α_k`` of each look, ``∝ n_k³``, summing to ``α``."""
        weights = {n: n**3 for n in self.looks()}
        total = sum(weights.values())
        return {n: self.alpha * w / total for n, w in weights.items()}

    def next_look(self, n: int) -> int | None:
        """The seed count of the look after ``n`` seeds (None: ``n`` is the last)."""
        return next((k for k in self.looks() if k > n), None)


@dataclass(frozen=True)
class Verdict:
    verdict: str
    seeds: int
    mean: float
    """Mean per-seed difference (row − reference)."""
    ci_low: float
    ci_high: float
    """Its 95 % confidence interval (plain, for the table and the forest plot)."""
    p_adjusted: float
    """Holm-adjusted sequential p-value of helps/hurts."""


def t_p_and_halfwidth(diffs: Sequence[float], level: float) -> tuple[float, float, float]:
    """Mean, two-sided paired t-test p-value (H0: mean 0) and the half-width of the ``1 − level`` interval."""
    from scipy.special import stdtr, stdtrit  # Student's t CDF and its inverse (scipy.stats.t, without its overhead)

    n, mean = len(diffs), math.fsum(diffs) / len(diffs)
    sd = math.sqrt(math.fsum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else math.inf
    if sd == 0:
        return mean, (0.0 if mean != 0 else 1.0), 0.0
    se = sd / math.sqrt(n)
    p = float(2 * stdtr(n - 1, -abs(mean) / se)) if n > 1 else 1.0
    return mean, p, float(stdtrit(n - 1, 1 - level / 2) * se) if n > 1 else math.inf


def sequential_p(diffs: Sequence[float], rule: Rule) -> float:
    """``min_k p_k · α / α_k`` over the looks ``diffs`` reached (1: none yet)."""
    spent = rule.spent()
    values = [t_p_and_halfwidth(diffs[:n], 0.05)[1] * rule.alpha / a for n, a in spent.items() if n <= len(diffs)]
    return min([1.0, *values])


def holm(p: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values."""
    order = sorted(p, key=lambda k: p[k])
    adjusted, running = {}, 0.0
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[key]))
        adjusted[key] = running
    return adjusted


def equivalent(diffs: Sequence[float], rule: Rule, comparisons: int) -> bool:
    """TOST at some look reached: the ``1 − 2·α_k/m`` interval inside ``(−δ, δ)``."""
    for n, a in rule.spent().items():
        if n <= len(diffs):
            mean, _p, half = t_p_and_halfwidth(diffs[:n], 2 * a / comparisons)
            if -rule.min_effect < mean - half and mean + half < rule.min_effect:
                return True
    return False


def judge(diffs: Mapping[str, Sequence[float]], rule: Rule, *, final: bool = False) -> dict[str, Verdict]:
    """Each comparison's verdict from its per-seed differences so far; ``final``: no more seeds will come."""
    adjusted = holm({k: sequential_p(d, rule) for k, d in diffs.items()})
    out = {}
    for key, d in diffs.items():
        mean, _p, half = t_p_and_halfwidth(d, 0.05) if len(d) > 1 else (statistics.fmean(d or [math.nan]), 1, math.inf)
        if adjusted[key] <= rule.alpha:
            verdict = HELPS if mean > 0 else HURTS
        elif equivalent(d, rule, len(diffs)):
            verdict = EQUIVALENT
        else:
            verdict = UNDECIDED if final or len(d) >= rule.max_seeds else ""
        out[key] = Verdict(verdict, len(d), mean, mean - half, mean + half, adjusted[key])
    return out


def run_sequential(comparisons: Sequence[str], draw: Callable[[str, int], float], rule: Rule,
                   budget: int | None = None) -> dict[str, Verdict]:
    """Add seeds look by look to the comparisons still open, until each is decided or the seeds or the ``budget``
    (seeds drawn over all comparisons) run out. ``draw(name, seed)`` is that seed's difference for ``name``."""
    diffs: dict[str, list[float]] = {c: [] for c in comparisons}
    spent, still = 0, list(comparisons)
    for look in rule.looks():
        for c in still:
            while len(diffs[c]) < look:
                if budget is not None and spent >= budget:
                    return judge(diffs, rule, final=True)
                diffs[c].append(draw(c, len(diffs[c])))
                spent += 1
        verdicts = judge(diffs, rule)
        still = [c for c in still if not verdicts[c].verdict]
        if not still:
            return verdicts
    return judge(diffs, rule, final=True)
