"""benchmarks/make_imagenet_like.py: layout, image sizes, shards matching the folders, determinism, refusals."""
from __future__ import annotations

import importlib.util
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from ..conftest import REPO

SCRIPT = REPO / "benchmarks" / "make_imagenet_like.py"
SMALL = ["--images", "60", "--classes", "6", "--shard-size", "25"]
CLASSES = [f"n{k:04d}" for k in range(6)]


@pytest.fixture(scope="module")
def script() -> ModuleType:
    """The script as a module, registered in sys.modules so pool workers can unpickle its functions."""
    name = "make_imagenet_like"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _make(script: ModuleType, out: Path, source: Path, *extra: str) -> int:
    return script.main([str(out), *SMALL, "--source", str(source), *extra])


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root except README.md (it names OUT_DIR), by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != "README.md"}


def _samples(tar_path: Path) -> dict[str, dict[str, bytes]]:
    """The samples of one shard: key -> {extension: bytes}; members of a sample must be adjacent."""
    samples: dict[str, dict[str, bytes]] = {}
    last = None
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            assert key == last or key not in samples, f"{member.name} is not next to its sample"
            f = tar.extractfile(member)
            assert f is not None
            samples.setdefault(key, {})[ext] = f.read()
            last = key
    return samples


def test_layout_sizes_shards(script: ModuleType, cifar_zip: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert _make(script, out, cifar_zip, "--workers", "2") == 0
    printed = capsys.readouterr().out
    assert "54 train + 6 val images" in printed
    assert "wds/train-{000000..000002}.tar" in printed and "wds/val-{000000..000000}.tar" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no partial sibling left behind

    assert (out / "wds" / "classes.txt").read_text().splitlines() == CLASSES
    readme = (out / "README.md").read_text()
    assert f"python benchmarks/make_imagenet_like.py {out} " in readme and "--shard-size 25" in readme

    sizes = []
    for split, per_class in (("train", 9), ("val", 1)):
        assert sorted(p.name for p in (out / "folder" / split).iterdir()) == CLASSES
        for name in CLASSES:
            jpgs = sorted((out / "folder" / split / name).glob("*.jpg"))
            assert len(jpgs) == per_class
            for jpg in jpgs:
                with Image.open(jpg) as im:
                    assert im.format == "JPEG" and im.mode == "RGB"
                    sizes.append(im.size)
    assert all(200 <= w <= 500 and 200 <= h <= 500 for w, h in sizes)
    assert sum(w != h for w, h in sizes) >= 0.9 * len(sizes)
    assert len(set(sizes)) > len(sizes) // 2  # mixed sizes, not a few fixed ones

    shards = sorted(p.name for p in (out / "wds").glob("*.tar"))
    assert shards == ["train-000000.tar", "train-000001.tar", "train-000002.tar", "val-000000.tar"]
    for split, expected_counts in (("train", [25, 25, 4]), ("val", [6])):
        seen: dict[str, dict[str, bytes]] = {}
        counts = []
        for shard in sorted((out / "wds").glob(f"{split}-*.tar")):
            samples = _samples(shard)
            counts.append(len(samples))
            assert not seen.keys() & samples.keys()
            seen.update(samples)
        assert counts == expected_counts
        folder = {p.stem: p for p in (out / "folder" / split).rglob("*.jpg")}
        assert seen.keys() == folder.keys()
        for key, sample in seen.items():
            assert sorted(sample) == ["cls", "jpg"]
            label = int(sample["cls"].decode("ascii"))
            assert folder[key].parent.name == CLASSES[label]
            assert sample["jpg"] == folder[key].read_bytes()
        keys_in_order = [k for shard in sorted((out / "wds").glob(f"{split}-*.tar")) for k in _samples(shard)]
        if split == "train":  # shuffled across shards, not in class order
            assert keys_in_order != sorted(keys_in_order)


def test_same_seed_same_dataset(script: ModuleType, cifar_zip: Path, tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    b.mkdir()  # an existing empty OUT_DIR is fine
    assert _make(script, a, cifar_zip, "--workers", "2") == 0
    assert _make(script, b, cifar_zip, "--workers", "1") == 0
    assert _make(script, c, cifar_zip, "--workers", "1", "--seed", "1") == 0
    files_a = _files(a)
    assert files_a == _files(b)
    assert _files(c) != files_a


def test_crash_leaves_no_out_dir(script: ModuleType, cifar_zip: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = script.render, []

    def failing(spec: object) -> bytes:
        calls.append(spec)
        if len(calls) == 30:
            raise RuntimeError("disk on fire")
        return real(spec)

    monkeypatch.setattr(script, "render", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        _make(script, tmp_path / "ds", cifar_zip, "--workers", "1")
    assert not list(tmp_path.iterdir())  # neither OUT_DIR nor the partial sibling


def test_refuses_non_empty_out_dir(script: ModuleType, cifar_zip: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _make(script, out, cifar_zip) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty" in err
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize("bad", [["--images", "ten"], ["--val-fraction", "1.5"], ["--images", "5", "--classes", "6"],
                                 []])
def test_misuse_exits_2(script: ModuleType, tmp_path: Path, bad: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    argv = [str(tmp_path / "ds"), *bad] if bad else []
    with pytest.raises(SystemExit) as info:
        script.main(argv)
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_missing_source_exits_2(script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _make(script, tmp_path / "ds", tmp_path / "nope.zip") == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
