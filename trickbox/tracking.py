"""Where a run's numbers go: W&B through Accelerate's tracker, plus files in the run directory.

W&B is offline automatically when no API key is configured, and a W&B
failure (init timeout, no network, a full disk) never stops training: it is
reported once and the run goes on with ``metrics.jsonl`` alone.
"""
from __future__ import annotations

import json
import math
import netrc
import os
import sys
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SYNC_HINT = "upload it later with: wandb sync {path}"
INIT_TIMEOUT_ENV = "TRICKBOX_WANDB_INIT_TIMEOUT"


def wandb_mode() -> str:
    """``online`` when a W&B API key is configured, else ``offline`` (``WANDB_MODE`` wins)."""
    explicit = os.environ.get("WANDB_MODE")
    if explicit:
        return explicit
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        rc = netrc.netrc(os.environ.get("NETRC") or None)
        if rc.authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def wandb_init_timeout(default: float = 60.0) -> float:
    """Seconds W&B may take to start a run: ``TRICKBOX_WANDB_INIT_TIMEOUT`` or ``default``."""
    raw = os.environ.get(INIT_TIMEOUT_ENV, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        print(f"trickbox: ignoring {INIT_TIMEOUT_ENV}={raw!r} (want seconds > 0); using {default:g}", file=sys.stderr)
        return default
    return value


def wandb_dir_problem() -> str | None:
    """Why W&B could not write under ``WANDB_DIR`` (default: the working directory), or ``None``.

    A read-only or full directory would make W&B fail on every write (and flood
    stderr); a 64 KiB probe file finds that out before W&B starts.
    """
    probe = Path(os.environ.get("WANDB_DIR") or os.getcwd()).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".trickbox-probe-") as f:
            f.write(bytes(1 << 16))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return f"its directory {str(probe)!r} is not writable ({exc.strerror or type(exc).__name__})"
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            return str(value)
    return value


class Tracking:
    """One tracked run: W&B (optional) and ``metrics.jsonl`` on the main process.

    The one adapter between trickbox and the Accelerator's trackers: trickbox's loop starts one with :meth:`start`;
    a user's own loop gets one from :meth:`attached` (through ``RunContext.from_accelerator``). Either way a failing
    tracker is one line and training goes on."""

    def __init__(self, accelerator: Any, run_dir: Path | None, *, use_wandb: bool) -> None:
        self.accelerator = accelerator
        self.run_dir = run_dir
        self.use_wandb = use_wandb and accelerator.is_main_process
        self.wandb_ok = False
        self.follows = False
        self.main = accelerator.is_main_process
        self._jsonl = None
        self.wandb_dir: str | None = None

    @classmethod
    def attached(cls, accelerator: Any) -> Tracking:
        """The trackers a user's loop already started on ``accelerator`` (``init_trackers``); no metrics.jsonl."""
        tracking = cls(accelerator, None, use_wandb=False)
        tracking.follows = True  # the user may start their trackers after building the context
        return tracking

    @property
    def on(self) -> bool:
        """Whether values go to the Accelerator's trackers now."""
        return self.wandb_ok or (self.follows and bool(self.accelerator.trackers))

    def start(self, config: dict[str, Any], *, project: str, name: str, group: str | None = None,
              job_type: str | None = None, tags: Iterable[str] = (), init_timeout: float | None = None,
              system_metrics: bool = False) -> None:
        if init_timeout is None:
            init_timeout = wandb_init_timeout()
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._jsonl = open(self.run_dir / "metrics.jsonl", "a", buffering=1)
        if not self.use_wandb:
            return
        mode = wandb_mode()
        os.environ.setdefault("WANDB_SILENT", "true")
        problem = wandb_dir_problem() if mode in ("online", "offline") else None
        if problem:
            self._disable(f"W&B is off for this run: {problem}; training goes on with metrics.jsonl only")
            return
        try:
            import wandb

            settings = wandb.Settings(init_timeout=init_timeout, console="off", x_disable_stats=not system_metrics,
                                      mode=mode)
            kwargs: dict[str, Any] = {"name": name, "settings": settings, "tags": list(tags)}
            if group:
                kwargs["group"] = group
            if job_type:
                kwargs["job_type"] = job_type
            self.accelerator.init_trackers(project, config=config, init_kwargs={"wandb": kwargs})
            if self.main and not any(getattr(t, "name", "") == "wandb" for t in self.accelerator.trackers):
                self._disable("W&B is off for this run: its Accelerator was made without the wandb tracker; "
                              "training goes on with metrics.jsonl only")
                return
            self.wandb_ok = True
            run = self.accelerator.get_tracker("wandb", unwrap=True)
            self.wandb_dir = getattr(run, "dir", None) and str(Path(run.dir).parent)
            if mode == "offline":
                print(f"trickbox: W&B has no API key here, logging offline to {self.wandb_dir}; "
                      + SYNC_HINT.format(path=self.wandb_dir), file=sys.stderr)
        except Exception as exc:  # W&B must never stop training
            self._disable(f"W&B init failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                          "training goes on with metrics.jsonl only")

    def _disable(self, why: str) -> None:
        print(f"trickbox: {why}", file=sys.stderr)  # one line, once; a warning too would repeat it with a source line
        self.wandb_ok = False
        self.accelerator.trackers = []

    def log(self, values: dict[str, Any], step: int | None = None) -> None:
        if not self.main:
            return
        if self._jsonl is not None:
            row = {"step": step, **{k: _jsonable(v) for k, v in values.items()}}
            try:
                self._jsonl.write(json.dumps(row) + "\n")
            except OSError:
                pass
        if self.on:
            try:
                self.accelerator.log(values, step=step)
            except Exception as exc:
                self._disable(f"W&B logging failed ({type(exc).__name__}: {exc})")

    def log_images(self, values: dict[str, list[Any]], step: int | None = None) -> None:
        if not (self.main and self.on):
            return
        try:
            for tracker in self.accelerator.trackers:
                if hasattr(tracker, "log_images"):
                    tracker.log_images({k: [str(v) for v in vs] for k, vs in values.items()}, step=step)
        except Exception as exc:
            self._disable(f"W&B image logging failed ({type(exc).__name__}: {exc})")

    def config_update(self, values: dict[str, Any]) -> None:
        """Add ``values`` to the W&B run's config (what a fine-tune loaded, known once the model is built)."""
        if not (self.main and self.wandb_ok):
            return
        try:
            self.accelerator.get_tracker("wandb", unwrap=True).config.update(values, allow_val_change=True)
        except Exception as exc:
            self._disable(f"W&B config update failed ({type(exc).__name__}: {exc})")

    def summary(self, values: dict[str, Any]) -> None:
        if not self.main or self.run_dir is None:
            return
        (self.run_dir / "summary.json").write_text(json.dumps({k: _jsonable(v) for k, v in values.items()}, indent=2))
        if self.wandb_ok:
            try:
                run = self.accelerator.get_tracker("wandb", unwrap=True)
                for k, v in values.items():
                    run.summary[k] = _jsonable(v)
            except Exception as exc:
                self._disable(f"W&B summary failed ({type(exc).__name__}: {exc})")

    def finish(self, state: str | None = None) -> None:
        """End this run's W&B run (tagged with ``state``) without ending the process group."""
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self.wandb_ok:
            try:
                run = self.accelerator.get_tracker("wandb", unwrap=True)
                if state:
                    run.tags = tuple(run.tags or ()) + (state,)
                    run.summary["state"] = state
                run.finish()
            except Exception as exc:
                warnings.warn(f"trickbox: W&B finish failed: {exc}", stacklevel=2)
            self.wandb_ok = False
            self.accelerator.trackers = []
