"""CIFAR-10/100 through torchvision (downloads only when ``data.download=true``)."""
from __future__ import annotations

import numpy as np
import torch

from .config import SHARED_CIFAR10_ZIP, DataConfig
from ..errors import DataError
from .source import Source, in_memory_source


def cifar_source(cfg: DataConfig) -> Source:
    """CIFAR-10 or CIFAR-100 from the torchvision root ``cfg.root`` (default ``<cache_dir>/torchvision``)."""
    from torchvision import datasets

    root = cfg.root or str(cfg.resolved_cache_dir() / "torchvision")
    kind = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
    try:
        train = kind(root, train=True, download=cfg.download)
        test = kind(root, train=False, download=cfg.download)
    except (RuntimeError, OSError) as exc:
        raise DataError(_missing_message(cfg.name, root, cfg.download, exc)) from None
    return in_memory_source(
        list(train.classes), _images(train.data), _labels(train.targets), _images(test.data), _labels(test.targets)
    )


def _images(data: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))


def _labels(targets: list[int]) -> torch.Tensor:
    return torch.as_tensor(targets, dtype=torch.int64)


def _missing_message(name: str, root: str, download: bool, exc: BaseException) -> str:
    title = "CIFAR-10" if name == "cifar10" else "CIFAR-100"
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    what = f"download of {title} failed ({reason})" if download else f"{title} not found under data.root={root!r}"
    first = "check the internet connection" if download else "set data.download=true (needs internet)"
    fixes = f"{first} or point data.root at a torchvision {title} root"
    if name == "cifar10":
        fixes = f"use data.name=imagefolder data.root={SHARED_CIFAR10_ZIP} (offline JPEG copy), or " + fixes
    return f"{what}: {fixes}"
