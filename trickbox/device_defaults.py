"""Every setting whose default depends on the device, resolved in one place that the loop reads.

A run on CUDA differs from one on the CPU only in speed: these are the switches that make it faster there. Each
key left unset takes the default of the *profile*: the training device's own (``train.device_defaults=auto``),
or the one named, so that ``train.device_defaults=cuda`` runs the CUDA defaults on a CPU, where CI can see
them (``tests/core/test_device_defaults.py``).

=====================  ===========================  ======  =====  ==========================================
setting                key                          CUDA    CPU    what it changes
=====================  ===========================  ======  =====  ==========================================
channels-last          ``model.channels_last``      on      off    memory format of weights and inputs
``torch.compile``      ``model.compile``            on      off    graph capture (``model.compile_backend``)
fused optimizer        ``optim.fused``              on      on     one kernel per step; skips a flagged step
pinned memory          ``data.pin_memory``          on      off    stream path: page-locked batches
=====================  ===========================  ======  =====  ==========================================

The rest is the same code on every device: the memory path holds the training split on the training device
(on a GPU, at most a third of its memory: ``data.memory_budget_gb`` overrides it), the deferred finite guard
(:mod:`trickbox.guard`) reads its flag every ``train.finite_check_every`` steps, and fp16's ``GradScaler``,
which Accelerate creates on CUDA only, hands the guard its own ``found_inf`` (``tests/core/test_guard.py`` runs
that branch with a CPU ``GradScaler``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

PROFILES = ("auto", "cuda", "cpu")

_DEFAULTS: dict[str, dict[str, bool]] = {
    "cuda": {"channels_last": True, "compile": True, "fused": True, "pin_memory": True},
    "cpu": {"channels_last": False, "compile": False, "fused": True, "pin_memory": False},
}


@dataclass(frozen=True)
class DeviceDefaults:
    """The resolved device-dependent settings of one run (recorded under ``runtime`` in ``config.yaml``)."""

    profile: str
    """Whose defaults filled the unset keys: ``cuda`` or ``cpu``."""
    channels_last: bool
    compile: bool
    compile_backend: str
    fused: bool
    pin_memory: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def profile_for(device: torch.device, requested: str = "auto") -> str:
    """``cuda`` or ``cpu``: the named profile, or under ``auto`` the one of ``device`` (other devices take the
    CPU's)."""
    if requested != "auto":
        return requested
    return "cuda" if torch.device(device).type == "cuda" else "cpu"


def resolve(cfg: Any, device: torch.device) -> DeviceDefaults:
    """The settings of run config ``cfg`` on ``device``: each key as set, else the profile's default."""
    profile = profile_for(device, cfg.train.device_defaults)
    base = _DEFAULTS[profile]

    def pick(value: bool | None, key: str) -> bool:
        return bool(base[key] if value is None else value)

    fused = pick(cfg.optim.fused, "fused") and torch.device(device).type in ("cpu", "cuda")
    return DeviceDefaults(profile=profile, channels_last=pick(cfg.model.channels_last, "channels_last"),
                          compile=pick(cfg.model.compile, "compile"), compile_backend=cfg.model.compile_backend,
                          fused=fused, pin_memory=pick(cfg.data.pin_memory, "pin_memory"))
