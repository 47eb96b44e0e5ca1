"""Shared test settings: offline, quiet, one thread per in-process test (2-core machines)."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="session")
def cifar_zip() -> Path:
    """The CIFAR-10 JPEG zip, or skip."""
    path = Path(os.environ.get("TRICKBOX_CIFAR10_ZIP", REPO.parent / "shared" / "datasets" / "cifar10-jpeg.zip"))
    if not path.is_file():
        pytest.skip(f"CIFAR-10 zip not found at {path}")
    return path


def free_port() -> int:
    """A TCP port no one listens on now, for ``accelerate launch --main_process_port``: two launches that
    run at once (pytest-xdist workers) must not both take torchrun's default 29500."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_two_ranks() -> list[str]:
    """``accelerate launch`` for 2 ranks on this machine (gloo; run it with ``ACCELERATE_USE_CPU=1``), fp32, no
    dynamo, on a free port: the command every multi-process test puts in front of its script and arguments."""
    return [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(free_port())]


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for CLI subprocesses: offline, W&B disabled unless a test enables it."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env


LOG_ENV = "TRICKBOX_RELIABILITY_LOG"


@pytest.fixture
def fault(request: pytest.FixtureRequest):
    """``fault("what", resumed=True)`` declares the fault a test injects. At teardown it is appended to the
    JSON-lines log (``$TRICKBOX_RELIABILITY_LOG``, else ``reliability.jsonl`` in pytest's base temp dir)
    with ``"lost": true`` when the test failed; ``docs/reliability.md`` counts its numbers from that log."""
    rows: list[dict[str, Any]] = []
    failed_before = request.session.testsfailed

    def declare(what: str, *, resumed: bool = False, **detail: Any) -> dict[str, Any]:
        row = {"test": request.node.nodeid, "fault": what, "resumed": resumed, **detail}
        rows.append(row)
        return row

    yield declare
    lost = request.session.testsfailed > failed_before
    path = os.environ.get(LOG_ENV) or str(request.config._tmp_path_factory.getbasetemp() / "reliability.jsonl")  # type: ignore[attr-defined]
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps({**row, "lost": lost}) + "\n")


@pytest.fixture(scope="session")
def imagenet_like(tmp_path_factory, cifar_zip) -> Path:
    """96 JPEGs of mixed sizes (200-500 px, not square), 4 classes, train/ + val/, and the same as tar shards."""
    spec = importlib.util.spec_from_file_location("make_imagenet_like", REPO / "benchmarks" / "make_imagenet_like.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_imagenet_like"] = module
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("data") / "imagenet_like"
    code = module.main([str(out), "--images", "96", "--classes", "4", "--shard-size", "30", "--source", str(cifar_zip),
                        "--workers", "1"])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def photo_like(tmp_path_factory) -> Path:
    """ImageNet-shaped JPEGs cut from real photographs (benchmarks/make_photo_like.py): 1,000 train + 40 val images,
    10 classes, about 400x350 at quality 90."""
    spec = importlib.util.spec_from_file_location("make_photo_like", REPO / "benchmarks" / "make_photo_like.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_photo_like(tmp_path_factory.mktemp("data") / "photo_like", train=1000, val=40, progress=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """End-to-end (``slow``) tests first: with one pytest-xdist worker per core the long runs start early and the
    many short tests fill the gaps, instead of one long test running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


SMALL_RUN = ["data.name=digits", "data.train_subset=256", "data.test_subset=100", "train.epochs=1",
             "train.batch_size=64",
             "train.progress=false", "train.tracker=none", "model.name=cifar_resnet8"]
"""A run of a few seconds: 4 optimizer steps per epoch on 256 digits."""

SMALL_RUN_ANY_TRACKER = ["data.name=digits", "data.train_subset=256", "data.test_subset=100", "train.epochs=1",
                         "train.batch_size=64", "train.progress=false", "model.name=cifar_resnet8"]
"""The same small run without ``train.tracker``: for tests that pick the tracker themselves."""

TRAIN_PY = str(REPO / "train.py")

RESUME_EPOCHS = 3
RESUME_CONFIG = f"""\
data: {{name: digits}}
model: {{name: cifar_resnet8}}
optim: {{lr: 0.05}}
train: {{epochs: {RESUME_EPOCHS}, batch_size: 32, tracker: none, progress: false}}
tricks:
  mixup: {{alpha: 0.4, grid: false}}
  label_smoothing: {{eps: 0.1}}
  sgdr: {{t0: 1, t_mult: 2, plot: false}}
"""
"""The config of the exact-resume tests (``tests/core/test_resume.py``): mixup + label smoothing + SGDR with warm
restarts, so every RNG stream and schedule position has to be restored for the weights to match."""


def run_train_py(cwd: Path, *args: str, env: dict[str, str] | None = None, wrap: list[str] | None = None,
                 timeout: float = 300) -> Any:
    """``python train.py ARGS`` in ``cwd`` (optionally behind the command prefix ``wrap``); the finished process."""
    import subprocess

    cmd = [*(wrap or []), sys.executable, TRAIN_PY, *args]
    return subprocess.run(cmd, cwd=cwd, env=env or subprocess_env(), capture_output=True, text=True, timeout=timeout)


def runs_in_one_launch(tmp_path: Path, runs: list[dict[str, Any]], *, env: dict[str, str] | None = None,
                       timeout: float = 300) -> tuple[list[dict[str, Any]], Any]:
    """Train ``runs`` (``{"overrides": [...], "resume": bool}``) one after another on 2 CPU ranks in ONE launch
    (``tests/fixtures/runs_in_one_launch.py``); returns rank 0's results and the finished process."""
    import subprocess

    plan, out = tmp_path / "plan.json", tmp_path / "results.json"
    plan.write_text(json.dumps({"runs": runs}))
    script = REPO / "tests" / "fixtures" / "runs_in_one_launch.py"
    merged = subprocess_env(ACCELERATE_USE_CPU="1", PYTHONPATH=str(REPO / "tests" / "fixtures"), **(env or {}))
    res = subprocess.run([*launch_two_ranks(), str(script), str(plan), str(out)], cwd=tmp_path, env=merged,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0 and out.is_file(), res.stderr[-4000:]
    return json.loads(out.read_text()), res


def weights(run_dir: Path | str) -> dict[str, Any]:
    """A run's final ``model.safetensors``."""
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "model.safetensors"))


def same_weights(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def assert_same_weights(a: Path, b: Path) -> None:
    """The final weights of run directories ``a`` and ``b`` are equal (``torch.equal``), not close."""
    import torch

    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    diff = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not diff, (f"{len(diff)} tensors differ, e.g. {diff[0]}: "
                      f"max |Δ| = {(wa[diff[0]].float() - wb[diff[0]].float()).abs().max():.3g}")


def load_study(name: str, storage: str | Path) -> Any:
    """The Optuna study ``name`` from a journal file (a ``Path``) or a storage URL (a ``str``)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from trickbox.sweep.storage import open_storage, resolve_storage

    if isinstance(storage, Path):
        store = JournalStorage(JournalFileBackend(str(storage)))
    else:
        store = open_storage(resolve_storage(storage, Path(".")))
    return optuna.load_study(study_name=name, storage=store)


ANNOUNCE = re.compile(r"^trickbox: (\d+ process(es)? on |epoch \d+/\d+: ).*\n?", re.MULTILINE)


def told(stderr: str) -> str:
    """``stderr`` without the lines every run prints (its first line: processes, device, precision, data path,
    :func:`trickbox.loop.announce`; and one line per epoch, :func:`trickbox.loop.epoch_line`), so that a test of a
    one-line message sees only the message."""
    return ANNOUNCE.sub("", stderr)


@contextlib.contextmanager
def raises_one_line(match: str) -> Iterator[None]:
    """A ``ValueError`` (``ConfigError`` is one) matching ``match`` whose message is one line."""
    with pytest.raises(ValueError, match=match) as info:
        yield
    assert "\n" not in str(info.value)


def one_line(stderr: str) -> str:
    """The one non-blank line of ``stderr`` (after the run's first line, :func:`told`), with no traceback."""
    lines = [line for line in told(stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """``cli(*args, cwd=DIR)``: ``trickbox ARGS`` in this process (argparse's exit 2 included), as a subprocess's
    result. A CLI error costs milliseconds here instead of a torch import in a new interpreter."""
    from trickbox.cli import main

    def run(*args: str, cwd: Path | None = None) -> CliResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run
