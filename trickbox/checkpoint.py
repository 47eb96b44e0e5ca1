"""Checkpoints that survive crashes, and weight loading that never runs foreign code.

A training checkpoint is a directory ``checkpoints/step-00001234/`` holding
``model.safetensors``, ``optimizer.pt`` (loaded with ``weights_only=True``)
and ``state.json`` (position of the run and a SHA-256 of each file). It is
written under a temporary name and renamed into place, so a directory with
a final name is complete. Older checkpoints are deleted only after the new
one is in place. On resume, a checkpoint whose files do not match their
hashes (a truncated write, a bad disk) is skipped with a warning.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .trick import ConfigError

MODEL_FILE = "model.safetensors"
CARD_FILE = "model.json"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


SAFETENSORS_MAX_HEADER = 100 * 2**20
"""safetensors' own limit on the JSON header (100 MB): a larger stated length means the file is not one."""


def safetensors_header(path: Path) -> tuple[dict[str, Any], str | None]:
    """The JSON header of safetensors file ``path`` (``{}`` when it has none), and what is wrong with the file as
    one (None: nothing), read from the header alone: the 8-byte length, the JSON, the tensors' byte ranges against
    the file's size. No length from the file sizes a read before it is checked against the file's size, so a
    renamed ``.pth`` or a header length of 2^62 is a message, not a ``MemoryError``."""
    import json
    import struct

    size = path.stat().st_size
    if size < 8:
        return {}, f"is not a safetensors file: {size} bytes, shorter than the 8-byte header length (empty or cut)"
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > min(size - 8, SAFETENSORS_MAX_HEADER):
            return {}, (f"is not a safetensors file (its first 8 bytes give a header of {length:,} bytes, in a file "
                        f"of {size:,}); a .pth renamed, or a file cut short")
        try:
            header = json.loads(f.read(length))
        except (ValueError, UnicodeDecodeError):
            return {}, "is not a safetensors file (its header is not JSON)"
    if not isinstance(header, dict):
        return {}, "is not a safetensors file (its header is not a JSON object)"
    ends = [v["data_offsets"][1] for v in header.values() if isinstance(v, dict) and
            isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2]
    data = size - 8 - length
    if ends and max(ends) > data:
        return header, f"is truncated: its tensors need {max(ends):,} bytes of data and it holds {data:,}"
    return header, None


def weights_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a weights file (not a regular file; a ``.safetensors`` whose header is wrong), or None."""
    from .config import not_a_regular_file

    problem = not_a_regular_file(path)
    if problem is None and path.suffix == ".safetensors":
        problem = safetensors_header(path)[1]
    return problem


CONTAINERS = ("state_dict", "model", "state_dict_ema", "model_ema")
"""Where training scripts keep the weights inside a checkpoint dict (timm's and torchvision's ``train.py``, and their
EMA copies), in the order they are looked for: the trained weights before the averaged ones."""


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file, or from a pickle that ``weights_only`` accepts."""
    return read_weights(path)[0]


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """A state dict and the :data:`CONTAINERS` key it was found under (``None``: the file is the state dict)."""
    p = Path(path)
    problem = weights_file_problem(p)
    if problem:
        raise ConfigError(f"weights file {str(p)!r} {problem}; give a .safetensors file or a trickbox run directory")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p)), None
        except (SafetensorError, OSError, ValueError) as exc:
            raise ConfigError(f"weights file {str(p)!r} is unreadable: {exc}") from None
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for payloads, others for garbage
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"refusing to load {str(p)!r}: not a plain weights file ({reason[:160]}); save weights with safetensors"
        ) from None
    container = None
    if isinstance(state, dict) and not _all_tensors(state):
        container = next((k for k in CONTAINERS if isinstance(state.get(k), dict) and _all_tensors(state[k])), None)
        state = state[container] if container else state
    if not isinstance(state, dict) or not state or not _all_tensors(state):
        keys = ", ".join(repr(k) for k in list(state)[:6]) if isinstance(state, dict) else type(state).__name__
        raise ConfigError(f"weights file {str(p)!r} does not hold a state dict of tensors (top level: {keys}); "
                          f"trickbox looks under {', '.join(CONTAINERS)}")
    return state, container


def _all_tensors(state: dict[Any, Any]) -> bool:
    return bool(state) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def save_model(model: torch.nn.Module, directory: Path, card: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``model.json`` (timm name, classes, …) atomically."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    target = directory / MODEL_FILE
    tmp = directory / f".{MODEL_FILE}.tmp"
    save_file(_contiguous(model.state_dict()), str(tmp))
    os.replace(tmp, target)
    tmp_card = directory / f".{CARD_FILE}.tmp"
    tmp_card.write_text(json.dumps(card, indent=2))
    os.replace(tmp_card, directory / CARD_FILE)
    return target


CARD_KEYS = {"name": str, "num_classes": int, "in_chans": int}
"""What a model card must hold to rebuild the model, with the types."""


def read_card(directory: Path) -> dict[str, Any]:
    """A run's ``model.json``, checked: JSON, an object, with ``name``, ``num_classes`` and ``in_chans`` of the right
    types (``kwargs`` a mapping when present); else one line naming the file and what is wrong."""
    card = directory / CARD_FILE
    if not card.is_file():
        raise ConfigError(f"{str(directory)!r} is not a trickbox run directory (no {CARD_FILE}); pass a model name and "
                          "a checkpoint file")
    where = f"{str(card)!r}"
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where} is not valid JSON ({str(exc).splitlines()[0][:120]}); it is written with "
                          "model.safetensors at a run's end: train the run again or restore the file") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a JSON object, got {type(data).__name__}")
    for key, kind in CARD_KEYS.items():
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            raise ConfigError(f"{where} lacks {key!r} ({kind.__name__}); it is written with model.safetensors at a "
                              "run's end: train the run again or restore the file")
    if not isinstance(data.get("kwargs", {}), dict):
        raise ConfigError(f"{where}: 'kwargs' must be a JSON object, got {type(data['kwargs']).__name__}")
    return data


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    epoch: int
    batch_in_epoch: int
    state: dict[str, Any]


def save_checkpoint(
    root: Path,
    *,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    step: int,
    epoch: int,
    batch_in_epoch: int,
    extra: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write a complete checkpoint, then delete all but the newest ``keep``."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private (0700); a checkpoint reads like any directory of the run
    try:
        save_file(_contiguous(model_state), str(tmp / MODEL_FILE))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        files = {name: _sha256(tmp / name) for name in (MODEL_FILE, "optimizer.pt")}
        state = {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "files": files, **(extra or {})}
        (tmp / "state.json").write_text(json.dumps(state, indent=2))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():  # same step written again (resumed at an epoch end): move the old one aside first
            os.replace(final, Path(tempfile.mkdtemp(prefix=".tmp-old-", dir=root)) / final.name)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(root)[:-keep]:
        # renamed first, so a kill during the delete never leaves a half-deleted directory with a final name
        aside = root / f".tmp-del-{old.name}"
        try:
            os.replace(old, aside)
        except OSError:
            aside = old
        shutil.rmtree(aside, ignore_errors=True)
    for stale in root.glob(".tmp-*"):  # left by a process killed while writing or deleting, or moved aside above
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint directories with a final name, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def verify(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path`` if every file matches its recorded hash, else ``None``."""
    try:
        state = json.loads((path / "state.json").read_text())
        for name, digest in state["files"].items():
            if _sha256(path / name) != digest:
                return None
        return Checkpoint(path, int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"]), state)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def latest_checkpoint(root: Path) -> Checkpoint | None:
    """The newest complete checkpoint under ``root``; damaged ones are skipped with a warning."""
    for path in reversed(list_checkpoints(root)):
        ckpt = verify(path)
        if ckpt is not None:
            return ckpt
        warnings.warn(f"checkpoint {path} is incomplete or damaged; trying the previous one", stacklevel=2)
    return None


def load_checkpoint(ckpt: Checkpoint) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Model and optimizer state of a verified checkpoint (no pickled code is run)."""
    from safetensors.torch import load_file

    model_state = load_file(str(ckpt.path / MODEL_FILE))
    try:
        optim_state = torch.load(ckpt.path / "optimizer.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for a payload: never fall back to a full unpickle
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"refusing to load {str(ckpt.path / 'optimizer.pt')!r}: not plain tensors ({reason[:160]}); "
            "delete that checkpoint directory to resume from the previous one"
        ) from None
    return model_state, optim_state
