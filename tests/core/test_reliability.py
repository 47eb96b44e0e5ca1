"""Faults a training run must survive or refuse cleanly: NaN/inf, W&B outages, hostile files, broken plugins.

Resume, checkpoints and signals are in ``tests/core/test_resume.py``. Every
injected fault is appended to a JSON-lines log (the ``fault`` fixture) so that the
numbers in ``docs/reliability.md`` come from a test run.
"""
from __future__ import annotations

import json
import os
import pickle
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from trickbox.api import TrickSet, load_tricks
from trickbox.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, load_weights
from trickbox.cli import main as cli_main
from trickbox.config import load_config
from trickbox.loop import train
from trickbox.registry import Catalog, discover, hook_problems
from trickbox.trick import ConfigError, NonFiniteError, Param, Trick, hookimpl

from ..conftest import REPO, launch_two_ranks, subprocess_env, told

TRAIN_PY = str(REPO / "train.py")
KEY = "secret-test-key-123"
FULL_KEY = KEY + "-" + "0" * 30  # W&B rejects keys under 40 characters before it even tries the network
SMALL = ["data.name=digits", "data.train_subset=256", "data.test_subset=100", "train.epochs=1", "train.batch_size=64",
         "train.progress=false", "model.name=cifar_resnet8"]




def _cli(cwd: Path, *args: str, env: dict[str, str] | None = None, wrap: list[str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [*(wrap or []), sys.executable, TRAIN_PY, *args]
    return subprocess.run(cmd, cwd=cwd, env=env or subprocess_env(), capture_output=True, text=True, timeout=timeout)


def _one_line(stderr: str) -> str:
    lines = [line for line in told(stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


# ============================================================================
# Non-finite values: caught in the step, no optimizer step, no bad checkpoint
# ============================================================================
class Poison(Trick):
    """Test trick: at step ``at`` it returns a NaN loss term (``what=loss``) or, after that
    step, makes one weight infinite (``what=weights``). It records the weights it saw."""

    name = "poison"
    params = (Param("at", int, 5, low=0), Param("what", str, "loss", choices=("loss", "weights")))

    def check(self) -> None:
        self.model: torch.nn.Module | None = None
        self.before: dict[str, torch.Tensor] = {}

    @hookimpl
    def trickbox_configure_model(self, model: torch.nn.Module, ctx: Any) -> None:
        self.model = model  # the same module object the loop trains (prepare does not copy on CPU)

    @hookimpl
    def trickbox_loss(self, logits: torch.Tensor, batch: Any, ctx: Any) -> dict[str, torch.Tensor] | None:
        if self.what == "loss" and ctx.step == self.at:
            assert self.model is not None
            self.before = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            return {"poison": logits.sum() * float("nan")}
        return None

    @hookimpl
    def trickbox_after_step(self, batch: Any, ctx: Any) -> None:
        if self.what == "weights" and ctx.step == self.at:
            assert self.model is not None
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] = float("inf")


def _poisoned_run(tmp_path: Path, *extra: Trick, at: int, what: str = "loss"):
    """Train 3 epochs of 2 steps (256 images, batches of 128) with ``Poison``; it must raise NonFiniteError."""
    cfg = load_config([], [*SMALL, "train.epochs=3", "train.tracker=none", "train.batch_size=128",
                           f"train.out_dir={tmp_path}", "train.run_name=nan"])
    poison = Poison(at=at, what=what)
    with pytest.raises(NonFiniteError) as err:
        train(cfg, tricks=TrickSet([poison, *extra]))
    return poison, err.value, tmp_path / "nan"


def _finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_nan_loss_stops_before_backward_and_optimizer_step(tmp_path, fault):
    fault("NaN loss term at step 5")
    # 256 images / 128 per batch = 2 steps per epoch: the epoch-1 checkpoint is at step 2, the NaN at step 5
    poison, err, run_dir = _poisoned_run(tmp_path, at=5)
    assert "loss is not finite at step 5" in str(err) and "poison=nan" in str(err)
    assert poison.model is not None
    after = poison.model.state_dict()
    assert all(torch.equal(poison.before[k], after[k]) for k in after), "the optimizer stepped on a NaN loss"
    assert all(p.grad is None for p in poison.model.parameters()), "backward ran on a NaN loss"
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    assert ckpt is not None and ckpt.step == 4 < 5
    assert _finite(load_checkpoint(ckpt)[0])
    assert not (run_dir / "model.safetensors").exists()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] or 0 for r in rows) <= 5


def test_inf_weights_are_never_checkpointed(tmp_path, fault):
    fault("inf weight before a checkpoint")
    # the weight becomes inf right after step 2, the last step of epoch 1: its end-of-epoch checkpoint is refused
    poison, err, run_dir = _poisoned_run(tmp_path, at=2, what="weights")
    assert "not finite after step 2" in str(err)
    assert list_checkpoints(run_dir / "checkpoints") == []


def test_non_finite_mixup_lambda_is_caught(tmp_path, monkeypatch, fault):
    fault("NaN mixup λ at step 2")
    import trickbox.tricks.mixup as mixup_module

    real = mixup_module.sample_lambda
    draws = iter(range(10**6))

    def nan_at_step_2(alpha: float, size: int | None, rng: Any) -> Any:  # one draw per step
        return float("nan") if next(draws) == 2 else real(alpha, size, rng)

    monkeypatch.setattr(mixup_module, "sample_lambda", nan_at_step_2)
    mixup = discover().build({"mixup": {"alpha": 0.4, "grid": False}})[0]
    poison, err, run_dir = _poisoned_run(tmp_path, mixup, at=10**6)
    assert "mixup drew a non-finite λ" in str(err)
    assert latest_checkpoint(run_dir / "checkpoints").step == 2  # type: ignore[union-attr]


def _nan_teacher(path: Path) -> Path:
    from safetensors.torch import save_file

    from trickbox.build import create_model

    state = {k: v.clone().contiguous() for k, v in create_model("cifar_resnet8", num_classes=10,
                                                                in_chans=1).state_dict().items()}
    state["fc.weight"].fill_(float("nan"))
    save_file(state, str(path))
    return path


def test_nan_teacher_logits_stop_the_cli_with_exit_3(tmp_path, monkeypatch, capsys, fault):
    fault("NaN teacher logits (CLI)")
    teacher = _nan_teacher(tmp_path / "nan_teacher.safetensors")
    monkeypatch.chdir(tmp_path)
    code = cli_main(["train", *SMALL, "train.tracker=none", "train.run_name=kd",
                     "tricks.distillation.teacher=cifar_resnet8",
                     f"tricks.distillation.checkpoint={teacher}"])
    assert code == 3
    line = _one_line(capsys.readouterr().err)
    assert line == ("trickbox: stopped: teacher logits are not finite; no optimizer step or checkpoint was written "
                    "with it")
    assert list_checkpoints(tmp_path / "runs" / "kd" / "checkpoints") == []


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
    res = _cli(tmp_path, *SMALL, "train.tracker=wandb", "train.run_name=w", env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_trained(tmp_path / "runs" / "w")
    if mode == "online-timeout":
        line = _one_line(res.stderr)  # reported once, on one line
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
        res = _cli(tmp_path, *SMALL, "train.tracker=wandb", "train.run_name=w", env=env, wrap=wrap)
    finally:
        wandb_dir.chmod(0o755)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_trained(tmp_path / "runs" / "w")
    line = _one_line(res.stderr)  # not W&B's hundreds of "--- Logging error ---" tracebacks
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


# ============================================================================
# Security: no foreign code from weights, checkpoints or YAML; plugins can be shut off
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
    res = _cli(tmp_path, *SMALL, "train.tracker=none", "tricks.distillation.teacher=cifar_resnet8",
               f"tricks.distillation.checkpoint={payload}")
    assert res.returncode == 2, res.stderr[-3000:]
    line = _one_line(res.stderr)
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


@pytest.mark.slow
def test_yaml_python_tags_are_refused(tmp_path, fault):
    fault("YAML with a python/object/apply tag (CLI)")
    marker = tmp_path / "MARKER"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'train: !!python/object/apply:os.system ["touch {marker}"]\n')
    res = _cli(tmp_path, "-c", str(evil))
    assert res.returncode == 2
    assert "is not safe YAML" in _one_line(res.stderr)
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
    line = _one_line(err)
    assert line.startswith("trickbox: error: ") and fragment in line
    assert list(tmp_path.iterdir()) == [], "something was written before the config was validated"


# -- plugins --------------------------------------------------------------------
FAKE_PLUGINS = '''
from trickbox import Trick, Param, hookimpl


class Good(Trick):
    name = "fakegood"
    summary = "a well-behaved third-party trick"
    params = (Param("scale", float, 1.0, low=0, low_open=True),)

    @hookimpl
    def trickbox_transform_batch(self, batch, ctx):
        return batch.replace(x=batch.x * self.scale)


class BadHook(Trick):
    name = "fakebadhook"

    @hookimpl
    def trickbox_transfrom_batch(self, batch, ctx):
        return None


class BadArg(Trick):
    name = "fakebadarg"

    @hookimpl
    def trickbox_loss(self, logits, batch, ctx, optimizer):
        return None
'''


@pytest.fixture
def plugin_site(tmp_path) -> Path:
    """A third-party distribution 'tbx-fake-plugins' (one good trick, three broken ones), installed by path only."""
    site = tmp_path / "site"
    (site / "tbx_fake_plugins").mkdir(parents=True)
    (site / "tbx_fake_plugins" / "__init__.py").write_text(FAKE_PLUGINS)
    (site / "tbx_fake_broken.py").write_text("import a_module_that_does_not_exist_4711\n")
    info = site / "tbx_fake_plugins-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tbx-fake-plugins\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text(
        "[trickbox.tricks]\nfakegood = tbx_fake_plugins:Good\nfakebroken = tbx_fake_broken:Broken\n"
        "fakebadhook = tbx_fake_plugins:BadHook\nfakebadarg = tbx_fake_plugins:BadArg\n"
    )
    return site


@pytest.mark.slow
def test_trickbox_list_reports_broken_plugins_by_name_and_reason(tmp_path, plugin_site, fault):
    fault("broken third-party plugins (import error, bad hook name, bad hook argument)")
    res = subprocess.run([sys.executable, "-m", "trickbox", "list"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120,
                         env=subprocess_env(PYTHONPATH=str(plugin_site)))
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "fakegood  (tbx-fake-plugins 0.3.0)  a well-behaved third-party trick" in out
    assert "! fakebroken (tbx-fake-plugins) not loaded: import failed: ModuleNotFoundError" in out
    assert "a_module_that_does_not_exist_4711" in out
    assert ("! fakebadhook (tbx-fake-plugins) not loaded: hook trickbox_transfrom_batch does not exist; did you mean "
            "'trickbox_transform_batch'?") in out
    assert "! fakebadarg (tbx-fake-plugins) not loaded: hook trickbox_loss takes optimizer" in out
    for builtin in ("sgdr", "label_smoothing", "distillation", "mixup", "noise"):
        assert f"\n{builtin}  (trickbox " in "\n" + out


def test_broken_plugins_leave_the_others_working(tmp_path, plugin_site, monkeypatch, request):
    monkeypatch.syspath_prepend(str(plugin_site))
    cat = discover()
    assert {b.name for b in cat.broken} >= {"fakebroken", "fakebadhook", "fakebadarg"}
    with pytest.raises(ConfigError, match="trick 'fakebadarg' from tbx-fake-plugins could not be loaded: hook "
                                          "trickbox_loss takes optimizer"):
        cat.get("fakebadarg")
    cfg = load_config([], [*SMALL, "train.tracker=none", f"train.out_dir={tmp_path}", "train.run_name=ok",
                           "tricks.fakegood.scale=0.5", "tricks.label_smoothing.eps=0.1"])
    result = train(cfg, tricks=load_tricks(cfg.tricks, block=cfg.plugins.block))
    assert result.steps > 0 and result.test["top1"] > 0


def test_autoload_off_keeps_only_builtins(plugin_site, monkeypatch, capsys, fault):
    fault("plugin autoload switched off")
    monkeypatch.syspath_prepend(str(plugin_site))
    assert "fakegood" in discover().tricks
    monkeypatch.setenv("TRICKBOX_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    # neither the good plugin nor the broken ones are even imported: no trick line, no "not loaded" reason for them
    assert not [line for line in out.splitlines() if line.startswith(("fake", "! fake"))]
    assert "installed plugins not loaded (" in out and "fakegood" in out
    for builtin in ("sgdr", "label_smoothing", "distillation", "mixup", "noise"):
        assert f"\n{builtin}  (trickbox " in "\n" + out
    with pytest.raises(ConfigError, match="unknown trick 'fakegood'"):
        load_tricks(load_config([], ["tricks.fakegood.scale=0.5"]).tricks)


def test_single_plugins_can_be_blocked(plugin_site, monkeypatch, capsys, fault):
    fault("plugins blocked by TRICKBOX_BLOCK and plugins.block")
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.setenv("TRICKBOX_BLOCK", "fakegood, fakebroken")
    assert cli_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "- fakegood blocked" in out and "- fakebroken blocked" in out
    assert "fakegood  (" not in out and "! fakebroken" not in out and "mixup  (trickbox" in out
    with pytest.raises(ConfigError, match="trick 'fakegood' is blocked"):
        load_tricks(load_config([], ["tricks.fakegood.scale=0.5"]).tricks)
    monkeypatch.delenv("TRICKBOX_BLOCK")
    cfg = load_config([], ["plugins.block=[fakegood, mixup]", "tricks.mixup.alpha=0.2"])
    with pytest.raises(ConfigError, match="trick 'mixup' is blocked"):
        load_tricks(cfg.tricks, block=cfg.plugins.block)


class NotATrick:
    name = "plain"


class BadName(Trick):
    name = "has space"


class BadParams(Trick):
    name = "badparams"
    params = ("alpha",)  # type: ignore[assignment]


class Unmarked(Trick):
    name = "unmarked"

    def trickbox_transform_batch(self, batch, ctx):  # type: ignore[no-untyped-def]
        return None


class WrongHook(Trick):
    name = "wronghook"

    @hookimpl
    def trickbox_on_step(self, ctx):  # type: ignore[no-untyped-def]
        return None


class WrongArg(Trick):
    name = "wrongarg"

    @hookimpl
    def trickbox_after_step(self, batch, parts, ctx, model):  # type: ignore[no-untyped-def]
        return None


class Fine(Trick):
    name = "fine"

    @hookimpl
    def trickbox_after_step(self, ctx):  # type: ignore[no-untyped-def]
        return None


@pytest.mark.parametrize(
    "cls, reason",
    [
        (NotATrick, "is not a subclass of trickbox.Trick"),
        (BadName, "name 'has space' is not a valid identifier"),
        (BadParams, "params holds 'alpha', which is not a trickbox.Param"),
        (Unmarked, "method trickbox_transform_batch looks like a hook but lacks @trickbox.hookimpl"),
        (WrongHook, "hook trickbox_on_step does not exist"),
        (WrongArg, "hook trickbox_after_step takes model, which the hook does not provide"),
    ],
    ids=["not-a-trick", "bad-name", "bad-params", "unmarked-hook", "unknown-hook", "extra-argument"],
)
def test_hook_problems_name_the_reason(cls, reason):
    assert any(reason in p for p in hook_problems(cls)), hook_problems(cls)
    cat = Catalog()
    cat.add(cls, package="pkg-x")
    cat.add(Fine, package="pkg-y")
    assert [(b.package, reason in b.reason) for b in cat.broken] == [("pkg-x", True)]
    assert list(cat.tricks) == ["fine"] and hook_problems(Fine) == []


NAN_ON_ONE_RANK = '''
import torch
from trickbox import Trick, hookimpl


class NanOnRankOne(Trick):
    name = "nan_rank1"

    @hookimpl
    def trickbox_loss(self, logits, batch, ctx):
        if ctx.rank == 1 and ctx.step == 1:
            return {"poison": logits.sum() * float("nan")}
        return None
'''


@pytest.mark.slow
def test_nan_on_one_rank_stops_every_rank_without_a_hang(tmp_path, fault):
    fault("NaN in the loss on one of 2 processes")
    site = tmp_path / "site"
    site.mkdir()
    (site / "tbx_nan_rank.py").write_text(NAN_ON_ONE_RANK)
    info = site / "tbx_nan_rank-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tbx-nan-rank\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[trickbox.tricks]\nnan_rank1 = tbx_nan_rank:NanOnRankOne\n")
    res = subprocess.run(
        [*launch_two_ranks(), TRAIN_PY, *SMALL, "train.tracker=none", "train.run_name=r", "tricks.nan_rank1={}"],
        cwd=tmp_path, env=subprocess_env(ACCELERATE_USE_CPU="1", PYTHONPATH=str(site)), capture_output=True, text=True,
        timeout=240,
    )
    assert res.returncode != 0
    assert "not finite" in res.stderr or "non-finite" in res.stderr, res.stderr[-2000:]
    # stopped in epoch 1, before any checkpoint
    assert not list((tmp_path / "runs" / "r" / "checkpoints").glob("step-*"))
