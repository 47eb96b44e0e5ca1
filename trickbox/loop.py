"""trickbox's own training loop, on Accelerate: the loop of :mod:`trickbox.hookspecs`, in code.

:func:`train` is the whole run, one named step per line; each step is a
function below. The tricks enter only through :class:`~trickbox.api.TrickSet`
(batch → forward → loss → step), so this loop is a client of the public API
like any user script. What it adds is the rest of a real run: data on the
memory or stream path, the model, checkpoints every epoch and on preemption,
exact resume, evaluation over every process, tracking.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .api import TrickSet, load_tricks
from .batch import LossParts
from .checkpoint import Checkpoint, latest_checkpoint, load_checkpoint, save_checkpoint, save_model
from .config import RunConfig, dump_config
from .device_defaults import DeviceDefaults, resolve
from .errors import ConfigError, warn
from .seeding import seed_global


class Preempted(SystemExit):
    """SIGTERM or SIGUSR1 arrived: raised after a checkpoint was written, or at once while the run was still being set
    up (``checkpointed`` false: nothing was trained, the same command starts it again)."""

    def __init__(self, code: int, *, checkpointed: bool = True) -> None:
        super().__init__(code)
        self.checkpointed = checkpointed


@dataclass
class TrainResult:
    run_dir: Path
    val: dict[str, float] = field(default_factory=dict)
    """The last epoch's validation metrics (``top1``, ``nll`` …, without the ``val/`` prefix)."""
    test: dict[str, float] = field(default_factory=dict)
    """Final test metrics; empty when the run stopped early (``train.stop_after_epoch``)."""
    best_val_top1: float = float("nan")
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def train(
    cfg: RunConfig,
    *,
    resume: bool = False,
    resume_from: Path | None = None,
    tricks: TrickSet | None = None,
    accelerator: Any = None,
    plugins: Sequence[Any] = (),
    tracking_kwargs: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> TrainResult:
    """Train one model as ``cfg`` says. ``resume`` continues from the newest checkpoint of the run directory, or of
    ``resume_from`` (another run's directory: a sweep's retry of a crashed trial). ``plugins`` join the tricks'
    hooks (a sweep's epoch reporter)."""
    run = start_run(cfg, resume=resume, tricks=tricks, accelerator=accelerator, plugins=plugins)
    run.resume_from = resume_from
    with run.closing():
        data = load_data(run)
        start_outputs(run, data, tracking_kwargs or {}, extra_config or {})
        model, optimizer = build_model(run, data)
        model, optimizer = prepare(run, model, optimizer, restore(run, model, optimizer))
        for epoch in range(run.start_epoch, cfg.train.epochs):
            seen = train_epoch(run, model, optimizer, data.train, epoch)
            metrics = evaluate_epoch(run, model, data, epoch) | seen
            end_epoch(run, model, optimizer, metrics)
            if run.tricks.stop_signal is not None and epoch + 1 < cfg.train.epochs:  # agreed at the epoch's end
                raise Preempted(128 + run.tricks.stop_signal)
            if run.stops_after(epoch):
                return run.result(status="stopped")
        return finish(run, model, data)


# -- the run's state -------------------------------------------------------------------
@dataclass
class Run:
    """What the steps of one run share: the config, the tricks, the accelerator and where the run stands."""

    cfg: RunConfig
    tricks: TrickSet
    accelerator: Any
    own_accelerator: bool
    resume: bool
    device: DeviceDefaults
    """The device-dependent settings, resolved once (:mod:`trickbox.device_defaults`)."""
    resume_from: Path | None = None
    t_start: float = field(default_factory=time.perf_counter)
    run_dir: Path = Path()
    checkpoint: Checkpoint | None = None
    start_epoch: int = 0
    start_batch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    status: str = "failed"
    tracking: Any = None
    data: Any = None
    image_size: int | None = None
    """The training images' side (the model is built for it where timm's model has a fixed input size)."""
    pretrained: dict[str, Any] | None = None
    """What a fine-tune loaded (:class:`trickbox.pretrained.LoadReport`), for the model card and W&B."""
    progress: Any = None
    lock: Any = None
    """The open lock file that holds the run directory (rank 0), released when the run ends."""
    fingerprint: dict[str, Any] = field(default_factory=dict)
    stop: _StopFlag = field(default_factory=lambda: _StopFlag())
    created_dirs: list[Path] = field(default_factory=list)
    """The directories this run created (rank 0), deepest first: a run refused before training removes them again."""

    @property
    def ctx(self) -> Any:
        return self.tricks.ctx

    @property
    def main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def best(self) -> float:
        return max((h["val/top1"] for h in self.history if _finite(h.get("val/top1"))), default=float("nan"))

    def stops_after(self, epoch: int) -> bool:
        last = self.cfg.train.stop_after_epoch
        return last is not None and epoch + 1 >= last and epoch + 1 < self.cfg.train.epochs

    def result(self, test: dict[str, float] | None = None, *, status: str) -> TrainResult:
        self.status = status
        last = self.history[-1] if self.history else {}
        val = {k.removeprefix("val/"): v for k, v in last.items() if k.startswith("val/")}
        steps = self.ctx.step if self.ctx is not None else 0
        return TrainResult(self.run_dir, val, test or {}, self.best, self.history, steps,
                           time.perf_counter() - self.t_start)

    @contextlib.contextmanager
    def closing(self) -> Iterator[None]:
        """Signals caught, then, whatever happens: tricks torn down, tracking ended with the run's state."""
        self.stop.install()
        try:
            with _eager_fallback(self.device.compile):
                yield
        except BaseException as exc:
            self.status = getattr(exc, "trickbox_state", "preempted" if isinstance(exc, Preempted) else "failed")
            if isinstance(exc, ConfigError) and self.stop.setting_up and self.run_dir in self.created_dirs:
                self.status = "refused"  # a bad input found before the first step: nothing of the run is kept
            raise
        finally:
            self.stop.restore()
            if self.progress is not None:
                self.progress.close()
            self.tricks.teardown()
            if self.tracking is not None:
                self.tracking.finish(self.status)
            if self.data is not None:
                self.data.close()
            if self.lock is not None:
                self.lock.close()
            if self.status == "refused":
                self._remove_outputs()
            if self.own_accelerator:
                self.accelerator.end_training()


    def _remove_outputs(self) -> None:
        """A run refused before its first step leaves nothing behind: its directory (which this run created) and its
        offline W&B run."""
        import shutil

        if not self.main:
            return
        shutil.rmtree(self.run_dir, ignore_errors=True)
        for parent in self.created_dirs[1:]:  # train.out_dir, if this run made it and nothing else is in it now
            with contextlib.suppress(OSError):
                parent.rmdir()
        wandb_dir = getattr(self.tracking, "wandb_dir", None)
        if wandb_dir and Path(wandb_dir).name.startswith("offline-run-"):
            shutil.rmtree(wandb_dir, ignore_errors=True)


class _StopFlag:
    """Signal handlers only set this flag; the loop checkpoints once the processes agree (see trickbox.guard)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.setting_up = True
        """Until training begins a signal stops the run at once: listing, decoding or a trick's setup can take long,
        and there is nothing to checkpoint yet."""
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            with contextlib.suppress(ValueError):  # not the main thread
                self._old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        if self.setting_up:
            raise Preempted(128 + signum, checkpointed=False)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _eager_fallback(compiling: bool) -> Iterator[None]:
    """While a compiled run trains, a graph torch cannot compile runs eagerly (dynamo warns) instead of failing;
    dynamo's setting is restored when the run ends."""
    if not compiling:
        yield
        return
    import torch._dynamo.config as dynamo_config

    with dynamo_config.patch(suppress_errors=True):
        yield


def bare(accelerator: Any, model: torch.nn.Module) -> torch.nn.Module:
    """The module whose state is saved: without DDP's wrapper and without ``torch.compile``'s (whose state-dict
    keys carry an ``_orig_mod.`` prefix that a plain model would not load)."""
    inner = accelerator.unwrap_model(model, keep_torch_compile=False)
    return getattr(inner, "_orig_mod", inner)  # compiled before DDP wrapped it: Accelerate unwraps only the outer layer


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


# -- the steps of train() -----------------------------------------------------------------
def start_run(cfg: RunConfig, *, resume: bool, tricks: TrickSet | None, accelerator: Any,
              plugins: Sequence[Any]) -> Run:
    """Validate the tricks, the model and the optimizer settings, and make the Accelerator; nothing is written yet."""
    from .build import check_model_config, check_optim_config

    check_model_config(cfg.model)
    check_optim_config(cfg.optim)
    tricks = tricks if tricks is not None else load_tricks(cfg.tricks, block=cfg.plugins.block)
    if plugins:
        tricks = tricks.with_plugins(*plugins)
    own = accelerator is None
    accelerator = accelerator or make_accelerator(cfg)
    if cfg.train.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return Run(cfg, tricks, accelerator, own, resume, resolve(cfg, accelerator.device))


def make_accelerator(cfg: RunConfig, **kwargs: Any) -> Any:
    """An Accelerator; ``train.mixed_precision`` unset leaves the precision to Accelerate's own settings."""
    from accelerate import Accelerator

    log_with = ["wandb"] if cfg.train.tracker == "wandb" else None
    return Accelerator(mixed_precision=cfg.train.mixed_precision, log_with=log_with, **kwargs)


def load_data(run: Run) -> Any:
    """The run's loaders for this process, on the memory or the stream path (``data.loader``)."""
    from .data import LoaderOptions, open_run_data

    tc, acc = run.cfg.train, run.accelerator
    options = LoaderOptions(batch_size=tc.batch_size, eval_batch_size=tc.eval_batch_size, seed=tc.seed,
                            device=acc.device,
                            rank=acc.process_index, world_size=acc.num_processes, progress=tc.progress and run.main,
                            want_fit="train" in tc.eval_each_epoch + tc.eval_at_end)
    with acc.main_process_first():
        run.data = open_run_data(dataclasses.replace(run.cfg.data, pin_memory=run.device.pin_memory), options)
    if run.main:
        announce(run.accelerator, run.data)
    return run.data


def announce(accelerator: Any, data: Any) -> None:
    """The first lines of a run (also with ``train.progress=false``): how many processes on which device, the
    precision, the data path and why; then a warning for each launch that is not what was asked."""
    n, device, precision = int(accelerator.num_processes), accelerator.device, str(accelerator.mixed_precision)
    print(f"trickbox: {n} process{'es' if n > 1 else ''} on {device}, precision {precision}; {data.describe()}",
          file=sys.stderr)
    for line in launch_warnings(n, device.type, precision, os.environ):
        warn(line)


def launch_warnings(processes: int, device_type: str, precision: str, env: Mapping[str, str]) -> list[str]:
    """What the launch did that was probably not meant: fewer processes than the launcher was asked for, or autocast
    on a CPU."""
    out = []
    world = env.get("WORLD_SIZE", "")
    if "MASTER_ADDR" in env and not world and processes == 1:
        # accelerate launch sets MASTER_ADDR for --num_processes > 1, but starts them only with --multi_gpu
        out.append("the launcher was asked for several processes but 1 started: add --multi_gpu to accelerate "
                   "launch (with ACCELERATE_USE_CPU=1 on a CPU)")
    elif world.isdigit() and int(world) != processes:
        out.append(f"WORLD_SIZE={world} but {processes} process{'es' if processes > 1 else ''} joined the run")
    if device_type == "cpu" and precision in ("bf16", "fp16"):
        out.append(f"{precision} autocast on a CPU is usually slower than fp32 there; set train.mixed_precision=no "
                   "unless this CPU is known to be faster with it")
    return out


def start_outputs(run: Run, data: Any, tracking_kwargs: dict[str, Any], extra_config: dict[str, Any]) -> None:
    """Claim the run directory, find the checkpoint to resume from, write the resolved config, start tracking."""
    from .run_dir import check_resume, fingerprint, writing
    from .tracking import Tracking

    cfg, acc = run.cfg, run.accelerator
    run.run_dir = claim_run_dir(run)
    ckpt_root = (run.resume_from or run.run_dir) / "checkpoints"
    run.checkpoint = latest_checkpoint(ckpt_root) if run.resume else None
    if run.resume and run.checkpoint is None and run.main:
        print(f"trickbox: no complete checkpoint in {ckpt_root}; starting from scratch", file=sys.stderr)
    run.fingerprint = fingerprint(cfg, run.tricks.resolved(), acc.num_processes)
    if run.checkpoint is not None:
        for change in check_resume(run.checkpoint.state.get("fingerprint"), run.fingerprint, cfg.train.resume_allow,
                                   run.run_dir):
            if run.main:
                print(f"trickbox: resuming with a changed setting (train.resume_allow): {change}", file=sys.stderr)
        run.start_epoch, run.start_batch = run.checkpoint.epoch, run.checkpoint.batch_in_epoch
        run.history = list(run.checkpoint.state.get("history", []))
    resolved = resolved_config(cfg, acc, data, run.tricks, run.device)
    if run.main:
        with writing(run.run_dir / "config.yaml", "nothing was trained yet: free space and run the same command again"):
            (run.run_dir / "config.yaml").write_text(dump_config(resolved))
    run.tracking = Tracking(acc, run.run_dir, use_wandb=cfg.train.tracker == "wandb")
    run.tracking.start({**resolved.to_dict(), **extra_config},
                       **{"project": cfg.train.project, "name": run.run_dir.name, "job_type": "train",
                          "group": cfg.train.group or f"{cfg.data.name}-{cfg.model.name}",
                          "system_metrics": cfg.train.system_metrics, **tracking_kwargs})


def resolved_config(cfg: RunConfig, accelerator: Any, data: Any, tricks: TrickSet, device: DeviceDefaults) -> RunConfig:
    """The config as the run really trains: every trick parameter with its default, the effective precision and
    data path, and where it ran."""
    import copy

    out = copy.deepcopy(cfg)
    out.tricks = tricks.resolved()
    out.train.mixed_precision = str(accelerator.mixed_precision)
    root = data.config.root and str(Path(data.config.root).expanduser().resolve())  # eval works from anywhere
    out.data = dataclasses.replace(data.config, loader=data.path, pin_memory=cfg.data.pin_memory, root=root)
    out.runtime = {"processes": int(accelerator.num_processes), "device": str(accelerator.device),
                   "precision": str(accelerator.mixed_precision), "data_path": data.path,
                   "data_path_reason": data.reason,
                   "device_defaults": device.as_dict()}
    return out


def claim_run_dir(run: Run) -> Path:
    """The run directory, claimed (and locked for this run) by rank 0 and shared with the other ranks."""
    from accelerate.utils import broadcast_object_list

    from .run_dir import claim

    cfg, acc = run.cfg, run.accelerator
    holder: list[Any] = [None]
    if acc.is_main_process:
        try:
            path, run.lock, run.created_dirs = claim(Path(cfg.train.out_dir), cfg.train.run_name,
                                                    f"{cfg.data.name}-{cfg.model.name}", run.resume)
            holder = [str(path)]
        except ConfigError as exc:
            holder = [f"error:{exc}"]
    if acc.num_processes > 1:
        broadcast_object_list(holder, from_process=0)
    if holder[0].startswith("error:"):
        raise ConfigError(holder[0].removeprefix("error:"))
    return Path(holder[0])


def build_model(run: Run, data: Any) -> tuple[torch.nn.Module, Any]:
    """The timm model in the device's memory format, its optimizer, then the tricks' setup and configure hooks."""
    from .build import create_optimizer, model_from_config

    cfg, acc, tc = run.cfg, run.accelerator, run.cfg.train
    seed_global(acc.device, tc.seed, "init")
    native = data.arrays.train_x.shape[-1] if data.arrays is not None else None
    run.image_size = data.config.image_size or native
    model, loaded = model_from_config(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans,
                                      image_size=run.image_size)
    if loaded is not None:
        run.pretrained = loaded.as_dict()
        if run.main:
            print(f"trickbox: {loaded.line()}", file=sys.stderr)
        run.tracking.config_update({"pretrained_load": run.pretrained})
    if run.device.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.to(acc.device)
    optimizer = create_optimizer(model, cfg.optim, fused=run.device.fused)
    return run.tricks.setup(
        model, optimizer, num_classes=data.num_classes, epochs=tc.epochs,
        steps_per_epoch=math.ceil(len(data.train) / tc.grad_accum), accelerator=acc, base_lr=cfg.optim.lr, seed=tc.seed,
        log_every=tc.log_every, finite_check_every=tc.finite_check_every, batch_size=tc.batch_size,
        grad_accum=tc.grad_accum, in_chans=data.in_chans, classes=data.classes,
        mean=data.mean, std=data.std, run_dir=run.run_dir if run.main else None, train_data=data.arrays,
        train_loader=data.train, log=run.tracking.log, log_images=run.tracking.log_images,
        evaluate=lambda m, split: evaluate(m, {"val": data.val, "test": data.test}[split], acc),
    )


def restore(run: Run, model: torch.nn.Module, optimizer: Any) -> int | None:
    """The weights and optimizer state of the checkpoint being resumed; its optimizer step (None: a new run)."""
    if run.checkpoint is None:
        return None
    model_state, optim_state = load_checkpoint(run.checkpoint)
    model.load_state_dict(model_state)
    optimizer.load_state_dict(optim_state)
    return run.checkpoint.step


def prepare(run: Run, model: torch.nn.Module, optimizer: Any, step: int | None) -> tuple[torch.nn.Module, Any]:
    """``torch.compile`` (as the device defaults say), ``accelerator.prepare``, the tricks pointed at the prepared
    optimizer at ``step``, and the progress bar."""
    acc, tc = run.accelerator, run.cfg.train
    if run.device.compile:
        model = torch.compile(model, backend=run.device.compile_backend)
    model, optimizer = acc.prepare(model, optimizer)
    run.tricks.attach(optimizer, step=step)
    if run.main and tc.progress:
        from tqdm.auto import tqdm

        run.progress = tqdm(total=tc.epochs * run.ctx.steps_per_epoch, initial=run.ctx.step, desc="train", unit="step",
                            dynamic_ncols=True, file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 5.0)
    run.stop.setting_up = False  # from here a signal is a flag the processes agree on, then a checkpoint
    return model, optimizer


def train_epoch(run: Run, model: torch.nn.Module, optimizer: Any, loader: Any, epoch: int) -> dict[str, float]:
    """One epoch: batch → forward → loss → backward → optimizer step → tricks' step, checkpoint on preemption.
    Returns the epoch's mean training loss and its images per second (this process), read once at its end."""
    tc, acc, tricks = run.cfg.train, run.accelerator, run.tricks
    loader.set_epoch(epoch)
    n_batches = len(loader)
    first = run.start_batch if epoch == run.start_epoch else 0
    loss_sum, images, t0 = torch.zeros((), device=acc.device), 0, time.perf_counter()
    model.train()
    layout = torch.channels_last if run.device.channels_last else torch.contiguous_format
    for i, (x, labels, index) in enumerate(loader.batches(first), start=first):
        x = x.contiguous(memory_format=layout)
        seed_global(acc.device, tc.seed, "torch", epoch, i, acc.process_index)
        group_start = i // tc.grad_accum * tc.grad_accum
        group_end = min(group_start + tc.grad_accum, n_batches)
        sync = i + 1 == group_end
        with contextlib.nullcontext() if sync else acc.no_sync(model):
            batch = tricks.batch(x, labels, index)
            parts = tricks.loss(tricks.forward(model, batch), batch)
            acc.backward(parts.total / (group_end - group_start))
        loss_sum, images = loss_sum + parts.total.detach().float(), images + len(labels)
        if not sync:
            continue
        tricks.before_optimizer_step(model, signal=run.stop.signum)
        if tc.log_grad_norm and "grad_norm" not in run.ctx.row:  # a clipping trick logged the norm it clipped
            acc.unscale_gradients()
            run.ctx.row["grad_norm"] = torch.nn.utils.get_total_norm(
                [p.grad for p in model.parameters() if p.grad is not None]).detach().float()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tricks.step(parts, batch, signal=run.stop.signum, stepped=True)  # the loop steps only on a group's last batch
        _show_progress(run, parts, epoch)
        signum = tricks.stop_signal
        if signum is not None:  # every process agreed on it; this step is finished
            save(run, model, optimizer, epoch, i + 1)
            raise Preempted(128 + signum)
    seconds = max(time.perf_counter() - t0, 1e-9)
    seen = {"train/loss": float(loss_sum) / max(1, n_batches - first), "train/images_per_s": images / seconds,
            "train/epoch_seconds": seconds}
    skipped = _skipped(loader, acc)
    return seen | ({"train/skipped_images": float(skipped)} if skipped else {})


def _show_progress(run: Run, parts: LossParts, epoch: int) -> None:
    """The bar: the epoch (1-based) and the rate every step; the loss where reading it costs no extra host sync."""
    if run.progress is None:
        return
    run.progress.update(1)
    step = max(run.ctx.step - 1, 0)  # the rate of the step just taken (after the last one a restart would show)
    shown = {"epoch": f"{epoch + 1}/{run.cfg.train.epochs}", "lr": f"{run.tricks.lr(step):.3g}"}
    if not run.tricks.guard.deferred and run.ctx.step % run.cfg.train.log_every == 0:
        shown["loss"] = f"{float(parts.total.detach()):.3f}"
    run.progress.set_postfix(shown, refresh=False)


def epoch_line(metrics: dict[str, Any], epochs: int, lr: float) -> str:
    """One line per epoch: ``epoch 3/30: train loss 1.234, val top1 0.8125 nll 0.543, lr 0.081, 1,234 img/s, 9.8 s``."""
    val = " ".join(f"{k[4:]} {v:.4g}" for k, v in metrics.items() if k.startswith("val/") and k[4:] in
                   ("top1", "nll", "ece", "ema_top1"))
    return (f"epoch {metrics['epoch']}/{epochs}: train loss {metrics.get('train/loss', float('nan')):.4g}, val {val}, "
            f"lr {lr:.3g}, {metrics.get('train/images_per_s', 0):,.0f} img/s, "
            f"{metrics.get('train/epoch_seconds', 0):.1f} s")


def evaluate_epoch(run: Run, model: torch.nn.Module, data: Any, epoch: int) -> dict[str, Any]:
    """Validation (and, as configured, test and training-set) metrics after ``epoch``, plus the tricks' own."""
    acc, each = run.accelerator, run.cfg.train.eval_each_epoch
    check_finite(run, model, f"evaluation of epoch {epoch + 1}")
    metrics: dict[str, Any] = {f"val/{k}": v for k, v in evaluate(model, data.val, acc).items()}
    metrics.update({f"val/{k}": v for k, v in run.tricks.evaluate(model, "val").items()})
    if "test" in each:
        metrics.update({f"test/{k}": v for k, v in evaluate(model, data.test, acc).items()})
    if data.fit is not None and "train" in each:
        metrics.update({f"train/{k}": v for k, v in evaluate(model, data.fit, acc).items()})
    metrics["epoch"] = epoch + 1
    return metrics


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Any, accelerator: Any) -> dict[str, float]:
    """Top-1/top-5 accuracy, NLL and ECE of ``model`` over this process's part of a split, summed over processes."""
    from .evaluation.metrics import MetricAccumulator

    inner = accelerator.unwrap_model(model)  # no DDP collectives: processes may hold unequal numbers of batches
    was_training = inner.training
    inner.eval()
    acc = MetricAccumulator()
    for x, y in loader:
        with accelerator.autocast():
            logits = inner(x.to(accelerator.device, non_blocking=True))
        acc.update(logits.float(), y)
    acc.all_reduce(accelerator)
    inner.train(was_training)
    out = acc.compute()
    skipped = _skipped(loader, accelerator)
    if skipped:
        out["skipped_images"] = float(skipped)
    return out


def _skipped(loader: Any, accelerator: Any) -> int:
    """Unreadable images the pass over ``loader`` skipped on every process; the run stops (every process, one
    line) when they exceed ``data.max_bad_fraction`` of the split. The memory path has none: it skipped at decode."""
    bad = getattr(loader, "bad", None)
    return bad.check(accelerator) if bad is not None else 0


def end_epoch(run: Run, model: torch.nn.Module, optimizer: Any, metrics: dict[str, Any]) -> None:
    """Record and log the epoch, checkpoint it, then the epoch-end hooks (a sweep's reporter may prune there)."""
    run.history.append(metrics)
    run.tracking.log(metrics, step=run.ctx.step)
    if run.main:
        lr = run.tricks.lr(max(run.ctx.step - 1, 0))  # the rate of the epoch's last step
        line = f"trickbox: {epoch_line(metrics, run.cfg.train.epochs, lr)}"
        run.progress.write(line, file=sys.stderr) if run.progress is not None else print(line, file=sys.stderr)
    save(run, model, optimizer, metrics["epoch"], 0)
    run.start_batch = 0
    run.tricks.epoch_end(metrics)


def save(run: Run, model: torch.nn.Module, optimizer: Any, epoch: int, batch_in_epoch: int) -> None:
    """A checkpoint of every rank's agreed state, written by rank 0; never one with a non-finite weight."""
    acc = run.accelerator
    acc.wait_for_everyone()
    check_finite(run, model, "checkpoint")
    unwrapped = bare(acc, model)
    if run.main:
        from .run_dir import writing

        earlier = f"the checkpoints of earlier steps in {run.run_dir / 'checkpoints'} are intact: free space and run " \
                  "again " \
                  f"with --resume train.run_name={run.run_dir.name}"
        with writing(run.run_dir / "checkpoints" / f"step-{run.ctx.step:08d}", earlier):
            save_checkpoint(run.run_dir / "checkpoints", model_state=unwrapped.state_dict(),
                            optimizer_state=optimizer.state_dict(), step=run.ctx.step, epoch=epoch,
                            batch_in_epoch=batch_in_epoch, keep=run.cfg.train.keep_checkpoints,
                            extra={"history": run.history, "fingerprint": run.fingerprint})
    acc.wait_for_everyone()


def finish(run: Run, model: torch.nn.Module, data: Any) -> TrainResult:
    """The final ``model.safetensors`` with its card, then the test metrics and the summary. The weights are written
    first: a final evaluation that fails (too many unreadable images) loses no training."""
    from .errors import DataError, on_every_rank

    check_finite(run, model, "final evaluation")
    save_final_model(run, model, data)
    try:
        final = final_metrics(run, model, data)
    except DataError as exc:
        write_summary(run, {})
        raise on_every_rank(DataError(f"{exc}. The trained weights are saved ({run.run_dir / 'model.safetensors'}, "
                                      f"summary.json without test metrics): evaluate them with `trickbox eval "
                                      f"{run.run_dir}` once the files are fixed")) from None
    run.tracking.log(final, step=run.ctx.step)
    write_summary(run, final)
    if run.stop.signum is not None and run.main:
        print(f"trickbox: signal {run.stop.signum} arrived after the last training step; the run is complete "
              "(model.safetensors written), nothing to resume", file=sys.stderr)
    return run.result({k.removeprefix("test/"): v for k, v in final.items() if k.startswith("test/")},
                      status="complete")


def save_final_model(run: Run, model: torch.nn.Module, data: Any) -> None:
    """``model.safetensors`` and ``model.json`` (rank 0), never with a non-finite value."""
    from .build import model_card, model_kwargs
    from .run_dir import writing

    check_finite(run, model, "final save of model.safetensors")
    if run.main:
        card = model_card(run.cfg.model, num_classes=data.num_classes, in_chans=data.in_chans, classes=data.classes,
                          mean=list(data.mean), std=list(data.std), data=run.cfg.data.name,
                          kwargs=model_kwargs(run.cfg.model, run.image_size),
                          **({"pretrained_load": run.pretrained} if run.pretrained else {}))
        with writing(run.run_dir / "model.safetensors", "the last epoch's checkpoint is intact: free space and run "
                                                        f"again with --resume train.run_name={run.run_dir.name}"):
            save_model(bare(run.accelerator, model), run.run_dir, card)
    run.accelerator.wait_for_everyone()


def final_metrics(run: Run, model: torch.nn.Module, data: Any) -> dict[str, float]:
    """``test/*`` (and ``train/*`` with ``train.eval_at_end=[train]``) of the final weights."""
    acc = run.accelerator
    test = evaluate(model, data.test, acc)
    test.update(run.tricks.evaluate(model, "test"))
    final = {f"test/{k}": v for k, v in test.items()}
    tc = run.cfg.train
    if data.fit is not None and "train" in tc.eval_at_end and "train" not in tc.eval_each_epoch and run.history:
        fit = {f"train/{k}": v for k, v in evaluate(model, data.fit, acc).items()}
        final.update(fit)
        # the last epoch's weights, as if evaluated every epoch: sweeps and summaries see it there
        run.history[-1].update(fit)
    return final


def write_summary(run: Run, final: dict[str, float]) -> None:
    from .run_dir import writing

    with writing(run.run_dir / "summary.json", "the last epoch's checkpoint is intact: free space and run again with "
                                                f"--resume train.run_name={run.run_dir.name}"):
        run.tracking.summary({**(run.history[-1] if run.history else {}), **final, **at_best_val(run.history),
                              "val/best_top1": run.best, "steps": run.ctx.step,
                              "seconds": time.perf_counter() - run.t_start})


def check_finite(run: Run, model: torch.nn.Module, what: str) -> None:
    """Nothing non-finite is evaluated or saved, whatever hook wrote it: the guard's flag, then the model's weights
    and buffers and every trick's state (:func:`trickbox.guard.check_state`), agreed over the processes."""
    from .guard import check_state

    run.tricks.check(run.stop.signum)  # a pending stop signal is agreed here too: the run stops at the epoch's end
    check_state({**bare(run.accelerator, model).state_dict(), **run.tricks.state_tensors()}, run.accelerator,
                f"after step {run.ctx.step}, before the {what}")


def at_best_val(history: list[dict[str, Any]]) -> dict[str, float]:
    """Every metric of the epoch with the best ``val/top1`` (the first such epoch), keyed ``at_best_val/<key>``.

    With ``train.eval_each_epoch=[test]`` this is the test error of the model that validation would pick,
    the honest form of "best test error": the test split is never used to choose.
    """
    scored = [h for h in history if _finite(h.get("val/top1"))]
    if not scored:
        return {}
    pick = max(scored, key=lambda h: h["val/top1"])  # max keeps the first of equal values
    return {f"at_best_val/{k}": float(v) for k, v in pick.items() if isinstance(v, (int, float))}
