"""``one_of``: one batch-transform trick per batch, or none. Against timm's Mixup(mixup_alpha, cutmix_alpha, prob,
switch_prob): the same switch frequencies over 10,000 batches (within their binomial 99 % intervals), and each
chosen batch is exactly what the chosen trick alone makes at that step (the trickbox-cutmix plugin included)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from timm.data import Mixup

from trickbox import load_tricks
from trickbox.batch import hard_batch
from trickbox.errors import ConfigError

K, N = 10, 10_000
PROB, SWITCH = 0.8, 0.5
CHOICES = {"cutmix": PROB * SWITCH, "mixup": PROB * (1 - SWITCH)}


def _set(tricks: dict):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, K))
    ts = load_tricks(tricks)
    ts.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=K, epochs=1, steps_per_epoch=N)
    return ts


def _inside(count: int, p: float) -> bool:
    half = 2.576 * math.sqrt(p * (1 - p) / N)  # the binomial 99 % interval (normal approximation, n p >> 1)
    return abs(count / N - p) <= half


def test_the_switch_frequencies_are_timms():
    ts = _set({"mixup": {"alpha": 1.0}, "cutmix": {"alpha": 1.0, "prob": 1.0}, "one_of": {"choices": CHOICES}})
    one_of = next(t for t in ts.tricks if t.name == "one_of")
    ours = {"cutmix": 0, "mixup": 0, None: 0}
    for step in range(N):
        ts.ctx.step = step
        ours[one_of.choose(ts.ctx)] += 1
    np.random.seed(0)
    timm_mixup = Mixup(mixup_alpha=1.0, cutmix_alpha=1.0, prob=PROB, switch_prob=SWITCH, num_classes=K)
    theirs = {"cutmix": 0, "mixup": 0, None: 0}
    for _ in range(N):
        lam, use_cutmix = timm_mixup._params_per_batch()
        theirs["cutmix" if use_cutmix else "mixup" if lam != 1.0 else None] += 1
    for name, p in [*CHOICES.items(), (None, 1 - PROB)]:
        assert _inside(ours[name], p), (name, ours)
        assert _inside(theirs[name], p), (name, theirs)


def test_each_chosen_batch_is_the_chosen_tricks_own():
    both = _set({"mixup": {"alpha": 1.0}, "cutmix": {"alpha": 1.0, "prob": 1.0}, "one_of": {"choices": CHOICES}})
    alone = {"mixup": _set({"mixup": {"alpha": 1.0}}), "cutmix": _set({"cutmix": {"alpha": 1.0, "prob": 1.0}})}
    one_of = next(t for t in both.tricks if t.name == "one_of")
    seen = set()
    for step in range(40):
        torch.manual_seed(step)
        x, labels = torch.rand(8, 3, 8, 8), torch.randint(0, K, (8,))
        for ts in (both, *alone.values()):
            ts.ctx.step = step
        chosen = one_of.choose(both.ctx)
        got = both.batch(x, labels)
        want = alone[chosen].batch(x, labels) if chosen else hard_batch(x, labels, K)
        assert torch.equal(got.x, want.x) and torch.equal(got.y, want.y), (step, chosen)
        seen.add(chosen)
    assert seen == {"mixup", "cutmix", None}


@pytest.mark.parametrize("tricks, fragment", [
    ({"mixup": {}, "one_of": {"choices": {"mixup": 0.5, "cutmix": 0.5}}}, "'cutmix', which is not an enabled trick"),
    ({"mixup": {}, "cutmix": {}, "one_of": {"choices": {"mixup": 0.7, "cutmix": 0.5}}}, "sum to 1.2, above 1"),
    ({"mixup": {"layer": 1}, "one_of": {"choices": {"mixup": 0.5}}}, "mixes hidden features (layer=1)"),
    ({"label_smoothing": {}, "one_of": {"choices": {"label_smoothing": 0.5}}}, "has no batch transform"),
    ({"one_of": {"choices": {"mixup": "half"}}}, "must map trick names to probabilities in [0, 1]"),
])
def test_bad_choices_are_one_line(tricks, fragment):
    with pytest.raises(ConfigError) as info:
        load_tricks(tricks)
    assert fragment in str(info.value) and "\n" not in str(info.value)
