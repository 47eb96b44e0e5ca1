"""Shared helpers for the result scripts: run trickbox in a subprocess, summarise, describe the machine."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {dev}, torch {torch.__version__}, Python {platform.python_version()}"


def commit(exclude: str | None = None) -> str:
    """HEAD's short hash, ``+dirty`` when tracked files differ (outside ``exclude``, e.g. the docs being written).

    ``TRICKBOX_COMMIT`` overrides it for a copy of the tree sent elsewhere (a GPU machine), whose ``.git``,
    if it has one, may be older than the files."""
    if os.environ.get("TRICKBOX_COMMIT"):
        return os.environ["TRICKBOX_COMMIT"] + " (as sent)"
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True)
        paths = ["--", ".", f":(exclude){exclude}"] if exclude else []
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", *paths], cwd=REPO,
                               capture_output=True, text=True).stdout
        return out.stdout.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_training(overrides: Sequence[str], out_dir: Path, name: str) -> tuple[dict, float]:
    """Train once with ``train.py`` (skipped when its summary exists); return its summary and wall time."""
    summary = out_dir / name / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        return data, float(data.get("seconds", 0.0))
    cmd = [sys.executable, str(REPO / "train.py"), *overrides, f"train.out_dir={out_dir}", f"train.run_name={name}",
           "train.tracker=none", "train.progress=false"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"run {name} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    return json.loads(summary.read_text()), time.perf_counter() - t0


def mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
