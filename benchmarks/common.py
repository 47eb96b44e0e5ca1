"""Shared pieces of the benchmark scripts: machine description, interleaved timing, result rows, Markdown.

Timing rule: every variant that is compared runs in the same process, on the same
model, data and batch size, and the variants alternate in rounds (ABCD ABCD …,
rotating which one goes first) so that drift from other load on the machine
spreads evenly over all of them. A variant's number is the median of its
per-step times over all rounds.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

DEFAULT_ZIP = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10-jpeg.zip"
"""The shared CIFAR-10 JPEG zip (``train/<class>/*.jpg``, ``test/<class>/*.jpg``)."""

FOUR_TRICKS = ("mixup", "label_smoothing", "sgdr", "distillation")


# ---------------------------------------------------------------------------
# machine
# ---------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform's guess elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine_lines(extra: Sequence[str] = (), load_start: str | None = None) -> list[str]:
    """Markdown bullet lines: date, CPU, cores, torch/timm versions, load average, GPU if any."""
    import torch

    try:
        import timm

        timm_v = timm.__version__
    except ImportError:  # pragma: no cover - timm is a dependency
        timm_v = "n/a"
    lines = [
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores; torch threads {torch.get_num_threads()}",
        f"- torch {torch.__version__}, timm {timm_v}, Python {platform.python_version()}",
        f"- load average (1, 5, 15 min) at start: {load_start or load_average()}",
    ]
    if torch.cuda.is_available():
        lines.append(f"- GPU: {torch.cuda.get_device_name(0)}")
    lines.extend(f"- {e}" for e in extra)
    return lines


# ---------------------------------------------------------------------------
# interleaved timing
# ---------------------------------------------------------------------------


@dataclass
class Timed:
    """Per-call seconds of one variant, collected over all rounds."""

    name: str
    seconds: list[float] = field(default_factory=list)
    faults: list[int] = field(default_factory=list)
    """Minor page faults of this process during each call (fresh memory the kernel had to map)."""
    cpu: list[float] = field(default_factory=list)
    """CPU seconds of this process (all threads) during each call: less sensitive to other load than wall time."""

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else float("nan")

    @property
    def faults_per_call(self) -> float:
        return statistics.median(self.faults) if self.faults else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def iqr(self) -> tuple[float, float]:
        if len(self.seconds) < 4:
            return (min(self.seconds, default=float("nan")), max(self.seconds, default=float("nan")))
        q = statistics.quantiles(self.seconds, n=4)
        return q[0], q[2]


def interleave(
    variants: dict[str, Callable[[int], None]],
    *,
    rounds: int,
    calls: int,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Timed]:
    """Time ``variants`` (name → ``fn(i)``) in ``rounds`` rounds of ``calls`` calls each.

    Round ``r`` runs the variants in the given order rotated by ``r``; before the
    timed rounds each variant runs ``warmup`` untimed calls. ``sync`` (e.g.
    ``torch.cuda.synchronize``) runs before each clock read.
    """
    names = list(variants)
    out = {n: Timed(n) for n in names}
    sync = sync or (lambda: None)
    counter = {n: 0 for n in names}
    for n in names:
        for _ in range(warmup):
            variants[n](counter[n])
            counter[n] += 1
    sync()
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            fn = variants[n]
            for _ in range(calls):
                sync()
                f0 = _minor_faults()
                c0 = time.process_time()
                t0 = time.perf_counter()
                fn(counter[n])
                sync()
                out[n].seconds.append(time.perf_counter() - t0)
                out[n].cpu.append(time.process_time() - c0)
                out[n].faults.append(_minor_faults() - f0)
                counter[n] += 1
        if progress is not None:
            progress(f"round {r + 1}/{rounds}: " + ", ".join(f"{n} {out[n].median * 1e3:.1f} ms" for n in names))
    return out


def _minor_faults() -> int:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    except (ImportError, OSError):  # pragma: no cover - not on Linux/macOS
        return 0


# ---------------------------------------------------------------------------
# result rows and Markdown
# ---------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table: what, measured value, target, verdict, note."""

    what: str
    measured: str
    target: str = ""
    ok: bool | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(r) for r in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def rows_table(rows: Sequence[Row]) -> str:
    return markdown_table(
        ("measurement", "measured", "target", "result", "note"),
        ((r.what, r.measured, r.target, r.verdict, r.note) for r in rows),
    )


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def write_text(path: str | Path, text: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


# ---------------------------------------------------------------------------
# shared training pieces
# ---------------------------------------------------------------------------


def save_teacher(name: str, directory: Path, *, num_classes: int = 10, in_chans: int = 3, seed: int = 1) -> Path:
    """A randomly initialised timm model saved as a trickbox run directory (``model.json`` + weights).

    Random weights are enough for timing; the distillation trick loads it like a trained teacher.
    """
    import torch

    from trickbox.build import create_model
    from trickbox.checkpoint import save_model

    torch.manual_seed(seed)
    model = create_model(name, num_classes=num_classes, in_chans=in_chans)
    card = {"name": name, "num_classes": num_classes, "in_chans": in_chans, "kwargs": {}, "data": "benchmark"}
    save_model(model, directory, card)
    return directory


def four_tricks_config(teacher_dir: Path | None, *, alpha: float = 0.2, eps: float = 0.1,
                       temperature: float = 4.0) -> dict:
    """The trick section used by the benchmarks: mixup, label smoothing, SGDR and (with a teacher) distillation."""
    cfg: dict = {
        "mixup": {"alpha": alpha, "grid": False},
        "label_smoothing": {"eps": eps},
        "sgdr": {"plot": False},
    }
    if teacher_dir is not None:
        cfg["distillation"] = {"teacher": str(teacher_dir), "temperature": temperature}
    return cfg


def load_builtin_tricks(config: dict):  # type: ignore[no-untyped-def]
    """``trickbox.load_tricks(config)`` that also works where trickbox is on PYTHONPATH but not pip-installed."""
    import trickbox
    from trickbox.tricks.distillation import Distillation
    from trickbox.tricks.label_smoothing import LabelSmoothing
    from trickbox.tricks.mixup import Mixup
    from trickbox.tricks.sgdr import SGDR

    return trickbox.load_tricks(config, extra=(SGDR, LabelSmoothing, Mixup, Distillation))
