"""Inside a user's own training script: the trial this process runs for ``trickbox sweep --script``.

::

    t = trickbox.sweep.current_trial()           # a no-op stand-in outside a sweep
    tricks = trickbox.load_tricks(t.suggest({"mixup": {"alpha": 0.2}, "sgdr": {"t0": 2}}))
    accelerator.init_trackers("own-loop", config=vars(args), init_kwargs={"wandb": t.wandb_init_kwargs()})
    for epoch in range(epochs):
        ...
        if t.report(val_accuracy, epoch + 1):     # True: the pruner stopped this trial
            break
    t.finish(val_accuracy)

The worker that started the script has already sampled the parameters and
passes the trial in environment variables (``TRICKBOX_TRIAL`` names a JSON
file; ``TRICKBOX_TRIAL_STORAGE``, ``TRICKBOX_STUDY``, ``TRICKBOX_TRIAL_NUMBER``
say the same in short). Under ``accelerate launch`` every rank reads the same
parameters; only rank 0 talks to the study, and it broadcasts each prune
decision to the other ranks (``torch.distributed``). The worker records the
trial's end from ``result.json``, which :meth:`SweepTrial.finish` (or a prune)
writes, and from the script's exit code.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Mapping

ENV_TRIAL = "TRICKBOX_TRIAL"
ENV_STORAGE = "TRICKBOX_TRIAL_STORAGE"
ENV_STUDY = "TRICKBOX_STUDY"
ENV_NUMBER = "TRICKBOX_TRIAL_NUMBER"
ENV_DIR = "TRICKBOX_TRIAL_DIR"
RESULT_FILE = "result.json"


def _rank() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:
        pass
    return int(os.environ.get("RANK", "0"))


def _broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (no-op without an initialised process group)."""
    try:
        import torch.distributed as dist
    except ImportError:
        return value
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


class NoTrial:
    """Outside a sweep: the script runs as written (``suggest`` returns its input, ``report`` never prunes)."""

    in_sweep = False
    number: int | None = None
    params: dict[str, Any] = {}
    run_dir: Path | None = None
    resume_dir: Path | None = None

    def suggest(self, config: Mapping[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(config))

    def get(self, name: str, default: Any = None) -> Any:
        return default

    def report(self, value: float, epoch: int) -> bool:
        return False

    def finish(self, value: float | None = None) -> None:
        return None

    def wandb_init_kwargs(self) -> dict[str, Any]:
        return {}


class SweepTrial:
    """One trial of a ``--script`` sweep, as seen from inside the script."""

    in_sweep = True

    def __init__(self, info: dict[str, Any], path: Path) -> None:
        self.info = info
        self.path = path
        self.number: int = int(info["number"])
        self.params: dict[str, Any] = dict(info["params"])
        self.run_dir = Path(info["run_dir"])
        self.resume_dir = Path(info["resume_dir"]) if info.get("resume_dir") else None
        self._trial: Any = None
        self._state: str | None = None

    # -- parameters ----------------------------------------------------------------
    def suggest(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with this trial's parameters put in place.

        A tricks mapping (``{"mixup": {...}}``) gets the trick parameters; a
        full config (with a ``tricks:`` key) also gets config keys such as
        ``optim.lr``. The script's own parameters are in :attr:`params`.
        """
        out = copy.deepcopy(dict(config))
        full = "tricks" in out
        for name, target in self.info.get("targets", {}).items():
            if name not in self.params or not target:
                continue
            path = list(target)
            if path[0] == "tricks":
                path = path if full else path[1:]
            elif not full:
                continue
            cur = out
            for part in path[:-1]:
                nxt = cur.get(part)
                if not isinstance(nxt, dict):
                    nxt = {} if nxt is None else dict(nxt)
                    cur[part] = nxt
                cur = nxt
            cur[path[-1]] = self.params[name]
        return out

    def get(self, name: str, default: Any = None) -> Any:
        """One parameter by its search name (``"lr"``, ``"mixup.alpha"``)."""
        return self.params.get(name, default)

    # -- progress ----------------------------------------------------------------------
    def _optuna_trial(self) -> Any:
        if self._trial is None:
            import optuna

            from .coordinator import pruner_from
            from .storage import StorageTarget, open_storage

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            s = self.info["storage"]
            target = StorageTarget(s["kind"], s["url"], Path(s["journal"]) if s.get("journal") else None)
            study = optuna.load_study(study_name=self.info["study"], storage=open_storage(target),
                                      pruner=pruner_from(self.info["pruner"]["name"], self.info["pruner"]["options"]))
            self._trial = optuna.trial.Trial(study, int(self.info["trial_id"]))
        return self._trial

    def report(self, value: float, epoch: int) -> bool:
        """Report the objective after ``epoch``; ``True`` when the trial is pruned (stop training)."""
        if self._state is not None:
            return self._state == "pruned"
        pruned = False
        if _rank() == 0:
            trial = self._optuna_trial()
            trial.report(float(value), int(epoch))
            pruned = bool(trial.should_prune())
        pruned = bool(_broadcast(pruned))
        if pruned:
            self._end("pruned", float(value), epoch)
        return pruned

    def finish(self, value: float | None = None) -> None:
        """The trial's final objective value (rank 0 records it; other ranks may call it too)."""
        if self._state is not None:
            return
        if value is None:
            raise ValueError("finish(value) needs the trial's final objective value")
        self._end("complete", float(value), None)

    def _end(self, state: str, value: float, epoch: int | None) -> None:
        self._state = state
        if _rank() != 0:
            return
        tmp = self.run_dir / (RESULT_FILE + ".tmp")
        tmp.write_text(json.dumps({"state": state, "value": value, "epoch": epoch}))
        tmp.replace(self.run_dir / RESULT_FILE)
        _tag_wandb(state)

    def wandb_init_kwargs(self) -> dict[str, Any]:
        """``init_kwargs={"wandb": t.wandb_init_kwargs()}``: run name, group, job type, tags, trial config."""
        return copy.deepcopy(self.info.get("wandb", {}))


def _tag_wandb(state: str) -> None:
    import sys

    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    try:
        run.tags = tuple(run.tags or ()) + (state,)
        run.summary["state"] = state
    except Exception:
        pass


_CURRENT: SweepTrial | NoTrial | None = None


def current_trial() -> SweepTrial | NoTrial:
    """This process's trial under ``trickbox sweep --script``, else a :class:`NoTrial` that changes nothing."""
    global _CURRENT
    path = os.environ.get(ENV_TRIAL)
    if _CURRENT is not None and (path is None) == isinstance(_CURRENT, NoTrial):
        if path is None or (isinstance(_CURRENT, SweepTrial) and str(_CURRENT.path) == path):
            return _CURRENT
    if not path:
        _CURRENT = NoTrial()
        return _CURRENT
    p = Path(path)
    try:
        info = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"{ENV_TRIAL}={path} is not a readable trial file ({exc}); run the script through trickbox sweep --script or unset it") from None
    _CURRENT = SweepTrial(info, p)
    return _CURRENT
