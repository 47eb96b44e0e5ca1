"""The third-party CutMix package: installed, it is a trick like the built-in ones; removed, nothing else breaks."""
from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from ..conftest import REPO, subprocess_env

PLUGIN = REPO / "plugins" / "trickbox-cutmix"
TRICKBOX = str(Path(sys.executable).parent / "trickbox")


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "pip", *args], env=subprocess_env(PIP_DISABLE_PIP_VERSION_CHECK="1"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-1500:] + res.stderr[-1500:]
    return res


def install_plugin() -> None:
    """``pip install --no-deps -e plugins/trickbox-cutmix``, offline when the venv's setuptools can build it."""
    try:
        offline = int(metadata.version("setuptools").split(".")[0]) >= 68
    except metadata.PackageNotFoundError:
        offline = False
    _pip("install", "--no-deps", "--quiet", *(["--no-build-isolation"] if offline else []), "-e", str(PLUGIN))


def _trickbox(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRICKBOX, *args], cwd=cwd, env=subprocess_env(WANDB_MODE="disabled"),
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cutmix_plugin_installs_trains_and_uninstalls_cleanly(tmp_path):
    install_plugin()
    try:
        listed = _trickbox(tmp_path, "list")
        assert listed.returncode == 0, listed.stderr
        line = next(x for x in listed.stdout.splitlines() if x.startswith("cutmix "))
        assert "(trickbox-cutmix 0.1.0)" in line
        assert "alpha: float = 1.0" in listed.stdout and "prob: float = 0.5" in listed.stdout

        run = _trickbox(tmp_path, "train", "train.epochs=1", "tricks.cutmix.alpha=1.0", "tricks.cutmix.prob=1.0",
                        "train.tracker=none", "train.progress=false", f"train.out_dir={tmp_path / 'runs'}",
                        "train.run_name=cm")
        assert run.returncode == 0, run.stderr[-3000:]
        assert "trickbox: done" in run.stdout
        assert "cutmix" in (tmp_path / "runs" / "cm" / "config.yaml").read_text()

        _pip("uninstall", "-y", "--quiet", "trickbox-cutmix")
        listed = _trickbox(tmp_path, "list")
        assert listed.returncode == 0, listed.stderr
        assert "cutmix" not in listed.stdout and "mixup" in listed.stdout
        run = _trickbox(tmp_path, "train", "train.epochs=1", "tricks.cutmix.alpha=1.0", "train.tracker=none")
        assert run.returncode == 2
        err = run.stderr.strip().splitlines()
        assert len(err) == 1 and "unknown trick 'cutmix'" in err[0] and "valid:" in err[0], run.stderr
    finally:
        install_plugin()  # later tests (and the plugin's own tests) see it installed again


@pytest.mark.slow
def test_cutmix_package_passes_its_own_tests():
    install_plugin()
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=PLUGIN,
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:]
    assert " passed" in res.stdout
