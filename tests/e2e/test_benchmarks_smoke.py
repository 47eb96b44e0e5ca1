"""The benchmark scripts run end to end with tiny settings and write their tables (no timing is asserted)."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ..conftest import REPO, subprocess_env

BENCH = REPO / "benchmarks"


def _fake_cifar_zip(path: Path, per_class: int = 12, classes: int = 10) -> Path:
    """A tiny ImageFolder zip of random 32x32 JPEGs (train/ and test/)."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for split, n in (("train", per_class), ("test", 2)):
            for c in range(classes):
                for i in range(n):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
                    z.writestr(f"{split}/class{c}/{i:04d}.jpg", buf.getvalue())
    return path


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = subprocess_env(OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.mark.slow
def test_run_quick_writes_table(tmp_path: Path) -> None:
    data = _fake_cifar_zip(tmp_path / "cifar.zip")
    out = tmp_path / "docs" / "performance.md"
    proc = _run([str(BENCH / "run.py"), "--quick", "--threads", "1", "--data", str(data), "--out", str(out), "--skip",
                 "sweep"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for needle in ("(b)/(a)", "(c)/(d)", "mixup + label smoothing + SGDR", "distillation", "(e) loader", "KNN table",
                   "torch "):
        assert needle in text, needle
    assert "PASS" in text or "MISS" in text
    assert "| measurement | measured | target | result | note |" in proc.stdout
    assert "<!-- results:start -->" in text
    # a second run replaces only the block between the markers
    out.write_text("# Perf\n\nhand-written notes\n\n" + text[text.index("<!-- results:start -->"):] + "\nmore notes\n")
    proc = _run([str(BENCH / "run.py"), "--quick", "--threads", "1", "--data", str(data), "--out", str(out), "--skip",
                 "sweep",
                 "--skip", "knn", "--skip", "loaders"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Perf\n\nhand-written notes") and text.rstrip().endswith("more notes")
    assert text.count("<!-- results:start -->") == 1 and "(b)/(a)" in text


@pytest.mark.slow
def test_gpu_script_quick_on_cpu(tmp_path: Path) -> None:
    data = _fake_cifar_zip(tmp_path / "cifar.zip", per_class=4)
    out = tmp_path / "gpu.md"
    proc = _run([str(BENCH / "gpu.py"), "--quick", "--device", "cpu", "--data", str(data), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "| variant | step | images/s | GFLOP/step | MFU |" in text
    for variant in ("| plain |", "| trickbox |", "| tricks |"):
        assert variant in text


def test_make_subset_zip(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from make_subset_zip import main as make_subset
    finally:
        sys.path.remove(str(BENCH))
    src = _fake_cifar_zip(tmp_path / "src.zip", per_class=5, classes=3)
    dst = tmp_path / "small.zip"
    assert make_subset([str(src), str(dst), "--per-class", "2", "--test-per-class", "1"]) == 0
    names = [n for n in zipfile.ZipFile(dst).namelist() if n.endswith(".jpg")]
    assert len([n for n in names if n.startswith("train/")]) == 6
    assert len([n for n in names if n.startswith("test/")]) == 3
    assert make_subset([str(tmp_path / "nope.zip"), str(dst), "--per-class", "2"]) == 2


def test_write_out_replaces_or_appends_named_blocks(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from run import write_out
    finally:
        sys.path.remove(str(BENCH))
    out = tmp_path / "perf.md"
    write_out(out, "first\n")
    write_out(out, "tuned\n", "tuned")
    out.write_text(out.read_text() + "\nnotes\n")
    write_out(out, "second\n")
    text = out.read_text()
    assert "first" not in text and "second" in text and "tuned" in text and text.rstrip().endswith("notes")
    assert text.index("second") < text.index("tuned")
