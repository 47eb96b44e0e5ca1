"""Nothing non-finite is evaluated or saved, whatever hook wrote it: a buffer, a weight or a trick's state."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trickbox.checkpoint import list_checkpoints, load_checkpoint, verify
from trickbox.cli import main as cli_main

from ..conftest import REPO, SMALL_RUN, runs_in_one_launch, told

POISON = [*SMALL_RUN, "train.epochs=2", "tricks.ema.decay=0.5"]


def _finite_checkpoints(run_dir: Path) -> bool:
    """Every checkpoint of the run, and an ``ema.safetensors`` if one was written, holds finite values only."""
    import torch
    from safetensors.torch import load_file

    if (run_dir / "ema.safetensors").exists():
        ema = load_file(str(run_dir / "ema.safetensors"))
        if not all(torch.isfinite(t).all() for t in ema.values() if t.is_floating_point()):
            return False
    for ckpt in list_checkpoints(run_dir / "checkpoints"):
        checked = verify(ckpt)
        assert checked is not None
        model_state, _ = load_checkpoint(checked)
        if not all(torch.isfinite(t).all() for t in model_state.values() if t.is_floating_point()):
            return False
    return True


@pytest.fixture
def poison_plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests" / "fixtures"))
    monkeypatch.setenv("TRICKBOX_PLUGINS", "poison_state")
    yield
    sys.modules.pop("poison_state", None)


@pytest.mark.parametrize("what", ["buffer", "parameter", "ema"])
@pytest.mark.parametrize("at", [1, 2])
def test_nan_written_at_an_epoch_end_stops_the_run_before_it_is_evaluated_or_saved(
        tmp_path, monkeypatch, capsys, poison_plugin, fault, what, at):
    fault(f"NaN written into a {what} at the end of epoch {at} of 2")
    monkeypatch.chdir(tmp_path)
    code = cli_main(["train", *POISON, "train.run_name=r", f"tricks.poison_state.what={what}",
                     f"tricks.poison_state.at={at}"])
    err = capsys.readouterr().err
    run = tmp_path / "runs" / "r"
    assert code == 3, err
    assert "not finite" in err and told(err).count("\n") == 1, err
    assert not (run / "model.safetensors").exists() and not (run / "summary.json").exists()
    assert _finite_checkpoints(run)
    assert list_checkpoints(run / "checkpoints")  # the epochs before are kept


def test_nan_on_one_of_two_processes_stops_both_with_nothing_saved(tmp_path, fault):
    fault("NaN written into a buffer, a weight and the EMA on rank 1 of 2 at the last epoch's end")
    runs = [{"overrides": [*POISON, f"train.run_name={what}", f"tricks.poison_state.what={what}",
                           "tricks.poison_state.at=2",
                           "tricks.poison_state.rank=1"]} for what in ("buffer", "parameter", "ema")]
    results, _ = runs_in_one_launch(tmp_path, runs, env={"TRICKBOX_PLUGINS": "poison_state"})
    assert [r["status"] for r in results] == ["nonfinite"] * 3, results
    for what in ("buffer", "parameter", "ema"):
        run = tmp_path / "runs" / what
        assert not (run / "model.safetensors").exists()
        assert _finite_checkpoints(run)
