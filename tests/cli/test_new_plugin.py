"""``trickbox new-plugin``: the package it writes installs, shows in ``trickbox list``, passes its own test and
trains."""
from __future__ import annotations

import ast
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import tomllib

from trickbox import ConfigError
from trickbox.cli import main
from trickbox.scaffold import check_name, class_name, plugin_files, write_plugin

from ..conftest import subprocess_env

TRICKBOX = str(Path(sys.executable).parent / "trickbox")
NAME = "scaffold_probe"  # unlikely to clash with a real trick
DIST = "trickbox-scaffold-probe"


def _pip(*args: str) -> None:
    res = subprocess.run([sys.executable, "-m", "pip", *args], env=subprocess_env(PIP_DISABLE_PIP_VERSION_CHECK="1"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-1500:] + res.stderr[-1500:]


def pip_install_editable(path: Path) -> None:
    """``pip install --no-deps -e path``, offline when the venv's setuptools can build the package itself."""
    try:
        offline = int(metadata.version("setuptools").split(".")[0]) >= 68
    except metadata.PackageNotFoundError:
        offline = False
    _pip("install", "--no-deps", "--quiet", *(["--no-build-isolation"] if offline else []), "-e", str(path))


@pytest.mark.parametrize("bad", ["Bad-Name", "1abc", "with space", "class", "trailing_", "double__under", "", "x" * 41,
                                 "café"])
def test_bad_names_are_refused(bad):
    with pytest.raises(ConfigError, match="is not valid: use lowercase letters"):
        check_name(bad)


def test_a_taken_name_is_refused():
    with pytest.raises(ConfigError, match=r"'mixup' is already taken by trickbox"):
        check_name("mixup")


def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys):
    assert main(["new-plugin", "Bad-Name", "--dir", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trickbox: error: plugin name 'Bad-Name'")
    assert not (tmp_path / "p").exists()


def test_an_existing_directory_is_never_overwritten(tmp_path, capsys):
    target = tmp_path / "pkg"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert main(["new-plugin", NAME, "--dir", str(target)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["pkg"]  # no staging directory left behind


def test_an_empty_directory_is_filled(tmp_path):
    (tmp_path / "pkg").mkdir()
    write_plugin(NAME, tmp_path / "pkg")
    assert (tmp_path / "pkg" / "pyproject.toml").is_file()


def test_generated_files_are_consistent():
    files = plugin_files("my_trick")
    assert set(files) == {"pyproject.toml", "README.md", "src/trickbox_my_trick/__init__.py", "tests/test_my_trick.py"}
    project = tomllib.loads(files["pyproject.toml"])["project"]
    assert project["name"] == "trickbox-my-trick"
    assert project["entry-points"]["trickbox.tricks"] == {"my_trick": "trickbox_my_trick:MyTrick"}
    assert any(dep.startswith("trickbox>=") for dep in project["dependencies"])
    module = ast.parse(files["src/trickbox_my_trick/__init__.py"])
    classes = {n.name: n for n in module.body if isinstance(n, ast.ClassDef)}
    assert class_name("my_trick") == "MyTrick" and "MyTrick" in classes
    ast.parse(files["tests/test_my_trick.py"])
    assert "pip install -e \".[test]\"" in files["README.md"]


@pytest.mark.slow
def test_scaffolded_plugin_installs_passes_its_test_and_trains(tmp_path):
    pkg = tmp_path / "pkg"
    assert main(["new-plugin", NAME, "--dir", str(pkg)]) == 0
    pip_install_editable(pkg)
    try:
        listed = subprocess.run([TRICKBOX, "list"], cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                                timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert f"{NAME}  ({DIST} 0.1.0)" in listed.stdout
        assert not any(line.startswith("!") for line in listed.stdout.splitlines()), listed.stdout  # nothing broken

        own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=pkg,
                             env=subprocess_env(),
                             capture_output=True, text=True, timeout=300)
        assert own.returncode == 0, own.stdout[-3000:]
        assert "5 passed" in own.stdout

        run = subprocess.run(
            [TRICKBOX, "train", "train.epochs=1", f"tricks.{NAME}.weight=0.2", "train.tracker=none",
             "train.progress=false",
             "train.log_every=1", f"train.out_dir={tmp_path / 'runs'}", "train.run_name=r"],
            cwd=tmp_path, env=subprocess_env(WANDB_MODE="disabled"), capture_output=True, text=True, timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        assert f'"loss/{NAME}"' in (tmp_path / "runs" / "r" / "metrics.jsonl").read_text()
    finally:
        _pip("uninstall", "-y", "--quiet", DIST)
