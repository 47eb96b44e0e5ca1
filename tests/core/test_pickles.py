"""No foreign code from weights or checkpoints: a pickle payload is refused as weights, as a distillation teacher
and in a checkpoint being resumed.

Every injected fault is appended to a JSON-lines log (the ``fault`` fixture) so that the numbers in
``docs/reliability.md`` come from a test run.
"""
from __future__ import annotations

import json
import os
import pickle
import shlex
from pathlib import Path

import pytest
import torch

from trickbox.checkpoint import latest_checkpoint, load_weights
from trickbox.config import load_config
from trickbox.loop import train
from trickbox.trick import ConfigError

from ..conftest import SMALL_RUN_ANY_TRACKER as SMALL
from ..conftest import one_line, run_train_py


# ============================================================================
# Security: no foreign code from weights or checkpoints
# ============================================================================
class _Payload:
    """Unpickling this object runs ``touch MARKER``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _payload_file(path: Path, marker: Path, fmt: str) -> Path:
    if fmt == "torch-zip":
        torch.save({"fc.weight": torch.zeros(1), "evil": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}, protocol=2))
    return path


@pytest.mark.parametrize("fmt", ["torch-zip", "raw-pickle"])
def test_payload_is_live_but_load_weights_refuses_it(tmp_path, fmt, fault):
    fault(f"pickle payload as weights ({fmt})")
    payload = _payload_file(tmp_path / f"evil.{fmt}", tmp_path / "MARKER", fmt)
    with pytest.raises(ConfigError, match="refusing to load") as err:
        load_weights(payload)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "MARKER").exists()
    # control: the same file, unpickled without weights_only, does run the payload
    if fmt == "torch-zip":
        torch.load(payload, weights_only=False)
    else:
        pickle.loads(payload.read_bytes())
    assert (tmp_path / "MARKER").exists()


@pytest.mark.slow
def test_teacher_pickle_payload_is_refused_by_the_cli(tmp_path, fault):
    fault("pickle payload as distillation teacher (CLI)")
    marker = tmp_path / "MARKER"
    payload = _payload_file(tmp_path / "teacher.pt", marker, "torch-zip")
    res = run_train_py(tmp_path, *SMALL, "train.tracker=none", "tricks.distillation.teacher=cifar_resnet8",
                       f"tricks.distillation.checkpoint={payload}")
    assert res.returncode == 2, res.stderr[-3000:]
    line = one_line(res.stderr)
    assert line.startswith("trickbox: error: refusing to load") and "teacher.pt" in line
    assert not marker.exists()


def test_checkpoint_with_a_pickle_payload_is_refused_on_resume(tmp_path, fault):
    fault("pickle payload in a checkpoint's optimizer.pt")
    cfg = load_config([], [*SMALL, "train.tracker=none", f"train.out_dir={tmp_path}", "train.run_name=r",
                           "train.epochs=2",
                           "train.stop_after_epoch=1"])
    train(cfg)
    ckpt = latest_checkpoint(tmp_path / "r" / "checkpoints")
    assert ckpt is not None
    marker = tmp_path / "MARKER"
    optimizer_pt = ckpt.path / "optimizer.pt"
    _payload_file(optimizer_pt, marker, "torch-zip")
    # an attacker who can write the file can also fix its hash: the loader must refuse it anyway
    import hashlib

    state = json.loads((ckpt.path / "state.json").read_text())
    state["files"]["optimizer.pt"] = hashlib.sha256(optimizer_pt.read_bytes()).hexdigest()
    (ckpt.path / "state.json").write_text(json.dumps(state))
    with pytest.raises(ConfigError, match="refusing to load .*optimizer.pt"):
        train(cfg, resume=True)
    assert not marker.exists()

