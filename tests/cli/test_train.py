"""``trickbox train``: the resolved config everywhere, --print-config, overrides on either side of flags."""
from __future__ import annotations

import subprocess
import sys

import yaml

from trickbox.registry import discover

from ..conftest import REPO, subprocess_env
from ..wandb_reader import config_value, offline_runs, read_run

TRICKS = ["tricks.mixup.alpha=0.3", "tricks.label_smoothing.eps=0.05", "tricks.sgdr.t0=1"]


def train(cwd, *args, **env):
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=300)


def test_config_yaml_and_the_wandb_config_hold_every_trick_parameter_and_the_precision(tmp_path):
    proc = train(tmp_path, "train.epochs=1", "train.progress=false", "train.run_name=r", *TRICKS, WANDB_MODE="offline")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = yaml.safe_load((tmp_path / "runs" / "r" / "config.yaml").read_text())
    (run,) = [read_run(p) for p in offline_runs(tmp_path)]
    cat = discover()
    for name in ("mixup", "label_smoothing", "sgdr"):
        declared = {p.name: p.default for p in cat.tricks[name].cls.params}
        for where in (saved["tricks"][name], config_value(run.config, "tricks")[name]):
            assert set(where) == set(declared), (name, where)  # every parameter, the defaults included
    assert saved["tricks"]["mixup"]["alpha"] == 0.3 and saved["tricks"]["mixup"]["pairing"] == "random"
    assert saved["train"]["mixed_precision"] == "no" and config_value(run.config, "train")["mixed_precision"] == "no"
    assert saved["runtime"]["processes"] == 1 and saved["runtime"]["data_path"] == "memory"
    assert run.group == "digits-cifar_resnet8" and run.job_type == "train"
    assert run.series("train/loss") and run.series("train/images_per_s")


def test_print_config_shows_every_parameter_and_trains_nothing(tmp_path, cli):
    proc = cli("train", "--print-config", "tricks.mixup.alpha=0.4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["tricks"]["mixup"]["alpha"] == 0.4
    assert set(printed["tricks"]["mixup"]) == {p.name for p in discover().tricks["mixup"].cls.params}
    assert not (tmp_path / "runs").exists()
    helped = cli("train", "--help")
    assert "--print-config" in helped.stdout


def test_overrides_on_either_side_of_flags(tmp_path, cli):
    proc = cli("train", "train.epochs=1", "--tracker", "none", "train.seed=1", "--print-config", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["train"]["epochs"] == 1 and printed["train"]["seed"] == 1 and printed["train"]["tracker"] == "none"
