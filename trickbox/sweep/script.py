"""``trickbox sweep --script``: both sides of one protocol. In the user's script, :func:`current_trial` is the
trial this process runs; in the worker, :class:`ScriptRunner` starts the script and answers it.

::

    t = trickbox.sweep.current_trial()           # a no-op stand-in outside a sweep
    tricks = trickbox.load_tricks(t.suggest({"<trick>": {"<param>": 0.2}}))
    accelerator.init_trackers("own-loop", config=vars(args), init_kwargs={"wandb": t.wandb_init_kwargs()})
    for epoch in range(epochs):
        ...
        if t.report(val_accuracy, epoch + 1):     # True: the pruner stopped this trial
            break
    t.finish(val_accuracy)

The worker names the trial in ``TRICKBOX_TRIAL`` (a JSON file); the script never opens the study: rank 0 asks
its worker over a local authenticated connection and broadcasts the pruner's decision to the other ranks.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the script's side imports nothing heavy: the worker's types only for annotations
    from .spec import SweepSpec
    from .study import Coordinator, Outcome, TrialPlan

ENV_TRIAL = "TRICKBOX_TRIAL"


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))


def _broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (no-op without an initialised process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


class SweepTrial:
    """One trial of a ``--script`` sweep, as seen from inside the script."""

    in_sweep = True

    def __init__(self, info: dict[str, Any], path: Path | None) -> None:
        self.info, self.path = info, path
        self.number: int | None = info.get("number")
        self.params: dict[str, Any] = dict(info.get("params", {}))
        self.run_dir = Path(info["run_dir"]) if info.get("run_dir") else None
        self.resume_dir = Path(info["resume_dir"]) if info.get("resume_dir") else None
        self._conn: Any = None
        self._state: str | None = None

    def suggest(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with this trial's parameters put in place.

        A tricks mapping (``{"<trick>": {...}}``) gets the trick parameters; a full config (with a ``tricks:``
        key) also gets config keys such as ``optim.lr``. The script's own parameters are in :attr:`params`.
        """
        out = copy.deepcopy(dict(config))
        full = "tricks" in out
        for name, target in self.info.get("targets", {}).items():
            if name not in self.params or not target or (target[0] != "tricks" and not full):
                continue
            path = list(target) if full or target[0] != "tricks" else list(target)[1:]
            cur = out
            for part in path[:-1]:
                if not isinstance(cur.get(part), dict):
                    cur[part] = {} if cur.get(part) is None else dict(cur[part])
                cur = cur[part]
            cur[path[-1]] = self.params[name]
        return out

    def get(self, name: str, default: Any = None) -> Any:
        """One parameter by its search name (``"lr"``, ``"<trick>.<param>"``)."""
        return self.params.get(name, default)

    def _ask(self, *message: Any) -> Any:
        """Send ``message`` to the worker (rank 0 only) and return its answer."""
        from multiprocessing.connection import Client

        if self._conn is None:
            self._conn = Client(tuple(self.info["address"]), authkey=bytes.fromhex(self.info["authkey"]))
        self._conn.send(message)
        return self._conn.recv()

    def report(self, value: float, epoch: int) -> bool:
        """Report the objective after ``epoch``; ``True`` when the trial is pruned (stop training)."""
        if self._state is not None:
            return self._state == "pruned"
        pruned = bool(_broadcast(bool(self._ask("report", float(value), int(epoch))) if _rank() == 0 else False))
        if pruned:
            self._end("pruned")
        return pruned

    def finish(self, value: float | None = None) -> None:
        """The trial's final objective value (rank 0 sends it; other ranks may call it too)."""
        if self._state is not None:
            return
        if value is None:
            raise ValueError("finish(value) needs the trial's final objective value")
        if _rank() == 0:
            self._ask("finish", float(value))
        self._end("complete")

    def _end(self, state: str) -> None:
        self._state = state
        run = getattr(sys.modules.get("wandb"), "run", None)
        if run is not None and _rank() == 0:
            try:
                run.tags = tuple(run.tags or ()) + (state,)
                run.summary["state"] = state
            except Exception:
                pass

    def wandb_init_kwargs(self) -> dict[str, Any]:
        """``init_kwargs={"wandb": t.wandb_init_kwargs()}``: run name, group, job type, tags, trial config."""
        return copy.deepcopy(self.info.get("wandb", {}))


class NoTrial(SweepTrial):
    """Outside a sweep: the script runs as written (``suggest`` returns its input, ``report`` never prunes)."""

    in_sweep = False

    def __init__(self) -> None:
        super().__init__({}, None)

    def report(self, value: float, epoch: int) -> bool:
        return False

    def finish(self, value: float | None = None) -> None:
        return None


_CURRENT: SweepTrial | None = None


def current_trial() -> SweepTrial:
    """This process's trial under ``trickbox sweep --script``, else a :class:`NoTrial` that changes nothing."""
    global _CURRENT
    path = os.environ.get(ENV_TRIAL)
    if not path:
        _CURRENT = _CURRENT if isinstance(_CURRENT, NoTrial) else NoTrial()
    elif _CURRENT is None or str(_CURRENT.path) != path:
        try:
            _CURRENT = SweepTrial(json.loads(Path(path).read_text()), Path(path))
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"{ENV_TRIAL}={path} is not a readable trial file ({exc}); run the script through "
                               "trickbox sweep --script or unset it") from None
    return _CURRENT


# -- a user's script, as a subprocess -----------------------------------------------------
class ScriptRunner:
    """A trial as a run of the user's script (``--script``, optionally under ``--launch``)."""

    def __init__(self, spec: SweepSpec, script: str, launch: str | None, coordinator: Coordinator) -> None:
        self.spec, self.script, self.launch, self.coordinator = spec, script, launch, coordinator

    def __call__(self, plan: TrialPlan) -> Outcome:
        from multiprocessing.connection import Listener

        from .study import Outcome

        start, run_dir = time.perf_counter(), Path(plan.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(16)
        listener = Listener(("127.0.0.1", 0), authkey=key)
        ended: dict[str, Any] = {}
        server = threading.Thread(target=self._serve, args=(listener, ended), daemon=True)
        server.start()
        info_path = run_dir / "trial.json"
        info_path.write_text(json.dumps(self.trial_info(plan, listener.address, key), indent=1, default=str))
        env = {**os.environ, ENV_TRIAL: str(info_path), "WANDB_RUN_GROUP": plan.study, "WANDB_JOB_TYPE": "trial",
               "WANDB_NAME": f"trial-{plan.number}"}
        cmd = [*(shlex.split(self.launch) if self.launch else [sys.executable]), *shlex.split(self.script)]
        try:
            proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            rc = proc.wait()
        except OSError as exc:
            return Outcome("failed", error=f"cannot start {cmd[0]}: {exc}", fatal=True, exit_code=2)
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait()
            return Outcome("failed", error="interrupted", retry=True, fatal=True, exit_code=130)
        finally:
            with contextlib.suppress(OSError):  # wakes a server still in accept(): it fails the handshake and ends
                socket.create_connection(listener.address, timeout=1).close()
            server.join(timeout=5)
            listener.close()
        seconds = time.perf_counter() - start
        if ended.get("state") == "pruned":
            return Outcome("pruned", error=f"pruned at epoch {ended.get('epoch')}", seconds=seconds)
        if rc == 0 and ended.get("state") == "complete":
            return Outcome("complete", float(ended["value"]), seconds=seconds)
        if rc == 0:
            return Outcome("failed",
                           error="the script exited without calling trickbox.sweep.current_trial().finish(value)",
                           seconds=seconds)
        if rc < 0:
            return Outcome("failed", error=f"the script was killed by signal {-rc}", retry=True, seconds=seconds)
        return Outcome("failed", error=f"the script exited with code {rc}", seconds=seconds)

    def _serve(self, listener: Any, ended: dict[str, Any]) -> None:
        """Answer the script's rank 0: ``("report", value, epoch)`` → prune?, ``("finish", value)``."""
        from multiprocessing import AuthenticationError

        try:
            conn = listener.accept()
        except (OSError, EOFError, AuthenticationError):
            return
        with conn:
            while True:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    return
                if msg[0] == "report" and not ended:
                    pruned = self.coordinator.report(float(msg[1]), int(msg[2]))
                    if pruned:
                        ended.update(state="pruned", epoch=int(msg[2]))
                    conn.send(pruned)
                elif msg[0] == "finish":
                    ended.setdefault("state", "complete")
                    ended.setdefault("value", float(msg[1]))
                    conn.send(True)
                else:
                    conn.send(ended.get("state") == "pruned")

    def trial_info(self, plan: TrialPlan, address: Any, key: bytes) -> dict[str, Any]:
        """What the script's :class:`SweepTrial` reads (``trial.json``)."""
        from .study import wandb_names

        trial = {"number": plan.number, "study": plan.study, "params": plan.params, "retry_of": plan.retry_of}
        return {**trial, "config": plan.mapping, "targets": {d.name: list(d.target) for d in self.spec.search},
                "run_dir": plan.run_dir, "resume_dir": plan.resume_from, "objective": self.spec.objective,
                "address": list(address), "authkey": key.hex(),
                "wandb": {**wandb_names(plan), "config": {"trial": trial}}}


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the worker dies (Linux), so no orphan keeps writing to the trial."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass
