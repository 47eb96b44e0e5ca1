"""A small on-disk cache of named numpy arrays (.npz), written atomically."""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

CACHE_VERSION = 1


def cache_file(cache_dir: Path, prefix: str, *key: object) -> Path:
    """The cache path for ``key`` (hashed) under ``cache_dir``."""
    text = "\x1f".join(repr(k) for k in (CACHE_VERSION, prefix, *key))
    return cache_dir / f"{prefix}-{hashlib.blake2b(text.encode(), digest_size=10).hexdigest()}.npz"


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays stored at ``path``, or None when missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> bool:
    """Write ``arrays`` to ``path`` via a temporary file and ``os.replace``; warn and return False on failure."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        warnings.warn(f"could not cache decoded images at {path} ({exc}); set data.cache_dir to a writable folder")
        return False
