"""GPU throughput and MFU of trickbox on CIFAR: PreAct ResNet-18, batch 512, bf16 autocast, channels_last.

    python benchmarks/gpu.py --data cifar-small.zip --out docs/results/gpu.md            # on a GPU, ~30 s (H100)
    python benchmarks/gpu.py --data cifar-small.zip --out docs/results/gpu.md --compile  # adds torch.compile rows
                                                                                         # (~1 min)
    python benchmarks/gpu.py --quick --out /tmp/gpu.md                                   # tiny, runs on CPU too

The training images live on the device as one uint8 tensor (``InMemoryLoader``
with ``device=cuda``: shuffling, crops, flips and normalisation on whole batches
on the GPU). ``--data`` is an ImageFolder zip; a few thousand images are enough
(make one with ``benchmarks/make_subset_zip.py SRC DST --per-class 300``); without
it the images are random. Variants, all on the same model instance and images:

- ``plain``: hand-written step (autocast forward, cross-entropy, backward, SGD step);
- ``trickbox``: the same through ``trickbox.TrickSet`` with no tricks;
- ``tricks``: TrickSet with mixup, label smoothing, SGDR and distillation (a randomly
  initialised ``--teacher`` saved as a run directory; the trick runs it eager, under autocast);
- with ``--compile``, each again with the student wrapped in ``torch.compile``.

They alternate in rounds of ``--steps`` steps, timed with a device synchronise at
each round's ends (never inside it); a variant's number is its median round.
FLOPs of one training step come from ``torch.utils.flop_counter.FlopCounterMode``
(forward, backward and, for ``tricks``, the teacher forward); MFU is FLOPs per
step / step time / ``--peak-tflops`` (H100 SXM dense bf16: 989). On CUDA the report
also counts the warnings ``torch.cuda.set_sync_debug_mode`` raises during one step
after warm-up (host-device synchronisations; a lower bound). ``--diagnose`` adds
variants that isolate TrickSet's NaN guard and the three cheap tricks.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
try:
    import trickbox  # noqa: F401
except ImportError:  # pragma: no cover - a checkout without pip install (e.g. on a lent GPU machine)
    sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import (  # noqa: E402
    four_tricks_config,
    interleave,
    load_builtin_tricks,
    machine_lines,
    markdown_table,
    save_teacher,
    write_text,
)

LR, MOMENTUM, WD = 0.1, 0.9, 5e-4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="trickbox GPU throughput / MFU benchmark")
    p.add_argument("--data", default=None, help="ImageFolder zip (train/<class>/*); default: random images")
    p.add_argument("--out", default="docs/results/gpu.md", help="Markdown file to write")
    p.add_argument("--model", default="preact_resnet18")
    p.add_argument("--teacher", default="preact_resnet18", help="distillation teacher (random weights)")
    p.add_argument("--batch-size", type=int, default=None, help="default 512 (quick: 16)")
    p.add_argument("--steps", type=int, default=None, help="steps per round (default 20; quick 2)")
    p.add_argument("--rounds", type=int, default=None, help="rounds (default 5; quick 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per variant first (default 10; quick 1)")
    p.add_argument("--compile", action="store_true", help="also time the student under torch.compile")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false", help="keep NCHW")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="autocast dtype (default bf16)")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="peak dense TFLOP/s of the device for MFU (H100 SXM bf16: 989)")
    p.add_argument("--diagnose", action="store_true",
                   help="add variants that isolate costs: plain+nan-check (plain with TrickSet's host-side NaN check), "
                        "trickbox-no-check (TrickSet.loss without it) and tricks-no-kd (mixup, smoothing, SGDR only)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs (CPU is fine)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    args = p.parse_args(argv)
    for key, (full, quick) in {"batch_size": (512, 16), "steps": (20, 2), "rounds": (5, 1), "warmup": (10, 1)}.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if args.quick and args.model == "preact_resnet18" and args.device != "cuda":
        args.model = args.teacher = "cifar_resnet8"
    return args


def log(msg: str) -> None:
    print(f"[gpu] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# data and model
# ---------------------------------------------------------------------------


def images(args: argparse.Namespace, work: Path) -> tuple[torch.Tensor, torch.Tensor, tuple, tuple, str]:
    """uint8 (N, 3, 32, 32) training images and labels, mean, std, and where they came from."""
    if args.data:
        from trickbox.data import DataConfig, load_dataset

        t0 = time.perf_counter()
        d = load_dataset(DataConfig(name="imagefolder", root=args.data, val_fraction=0.0,
                                    cache_dir=str(work / "cache")), progress=False)
        log(f"decoded {len(d.train_y)} images in {time.perf_counter() - t0:.1f} s")
        return d.train_x, d.train_y, d.mean, d.std, f"{len(d.train_y)} images from {Path(args.data).name}"
    n = max(4 * args.batch_size, 256)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return x, torch.randint(0, 10, (n,), generator=g), (0.5,) * 3, (0.25,) * 3, f"{n} random images"


def cycle(loader: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        for x, y, _ in loader:
            yield x, y
        epoch += 1


class Bench:
    """The shared model, data and autocast settings, and one step function per variant."""

    def __init__(self, args: argparse.Namespace, device: torch.device, work: Path) -> None:
        from trickbox.build import create_model
        from trickbox.data import InMemoryLoader

        self.args, self.device = args, device
        x, y, mean, std, self.source = images(args, work)
        self.loader_args = dict(batch_size=args.batch_size, device=device, mean=mean, std=std, crop_padding=4,
                                flip=True, drop_last=True)
        self.x, self.y = x, y
        self.make_loader = lambda: InMemoryLoader(x, y, **self.loader_args)
        self.steps_per_epoch = len(self.make_loader())
        torch.manual_seed(0)
        self.model = self._place(create_model(args.model, num_classes=10, in_chans=3)).train()
        self.compiled: torch.nn.Module | None = torch.compile(self.model) if args.compile else None
        self.teacher_dir = save_teacher(args.teacher, work / "teacher")
        self.dtype = torch.bfloat16 if args.precision == "bf16" else None

    def _place(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.args.channels_last else model

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.args.channels_last else x

    def _sgd(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=WD)

    def plain(self, compiled: bool, nan_check: bool = False) -> Callable[[], None]:
        model = self.compiled if compiled else self.model
        opt, data = self._sgd(), cycle(self.make_loader())

        def step() -> None:
            x, y = next(data)
            with self.autocast():
                loss = F.cross_entropy(model(self._input(x)), y)
            if nan_check and not torch.isfinite(loss.detach()).all():  # what TrickSet.loss does
                raise FloatingPointError("loss is not finite")
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    def trickbox(self, compiled: bool, tricks_config: dict, nan_check: bool = True) -> Callable[[], None]:
        model = self.compiled if compiled else self.model
        tricks = load_builtin_tricks(tricks_config)
        if not nan_check:
            tricks.loss = _unchecked_loss(tricks)  # type: ignore[method-assign]
        _, opt = tricks.setup(
            self.model, self._sgd(), num_classes=10, epochs=100, steps_per_epoch=self.steps_per_epoch, base_lr=LR,
            device=self.device, autocast=self.autocast, in_chans=3,
        )
        teacher = getattr(next((t for t in tricks.tricks if t.name == "distillation"), None), "teacher_model", None)
        if teacher is not None and self.args.channels_last:
            teacher.to(memory_format=torch.channels_last)
        data = cycle(self.make_loader())

        def step() -> None:
            x, y = next(data)
            batch = tricks.batch(self._input(x), y)
            with self.autocast():
                parts = tricks.loss(tricks.forward(model, batch), batch)
            parts.total.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            tricks.step(parts, batch)

        return step

    def variants(self) -> dict[str, Callable[[], None]]:
        four = four_tricks_config(self.teacher_dir)
        out = {"plain": self.plain(False), "trickbox": self.trickbox(False, {}), "tricks": self.trickbox(False, four)}
        if self.args.diagnose:
            out.update({"plain+nan-check": self.plain(False, nan_check=True),
                        "trickbox-no-check": self.trickbox(False, {}, nan_check=False),
                        "tricks-no-kd": self.trickbox(False, four_tricks_config(None))})
        if self.compiled is not None:
            out.update({"plain+compile": self.plain(True), "trickbox+compile": self.trickbox(True, {}),
                        "tricks+compile": self.trickbox(True, four)})
        return out


def _unchecked_loss(tricks: Any) -> Callable[..., Any]:
    """``TrickSet.loss`` without its host-side finiteness check (diagnosis only)."""
    from trickbox.batch import LossParts

    def loss(logits: torch.Tensor, batch: Any) -> LossParts:
        parts = LossParts()
        for result in reversed(tricks.pm.hook.trickbox_loss(logits=logits, batch=batch, ctx=tricks.ctx)):
            for name, value in (result or {}).items():
                parts.add(name, value)
        return parts

    return loss


# ---------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------


def step_flops(step: Callable[[], None]) -> float:
    """FLOPs of one call of ``step`` (matmuls and convolutions, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def host_syncs(step: Callable[[], None], device: torch.device) -> int | None:
    """How many synchronising CUDA calls one call of ``step`` makes (None off CUDA)."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def _eager(name: str) -> str:
    return name.replace("+compile", "")


def _repeat(step: Callable[[], None], n: int) -> Callable[[int], None]:
    def run(_: int) -> None:
        for _ in range(n):
            step()

    return run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trickbox-gpu-") as tmp:
        bench = Bench(args, device, Path(tmp))
        variants = bench.variants()
        sync = torch.cuda.synchronize if device.type == "cuda" else None
        t0 = time.perf_counter()
        for name, fn in variants.items():  # warm-up (compiles here)
            for _ in range(args.warmup):
                fn()
            if sync:
                sync()
            log(f"warm-up {name}: {time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
        # FLOPs and sync counts of the eager variants (compiled ones do the same work)
        flops = {name: step_flops(fn) for name, fn in variants.items() if "compile" not in name}
        syncs = {name: host_syncs(fn, device) for name, fn in variants.items() if "compile" not in name}
        rounds = {name: _repeat(fn, args.steps) for name, fn in variants.items()}
        timed = interleave(rounds, rounds=args.rounds, calls=1, warmup=0, sync=sync, progress=log)
        peak_mem = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
    rows = []
    base = timed["plain"].median / args.steps
    for name, t in timed.items():
        step_s = t.median / args.steps
        f = flops[_eager(name)]
        mfu = f / step_s / (args.peak_tflops * 1e12)
        s = syncs.get(_eager(name))
        rows.append((name, f"{step_s * 1e3:.2f} ms", f"{args.batch_size / step_s:,.0f}", f"{f / 1e9:,.1f}",
                     f"{mfu * 100:.2f} %", f"{step_s / base:.3f}", "n/a" if s is None else str(s)))
    extra = [
        f"model {args.model}, batch {args.batch_size}, {args.precision} autocast, channels_last={args.channels_last}, "
        f"torch.compile={'yes (student only)' if args.compile else 'no'}, data: {bench.source} resident on "
        f"{device.type}",
        f"teacher for distillation: {args.teacher} (random weights, eager)",
        f"MFU = FLOPs per step (FlopCounterMode) / step time / {args.peak_tflops:g} TFLOP/s",
        f"{args.rounds} rounds x {args.steps} steps per variant, {args.warmup} warm-up steps; total "
        f"{time.perf_counter() - t_start:.0f} s",
    ]
    if peak_mem is not None:
        extra.append(f"peak GPU memory allocated: {peak_mem / 2**30:.1f} GiB")
    table = markdown_table(("variant", "step", "images/s", "GFLOP/step", "MFU", "step vs plain", "sync warnings/step"),
                           rows)
    command = "python benchmarks/gpu.py" + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    text = "\n".join(["# GPU throughput", "", f"Command: `{command}`", "", *machine_lines(extra), "", table, ""])
    print(text)
    write_text(args.out, text)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
