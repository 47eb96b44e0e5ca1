"""Row (e): trickbox's in-memory loader against torchvision ImageFolder + DataLoader over the same JPEGs.

Both produce augmented (random crop with 4 px zero padding, horizontal flip),
normalised float batches of 128 from the same training images:

- trickbox: ``load_dataset(imagefolder, root=ZIP)`` decodes the JPEGs once into a
  uint8 tensor (timed separately, "one-time decode"), then ``InMemoryLoader``
  crops, flips and normalises whole batches;
- torchvision: ``ImageFolder`` over the extracted JPEGs with ``RandomCrop(32, 4)``,
  ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` and ``DataLoader(num_workers=2,
  persistent_workers=True)``, which decodes every image every epoch.

Epochs of the two alternate (rounds), after one warm-up epoch each; the result is
the median epoch's images per second.
"""
from __future__ import annotations

import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from common import interleave
from make_subset_zip import make_subset_zip


@dataclass
class LoaderResult:
    images: int
    trickbox_ips: float
    torchvision_ips: float
    decode_s: float
    extract_s: float

    @property
    def ratio(self) -> float:
        return self.trickbox_ips / self.torchvision_ips


def bench_loaders(src_zip: Path, work: Path, *, per_class: int, rounds: int, batch_size: int = 128, workers: int = 2,
                  log: Callable[[str], None] = print) -> LoaderResult:
    """Build a ``per_class`` subset of ``src_zip`` under ``work``, then time both loaders over it."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from trickbox.data import DataConfig, InMemoryLoader, load_dataset

    sub = work / "subset.zip"
    make_subset_zip(src_zip, sub, per_class=per_class, test_per_class=1)

    t0 = time.perf_counter()
    folder = work / "folder"
    with zipfile.ZipFile(sub) as z:
        z.extractall(folder)
    extract_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    data = load_dataset(DataConfig(name="imagefolder", root=str(sub), val_fraction=0.0, cache_dir=str(work / "cache")),
                        progress=False)
    decode_s = time.perf_counter() - t0
    n = len(data.train_y)
    log(f"loaders: {n} images; one-time decode {decode_s:.1f} s, extract {extract_s:.1f} s")

    ours = InMemoryLoader(data.train_x, data.train_y, batch_size=batch_size, device="cpu", mean=data.mean, std=data.std,
                          augment=True, crop_padding=4, flip=True)
    tf = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(data.mean, data.std),
    ])
    theirs = DataLoader(datasets.ImageFolder(str(folder / "train"), transform=tf), batch_size=batch_size, shuffle=True,
                        num_workers=workers, persistent_workers=workers > 0, drop_last=False)

    def our_epoch(i: int) -> None:
        ours.set_epoch(i)
        seen = 0
        for _x, y, _ in ours:
            seen += len(y)
        _check(seen, n, _x)

    def their_epoch(i: int) -> None:
        seen = 0
        for _x, y in theirs:
            seen += len(y)
        _check(seen, n, _x)

    timed = interleave({"trickbox": our_epoch, "torchvision": their_epoch}, rounds=rounds, calls=1, warmup=1)
    theirs = None  # the workers end with their loader
    return LoaderResult(n, n / timed["trickbox"].median, n / timed["torchvision"].median, decode_s, extract_s)


def _check(seen: int, n: int, x: torch.Tensor) -> None:
    if seen != n or x.dtype != torch.float32 or x.shape[1:] != (3, 32, 32):
        raise RuntimeError(f"loader gave {seen} of {n} images, last batch {x.dtype} {tuple(x.shape)}")
