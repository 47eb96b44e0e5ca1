"""A bad config (unknown trick or key, bad value, wrong type, a YAML python tag) exits 2 with one line before
anything is written.

Every injected fault is appended to a JSON-lines log (the ``fault`` fixture) so that the numbers in
``docs/reliability.md`` come from a test run.
"""
from __future__ import annotations

import pytest

from trickbox.cli import main as cli_main

from ..conftest import one_line, run_train_py


@pytest.mark.slow
def test_yaml_python_tags_are_refused(tmp_path, fault):
    fault("YAML with a python/object/apply tag (CLI)")
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'train: !!python/object/apply:os.system ["touch {marker}"]\n')
    res = run_train_py(tmp_path, "-c", str(evil))
    assert res.returncode == 2
    assert "is not safe YAML" in one_line(res.stderr)
    assert not marker.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["evil.yaml"]


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("tricks.mixupp.alpha=0.2", "unknown trick 'mixupp'; did you mean 'mixup'?"),
        ("tricks.mixup.alpha=-1", "tricks.mixup.alpha must be > 0, got -1.0"),
        ("train.epoch=3", "unknown config key 'train.epoch'; did you mean 'epochs'?"),
        ("train.epochs=three", "train.epochs must be an integer, got 'three'"),
    ],
    ids=["unknown-trick", "bad-value", "unknown-key", "wrong-type"],
)
def test_bad_config_exits_2_before_anything_is_written(tmp_path, monkeypatch, capsys, override, fragment, fault,
                                                       request):
    fault(f"invalid config ({request.node.callspec.id})")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")  # a run that started would create ./wandb
    code = cli_main(["train", "train.epochs=1", "train.tracker=wandb", override])
    err = capsys.readouterr().err
    assert code == 2
    line = one_line(err)
    assert line.startswith("trickbox: error: ") and fragment in line
    assert list(tmp_path.iterdir()) == [], "something was written before the config was validated"
