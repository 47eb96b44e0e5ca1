"""trickbox's own training loop, on Accelerate. The whole loop is in :func:`train`.

It is a client of :mod:`trickbox.api` like any user script: the tricks enter
only through ``TrickSet`` (batch → forward → loss → step). What this file
adds is the rest of a real run: data, model, checkpoints every epoch and on
preemption, exact resume, evaluation with ``gather_for_metrics``, tracking.
"""
from __future__ import annotations

import contextlib
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch

from .api import TrickSet
from .batch import LossParts
from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, save_model
from .config import RunConfig, dump_config
from .context import _seed_of
from .registry import Catalog, discover
from .trick import ConfigError, NonFiniteError

EpochReporter = Callable[[int, dict[str, Any]], None]
"""Called on every rank after each epoch's validation; may raise to stop the run (sweep pruning)."""


class Preempted(SystemExit):
    """Raised after a checkpoint was written because SIGTERM or SIGUSR1 arrived."""


@dataclass
class TrainResult:
    run_dir: Path
    val: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    best_val_top1: float = float("nan")
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


class _StopFlag:
    """Signal handlers only set this flag; the loop checkpoints after the current step."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def agreed(self, accelerator: Any, bad: bool = False) -> tuple[int | None, bool]:
        """(signal, any process saw a non-finite value): the same answer on every rank.

        A launcher forwards SIGTERM to its workers one after the other (and a
        scheduler may signal one rank only), and a NaN may show on one rank
        only: without agreeing, one rank would stop while the others wait in
        the next all-reduce. One two-integer all-reduce per step settles both.
        """
        if accelerator.num_processes == 1:
            return self.signum, bad
        import torch.distributed as dist

        flag = torch.tensor([self.signum or 0, int(bad)], device=accelerator.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag[0].item()) or None, bool(flag[1].item())

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _seed_step(seed: int, device: torch.device) -> None:
    """Seed the CPU generator and the training device's, as ``torch.manual_seed`` would.

    ``torch.manual_seed`` also queues seeds for every other backend; on a CUDA
    build without CUDA initialised that records a stack trace, ~0.2 ms per step.
    """
    if device.type not in ("cpu", "cuda"):
        torch.manual_seed(seed)
        return
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def prepare_tricks(cfg: RunConfig, catalog: Catalog | None = None) -> TrickSet:
    """Validate the configured tricks (nothing is built or written yet)."""
    cat = catalog or discover(block=cfg.plugins.block)
    return TrickSet(cat.build(cfg.tricks))


def make_accelerator(cfg: RunConfig) -> Any:
    from accelerate import Accelerator

    log_with = ["wandb"] if cfg.train.tracker == "wandb" else None
    return Accelerator(mixed_precision=cfg.train.mixed_precision, log_with=log_with)


def _run_dir(cfg: RunConfig, accelerator: Any) -> Path:
    from accelerate.utils import broadcast_object_list

    name = cfg.train.run_name or f"{cfg.data.name}-{cfg.model.name}-{datetime.now():%Y%m%d-%H%M%S}"
    holder = [name]
    if accelerator.num_processes > 1:
        broadcast_object_list(holder, from_process=0)
    return Path(cfg.train.out_dir) / holder[0]


def at_best_val(history: list[dict[str, Any]]) -> dict[str, float]:
    """Every metric of the epoch with the best ``val/top1`` (the first such epoch), keyed ``at_best_val/<key>``.

    With ``train.eval_each_epoch=[test]`` this is the test error of the model that validation would pick,
    the honest form of "best test error": the test split is never used to choose.
    """
    scored = [h for h in history if isinstance(h.get("val/top1"), (int, float)) and math.isfinite(h["val/top1"])]
    if not scored:
        return {}
    pick = max(scored, key=lambda h: h["val/top1"])  # max keeps the first of equal values
    return {f"at_best_val/{k}": float(v) for k, v in pick.items() if isinstance(v, (int, float))}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Any, accelerator: Any) -> dict[str, float]:
    """Top-1/top-5 accuracy, NLL and ECE over a prepared loader, gathered from every process."""
    from .metrics import MetricAccumulator

    was_training = model.training
    model.eval()
    acc = MetricAccumulator()
    for x, y in loader:
        with accelerator.autocast():
            logits = model(x)
        logits, y = accelerator.gather_for_metrics((logits.float(), y))
        acc.update(logits, y)
    model.train(was_training)
    return acc.compute()


def train(
    cfg: RunConfig,
    *,
    resume: bool = False,
    tricks: TrickSet | None = None,
    accelerator: Any = None,
    reporter: EpochReporter | None = None,
    tracking_kwargs: dict[str, Any] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> TrainResult:
    """Train one model as ``cfg`` says; see the module docstring."""
    from accelerate.utils import set_seed

    from .build import create_optimizer, model_card, model_from_config
    from .data import InMemoryLoader, load_dataset, make_eval_loader
    from .tracking import Tracking

    t_start = time.perf_counter()
    tricks = tricks or prepare_tricks(cfg)
    own_accelerator = accelerator is None
    accelerator = accelerator or make_accelerator(cfg)
    tc = cfg.train
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    run_dir = _run_dir(cfg, accelerator)
    ckpt_root = run_dir / "checkpoints"
    ckpt = latest_checkpoint(ckpt_root) if resume else None
    if resume and ckpt is None and accelerator.is_main_process:
        print(f"trickbox: no complete checkpoint in {ckpt_root}; starting from scratch", file=sys.stderr)

    # -- data --------------------------------------------------------------
    with accelerator.main_process_first():
        data = load_dataset(cfg.data, progress=tc.progress and accelerator.is_main_process)
    loader = InMemoryLoader(
        data.train_x, data.train_y, batch_size=tc.batch_size, device=accelerator.device, mean=data.mean, std=data.std,
        augment=cfg.data.augment, crop_padding=cfg.data.effective_crop_padding(data.image_size),
        flip=cfg.data.effective_flip(), seed=tc.seed, rank=accelerator.process_index, world_size=accelerator.num_processes,
    )
    val_loader = make_eval_loader(data.val_x, data.val_y, batch_size=tc.eval_batch_size, mean=data.mean, std=data.std)
    test_loader = make_eval_loader(data.test_x, data.test_y, batch_size=tc.eval_batch_size, mean=data.mean, std=data.std)
    fit_loader = (make_eval_loader(data.train_x, data.train_y, batch_size=tc.eval_batch_size, mean=data.mean, std=data.std)
                  if "train" in tc.eval_each_epoch else None)
    steps_per_epoch = math.ceil(len(loader) / tc.grad_accum)

    # -- model, optimizer, tricks -----------------------------------------
    set_seed(tc.seed)
    model = model_from_config(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, cfg.optim)
    tracking = Tracking(accelerator, run_dir, use_wandb=tc.tracker == "wandb")
    config_dict = {**cfg.to_dict(), **(extra_config or {})}
    tracking.start(config_dict, **{"project": tc.project, "name": run_dir.name, **(tracking_kwargs or {})})
    stop = _StopFlag()
    stop.install()
    status = "failed"
    progress = None
    ctx = None
    try:
        ctx_fields = dict(
            in_chans=data.in_chans, classes=data.classes, mean=data.mean, std=data.std, run_dir=run_dir if accelerator.is_main_process else None,
            train_data=data, train_loader=loader, log=tracking.log, log_images=tracking.log_images,
        )
        model.to(accelerator.device)
        model, optimizer = tricks.setup(
            model, optimizer, num_classes=data.num_classes, epochs=tc.epochs, steps_per_epoch=steps_per_epoch,
            accelerator=accelerator, base_lr=cfg.optim.lr, seed=tc.seed, log_every=tc.log_every, **ctx_fields,
        )
        ctx = tricks.ctx
        assert ctx is not None
        if ckpt is not None:
            model_state, optim_state = load_checkpoint(ckpt)
            model.load_state_dict(model_state)
            optimizer.load_state_dict(optim_state)
            ctx.step = ckpt.step
        if cfg.model.compile:
            model = torch.compile(model)
        model, optimizer, val_loader, test_loader = accelerator.prepare(model, optimizer, val_loader, test_loader)
        if fit_loader is not None:
            fit_loader = accelerator.prepare(fit_loader)
        tricks.optimizer = optimizer
        tricks._apply_lr()

        start_epoch = ckpt.epoch if ckpt else 0
        start_batch = ckpt.batch_in_epoch if ckpt else 0
        history: list[dict[str, Any]] = list(ckpt.state.get("history", [])) if ckpt else []
        best = max((h.get("val/top1", float("nan")) for h in history), default=float("nan"))
        if accelerator.is_main_process:
            (run_dir / "config.yaml").write_text(dump_config(cfg))

        def checkpoint(epoch: int, batch_in_epoch: int) -> None:
            accelerator.wait_for_everyone()
            unwrapped = accelerator.unwrap_model(model)
            # every rank checks (the weights are the same on all), so all stop together instead of waiting for rank 0
            bad = [n for n, p in unwrapped.state_dict().items() if p.is_floating_point() and not torch.isfinite(p).all()]
            if bad:
                raise NonFiniteError(f"weights are not finite after step {ctx.step} ({bad[0]}, …); refusing to checkpoint them")
            if accelerator.is_main_process:
                save_checkpoint(
                    ckpt_root, model_state=unwrapped.state_dict(), optimizer_state=optimizer.state_dict(),
                    step=ctx.step, epoch=epoch, batch_in_epoch=batch_in_epoch, keep=tc.keep_checkpoints,
                    extra={"history": history},
                )
            accelerator.wait_for_everyone()

        if accelerator.is_main_process and tc.progress:
            from tqdm.auto import tqdm

            progress = tqdm(total=tc.epochs * steps_per_epoch, initial=ctx.step, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 5.0)
        model.train()
        for epoch in range(start_epoch, tc.epochs):
            loader.set_epoch(epoch)
            n_batches = len(loader)
            first = start_batch if epoch == start_epoch else 0
            for i, (x, labels, index) in enumerate(loader.batches(first), start=first):
                _seed_step(_seed_of(tc.seed, "torch", epoch, i, accelerator.process_index), accelerator.device)
                group_end = min((i // tc.grad_accum + 1) * tc.grad_accum, n_batches)
                sync = i + 1 == group_end
                scale = 1.0 / (group_end - (i // tc.grad_accum) * tc.grad_accum)
                with contextlib.nullcontext() if sync else accelerator.no_sync(model):
                    failure: NonFiniteError | None = None
                    try:
                        batch = tricks.batch(x, labels, index)
                        parts = tricks.loss(tricks.forward(model, batch), batch)
                    except NonFiniteError as exc:
                        failure = exc
                    signum, any_bad = stop.agreed(accelerator, failure is not None)
                    if any_bad:  # before backward: no rank applies this step
                        raise failure or NonFiniteError(f"a non-finite value on another process at step {ctx.step}")
                    accelerator.backward(parts.total * scale)
                if not sync:
                    continue
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                tricks.step(parts, batch)
                if progress is not None:
                    progress.update(1)
                    if ctx.step % tc.log_every == 0:
                        progress.set_postfix(loss=f"{float(parts.total.detach()):.3f}", lr=f"{tricks.lr():.3g}", epoch=epoch, refresh=False)
                if signum is not None:  # agreed before this step's backward; the step is finished now
                    checkpoint(epoch, i + 1)
                    raise Preempted(128 + signum)
            start_batch = 0
            metrics: dict[str, Any] = {f"val/{k}": v for k, v in evaluate(model, val_loader, accelerator).items()}
            metrics.update({f"val/{k}": v for k, v in tricks.evaluate(model, "val").items()})
            if "test" in tc.eval_each_epoch:
                metrics.update({f"test/{k}": v for k, v in evaluate(model, test_loader, accelerator).items()})
            if fit_loader is not None:
                metrics.update({f"train/{k}": v for k, v in evaluate(model, fit_loader, accelerator).items()})
            metrics["epoch"] = epoch + 1
            history.append(metrics)
            best = metrics["val/top1"] if not best >= metrics["val/top1"] else best
            tracking.log(metrics, step=ctx.step)
            tricks.epoch_end(metrics)
            checkpoint(epoch + 1, 0)
            if reporter is not None:
                reporter(epoch, metrics)
            if tc.stop_after_epoch is not None and epoch + 1 >= tc.stop_after_epoch and epoch + 1 < tc.epochs:
                status = "stopped"
                return TrainResult(run_dir, history[-1], {}, best, history, ctx.step, time.perf_counter() - t_start)
        test = evaluate(model, test_loader, accelerator)
        test.update(tricks.evaluate(model, "test"))
        final = {f"test/{k}": v for k, v in test.items()}
        tracking.log(final, step=ctx.step)
        summary = {**history[-1], **final, **at_best_val(history), "val/best_top1": best, "steps": ctx.step,
                   "seconds": time.perf_counter() - t_start}
        tracking.summary(summary)
        if accelerator.is_main_process:
            card = model_card(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans, classes=data.classes,
                              mean=list(data.mean), std=list(data.std), data=cfg.data.name)
            save_model(accelerator.unwrap_model(model), run_dir, card)
        accelerator.wait_for_everyone()
        status = "complete"
        val = {k.removeprefix("val/"): v for k, v in history[-1].items() if k.startswith("val/")}
        return TrainResult(run_dir, val, test, best, history, ctx.step, time.perf_counter() - t_start)
    except BaseException as exc:
        status = getattr(exc, "trickbox_state", "preempted" if isinstance(exc, Preempted) else "failed")
        raise
    finally:
        stop.restore()
        if progress is not None:
            progress.close()
        tricks.teardown()
        tracking.finish(status)
        if own_accelerator:
            accelerator.end_training()
