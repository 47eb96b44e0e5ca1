"""W&B: an outage, a timeout or an unwritable directory never stops training, and the API key is never written.

Every injected fault is appended to a JSON-lines log (the ``fault`` fixture) so that the numbers in
``docs/reliability.md`` come from a test run.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from ..conftest import SMALL_RUN_ANY_TRACKER as SMALL
from ..conftest import one_line, run_train_py, subprocess_env

KEY = "secret-test-key-123"
FULL_KEY = KEY + "-" + "0" * 30  # W&B rejects keys under 40 characters before it even tries the network


# ============================================================================
# W&B: a failure never stops training, and the API key is never written
# ============================================================================
def _files_containing(root: Path, needle: bytes) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    hits.append(str(path.relative_to(root)))
            except OSError:
                pass
    return hits


def _assert_trained(run_dir: Path, epochs: int = 1) -> None:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if "epoch" in r] == list(range(1, epochs + 1))
    assert any("test/top1" in r for r in rows)
    assert (run_dir / "model.safetensors").is_file() and (run_dir / "summary.json").is_file()


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never answers: W&B's init can only time out."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["online-timeout", "offline"])
def test_wandb_outage_never_stops_training_and_the_key_is_never_written(tmp_path, silent_server, mode, fault):
    fault(f"W&B {mode}" + (" (server never answers)" if mode == "online-timeout" else ""))
    env = subprocess_env(WANDB_API_KEY=FULL_KEY)
    if mode == "online-timeout":
        env.update(WANDB_MODE="online", WANDB_BASE_URL=silent_server, TRICKBOX_WANDB_INIT_TIMEOUT="3")
    else:
        env.update(WANDB_MODE="offline")
    res = run_train_py(tmp_path, *SMALL, "train.tracker=wandb", "train.run_name=w", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_trained(tmp_path / "runs" / "w")
    if mode == "online-timeout":
        line = one_line(res.stderr)  # reported once, on one line
        assert line.startswith("trickbox: W&B init failed") and "timed out" in line.lower()
        assert line.endswith("training goes on with metrics.jsonl only")
    else:
        assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb")), "the offline W&B run was not written"
    assert "Traceback" not in res.stderr
    # every file the run wrote (run dir, wandb dir, checkpoints) and both output streams
    assert (tmp_path / "wandb").is_dir() and (tmp_path / "runs" / "w" / "checkpoints").is_dir()
    assert _files_containing(tmp_path, KEY.encode()) == []
    assert KEY not in res.stdout and KEY not in res.stderr


def _private_mount(directory: Path, kind: str) -> list[str]:
    """A command prefix that runs the CLI with ``directory`` read-only or full, or skip the test."""
    if os.geteuid() != 0:
        if kind == "full":
            pytest.skip("simulating a full disk needs a private tmpfs mount (root)")
        directory.chmod(0o555)
        return []
    if shutil.which("unshare") is None:
        pytest.skip("root can write anywhere; a read-only or full directory needs unshare + mount")
    d = shlex.quote(str(directory))
    opts = "ro,size=256k" if kind == "read-only" else "size=256k"
    setup = f"mount -t tmpfs -o {opts} tmpfs {d}"
    if kind == "full":
        setup += f" && (dd if=/dev/zero of={d}/fill bs=4k >/dev/null 2>&1; true)"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", setup], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private tmpfs here: {probe.stderr.strip()[:200]}")
    return ["unshare", "-m", "sh", "-c", f'{setup} && exec "$0" "$@"']


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["read-only", "full"])
def test_unwritable_wandb_dir_never_stops_training(tmp_path, kind, fault):
    fault(f"W&B directory {kind}")
    wandb_dir = tmp_path / "wandb-dir"
    wandb_dir.mkdir()
    wrap = _private_mount(wandb_dir, kind)
    env = subprocess_env(WANDB_MODE="offline", WANDB_DIR=str(wandb_dir))
    try:
        res = run_train_py(tmp_path, *SMALL, "train.tracker=wandb", "train.run_name=w", env=env, wrap=wrap)
    finally:
        wandb_dir.chmod(0o755)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_trained(tmp_path / "runs" / "w")
    line = one_line(res.stderr)  # not W&B's hundreds of "--- Logging error ---" tracebacks
    assert line.startswith("trickbox: W&B is off for this run: its directory") and "not writable" in line


def test_init_timeout_comes_from_the_environment(monkeypatch, capsys):
    from trickbox.tracking import wandb_init_timeout

    monkeypatch.delenv("TRICKBOX_WANDB_INIT_TIMEOUT", raising=False)
    assert wandb_init_timeout() == 60.0
    monkeypatch.setenv("TRICKBOX_WANDB_INIT_TIMEOUT", "2.5")
    assert wandb_init_timeout() == 2.5
    monkeypatch.setenv("TRICKBOX_WANDB_INIT_TIMEOUT", "soon")
    assert wandb_init_timeout() == 60.0
    assert "ignoring TRICKBOX_WANDB_INIT_TIMEOUT='soon'" in capsys.readouterr().err



class _Tracker:
    """A tracker of a user's own loop (what ``accelerator.init_trackers`` leaves in ``accelerator.trackers``)."""

    name = "fake"

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.images = fail, []

    def log_images(self, values, step=None):
        if self.fail:
            raise ConnectionError("tracker down")
        self.images.append((values, step))


class _Accelerator:
    is_main_process, process_index, num_processes, device = True, 0, 1, "cpu"

    def __init__(self, tracker) -> None:
        self.trackers, self.logged = [tracker], []

    def autocast(self):
        import contextlib

        return contextlib.nullcontext()

    def log(self, values, step=None):
        if self.trackers[0].fail:
            raise ConnectionError("tracker down")
        self.logged.append((values, step))


def test_a_users_loop_logs_through_the_same_adapter_and_an_outage_is_one_line(capsys):
    """``RunContext.from_accelerator`` logs through :class:`trickbox.tracking.Tracking` (no second adapter): scalars
    and images reach the user's trackers; a failing tracker is switched off with one line and training goes on."""
    from trickbox.context import RunContext

    ok = _Accelerator(_Tracker())
    tracker, ok.trackers = ok.trackers[0], []
    ctx = RunContext.from_accelerator(ok, num_classes=2, epochs=1, steps_per_epoch=1, base_lr=0.1)
    ctx.log({"loss": 9.0}, step=0)  # no tracker yet: nothing to log to
    ok.trackers = [tracker]  # the user's init_trackers, after the tricks' setup
    ctx.log({"loss": 1.5}, step=3)
    ctx.log_images({"lr_curve": [Path("lr.png")]}, step=0)
    assert ok.logged == [({"loss": 1.5}, 3)] and ok.trackers[0].images == [({"lr_curve": ["lr.png"]}, 0)]

    down = _Accelerator(_Tracker(fail=True))
    ctx = RunContext.from_accelerator(down, num_classes=2, epochs=1, steps_per_epoch=1, base_lr=0.1)
    ctx.log({"loss": 1.5}, step=3)  # does not raise
    ctx.log_images({"lr_curve": [Path("lr.png")]}, step=0)
    assert down.trackers == [] and one_line(capsys.readouterr().err).startswith("trickbox: W&B logging failed")
