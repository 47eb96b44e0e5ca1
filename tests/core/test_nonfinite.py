"""Non-finite values are caught in the step: no optimizer step on a NaN loss, no checkpoint of inf weights, a NaN
teacher or mixup λ stops the run, and a NaN on one of two processes stops every rank without a hang.

Every injected fault is appended to a JSON-lines log (the ``fault`` fixture) so that the numbers in
``docs/reliability.md`` come from a test run.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from trickbox.api import TrickSet
from trickbox.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from trickbox.cli import main as cli_main
from trickbox.config import load_config
from trickbox.loop import train
from trickbox.registry import discover
from trickbox.trick import NonFiniteError, Param, Trick, hookimpl

from ..conftest import SMALL_RUN_ANY_TRACKER as SMALL
from ..conftest import TRAIN_PY, launch_two_ranks, one_line, subprocess_env


# ============================================================================
# Non-finite values: caught in the step, no optimizer step, no bad checkpoint
# ============================================================================
class Poison(Trick):
    """Test trick: at step ``at`` it returns a NaN loss term (``what=loss``) or, after that
    step, makes one weight infinite (``what=weights``). It records the weights it saw."""

    name = "poison"
    params = (Param("at", int, 5, low=0), Param("what", str, "loss", choices=("loss", "weights")))

    def check(self) -> None:
        self.model: torch.nn.Module | None = None
        self.before: dict[str, torch.Tensor] = {}

    @hookimpl
    def trickbox_configure_model(self, model: torch.nn.Module, ctx: Any) -> None:
        self.model = model  # the same module object the loop trains (prepare does not copy on CPU)

    @hookimpl
    def trickbox_loss(self, logits: torch.Tensor, batch: Any, ctx: Any) -> dict[str, torch.Tensor] | None:
        if self.what == "loss" and ctx.step == self.at:
            assert self.model is not None
            self.before = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return {"poison": logits.sum() * float("nan")}
        return None

    @hookimpl
    def trickbox_after_step(self, batch: Any, ctx: Any) -> None:
        if self.what == "weights" and ctx.step == self.at:
            assert self.model is not None
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] = float("inf")


def _poisoned_run(tmp_path: Path, *extra: Trick, at: int, what: str = "loss"):
    """Train 3 epochs of 2 steps (256 images, batches of 128) with ``Poison``; it must raise NonFiniteError."""
    cfg = load_config([], [*SMALL, "train.epochs=3", "train.tracker=none", "train.batch_size=128",
                           f"train.out_dir={tmp_path}", "train.run_name=nan"])
    poison = Poison(at=at, what=what)
    with pytest.raises(NonFiniteError) as err:
        train(cfg, tricks=TrickSet([poison, *extra]))
    return poison, err.value, tmp_path / "nan"


def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nan_loss_stops_before_backward_and_optimizer_step(tmp_path, fault):
    fault("NaN loss term at step 5")
    # 256 images / 128 per batch = 2 steps per epoch: the epoch-1 checkpoint is at step 2, the NaN at step 5
    poison, err, run_dir = _poisoned_run(tmp_path, at=5)
    assert "loss is not finite at step 5" in str(err) and "poison=nan" in str(err)
    assert poison.model is not None
    after = poison.model.state_dict()
    assert all(torch.equal(poison.before[k], after[k]) for k in after), "the optimizer stepped on a NaN loss"
    assert all(p.grad is None for p in poison.model.parameters()), "backward ran on a NaN loss"
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    assert ckpt is not None and ckpt.step == 4 < 5
    assert _finite(load_checkpoint(ckpt)[0])
    assert not (run_dir / "model.safetensors").exists()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] or 0 for r in rows) <= 5


def test_inf_weights_are_never_checkpointed(tmp_path, fault):
    fault("inf weight before a checkpoint")
    # the weight becomes inf right after step 2, the last step of epoch 1: its end-of-epoch checkpoint is refused
    poison, err, run_dir = _poisoned_run(tmp_path, at=2, what="weights")
    assert "not finite after step 2" in str(err)
    assert list_checkpoints(run_dir / "checkpoints") == []


def test_non_finite_mixup_lambda_is_caught(tmp_path, monkeypatch, fault):
    fault("NaN mixup λ at step 2")
    import trickbox.tricks.mixup as mixup_module

    real = mixup_module.sample_lambda
    draws = iter(range(10**6))

    def nan_at_step_2(alpha: float, size: int | None, rng: Any) -> Any:  # one draw per step
        return float("nan") if next(draws) == 2 else real(alpha, size, rng)

    monkeypatch.setattr(mixup_module, "sample_lambda", nan_at_step_2)
    mixup = discover().build({"mixup": {"alpha": 0.4, "grid": False}})[0]
    poison, err, run_dir = _poisoned_run(tmp_path, mixup, at=10**6)
    assert "mixup drew a non-finite λ" in str(err)
    assert latest_checkpoint(run_dir / "checkpoints").step == 2  # type: ignore[union-attr]


def _nan_teacher(path: Path) -> Path:
    from safetensors.torch import save_file

    from trickbox.build import create_model

    state = {k: v.clone().contiguous() for k, v in create_model("cifar_resnet8", num_classes=10,
                                                                in_chans=1).state_dict().items()}
    state["fc.weight"].fill_(float("nan"))
    save_file(state, str(path))
    return path


def test_nan_teacher_logits_stop_the_cli_with_exit_3(tmp_path, monkeypatch, capsys, fault):
    fault("NaN teacher logits (CLI)")
    teacher = _nan_teacher(tmp_path / "nan_teacher.safetensors")
    monkeypatch.chdir(tmp_path)
    code = cli_main(["train", *SMALL, "train.tracker=none", "train.run_name=kd",
                     "tricks.distillation.teacher=cifar_resnet8",
                     f"tricks.distillation.checkpoint={teacher}"])
    assert code == 3
    line = one_line(capsys.readouterr().err)
    assert line == ("trickbox: stopped: teacher logits are not finite; no optimizer step or checkpoint was written "
                    "with it")
    assert list_checkpoints(tmp_path / "runs" / "kd" / "checkpoints") == []



NAN_ON_ONE_RANK = '''
import torch
from trickbox import Trick, hookimpl


class NanOnRankOne(Trick):
    name = "nan_rank1"

    @hookimpl
    def trickbox_loss(self, logits, batch, ctx):
        if ctx.rank == 1 and ctx.step == 1:
            return {"poison": logits.sum() * float("nan")}
        return None
'''


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank_without_a_hang(tmp_path, fault):
    fault("NaN in the loss on one of 2 processes")
    site = tmp_path / "site"
    site.mkdir()
    (site / "tbx_nan_rank.py").write_text(NAN_ON_ONE_RANK)
    info = site / "tbx_nan_rank-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tbx-nan-rank\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[trickbox.tricks]\nnan_rank1 = tbx_nan_rank:NanOnRankOne\n")
    res = subprocess.run(
        [*launch_two_ranks(), TRAIN_PY, *SMALL, "train.tracker=none", "train.run_name=r", "tricks.nan_rank1={}"],
        cwd=tmp_path, env=subprocess_env(ACCELERATE_USE_CPU="1", PYTHONPATH=str(site)), capture_output=True, text=True,
        timeout=240,
    )
    assert res.returncode != 0
    assert "not finite" in res.stderr or "non-finite" in res.stderr, res.stderr[-2000:]
    # stopped in epoch 1, before any checkpoint
    assert not list((tmp_path / "runs" / "r" / "checkpoints").glob("step-*"))
