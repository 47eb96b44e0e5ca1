"""The launcher's mixed precision: ``accelerate launch --mixed_precision bf16`` trains under bf16 autocast and the
run's config says so; ``train.mixed_precision=no`` on the command line still wins."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO, subprocess_env

ENV = dict(ACCELERATE_USE_CPU="1", TRICKBOX_PLUGINS="precision", PYTHONPATH=str(REPO / "tests" / "fixtures"))


def _launch(tmp_path: Path, name: str, *overrides: str) -> tuple[str, dict]:
    probe = tmp_path / f"{name}.dtype"
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "bf16", "--dynamo_backend", "no", str(REPO / "train.py"), "train.epochs=1",
           "train.tracker=none", "train.progress=false", f"train.run_name={name}", "data.train_subset=256",
           f"tricks.precision_probe.out={probe}", *overrides]
    proc = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(**ENV), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return probe.read_text(), yaml.safe_load((tmp_path / "runs" / name / "config.yaml").read_text())


@pytest.mark.slow
def test_the_launchers_bf16_is_used_and_recorded_and_an_explicit_setting_wins(tmp_path):
    dtype, cfg = _launch(tmp_path, "launcher")
    assert dtype == "torch.bfloat16"
    assert cfg["train"]["mixed_precision"] == "bf16" and cfg["runtime"]["precision"] == "bf16"
    assert cfg["runtime"]["processes"] == 1 and cfg["runtime"]["device"] == "cpu"
    assert cfg["runtime"]["data_path"] == "memory"
    dtype, cfg = _launch(tmp_path, "explicit", "train.mixed_precision=no")
    assert dtype == "torch.float32" and cfg["runtime"]["precision"] == "no"
