"""mixup's messages agree with what it accepts; the silent cases speak."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import trickbox
from trickbox.functional import sample_lambda
from trickbox.trick import ConfigError


def test_alpha_zero_is_refused_with_the_way_to_switch_mixup_off():
    with pytest.raises(ConfigError) as err:
        trickbox.load_tricks({"mixup": {"alpha": 0}})
    assert "tricks.mixup.alpha must be > 0" in str(err.value) and "tricks.mixup=null" in str(err.value)


def test_the_functional_message_does_not_promise_what_the_trick_refuses():
    with pytest.raises(ValueError) as err:
        sample_lambda(-1.0, None, np.random.default_rng(0))
    assert "switch mixup off" not in str(err.value) and "alpha=0 mixes nothing" in str(err.value)


def test_knn_pairing_with_a_hidden_layer_is_refused():
    with pytest.raises(ConfigError, match="mixes inputs only"):
        trickbox.load_tricks({"mixup": {"pairing": "knn", "layer": 1}})


def test_mixup_past_the_declared_steps_warns_once():
    tricks = trickbox.load_tricks({"mixup": {"alpha": 0.4}})
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    tricks.setup(model, torch.optim.SGD(model.parameters(), lr=0.1), num_classes=3, epochs=1, steps_per_epoch=2)
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    tricks.ctx.step = 2  # past 1 epoch x 2 steps
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = tricks.batch(x, y), tricks.batch(x, y)
    assert "lam" not in first.meta and "lam" not in second.meta
    assert sum("mixup is off from here on" in str(w.message) for w in caught) == 1
