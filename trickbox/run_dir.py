"""A run's directory: claimed atomically, locked while a process trains in it, and the settings a resume must match.

* A generated name carries a random suffix and is created with ``mkdir`` (no
  ``exist_ok``), so two runs started in the same second never share a directory.
* An explicit ``train.run_name`` that holds a run already needs ``--resume``;
  a directory that a live process trains in (an ``fcntl`` lock on ``.lock``,
  released when that process ends, however it ends) is refused either way.
* Each checkpoint records the :func:`fingerprint` of the settings that shape
  training; ``--resume`` with other settings is refused with the keys that
  differ, except those listed in ``train.resume_allow`` (said so in the log).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import ConfigError, OutputError

DATA_KEYS_THAT_DO_NOT_SHAPE_TRAINING = ("loader", "memory_budget_gb", "workers", "prefetch_factor", "cache_dir")


def claim(out_dir: Path, name: str | None, prefix: str, resume: bool) -> tuple[Path, Any, list[Path]]:
    """The run directory, an open lock file that holds it for this process, and the directories this call created,
    deepest first (a run refused before training removes only what it created)."""
    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if name is None:
            for _ in range(100):
                path = out_dir / f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}-{os.urandom(2).hex()}"
                with contextlib.suppress(FileExistsError):
                    path.mkdir()
                    return path, _lock(path), [path, *made]
            raise ConfigError(f"could not find a free run directory name under {str(out_dir)!r}")
        path = out_dir / name
        held = path.is_dir() and any((path / f).exists() for f in ("config.yaml", "checkpoints", "model.safetensors"))
        if held and not resume:
            raise ConfigError(f"{str(path)!r} holds a run already; add --resume to continue it, or choose another "
                              "train.run_name")
        created = [] if path.exists() else [path]
        path.mkdir(exist_ok=True)
        return path, _lock(path), [*created, *made]
    except OSError as exc:
        raise ConfigError(f"cannot create the run directory under train.out_dir={str(out_dir)!r} "
                          f"({exc.strerror or exc}); choose a writable train.out_dir") from None


def _lock(path: Path) -> Any:
    fh = open(path / ".lock", "a+")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fh.close()
        raise ConfigError(f"{str(path)!r} is in use by a live process (pid {pid}); wait for it to end, or choose "
                          "another train.run_name") from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def fingerprint(cfg: Any, tricks: dict[str, Any], processes: int) -> dict[str, Any]:
    """The settings that shape training, flattened to dotted keys: seed, data, model, optimizer, batch size,
    epochs, gradient accumulation, every trick's parameters, and the number of processes."""
    data = {k: v for k, v in vars(cfg.data).items() if k not in DATA_KEYS_THAT_DO_NOT_SHAPE_TRAINING}
    shaping = {"data": data, "model": vars(cfg.model), "optim": vars(cfg.optim), "tricks": tricks,
               "train": {k: getattr(cfg.train, k) for k in ("seed", "batch_size", "epochs", "grad_accum")},
               "processes": processes}
    return dict(_flat(shaping))


def _flat(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _flat(v, f"{prefix}{k}.")
        if not value:
            yield prefix.rstrip("."), {}
    else:
        yield prefix.rstrip("."), value


def _defaults() -> dict[str, Any]:
    """The fingerprint keys of the config sections at their defaults (data, model, optim)."""
    from .config import RunConfig

    cfg = RunConfig()
    return dict(_flat({"data": vars(cfg.data), "model": vars(cfg.model), "optim": vars(cfg.optim)}))


def check_resume(saved: dict[str, Any] | None, now: dict[str, Any], allowed: list[str], where: Path) -> list[str]:
    """The allowed changes (``key: old → new``); raise :class:`ConfigError` naming the others."""
    if not saved:
        return []  # a checkpoint from before fingerprints
    new_keys = _defaults()  # a key added to trickbox after the checkpoint was written, at its default, is no change
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k)
                     and not (k not in saved and k in new_keys and new_keys[k] == now.get(k)))
    ok = [k for k in changed if any(k == a or k.startswith(a + ".") for a in allowed)]
    refused = [k for k in changed if k not in ok]
    if refused:
        shown = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in refused[:6])
        raise ConfigError(f"--resume: the run in {str(where)!r} was trained with other settings ({shown}); resume with "
                          f"the same settings, start a new run (another train.run_name), or accept the change with "
                          f"train.resume_allow=[{refused[0]}]")
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in ok]


@contextlib.contextmanager
def writing(what: Path, intact: str) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``what`` into one line: which file, what is intact, how to go on."""
    try:
        yield
    except OSError as exc:
        raise OutputError(f"cannot write {what} ({exc.strerror or exc}); {intact}") from None
