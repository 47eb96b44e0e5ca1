"""The CUDA defaults, forced on the CPU where CI runs: every branch a GPU run takes is trained here too."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from trickbox.cli import main as cli_main
from trickbox.config import load_config
from trickbox.device_defaults import resolve

from ..conftest import SMALL_RUN, runs_in_one_launch, same_weights, weights

CUDA_ON_CPU = [*SMALL_RUN, "train.device_defaults=cuda", "model.compile_backend=aot_eager", "train.epochs=2"]
"""Every CUDA default on (channels-last, torch.compile, fused SGD, pinned batches), compiled without code generation."""


def test_unset_keys_take_the_profile_and_set_keys_win():
    cpu = resolve(load_config([], []), torch.device("cpu"))
    assert (cpu.profile, cpu.channels_last, cpu.compile, cpu.fused, cpu.pin_memory) == ("cpu", False, False, True,
                                                                                        False)
    forced = resolve(load_config([], ["train.device_defaults=cuda"]), torch.device("cpu"))
    assert (forced.profile, forced.channels_last, forced.compile, forced.pin_memory) == ("cuda", True, True, True)
    mixed = resolve(load_config([], ["train.device_defaults=cuda", "model.compile=false", "optim.fused=false"]),
                    torch.device("cpu"))
    assert (mixed.channels_last, mixed.compile, mixed.fused) == (True, False, False)
    assert resolve(load_config([], []), torch.device("cuda")).profile == "cuda"  # no GPU needed to resolve


def test_cuda_defaults_train_and_resume_exactly_on_one_process(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli_main(["train", *CUDA_ON_CPU, "train.run_name=whole"]) == 0
    assert cli_main(["train", *CUDA_ON_CPU, "train.run_name=parts", "train.stop_after_epoch=1"]) == 0
    assert cli_main(["train", *CUDA_ON_CPU, "train.run_name=parts", "--resume"]) == 0
    runtime = yaml.safe_load((tmp_path / "runs" / "whole" / "config.yaml").read_text())["runtime"]
    assert runtime["device_defaults"] == {"profile": "cuda", "channels_last": True, "compile": True,
                                          "compile_backend": "aot_eager", "fused": True, "pin_memory": True}
    whole, parts = weights(tmp_path / "runs" / "whole"), weights(tmp_path / "runs" / "parts")
    assert not any(k.startswith("_orig_mod.") for k in whole)  # a compiled model saves plain keys
    assert same_weights(whole, parts)


def test_cuda_defaults_train_and_resume_exactly_on_two_processes(tmp_path: Path):
    runs = [{"overrides": [*CUDA_ON_CPU, "train.run_name=whole"]},
            {"overrides": [*CUDA_ON_CPU, "train.run_name=parts", "train.stop_after_epoch=1"]},
            {"overrides": [*CUDA_ON_CPU, "train.run_name=parts"], "resume": True}]
    results, _ = runs_in_one_launch(tmp_path, runs)
    assert [r["status"] for r in results] == ["complete", "stopped", "complete"], results
    runtime = yaml.safe_load((tmp_path / "runs" / "whole" / "config.yaml").read_text())["runtime"]
    assert runtime["processes"] == 2 and runtime["device_defaults"]["compile"] is True
    assert same_weights(weights(tmp_path / "runs" / "whole"), weights(tmp_path / "runs" / "parts"))
