"""The recipe tricks are listed with their parameters and can be searched from a sweep spec by their declared ranges."""
from __future__ import annotations

import pytest
import yaml

import trickbox.cli
from trickbox.registry import discover, hook_problems

from ..conftest import REPO

NEW = ("ema", "grad_clip", "linear_scaling", "zero_gamma", "no_bias_decay")
SEARCHED = {"ema.decay": (0.99, 0.9999), "ema.warmup_power": (0.5, 1.0), "grad_clip.max_norm": (0.1, 10.0),
            "grad_clip.max_value": (0.01, 10.0)}


def test_installed_and_sound():
    cat = discover(autoload=False)
    for name in NEW:
        assert name in cat.tricks, name
        assert hook_problems(cat.tricks[name].cls) == []  # hooks exist, Search ranges lie inside the valid ranges


def test_trickbox_list_shows_them_with_their_parameters(capsys):
    assert trickbox.cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in NEW:
        assert f"\n{name}  (trickbox " in out, name
    assert "    decay: float = 0.9998  valid in [0, 1)  search [0.99, 0.9999]" in out
    assert "    max_norm: float = 1.0  valid > 0  search [0.1, 10] log" in out
    assert "    reference_batch: int = 256  valid >= 1" in out


def test_a_spec_searches_the_declared_ranges():
    from trickbox.sweep.spec import spec_from_mapping

    raw = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    raw["base"]["tricks"].update({"ema": {}, "grad_clip": {}, "linear_scaling": {}, "zero_gamma": {}})
    raw["search"] = {key: "default" for key in SEARCHED}
    spec = spec_from_mapping(raw)
    for key, (low, high) in SEARCHED.items():
        dim = spec.dimension(key)
        assert (dim.search.low, dim.search.high) == pytest.approx((low, high)), key
    mapping = spec.trial_mapping({"ema.decay": 0.995, "grad_clip.max_norm": 2.0})
    assert mapping["tricks"]["ema"] == {"decay": 0.995} and mapping["tricks"]["grad_clip"] == {"max_norm": 2.0}
