"""The ablation's decision rule, simulated (no training, seconds): with no true effect "helps"/"hurts" stays within
5 % per comparison; an effect of 2 seed-SDs (of the comparison's per-seed difference) is found to help in ≥ 80 % of
ablations within 8 seeds; with no effect and a small seed SD "no effect > δ" is reached; the pieces against scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from trickbox.ablation.rule import EQUIVALENT, HELPS, HURTS, UNDECIDED, Rule, holm, run_sequential, t_p_and_halfwidth

RULE = Rule(alpha=0.05, min_effect=0.5, min_seeds=3, max_seeds=8)


def ablate(effects: list[float], sd: float, rng: np.random.Generator, rule: Rule = RULE,
           budget: int | None = None) -> dict:
    """A stack ablation: row i adds ``effects[i-1]``; each comparison is row i against row i − 1, paired by seed."""
    rows = np.concatenate([[0.0], np.cumsum(effects)])[:, None] + rng.normal(0, sd, (len(effects) + 1, 8))
    names = [f"row{i}" for i in range(1, len(effects) + 1)]
    return run_sequential(names, lambda name, seed: float(rows[int(name[3:]), seed] - rows[int(name[3:]) - 1, seed]),
                          rule, budget=budget)


def _upper(p: float, n: int) -> float:
    return p + 2.576 * math.sqrt(p * (1 - p) / n)  # the binomial 99 % interval's upper end


def test_no_true_effect_is_called_helps_or_hurts_in_at_most_5_percent():
    rng = np.random.default_rng(0)
    calls = [v.verdict in (HELPS, HURTS) for _ in range(2000) for v in ablate([0.0, 0.0, 0.0], 1.0, rng).values()]
    assert np.mean(calls) <= _upper(0.05, len(calls)), np.mean(calls)


def test_an_effect_of_two_seed_sds_is_found_within_eight_seeds():
    rng = np.random.default_rng(1)
    sd_diff = 1.0  # each row's seed noise sd / sqrt(2): the per-seed difference has sd 1
    found = [ablate([2.0, 0.0, 0.0], sd_diff / math.sqrt(2), rng)["row1"] for _ in range(500)]
    assert np.mean([v.verdict == HELPS for v in found]) >= 0.8
    assert max(v.seeds for v in found) <= 8 and min(v.seeds for v in found) == 3  # decided early when it can
    assert not any(v.verdict == HURTS for v in found)


def test_no_effect_with_a_small_seed_sd_is_no_effect_larger_than_delta():
    rng = np.random.default_rng(2)
    verdicts = [ablate([0.0], 0.1, rng)["row1"].verdict for _ in range(300)]
    assert np.mean([v == EQUIVALENT for v in verdicts]) >= 0.9
    noisy = [ablate([0.0], 3.0, rng)["row1"].verdict for _ in range(100)]  # too noisy to tell: the budget says so
    assert np.mean([v == UNDECIDED for v in noisy]) >= 0.8


def test_a_budget_stops_the_ablation_undecided():
    verdicts = ablate([0.0, 0.0], 3.0, np.random.default_rng(3), budget=7)
    assert {v.verdict for v in verdicts.values()} == {UNDECIDED} and sum(v.seeds for v in verdicts.values()) == 7


def test_the_spending_adds_up_and_the_pieces_match_scipy():
    assert RULE.looks() == [3, 6, 8] and sum(RULE.spent().values()) == pytest.approx(0.05)
    assert RULE.spent()[8] > RULE.spent()[6] > RULE.spent()[3]  # most of the level at the last look
    d = [0.3, -0.2, 0.5, 0.1, 0.4]
    mean, p, half = t_p_and_halfwidth(d, 0.05)
    ref = stats.ttest_1samp(d, 0)
    assert p == pytest.approx(ref.pvalue) and mean + half == pytest.approx(ref.confidence_interval(0.95).high)
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})


def test_stats_agree_with_scipy_and_the_interval_formula():
    from scipy import stats as sp

    from trickbox.ablation import stats as st
    a, b = [10.0, 11.0, 12.5], [14.0, 15.5, 13.0, 16.0]
    c = st.welch(a, b, higher=False)  # claim: a is lower
    assert c.p == pytest.approx(sp.ttest_ind(a, b,
                                             equal_var=False).pvalue) and c.diff == pytest.approx(14.625 - 11.1666667)
    assert c.ci_low < c.diff < c.ci_high and c.verdict == "reproduced"
    assert "Welch t" in c.describe() and "p = " in c.describe()
    assert st.welch(a, b, higher=True).verdict == "not reproduced"  # significant against the claim
    x, y = [1.0, 2.0, 4.0], [0.5, 1.0, 2.5]
    d = st.paired([i - j for i, j in zip(x, y)])
    assert d.p == pytest.approx(sp.ttest_rel(x, y).pvalue)
    lo, hi = st.prediction_interval([1.0, 2.0, 3.0])  # 2 ± t(0.975, 2)·1·√(4/3)
    assert (lo, hi) == pytest.approx((2 - 4.302653 * 1.154701, 2 + 4.302653 * 1.154701), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 committed seeds"):
        st.prediction_interval([1.0])
