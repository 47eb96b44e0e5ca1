"""Who owns a running trial: the owner record (host, pid, process start) and the lease a live worker renews, so
that a trial whose owner died (this host) or whose lease ran out (another host) is found and retried. Optuna's
heartbeats do this on RDB storages; a journal has none.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

HOST_ENV = "TRICKBOX_SWEEP_HOST"
"""Override the host name recorded as a trial's owner (containers that share a host name)."""


def host_id() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()


def _proc_start(pid: int) -> int | None:
    """The start time (clock ticks) of a live, non-zombie ``pid`` from /proc; ``None`` when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def owner_record(worker: str) -> dict[str, Any]:
    """Who runs a trial: this host, PID and process start time (guards against PID reuse)."""
    return {"host": host_id(), "pid": os.getpid(), "start": _proc_start(os.getpid()), "worker": worker}


def owner_gone(owner: Any, lease: Any, now: float) -> str | None:
    """Why a RUNNING trial's owner is gone (its process on this host died; its lease on another host ran out)."""
    if not isinstance(owner, dict):
        return None
    if owner.get("host") != host_id():
        if isinstance(lease, (int, float)) and now > lease:
            return f"its worker on {owner.get('host')} stopped renewing its lease ({now - lease:.0f} s ago)"
        return None
    pid = owner.get("pid")
    if isinstance(pid, int) and Path("/proc/self/stat").exists():
        start = _proc_start(pid)
        if start is None or owner.get("start") not in (None, start):
            return f"its worker (pid {pid} on {owner.get('host')}) died"
    return None


class Lease:
    """Renews a journal trial's ``lease`` user attribute every ``interval`` s (the lease lasts ``grace`` s)."""

    def __init__(self, trial: Any, interval: float, grace: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(trial, interval, grace), daemon=True)
        trial.set_user_attr("lease", time.time() + grace)
        self._thread.start()

    def _run(self, trial: Any, interval: float, grace: float) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(Exception):  # a blip must not kill the trial; the grace period covers it
                trial.set_user_attr("lease", time.time() + grace)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
