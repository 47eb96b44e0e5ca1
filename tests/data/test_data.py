"""Tests of trickbox.data: sources, splits, label noise, the in-memory loader and the eval loader."""
from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trickbox.data import (
    DataConfig,
    DataError,
    DatasetArrays,
    InMemoryLoader,
    LoaderOptions,
    channel_stats,
    denormalize,
    load_dataset,
    make_eval_loader,
    normalize,
    train_loader,
)
from trickbox.data.sources import tensor_source
from trickbox.data.splits import plan_splits, stratified_take
from trickbox.seeding import generator

REPO = Path(__file__).resolve().parents[2]


def cifar_zip() -> Path | None:
    """The real CIFAR-10 JPEG zip, or None when it is not on this machine."""
    path = Path(os.environ.get("TRICKBOX_CIFAR10_ZIP") or REPO.parent / "shared" / "datasets" / "cifar10-jpeg.zip")
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def digits() -> DatasetArrays:
    return load_dataset(DataConfig(), progress=False)


def class_counts(y: torch.Tensor, k: int = 10) -> list[int]:
    return torch.bincount(y, minlength=k).tolist()


# ---------------------------------------------------------------- digits and splits


def test_digits_shapes_dtypes_and_sizes(digits: DatasetArrays) -> None:
    assert digits.classes == [str(k) for k in range(10)]
    assert (digits.num_classes, digits.in_chans, digits.image_size) == (10, 1, 8)
    for x, y in ((digits.train_x, digits.train_y), (digits.val_x, digits.val_y), (digits.test_x, digits.test_y)):
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8) and x.device.type == "cpu"
        assert y.dtype == torch.int64 and y.shape == (len(x),)
    assert (len(digits.test_y), len(digits.val_y), len(digits.train_y)) == (359, 144, 1294)
    assert int(digits.train_x.max()) == 255 and int(digits.train_x.min()) == 0
    assert torch.equal(digits.train_y, digits.train_y_clean)
    assert len(digits.mean) == len(digits.std) == 1 and 0 < digits.mean[0] < 1 and digits.std[0] > 0
    assert "train=1294" in repr(digits)


def test_splits_are_disjoint_stratified_and_seeded() -> None:
    _, _, train_y, _, test_y = tensor_source(DataConfig())
    source = type("Labels", (), {"train_y": train_y, "test_y": test_y})
    plans = {s: plan_splits(source.train_y, source.test_y, 10, DataConfig(split_seed=s)) for s in (0, 0, 1)}
    plan = plans[0]
    assert len(set(plan.val.tolist()) & set(plan.train.tolist())) == 0
    assert sorted(plan.val.tolist() + plan.train.tolist()) == list(range(len(source.train_y)))
    full = torch.tensor(class_counts(source.train_y), dtype=torch.float64)
    val = torch.tensor(class_counts(source.train_y[plan.val]), dtype=torch.float64)
    assert (val - full * len(plan.val) / len(source.train_y)).abs().max() < 1.0
    again = plan_splits(source.train_y, source.test_y, 10, DataConfig(split_seed=0))
    assert torch.equal(again.val, plan.val)
    assert not torch.equal(plans[1].val, plan.val)


def test_digits_test_split_is_fixed_and_val_follows_seed(digits: DatasetArrays) -> None:
    other = load_dataset(DataConfig(split_seed=1), progress=False)
    same = load_dataset(DataConfig(split_seed=0), progress=False)
    assert torch.equal(other.test_x, digits.test_x) and torch.equal(other.test_y, digits.test_y)
    assert torch.equal(same.val_x, digits.val_x) and torch.equal(same.train_x, digits.train_x)
    assert not torch.equal(other.val_x, digits.val_x)
    test_counts = class_counts(digits.test_y)
    assert max(test_counts) - min(test_counts) <= 2  # digits classes are nearly balanced


def test_train_subset_keeps_val_and_is_stratified(digits: DatasetArrays) -> None:
    sub = load_dataset(DataConfig(train_subset=200, test_subset=50), progress=False)
    assert torch.equal(sub.val_x, digits.val_x) and torch.equal(sub.val_y, digits.val_y)
    assert len(sub.train_y) == 200 and len(sub.test_y) == 50
    assert all(19 <= c <= 21 for c in class_counts(sub.train_y))
    assert all(4 <= c <= 6 for c in class_counts(sub.test_y))
    capped = load_dataset(DataConfig(test_subset=10_000), progress=False)
    assert torch.equal(capped.test_y, digits.test_y)


def test_stratified_take_exact_counts() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    taken, rest = stratified_take(labels, 10, 3, generator(0))
    assert class_counts(labels[taken], 3) == [5, 3, 2]
    assert len(rest) == 90 and not set(taken.tolist()) & set(rest.tolist())


def test_label_noise(digits: DatasetArrays) -> None:
    noisy = load_dataset(DataConfig(label_noise=0.5, noise_seed=3), progress=False)
    changed = (noisy.train_y != noisy.train_y_clean).float().mean().item()
    assert 0.40 < changed < 0.50  # 0.5 * (1 - 1/10) = 0.45 expected
    assert torch.equal(noisy.train_y_clean, digits.train_y)
    assert torch.equal(noisy.train_x, digits.train_x)
    assert torch.equal(noisy.val_y, digits.val_y) and torch.equal(noisy.test_y, digits.test_y)
    again = load_dataset(DataConfig(label_noise=0.5, noise_seed=3), progress=False)
    other = load_dataset(DataConfig(label_noise=0.5, noise_seed=4), progress=False)
    assert torch.equal(again.train_y, noisy.train_y)
    assert not torch.equal(other.train_y, noisy.train_y)


def test_channel_stats_match_float_computation() -> None:
    x = torch.randint(0, 256, (7, 3, 5, 4), dtype=torch.uint8)
    mean, std = channel_stats(x)
    ref = x.double() / 255
    assert np.allclose(mean, ref.mean(dim=(0, 2, 3)).tolist())
    assert np.allclose(std, ref.std(dim=(0, 2, 3), unbiased=False).tolist())


# ---------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "cifar"),
        ("val_fraction", 0.95),
        ("val_fraction", -0.1),
        ("label_noise", 1.5),
        ("train_subset", 0),
        ("test_subset", -3),
        ("image_size", 0),
        ("crop_padding", -1),
        ("split_seed", -1),
        ("noise_seed", 1.5),
        ("augment", "yes"),
        ("flip", 1),
        ("download", "no"),
        ("root", 3),
    ],
)
def test_bad_config_values_raise_data_error(field: str, value: object) -> None:
    cfg = DataConfig(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(DataError, match=f"data.{field}") as info:
        cfg.validate()
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_cross_field_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data.root=PATH") as info:
        DataConfig(name="imagefolder").validate()
    assert "../shared/datasets/cifar10-jpeg.zip" in str(info.value)
    with pytest.raises(DataError, match="data.image_size"):
        DataConfig(image_size=32).validate()
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(DataConfig(name="imagefolder", root=str(tmp_path / "nope.zip")), progress=False)
    with pytest.raises(DataError, match="data.train_subset=5000"):
        load_dataset(DataConfig(train_subset=5000), progress=False)


def test_missing_cifar_explains_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)), progress=False)
    message = str(info.value)
    assert "data.root" in message and "data.name=imagefolder" in message and "data.download=true" in message
    assert "\n" not in message


# ---------------------------------------------------------------- in-memory loader


def make_loader(n: int = 50, **kw: object) -> InMemoryLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 6, 6), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % 5
    args: dict[str, object] = dict(batch_size=8, device="cpu", mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), seed=1)
    args.update(kw)
    return InMemoryLoader(x, y, **args)  # type: ignore[arg-type]


def test_loader_yields_every_index_once_per_epoch() -> None:
    loader = make_loader(crop_padding=2)
    seen: list[int] = []
    for xb, yb, ib in loader:
        assert xb.dtype == torch.float32 and xb.shape[1:] == (3, 6, 6)
        assert yb.dtype == torch.int64 and ib.dtype == torch.int64
        assert torch.equal(yb, loader.y[ib])
        seen += ib.tolist()
    assert sorted(seen) == list(range(50)) and len(loader) == 7
    first = seen
    loader.set_epoch(1)
    second = [i for _, _, ib in loader for i in ib.tolist()]
    assert sorted(second) == list(range(50)) and second != first
    assert len(make_loader(drop_last=True)) == 6


def test_ranks_partition_the_padded_permutation() -> None:
    loaders = [make_loader(n=51, world_size=2, rank=r, batch_size=5) for r in range(2)]
    for loader in loaders:
        loader.set_epoch(3)
    assert len(loaders[0]) == len(loaders[1]) == 6
    orders = [torch.cat([ib for _, _, ib in loader]) for loader in loaders]
    assert len(orders[0]) == len(orders[1]) == 26
    padded = torch.stack(orders, dim=1).flatten()  # perm[r::2] interleaved back
    perm = padded[:51]
    assert sorted(perm.tolist()) == list(range(51))
    assert padded[51].item() == perm[0].item()  # wrapped around
    single = make_loader(n=51, batch_size=5)
    assert torch.equal(single.order(3), perm)


def test_uneven_ranks_with_tiny_dataset_get_equal_batches() -> None:
    loaders = [make_loader(n=3, world_size=4, rank=r, batch_size=2) for r in range(4)]
    assert {len(loader) for loader in loaders} == {1}
    assert {len(next(iter(loader))[2]) for loader in loaders} == {1}


def test_batches_start_equals_tail_of_full_iteration() -> None:
    loader = make_loader(crop_padding=2)
    loader.set_epoch(2)
    full = list(loader)
    tail = list(loader.batches(start=4))
    assert len(tail) == len(full) - 4
    for (xa, ya, ia), (xb, yb, ib) in zip(full[4:], tail):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    assert list(loader.batches(start=len(loader))) == []


def test_same_seed_and_epoch_give_same_batches() -> None:
    a, b, c = make_loader(), make_loader(), make_loader(seed=2)
    for loader in (a, b, c):
        loader.set_epoch(5)
    xa, _, ia = next(iter(a))
    xb, _, ib = next(iter(b))
    xc, _, ic = next(iter(c))
    assert torch.equal(xa, xb) and torch.equal(ia, ib)
    assert not torch.equal(ia, ic)
    idx = torch.arange(10)
    assert torch.equal(a.fetch(idx, epoch_step=3), b.fetch(idx, epoch_step=3))
    assert not torch.equal(a.fetch(idx, epoch_step=3), a.fetch(idx, epoch_step=4))


def test_no_crop_no_flip_gives_normalised_originals() -> None:
    loader = make_loader(augment=True, crop_padding=0, flip=False)
    for xb, _, ib in loader:
        assert torch.equal(xb, normalize(loader.x[ib], loader.mean, loader.std))
    plain = make_loader(augment=False)
    xb, _, ib = next(iter(plain))
    assert torch.equal(xb, normalize(plain.x[ib], plain.mean, plain.std))


def test_crop_and_flip_are_shifted_windows_of_the_padded_image() -> None:
    loader = make_loader(n=40, batch_size=40, crop_padding=2, flip=True)
    xb, _, ib = next(iter(loader))
    raw = denormalize(xb, loader.mean, loader.std).mul(255).round().to(torch.uint8)
    padded = torch.nn.functional.pad(loader.x[ib], (2, 2, 2, 2))
    flips = 0
    for k in range(len(ib)):
        found = []
        for dy in range(5):
            for dx in range(5):
                window = padded[k, :, dy : dy + 6, dx : dx + 6]
                for flipped in (False, True):
                    if torch.equal(raw[k], window.flip(-1) if flipped else window):
                        found.append(flipped)
        assert found, f"sample {k} is not a crop of its padded image"
        flips += all(found)
    assert 5 < flips < 35  # about half flipped


def test_flip_only_mirrors_whole_images() -> None:
    loader = make_loader(n=32, batch_size=32, crop_padding=0, flip=True)
    xb, _, ib = next(iter(loader))
    orig = normalize(loader.x[ib], loader.mean, loader.std)
    same = (xb == orig).flatten(1).all(1)
    mirrored = (xb == orig.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 0 < int(mirrored.sum()) < 32


def test_loader_rejects_bad_arguments() -> None:
    with pytest.raises(DataError, match="rank"):
        make_loader(rank=2, world_size=2)
    with pytest.raises(DataError, match="batch_size"):
        make_loader(batch_size=0)
    with pytest.raises(DataError, match="mean/std"):
        make_loader(mean=(0.5,), std=(0.2,))
    with pytest.raises(DataError, match="uint8"):
        InMemoryLoader(torch.zeros(4, 3, 2, 2), torch.zeros(4), batch_size=2, device="cpu", mean=(0,) * 3, std=(1,) * 3)


def test_make_train_loader_uses_dataset_defaults(digits: DatasetArrays) -> None:
    loader = train_loader(digits, DataConfig().resolved((8, 8)), LoaderOptions(batch_size=64, eval_batch_size=64,
                                                                               seed=0))
    assert (loader.flip, loader.crop_padding, loader.augment) == (False, 1, True)
    assert DataConfig(name="cifar10").effective_crop_padding(32) == 4
    assert DataConfig(name="cifar10").effective_flip() is True
    xb, yb, _ = next(iter(loader))
    assert xb.shape == (64, 1, 8, 8) and yb.shape == (64,)


def test_eval_loader_and_normalize_round_trip(digits: DatasetArrays) -> None:
    loader = make_eval_loader(digits.test_x, digits.test_y, batch_size=100, mean=digits.mean, std=digits.std)
    xs, ys = zip(*loader)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.dtype == torch.float32 and torch.equal(y, digits.test_y) and len(xs) == 4
    assert torch.allclose(x, normalize(digits.test_x, digits.mean, digits.std))
    back = denormalize(x, digits.mean, digits.std) * 255
    assert torch.allclose(back, digits.test_x.float(), atol=1e-3)


# ---------------------------------------------------------------- imagefolder


def write_tree(base: Path, sizes: dict[str, tuple[int, int]] | None = None) -> dict[str, bytes]:
    """Tiny PNG images: train/{cat,dog} x3, test/{cat,dog} x2; returns member name -> bytes."""
    files: dict[str, bytes] = {}
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(count):
                name = f"{split}/{cls}/{i:04d}.png"
                w, h = (sizes or {}).get(name, (6, 6))
                img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                buf = io.BytesIO()
                img.save(buf, format="PNG")
                files[name] = buf.getvalue()
    files["train/cat/notes.txt"] = b"not an image"
    for name, blob in files.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_bytes(blob)
    return files


def write_zip(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, blob in files.items():
            zf.writestr(prefix + name, blob)
    return path


def folder_cfg(root: Path, cache: Path, **kw: object) -> DataConfig:
    kw.setdefault("val_fraction", 0.0)
    return DataConfig(name="imagefolder", root=str(root), cache_dir=str(cache), **kw)  # type: ignore[arg-type]


def test_imagefolder_zip_and_directory_agree(tmp_path: Path) -> None:
    files = write_tree(tmp_path / "tree")
    archive = write_zip(tmp_path / "tiny.zip", files)
    nested = write_zip(tmp_path / "nested.zip", files, prefix="tiny/")
    cache = tmp_path / "cache"
    from_zip = load_dataset(folder_cfg(archive, cache), progress=False)
    from_dir = load_dataset(folder_cfg(tmp_path / "tree", cache), progress=False)
    from_nested = load_dataset(folder_cfg(nested, cache), progress=False)
    assert from_zip.classes == ["cat", "dog"] and from_zip.train_x.shape == (6, 3, 6, 6)
    assert from_zip.test_x.shape == (4, 3, 6, 6) and from_zip.train_x.dtype == torch.uint8
    assert from_zip.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    expected = np.array(Image.open(io.BytesIO(files["train/cat/0000.png"]))).transpose(2, 0, 1)
    assert torch.equal(from_zip.train_x[0], torch.from_numpy(expected))
    for other in (from_dir, from_nested):
        assert torch.equal(other.train_x, from_zip.train_x) and torch.equal(other.test_x, from_zip.test_x)
        assert torch.equal(other.train_y, from_zip.train_y) and torch.equal(other.test_y, from_zip.test_y)
    assert len(list(cache.glob("imagefolder-*.npz"))) == 3
    cached = load_dataset(folder_cfg(archive, cache), progress=False)
    assert torch.equal(cached.train_x, from_zip.train_x) and cached.classes == from_zip.classes


def test_imagefolder_sizes_must_match_unless_resized(tmp_path: Path) -> None:
    files = write_tree(tmp_path / "tree", sizes={"test/dog/0001.png": (8, 5)})
    archive = write_zip(tmp_path / "mixed.zip", files)
    with pytest.raises(DataError, match="data.image_size"):
        load_dataset(folder_cfg(archive, tmp_path / "cache"), progress=False)
    resized = load_dataset(folder_cfg(archive, tmp_path / "cache", image_size=4), progress=False)
    assert resized.train_x.shape == (6, 3, 4, 4) and resized.test_x.shape == (4, 3, 4, 4)


def test_imagefolder_bad_layout(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "flat.zip", {"cat/0.png": b"x", "dog/0.png": b"y"})
    with pytest.raises(DataError, match="train/"):
        load_dataset(folder_cfg(archive, tmp_path / "cache"), progress=False)
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="test/"):
        load_dataset(folder_cfg(tmp_path / "empty", tmp_path / "cache"), progress=False)


def test_real_cifar10_zip_subset(tmp_path: Path) -> None:
    path = cifar_zip()
    if path is None:
        pytest.skip("CIFAR-10 zip not found (set TRICKBOX_CIFAR10_ZIP)")
    start = time.perf_counter()
    cfg = DataConfig(name="imagefolder", root=str(path), train_subset=500, test_subset=200, cache_dir=str(tmp_path))
    ds = load_dataset(cfg, progress=False)
    elapsed = time.perf_counter() - start
    assert ds.num_classes == 10 and ds.classes[0] == "airplane" and ds.classes[-1] == "truck"
    assert ds.train_x.shape == (500, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (200, 3, 32, 32) and len(ds.val_y) == 5000
    assert class_counts(ds.train_y) == [50] * 10 and class_counts(ds.test_y) == [20] * 10
    assert 0.4 < ds.mean[0] < 0.6 and 0.15 < ds.std[0] < 0.35
    assert elapsed < 20


def test_parallel_decode_and_worker_errors(tmp_path: Path, capsys) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), 7, dtype=np.uint8)).save(buf, format="PNG")
    files = {f"train/c{i % 3}/{i:05d}.png": buf.getvalue() for i in range(2100)}
    files.update({f"test/c{k}/0.png": buf.getvalue() for k in range(3)})  # every split has every class
    good = load_dataset(folder_cfg(write_zip(tmp_path / "many.zip", files), tmp_path / "c1"), progress=False)
    assert good.train_x.shape == (2100, 3, 4, 4) and bool((good.train_x == 7).all())
    files["train/c1/99999.png"] = b"not a png"
    bad = write_zip(tmp_path / "bad.zip", files)
    with pytest.raises(DataError, match="99999.png"):  # above the limit: the run stops, naming the file
        load_dataset(folder_cfg(bad, tmp_path / "c2", max_bad_fraction=0.0), progress=False)
    capsys.readouterr()
    skipped = load_dataset(folder_cfg(bad, tmp_path / "c3"), progress=False)  # 1 of 2101: skipped and named
    assert len(skipped.train_y) == 2100 and "99999.png" not in " ".join(skipped.files["train"])
    assert "skipped unreadable image" in capsys.readouterr().err


def test_val_fraction_leaving_no_training_images(tmp_path: Path) -> None:
    files = {"train/a/0.png": b"", "test/a/0.png": b""}
    with pytest.raises(DataError, match="data.val_fraction"):
        load_dataset(folder_cfg(write_zip(tmp_path / "one.zip", files), tmp_path, val_fraction=0.9), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loader_on_cuda_matches_cpu() -> None:
    cpu, gpu = make_loader(crop_padding=2), make_loader(crop_padding=2, device="cuda")
    for (xa, ya, ia), (xb, yb, ib) in zip(cpu, gpu):
        assert xb.device.type == "cuda" and yb.device.type == "cuda" and ib.device.type == "cuda"
        assert torch.equal(ia, ib.cpu()) and torch.equal(ya, yb.cpu())
        assert torch.allclose(xa, xb.cpu())
    idx = torch.arange(10)
    assert torch.allclose(cpu.fetch(idx, epoch_step=2), gpu.fetch(idx, epoch_step=2).cpu())
