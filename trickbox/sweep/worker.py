"""Worker processes: ``trickbox sweep SPEC --workers N`` starts N of them on one study.

The supervisor (the ``trickbox sweep`` process) creates or joins the study,
then starts each worker as ``python -m trickbox sweep SPEC --as-worker I ...``
with ``CUDA_VISIBLE_DEVICES`` pinned to one GPU (``--workers auto`` = one per
visible GPU; 1 without GPUs). It shows the study's progress, restarts a
worker that crashed (its trial is failed and retried by the next worker that
looks) and stops all of them on a configuration error. A single worker runs
inside the supervisor's own process, which saves a second process start-up.

A worker (or every rank of ``accelerate launch train.py --sweep SPEC``) runs
:func:`run_ranks`: one Accelerator for the process, the teacher once if the
spec has one, then trial after trial until the budget is used up.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ..trick import ConfigError
from .coordinator import Coordinator, Outcome, TrialPlan
from .distributed import LocalChannel, ProcessGroupChannel, make_channel
from .spec import SweepSpec
from .storage import StorageTarget, budget_used, file_lock

MAX_RESTARTS = 3


# -- GPUs ----------------------------------------------------------------------------
def visible_gpus(env: dict[str, str] | None = None) -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else every device torch sees."""
    env = dict(os.environ) if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        return [d.strip() for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def worker_count(requested: str, gpus: Sequence[str]) -> int:
    """``auto`` → one per GPU (1 on CPU); else the given positive integer."""
    if requested == "auto":
        return max(1, len(gpus))
    try:
        n = int(requested)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"--workers must be a positive integer or auto, got {requested!r}")
    return n


def assign_gpus(n_workers: int, gpus: Sequence[str]) -> list[str | None]:
    """The ``CUDA_VISIBLE_DEVICES`` of each worker: round robin over ``gpus`` (``None`` on CPU)."""
    if not gpus:
        return [None] * n_workers
    return [gpus[i % len(gpus)] for i in range(n_workers)]


# -- in a worker / on every rank ---------------------------------------------------------
class _StopRequest:
    """SIGTERM between trials: finish the current trial's bookkeeping, then stop."""

    def __init__(self) -> None:
        self.requested = False
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True


def make_sweep_accelerator(spec: SweepSpec, distributed: bool) -> Any:
    """One Accelerator for the whole process; a process-group timeout as the hang backstop."""
    from datetime import timedelta

    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    from ..config import load_config

    cfg = load_config(base=spec.base)
    log_with = ["wandb"] if cfg.train.tracker == "wandb" else None
    handlers = [InitProcessGroupKwargs(timeout=timedelta(seconds=spec.dist_timeout))] if distributed else []
    return Accelerator(mixed_precision=cfg.train.mixed_precision, log_with=log_with, kwargs_handlers=handlers)


def ensure_teacher(spec: SweepSpec, study_dir: Path, accelerator: Any, channel: LocalChannel | ProcessGroupChannel) -> None:
    """Train the spec's teacher into ``<study>/teacher`` once (skipped when its model exists)."""
    if spec.teacher is None:
        return
    from ..config import load_config
    from ..loop import train

    teacher_dir = study_dir / "teacher"
    with contextlib.ExitStack() as stack:
        need = False
        if channel.rank == 0:
            stack.enter_context(file_lock(study_dir / "teacher.lock"))
            need = not (teacher_dir / "model.safetensors").is_file()
        need = channel.broadcast(need)
        if not need:
            return
        if channel.rank == 0:
            print(f"trickbox sweep: training the distillation teacher into {teacher_dir}", file=sys.stderr, flush=True)
        cfg = load_config(base=spec.teacher_mapping())
        cfg.train.out_dir = str(study_dir)
        cfg.train.run_name = "teacher"
        resume = (teacher_dir / "checkpoints").is_dir()
        train(cfg, resume=resume, accelerator=accelerator,
              tracking_kwargs={"name": f"{spec.study}-teacher", "group": spec.study, "job_type": "teacher"})
        accelerator.free_memory()


def preflight(spec: SweepSpec, study_dir: Path) -> None:
    """Build the base config's tricks once (teacher files, cross-parameter checks) before any trial."""
    from ..config import load_config
    from ..loop import prepare_tricks

    teacher = str((study_dir / "teacher").resolve()) if spec.teacher is not None else None
    prepare_tricks(load_config(base=spec.trial_mapping({}, teacher)))


def run_ranks(spec: SweepSpec, target: StorageTarget, study_dir: Path, *, accelerator: Any,
              channel: LocalChannel | ProcessGroupChannel, worker: str, worker_index: int,
              deadline: float | None, wait_for_others: bool, progress: bool) -> int:
    """Trial after trial on this process (rank 0 owns the study); returns the exit code."""
    from .objective import run_trial

    stop = _StopRequest()
    coordinator: Coordinator | None = None
    error = None
    if channel.rank == 0:
        try:
            coordinator = Coordinator(spec, target, study_dir, worker=worker, worker_index=worker_index,
                                      deadline=deadline, wait_for_others=wait_for_others)
        except ConfigError as exc:
            error = str(exc)
    error = channel.broadcast(error)
    if error:
        raise ConfigError(error)
    code = 0
    try:
        ensure_teacher(spec, study_dir, accelerator, channel)
        failed = None
        try:
            preflight(spec, study_dir)
        except ConfigError as exc:
            failed = str(exc)
        if channel.broadcast(failed):
            raise ConfigError(failed)  # type: ignore[arg-type]
        while True:
            plan: TrialPlan | None = None
            if coordinator is not None and not stop.requested:
                plan = coordinator.next_trial()
            plan = channel.broadcast(plan)
            if plan is None:
                break
            outcome = run_trial(plan, spec, accelerator=accelerator, channel=channel, coordinator=coordinator, progress=progress)
            if coordinator is not None:
                coordinator.finish(plan, outcome)
                _print_outcome(worker, plan, outcome, spec.objective)
                if outcome.config_error and not coordinator.any_success():
                    print(f"trickbox sweep: trial {plan.number} failed on a configuration error and no trial has "
                          f"trained yet; stopping (fix the spec or the data): {outcome.error}", file=sys.stderr, flush=True)
                    stop.requested = True
                    code = 2
            if outcome.fatal:
                code = outcome.exit_code or 1
                break
    finally:
        if coordinator is not None:
            coordinator.close()
    return code


def _print_outcome(worker: str, plan: TrialPlan, outcome: Outcome, objective: str) -> None:
    params = ", ".join(f"{k}={_short(v)}" for k, v in plan.params.items())
    if outcome.state == "complete":
        what = f"complete {objective}={outcome.value:.4f}"
    elif outcome.state == "pruned":
        what = outcome.error or "pruned"
    else:
        what = f"FAILED: {outcome.error}" + (" (will be retried)" if outcome.retry else "")
    print(f"trickbox sweep [{worker}]: trial {plan.number} {what} in {outcome.seconds:.1f}s ({params})", file=sys.stderr, flush=True)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def run_worker(spec: SweepSpec, target: StorageTarget, study_dir: Path, *, index: int, deadline: float | None,
               progress: bool, script: str | None = None, launch: str | None = None) -> int:
    """The body of one worker process (``--as-worker I``)."""
    if script is not None:
        from .script import run_script_worker

        return run_script_worker(spec, target, study_dir, index=index, deadline=deadline, script=script, launch=launch)
    accelerator = make_sweep_accelerator(spec, distributed=False)
    return run_ranks(spec, target, study_dir, accelerator=accelerator, channel=LocalChannel(), worker=f"w{index}",
                     worker_index=index, deadline=deadline, wait_for_others=True, progress=progress)


def run_distributed(spec: SweepSpec, target: StorageTarget, study_dir: Path, *, deadline: float | None) -> int:
    """``accelerate launch train.py --sweep SPEC``: this process is one rank of every trial."""
    accelerator = make_sweep_accelerator(spec, distributed=True)
    channel = make_channel(accelerator, spec.failure_wait)
    code = run_ranks(spec, target, study_dir, accelerator=accelerator, channel=channel, worker=f"rank{channel.rank}",
                     worker_index=0, deadline=deadline, wait_for_others=False, progress=True)
    if code == 0:
        accelerator.end_training()
    elif channel.rank == 0:
        print("trickbox sweep: the launch stops because a rank failed mid-trial; run the same command again to "
              "continue the study", file=sys.stderr, flush=True)
    return code


# -- the supervisor ----------------------------------------------------------------------
def supervise(spec: SweepSpec, target: StorageTarget, study_dir: Path, *, workers: str, worker_args: list[str],
              deadline: float | None, max_restarts: int = MAX_RESTARTS, script: str | None = None,
              launch: str | None = None) -> int:
    """Start the workers, follow the study, restart crashed workers; the sweep's exit code.

    One worker runs in this process: no second start-up. If it is killed, the next
    ``trickbox sweep`` (or any worker of the study on this host) retries its trial.
    """
    gpus = visible_gpus()
    n = worker_count(workers, gpus)
    pins = assign_gpus(n, gpus)
    coordinator = Coordinator(spec, target, study_dir, worker="main", deadline=deadline, wait_for_others=False)
    budget = f"{spec.n_trials} trials" if spec.n_trials else f"{spec.timeout:g} s"
    print(f"trickbox sweep: study {spec.study!r} ({budget}) in {target.display()}; {n} worker(s)"
          + (f" on GPUs {', '.join(p for p in pins if p is not None)}" if gpus else " on CPU"), file=sys.stderr, flush=True)
    if not _work_left(coordinator):
        print(f"trickbox sweep: study {spec.study!r} has used its budget; nothing to run (raise it with --n-trials)",
              file=sys.stderr, flush=True)
        _print_summary(spec, coordinator)
        coordinator.close()
        return 0
    if n == 1:
        try:
            code = run_worker(spec, target, study_dir, index=0, deadline=deadline, progress=True, script=script, launch=launch)
        except KeyboardInterrupt:
            code = 130
        _print_summary(spec, coordinator)
        coordinator.close()
        return code
    procs: list[subprocess.Popen[bytes] | None] = [None] * n
    restarts = [0] * n
    done = [False] * n
    code = 0

    def start(i: int) -> None:
        env = dict(os.environ)
        if pins[i] is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(pins[i])
        elif "OMP_NUM_THREADS" not in env:  # CPU: share the cores instead of oversubscribing them
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
        cmd = [sys.executable, "-m", "trickbox", "sweep", *worker_args, "--as-worker", str(i)]
        cmd.append("--quiet-trials")
        procs[i] = subprocess.Popen(cmd, env=env)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # stop the workers (they checkpoint; their trials are retried later), then leave

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, on_term)
    for i in range(n):
        start(i)
    progress = _Progress(spec, coordinator)
    try:
        while not all(done):
            time.sleep(0.5)
            progress.update()
            for i, p in enumerate(procs):
                if done[i] or p is None or p.poll() is None:
                    continue
                rc = p.returncode
                if rc == 0:
                    done[i] = True
                elif rc == 2:
                    print(f"trickbox sweep: worker {i} stopped on a configuration error; stopping the others", file=sys.stderr)
                    _terminate(procs)
                    return 2
                elif rc in (130, -signal.SIGINT):
                    done[i] = True
                    code = 130
                else:
                    why = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
                    if restarts[i] < max_restarts and _work_left(coordinator):
                        restarts[i] += 1
                        print(f"trickbox sweep: worker {i} died ({why}); restarting it ({restarts[i]}/{max_restarts}); "
                              "its trial is failed and retried", file=sys.stderr, flush=True)
                        start(i)
                    else:
                        done[i] = True
                        code = code or 1
                        print(f"trickbox sweep: worker {i} died ({why}); not restarted", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("trickbox sweep: stopping the workers; their running trials are checkpointed and retried on the next run",
              file=sys.stderr, flush=True)
        _terminate(procs)
        code = 130
    finally:
        progress.close()
    _print_summary(spec, coordinator)
    coordinator.close()
    return code


def _work_left(coordinator: Coordinator) -> bool:
    from optuna.trial import TrialState

    with coordinator.lock.hold():
        coordinator.reap()
        trials = coordinator.trials()
    if any(t.state == TrialState.WAITING for t in trials):
        return True
    n = coordinator.spec.n_trials
    timed_out = coordinator.deadline is not None and time.time() >= coordinator.deadline
    return not timed_out and (n is None or budget_used(trials) < n)


def _terminate(procs: list[Any]) -> None:
    for p in procs:
        if p is not None and p.poll() is None:
            p.terminate()
    end = time.time() + 60
    for p in procs:
        if p is not None:
            try:
                p.wait(timeout=max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()


class _Progress:
    """A progress bar over the study's finished trials (polled from the storage)."""

    def __init__(self, spec: SweepSpec, coordinator: Coordinator) -> None:
        from tqdm.auto import tqdm

        self.coordinator = coordinator
        self.spec = spec
        self.last = 0.0
        tty = sys.stderr.isatty()
        self.bar = tqdm(total=spec.n_trials, desc=f"sweep {spec.study}", unit="trial", file=sys.stderr,
                        dynamic_ncols=True, mininterval=0.5 if tty else 30.0, disable=not tty)

    def update(self) -> None:
        if time.time() - self.last < 2.0:
            return
        self.last = time.time()
        try:
            trials = self.coordinator.trials()
        except Exception:
            return
        finished = sum(1 for t in trials if t.state.is_finished())
        self.bar.n = finished
        best = _best_value(self.coordinator)
        if best is not None:
            self.bar.set_postfix_str(f"best {self.spec.objective}={best:.4f}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.update()
        self.bar.close()


def _best_value(coordinator: Coordinator) -> float | None:
    try:
        return float(coordinator.study.best_value)
    except (ValueError, RuntimeError):
        return None


def _print_summary(spec: SweepSpec, coordinator: Coordinator) -> None:
    from optuna.trial import TrialState

    trials = coordinator.trials()
    counts = {s: sum(1 for t in trials if t.state == s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    line = (f"trickbox sweep: study {spec.study!r}: {len(trials)} trials ({counts[TrialState.COMPLETE]} complete, "
            f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed)")
    try:
        best = coordinator.study.best_trial
        params = ", ".join(f"{k}={_short(v)}" for k, v in best.params.items())
        line += f"; best {spec.objective}={best.value:.4f} (trial {best.number}: {params})"
    except ValueError:
        pass
    print(line, file=sys.stderr, flush=True)
    target = coordinator.target
    where = ""
    if target.kind != "journal" or target.journal != (coordinator.study_dir / "journal.log").resolve():
        where = f" --storage {target.display()}"
    elif coordinator.study_dir.parent != (Path.cwd() / "sweeps_out").resolve():
        where = f" --out-dir {coordinator.study_dir.parent}"
    print(f"trickbox sweep: report: trickbox report {spec.study}{where}", file=sys.stderr, flush=True)
