"""Every new parameter and config key: a bad value exits 2 with one line naming it, through ``trickbox train``."""
from __future__ import annotations

import pytest

import trickbox.cli

BAD = [
    ("tricks.ema.decay=1.0", "tricks.ema.decay must be in [0, 1), got 1.0"),
    ("tricks.ema.decay=-0.1", "tricks.ema.decay must be in [0, 1), got -0.1"),
    ("tricks.ema.warmup=maybe", "tricks.ema.warmup must be true or false, got 'maybe'"),
    ("tricks.ema.warmup_gamma=0", "tricks.ema.warmup_gamma must be > 0, got 0.0"),
    ("tricks.ema.warmup_power=-1", "tricks.ema.warmup_power must be > 0, got -1.0"),
    ("tricks.ema.min_decay=1.5", "tricks.ema.min_decay must be in [0, 1), got 1.5"),
    ("tricks.ema.min_decay=0.99999", "tricks.ema.min_decay=0.99999 exceeds tricks.ema.decay=0.9998"),
    ("tricks.ema.update_after_step=-1", "tricks.ema.update_after_step must be an integer >= 0, got -1"),
    ("tricks.ema.update_after_step=2.5", "tricks.ema.update_after_step must be an integer, got 2.5"),
    ("tricks.ema.exclude_buffers=1", "tricks.ema.exclude_buffers must be true or false, got 1"),
    ("tricks.ema.evaluate=no_thanks", "tricks.ema.evaluate must be true or false, got 'no_thanks'"),
    ("tricks.ema.save=3", "tricks.ema.save must be true or false, got 3"),
    ("tricks.ema.decya=0.9", "unknown parameter tricks.ema.decya; did you mean 'decay'?"),
    ("tricks.grad_clip.mode=norms", "tricks.grad_clip.mode must be one of 'norm', 'value', got 'norms'; did you mean "
                                    "'norm'?"),
    ("tricks.grad_clip.max_norm=0", "tricks.grad_clip.max_norm must be > 0, got 0.0"),
    ("tricks.grad_clip.max_norm=.nan", "tricks.grad_clip.max_norm must be a finite number, got nan"),
    ("tricks.grad_clip.norm_type=-2", "tricks.grad_clip.norm_type must be > 0, got -2.0"),
    ("tricks.grad_clip.max_value=0", "tricks.grad_clip.max_value must be > 0, got 0.0"),
    ("tricks.linear_scaling.reference_batch=0", "tricks.linear_scaling.reference_batch must be an integer >= 1, got 0"),
    ("tricks.linear_scaling.reference_batch=25.6",
     "tricks.linear_scaling.reference_batch must be an integer, got 25.6"),
    ("tricks.zero_gamma.gamma=0", "unknown parameter tricks.zero_gamma.gamma (valid: none)"),
    ("tricks.no_bias_decay.exclude=[1]",
     "tricks.no_bias_decay.exclude must be a list of parameter-name globs, got [1]"),
    ("model.pretrained=yes please", "model.pretrained must be true or false, got 'yes please'"),
    ("model.pretrained_file=3", "model.pretrained_file must be a string, got 3"),
    ("optim.layer_decay=1.5", "optim.layer_decay must be in (0, 1], got 1.5"),
    ("optim.layer_decay=0", "optim.layer_decay must be in (0, 1], got 0.0"),
    ("optim.lr_mult=10", "optim.lr_mult must be a mapping, got 10"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[b[0] for b in BAD])
def test_bad_value_exits_2_with_one_line(override, message, tmp_path, capsys):
    code = trickbox.cli.main(["train", "--tracker", "none", f"train.out_dir={tmp_path}", override])
    err = capsys.readouterr().err.strip()
    assert code == 2
    one_line = err.startswith(f"trickbox: error: {message}") and "\n" not in err
    assert err == f"trickbox: error: {message}" or one_line, err
    assert not any(tmp_path.iterdir())  # stopped before anything was written
