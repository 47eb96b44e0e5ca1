"""``trickbox sweep SPEC --workers N``: N worker processes on one study, supervised.

The supervisor starts each worker as ``python -m trickbox sweep SPEC --as-worker I`` pinned to one GPU
(``--workers auto``: one per visible GPU, or ``--workers-per-gpu K`` per GPU), shows the study's progress, restarts a
worker that crashed (its trial is retried) and stops them all on a configuration error; one worker runs inside the
supervisor. A worker (or every rank of ``accelerate launch train.py --sweep SPEC``) makes one Accelerator, trains the
spec's ``train_first`` run once, then runs :func:`trickbox.sweep.trials.run_trials`.
"""
from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, OutputError
from .distributed import Channel
from .locks import file_lock
from .script import ScriptRunner
from .spec import FIRST_DIR, SweepSpec
from .storage import StorageTarget, journal_damage
from .study import Coordinator
from .trials import TrainRunner, follow_trials, run_trials


def visible_gpus(env: dict[str, str] | None = None) -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every device torch sees."""
    env = dict(os.environ) if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_count(requested: str, gpus: Sequence[str], per_gpu: int = 1) -> int:
    """``auto`` → ``per_gpu`` per GPU (1 on CPU); else the given positive integer."""
    if requested == "auto":
        return max(1, len(gpus) * per_gpu)
    n = int(requested) if requested.isdigit() else 0
    if n < 1:
        raise ConfigError(f"--workers must be a positive integer or auto, got {requested!r}")
    return n


def assign_gpus(n_workers: int, gpus: Sequence[str]) -> list[str | None]:
    """The ``CUDA_VISIBLE_DEVICES`` of each worker: round robin over ``gpus`` (``None`` on CPU)."""
    return [gpus[i % len(gpus)] if gpus else None for i in range(n_workers)]


class StopRequest:
    """SIGTERM between trials or while waiting for the others': ask for no new trial (call it: was it sent?)."""

    def __init__(self) -> None:
        self.requested, self.previous = False, None
        with contextlib.suppress(ValueError):  # not the main thread
            self.previous = signal.signal(signal.SIGTERM, lambda signum, frame: setattr(self, "requested", True))

    def __call__(self) -> bool:
        return self.requested

    def close(self) -> None:
        """Give SIGTERM back to whoever had it (a process that goes on after the trials: an ablation's next look)."""
        if self.previous is not None:
            with contextlib.suppress(ValueError):
                signal.signal(signal.SIGTERM, self.previous)


# -- in a worker / on every rank -------------------------------------------------------------
def make_sweep_accelerator(spec: SweepSpec, distributed: bool) -> Any:
    """One Accelerator for the whole process; a process-group timeout as the hang backstop."""
    from datetime import timedelta

    from accelerate.utils import InitProcessGroupKwargs

    from ..config import load_config
    from ..loop import make_accelerator

    handlers = ([InitProcessGroupKwargs(timeout=timedelta(seconds=spec.options.distributed.timeout))] if distributed
                else [])
    return make_accelerator(load_config(base=spec.base), kwargs_handlers=handlers)


def train_first(spec: SweepSpec, study_dir: Path, accelerator: Any, channel: Channel) -> None:
    """Train the spec's ``train_first`` run into ``<study>/train_first`` once (skipped when its model exists)."""
    if spec.train_first is None:
        return
    from ..config import load_config
    from ..loop import train

    first_dir = study_dir / FIRST_DIR
    with contextlib.ExitStack() as stack:
        need = False
        if channel.rank == 0:
            stack.enter_context(file_lock(study_dir / f"{FIRST_DIR}.lock"))
            need = not (first_dir / "model.safetensors").is_file()
        if not channel.broadcast(need):
            return
        if channel.rank == 0:
            print(f"trickbox sweep: training the run the trials need first (train_first:) into {first_dir}",
                  file=sys.stderr, flush=True)
        cfg = load_config(base=spec.first_mapping())
        cfg.train.out_dir, cfg.train.run_name = str(study_dir), FIRST_DIR
        train(cfg, resume=first_dir.is_dir(), accelerator=accelerator,
              tracking_kwargs={"name": f"{spec.study}-{FIRST_DIR}", "group": spec.study, "job_type": FIRST_DIR})
        accelerator.free_memory()


def preflight(spec: SweepSpec, study_dir: Path) -> None:
    """Build the base config's tricks once (files they name, cross-parameter checks) before any trial."""
    from ..api import load_tricks
    from ..config import load_config

    first = str((study_dir / FIRST_DIR).resolve()) if spec.train_first is not None else None
    cfg = load_config(base=spec.trial_mapping({}, first))
    load_tricks(cfg.tricks, block=cfg.plugins.block)


def run_ranks(spec: SweepSpec, target: StorageTarget, study_dir: Path, *, accelerator: Any, channel: Channel,
              worker: str, worker_index: int, deadline: float | None, wait_for_others: bool, progress: bool) -> int:
    """Trial after trial on this process (rank 0 owns the study); the exit code."""
    stop = StopRequest()
    coordinator, error = None, None
    if channel.rank == 0:
        try:
            coordinator = Coordinator(spec, target, study_dir, worker=worker, worker_index=worker_index,
                                      deadline=deadline, wait_for_others=wait_for_others)
        except ConfigError as exc:
            error = str(exc)
    if channel.broadcast(error):
        raise ConfigError(error)  # type: ignore[arg-type]
    try:
        train_first(spec, study_dir, accelerator, channel)
        failed = None
        try:
            preflight(spec, study_dir)
        except ConfigError as exc:
            failed = str(exc)
        if channel.broadcast(failed):
            raise ConfigError(failed)  # type: ignore[arg-type]
        runner = TrainRunner(spec, accelerator, channel, coordinator.report if coordinator else None, progress)
        if coordinator is None:
            return follow_trials(runner, channel)
        return run_trials(coordinator, runner, stopping=stop, channel=channel)
    finally:
        stop.close()
        if coordinator is not None:
            coordinator.close()


def run_worker(spec: SweepSpec, target: StorageTarget, study_dir: Path, *, index: int, deadline: float | None,
               progress: bool, script: str | None = None, launch: str | None = None) -> int:
    """The body of one worker process (``--as-worker I``)."""
    if script is None:
        accelerator = make_sweep_accelerator(spec, distributed=False)
        return run_ranks(spec, target, study_dir, accelerator=accelerator, channel=Channel(), worker=f"w{index}",
                         worker_index=index, deadline=deadline, wait_for_others=True, progress=progress)
    coordinator = Coordinator(spec, target, study_dir, worker=f"w{index}", worker_index=index, deadline=deadline)
    stop = StopRequest()
    try:
        return run_trials(coordinator, ScriptRunner(spec, script, launch, coordinator), stopping=stop)
    finally:
        stop.close()
        coordinator.close()


def run_distributed(spec: SweepSpec, target: StorageTarget, study_dir: Path, *, deadline: float | None,
                    end: bool = True) -> int:
    """``accelerate launch train.py --sweep SPEC``: this process is one rank of every trial. ``end=False``: another
    study follows in this launch (an ablation's next look), so the process group stays up."""
    accelerator = make_sweep_accelerator(spec, distributed=True)
    channel = Channel(accelerator, spec.options.distributed.failure_wait)
    code = run_ranks(spec, target, study_dir, accelerator=accelerator, channel=channel, worker=f"rank{channel.rank}",
                     worker_index=0, deadline=deadline, wait_for_others=False, progress=True)
    if code == 0:
        channel.close()  # its side group first, then (last look only) the main group, while Python is whole
        if end:
            accelerator.end_training()
            gc.collect()  # gloo work still referenced from Python must not die at interpreter shutdown (SIGABRT)
    elif channel.rank == 0:
        print("trickbox sweep: the launch stops because a rank failed mid-trial; run the same command again to "
              "continue the study", file=sys.stderr, flush=True)
    return code


# -- the supervisor ----------------------------------------------------------------------------
def supervise(spec: SweepSpec, target: StorageTarget, study_dir: Path, *, workers: str, worker_args: list[str],
              deadline: float | None, max_restarts: int = 3, script: str | None = None, launch: str | None = None,
              per_gpu: int = 1) -> int:
    """Start the workers, follow the study, restart crashed workers; the sweep's exit code."""
    gpus = visible_gpus()
    n = worker_count(workers, gpus, per_gpu)
    pins = assign_gpus(n, sorted(gpus * per_gpu, key=gpus.index))
    coordinator = Coordinator(spec, target, study_dir, worker="main", deadline=deadline, wait_for_others=False)
    budget = f"{spec.n_trials} trials" if spec.n_trials else f"{spec.timeout:g} s"
    where = f" on GPUs {', '.join(p for p in pins if p is not None)}" if gpus else " on CPU"
    print(f"trickbox sweep: study {spec.study!r} ({budget}) in {target.display()}; {n} worker(s){where}",
          file=sys.stderr, flush=True)
    try:
        with coordinator.lock.hold():
            coordinator.reap()
            left = coordinator.budget_left()
        if not left:
            print(f"trickbox sweep: study {spec.study!r} has used its budget; nothing to run (raise it with "
                  "--n-trials)",
                  file=sys.stderr, flush=True)
            return 0
        if n == 1:
            try:
                return run_worker(spec, target, study_dir, index=0, deadline=deadline, progress=True, script=script,
                                  launch=launch)
            except KeyboardInterrupt:
                return 130
        return _Workers(coordinator, worker_args, pins, max_restarts).run()
    finally:
        try:
            coordinator.watch.check()
            print_summary(spec, coordinator)
        except Exception as exc:  # no summary from a damaged journal
            if not isinstance(exc, OutputError) and journal_damage(target, study_dir, exc) is None:
                raise
        coordinator.close()


class _Workers:
    """N worker processes on one study: started, watched, restarted."""

    def __init__(self, coordinator: Coordinator, worker_args: list[str], pins: list[str | None],
                 max_restarts: int) -> None:
        self.coordinator, self.args, self.pins, self.max_restarts = coordinator, worker_args, pins, max_restarts
        self.procs: list[subprocess.Popen[bytes]] = [self.start(i) for i in range(len(pins))]
        self.restarts = [0] * len(pins)

    def start(self, i: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        if self.pins[i] is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.pins[i])
        elif "OMP_NUM_THREADS" not in env:  # CPU: share the cores instead of oversubscribing them
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(self.pins)))
        return subprocess.Popen([sys.executable, "-m", "trickbox", "sweep", *self.args, "--as-worker", str(i),
                                 "--quiet-trials"], env=env)

    def run(self) -> int:
        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt  # stop the workers (they checkpoint; their trials are retried later), then leave

        previous = None
        with contextlib.suppress(ValueError):
            previous = signal.signal(signal.SIGTERM, on_term)
        from tqdm.auto import tqdm

        done, code, spec = [False] * len(self.procs), 0, self.coordinator.spec
        bar = tqdm(total=spec.n_trials, desc=f"sweep {spec.study}", unit="trial", file=sys.stderr, dynamic_ncols=True,
                   disable=not sys.stderr.isatty())  # the study's finished trials, polled from the storage
        try:
            while not all(done):
                time.sleep(1.0)
                with contextlib.suppress(Exception):
                    bar.n = sum(1 for t in self.coordinator.trials() if t.state.is_finished())
                    bar.refresh()
                for i, p in enumerate(self.procs):
                    if done[i] or p.poll() is None:
                        continue
                    rc = p.returncode
                    if rc in (2, 4):  # a configuration error, or a study record that a restart cannot mend
                        why = "a configuration error" if rc == 2 else "damage to the study's storage"
                        print(f"trickbox sweep: worker {i} stopped on {why}; stopping the others", file=sys.stderr)
                        self.terminate()
                        return rc
                    if rc in (130, -signal.SIGINT):
                        done[i], code = True, 130
                    elif rc != 0 and not self.restart(i, rc):
                        done[i], code = True, code or 1
                    else:
                        done[i] = rc == 0
        except KeyboardInterrupt:
            print("trickbox sweep: stopping the workers; their running trials are checkpointed and retried on the next "
                  "run",
                  file=sys.stderr, flush=True)
            self.terminate()
            code = 130
        finally:
            bar.close()
            if previous is not None:
                with contextlib.suppress(ValueError):
                    signal.signal(signal.SIGTERM, previous)
        return code

    def restart(self, i: int, rc: int) -> bool:
        why = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
        with self.coordinator.lock.hold():
            self.coordinator.reap()
            left = self.coordinator.budget_left()
        if self.restarts[i] >= self.max_restarts or not left:
            print(f"trickbox sweep: worker {i} died ({why}); not restarted", file=sys.stderr, flush=True)
            return False
        self.restarts[i] += 1
        print(f"trickbox sweep: worker {i} died ({why}); restarting it ({self.restarts[i]}/{self.max_restarts}); "
              "its trial is failed and retried", file=sys.stderr, flush=True)
        self.procs[i] = self.start(i)
        return True

    def terminate(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        end = time.time() + 60
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()


def print_summary(spec: SweepSpec, coordinator: Coordinator) -> None:
    trials = coordinator.trials()
    counts = {s: sum(1 for t in trials if t.state.name == s) for s in ("COMPLETE", "PRUNED", "FAIL")}
    line = (f"trickbox sweep: study {spec.study!r}: {len(trials)} trials ({counts['COMPLETE']} complete, "
            f"{counts['PRUNED']} pruned, {counts['FAIL']} failed)")
    best = next(iter(coordinator.study.best_trials), None) if counts["COMPLETE"] else None
    if best is not None:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
        line += f"; best {spec.objective}={best.value:.4f} (trial {best.number}: {params})"
    print(line, file=sys.stderr, flush=True)
    target, where = coordinator.target, ""
    if target.kind != "journal" or target.journal != (coordinator.study_dir / "journal.log").resolve():
        where = f" --storage {target.display()}"
    elif coordinator.study_dir.parent != (Path.cwd() / "sweeps_out").resolve():
        where = f" --out-dir {coordinator.study_dir.parent}"
    print(f"trickbox sweep: report: trickbox report {spec.study}{where}", file=sys.stderr, flush=True)
