"""Shared test settings: offline, quiet, one thread per in-process test (2-core machines)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cifar_zip() -> Path:
    """The CIFAR-10 JPEG zip, or skip."""
    path = Path(os.environ.get("TRICKBOX_CIFAR10_ZIP", REPO.parent / "shared" / "datasets" / "cifar10-jpeg.zip"))
    if not path.is_file():
        pytest.skip(f"CIFAR-10 zip not found at {path}")
    return path


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: offline, W&B disabled unless a test enables it."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env
