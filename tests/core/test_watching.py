"""Watching a run: one console line per epoch, the loss and its parts every step, the gradient norm (with grad_clip,
or train.log_grad_norm), each parameter group's rate, and a progress bar with a 1-based epoch and a current rate."""
from __future__ import annotations

import json
import re

import pytest

from trickbox.config import load_config
from trickbox.loop import train

from ..conftest import SMALL_RUN


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _train(tmp_path, name, *extra):
    cfg = load_config([], [*SMALL_RUN, f"train.out_dir={tmp_path}", f"train.run_name={name}", "train.epochs=2",
                           "optim.lr=0.05", *extra])
    return train(cfg)


def test_one_line_per_epoch_and_every_step_logged(tmp_path, capsys):
    result = _train(tmp_path, "w", "tricks.mixup={}", "tricks.label_smoothing={}", "optim.lr_mult={fc.*: 10}",
                    "tricks.grad_clip={max_norm: 0.5}")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trickbox: epoch ")]
    assert len(lines) == 2, lines
    pattern = (r"trickbox: epoch (\d)/2: train loss [\d.]+, val top1 [\d.]+ nll [\d.]+ ece [\d.e-]+, lr [\d.e-]+, "
               r"[\d,]+ img/s, [\d.]+ s")
    assert [re.fullmatch(pattern, line).group(1) for line in lines] == ["1", "2"], lines
    steps = [r for r in _rows(result.run_dir) if "lr" in r]
    assert [r["step"] for r in steps] == list(range(result.steps))  # every optimizer step has its row
    for r in steps:
        assert r["loss"] == pytest.approx(r["loss/ce"], rel=1e-6) and r["grad_norm"] > 0
        assert r["lr/group1"] == pytest.approx(10 * r["lr/group0"]) and r["lr"] == pytest.approx(r["lr/group0"])
    assert any(r["grad_norm"] > 0.5 for r in steps)  # the norm before clipping


def test_the_gradient_norm_without_grad_clip_is_the_same_norm(tmp_path):
    clipped = _rows(_train(tmp_path, "clip", "tricks.grad_clip={max_norm: 1000}").run_dir)
    plain = _rows(_train(tmp_path, "plain", "train.log_grad_norm=true").run_dir)
    off = _rows(_train(tmp_path, "bare").run_dir)
    norms = [r["grad_norm"] for r in plain if "grad_norm" in r]
    assert norms == pytest.approx([r["grad_norm"] for r in clipped if "grad_norm" in r], rel=1e-5)
    assert len(norms) == len([r for r in plain if "lr" in r]) and not any("grad_norm" in r for r in off)


class _Bar:
    def __init__(self):
        self.shown = {}

    def update(self, n):
        pass

    def set_postfix(self, shown, refresh=False):
        self.shown = dict(shown)


def test_the_bar_shows_a_1_based_epoch_and_the_current_rate():
    from types import SimpleNamespace

    from trickbox.loop import _show_progress

    rates = {0: 0.1, 1: 0.05, 2: 0.1}  # a restart at step 2, after the run's last step
    run = SimpleNamespace(progress=_Bar(), cfg=SimpleNamespace(train=SimpleNamespace(epochs=3, log_every=10)),
                          ctx=SimpleNamespace(step=1),
                          tricks=SimpleNamespace(lr=lambda step: rates[step], guard=SimpleNamespace(deferred=True)))
    _show_progress(run, None, 0)  # type: ignore[arg-type]
    assert run.progress.shown == {"epoch": "1/3", "lr": "0.1"}
    run.ctx.step = 2  # not a log_every step: the rate is still current (the one step 1 used, not step 2's restart)
    _show_progress(run, None, 0)  # type: ignore[arg-type]
    assert run.progress.shown["lr"] == "0.05"
