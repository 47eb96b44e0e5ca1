"""Keeping NaN and inf out of the weights without a host synchronisation per step.

In deferred mode (trickbox's own loop), :meth:`FiniteGuard.observe` folds
``isfinite(loss)`` and, before the optimizer step, ``isfinite(‖grad‖)`` into
one flag that stays on the device. A fused optimizer (trickbox's default)
receives the flag the way ``torch.amp.GradScaler`` hands over ``found_inf``:
the fused kernel skips the update, momentum and step count included, while the
host goes on queueing work. So a bad step never changes the weights, and
nothing waits for it.

The host reads the flag only in :meth:`FiniteGuard.check`: every ``every``
optimizer steps, and before every checkpoint and evaluation. That read is
also where several processes agree, in one all-reduce, on the flag and on a
pending stop signal (SIGTERM). So a run stops at most ``every`` steps after
the first non-finite value, at the same step on every rank, and no checkpoint
ever holds a non-finite weight. An optimizer that cannot skip a step itself
(not fused) is checked after every backward instead, before its step.

In sync mode (``every=None``, the default of :class:`trickbox.TrickSet` in a
user's own loop) each loss is checked on the host and a non-finite one raises
before backward.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .errors import NonFiniteError, on_every_rank


def can_skip_steps(optimizer: Any) -> bool:
    """Whether ``optimizer`` (or the one an ``AcceleratedOptimizer`` wraps) skips a step given ``found_inf``."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return bool(getattr(inner, "defaults", {}).get("fused"))


class FiniteGuard:
    """One run's non-finite flag: observed on the device each step, read on the host at :meth:`check`."""

    def __init__(self, every: int | None = None) -> None:
        if every is not None and every < 1:
            raise ValueError(f"every must be >= 1 or None, got {every}")
        self.every = every
        self.optimizer: Any = None
        self._bad: Tensor | None = None  # float 0-d: 1.0 once anything was not finite
        self._first: Tensor | None = None  # the step of the first non-finite value (-1: none yet)
        self._seen: dict[str, tuple[Tensor, Tensor]] = {}  # name -> (flag, its first non-finite value)

    @property
    def deferred(self) -> bool:
        return self.every is not None

    @property
    def skips_on_device(self) -> bool:
        """Deferred, and the optimizer skips a flagged step itself: checks can wait ``every`` steps."""
        return self.deferred and self.optimizer is not None and can_skip_steps(self.optimizer)

    def observe_loss(self, parts: Any, step: int) -> None:
        """Deferred: every loss term into the flag. Else a non-finite total raises before backward."""
        if self.deferred:
            for name, value in parts.parts.items():
                self.observe(value, step, name)
        elif not torch.isfinite(parts.total.detach()).all():
            detail = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in parts.parts.items())
            raise NonFiniteError(f"loss is not finite at step {step} ({detail})")

    def reads_now(self, step: int, signal: int | None, processes: int) -> bool:
        """Whether the flag is read after ``step``: every ``every`` steps, and at once for a stop signal on a single
        process (several processes agree on it at the next scheduled read)."""
        return self.due(step) or (signal is not None and processes == 1)

    def attach(self, optimizer: Any) -> None:
        self.optimizer = optimizer
        if self._bad is not None:
            self._hand_over()

    def due(self, step: int) -> bool:
        """Whether optimizer step ``step`` (just finished) ends a check interval."""
        return self.skips_on_device and step % self.every == 0  # type: ignore[operator]

    def observe(self, value: Tensor, step: int, name: str) -> None:
        """Fold ``isfinite(value)`` into the device flag (deferred mode), or raise now (sync mode)."""
        if not self.deferred:
            if not torch.isfinite(value.detach()).all():
                raise NonFiniteError(f"{name} is not finite at step {step}")
            return
        v = value.detach().float().reshape(-1)[0] if value.numel() == 1 else value.detach().float().sum()
        bad = (~torch.isfinite(value.detach())).any().to(torch.float32)
        if self._bad is None or self._first is None:
            self._bad = torch.zeros((), dtype=torch.float32, device=bad.device)
            self._first = torch.full((), -1, dtype=torch.int64, device=bad.device)
        flag, first_value = self._seen.get(name, (torch.zeros_like(bad), torch.zeros_like(v)))
        self._seen[name] = (torch.maximum(flag, bad), torch.where((flag == 0) & (bad > 0), v, first_value))
        self._first = torch.where((self._first < 0) & (bad > 0), torch.full_like(self._first, step), self._first)
        self._bad = torch.maximum(self._bad, bad)
        self._hand_over()

    def observe_gradients(self, parameters: Any, step: int) -> None:
        """After backward, before ``optimizer.step()``: a non-finite gradient norm counts too (deferred mode)."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if self.deferred and grads:
            self.observe(torch.nn.utils.get_total_norm(grads, foreach=True), step, "grad_norm")

    def _hand_over(self) -> None:
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        if inner is not None and can_skip_steps(inner) and getattr(inner, "grad_scale", None) is None:
            inner.found_inf = self._bad  # GradScaler (fp16) sets its own found_inf and skips on its own

    def check(self, accelerator: Any = None, signal: int | None = None) -> int | None:
        """Read the flag (one host read) and agree with the other ranks; raise :class:`NonFiniteError`, or return
        the stop signal any rank received (``None``: none)."""
        names = sorted(self._seen, key=lambda n: n == "grad_norm")  # loss terms first: a bad loss makes a bad gradient
        seen = [t for n in names for t in self._seen[n]]
        packed = [self._bad, self._first.float(), *seen] if self._bad is not None else []
        values = torch.stack(packed).tolist() if packed else [0.0, -1.0]  # the one host read
        bad, first = values[0], int(values[1]) if values[0] else -1
        detail = ", ".join(f"{n}={values[2 + 2 * i + 1]:g}" for i, n in enumerate(names) if values[2 + 2 * i])
        sig = signal or 0
        if accelerator is not None and accelerator.num_processes > 1:
            import torch.distributed as dist

            # the MAX of -first is the earliest first bad step over the ranks that saw one
            flags = torch.tensor([bad, float(sig), -float(first) if first >= 0 else -1e18], dtype=torch.float64,
                                 device=accelerator.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            bad, sig = float(flags[0]), int(flags[1])
            first = int(-flags[2]) if flags[2] > -1e18 else -1
        if bad:
            kind = "the gradient norm" if detail.startswith("grad_norm") else "loss"
            raise on_every_rank(NonFiniteError(f"{kind} is not finite at step {first} "
                                               f"({detail or 'on another process'}); "
                                               "no update from that step on was applied"))
        return sig or None


def first_nonfinite(tensors: Mapping[str, Tensor]) -> str | None:
    """The name of the first floating tensor of ``tensors`` holding a NaN or an infinity (one host read), or None."""
    floats = [(n, t) for n, t in tensors.items() if t.is_floating_point() or t.is_complex()]
    if not floats:
        return None
    finite = torch.stack([torch.isfinite(t.detach()).all().to(floats[0][1].device) for _, t in floats]).tolist()
    return next((n for (n, _), ok in zip(floats, finite) if not ok), None)


def check_state(tensors: Mapping[str, Tensor], accelerator: Any, what: str) -> None:
    """Raise :class:`NonFiniteError` on every process when any process holds a non-finite tensor in ``tensors``
    (weights, buffers, a trick's state): the processes agree in one all-reduce, so none waits for another in a
    collective while the others stop. ``what`` says when (``"after step 8, before its checkpoint"``)."""
    bad = first_nonfinite(tensors)
    anywhere = bad is not None
    if accelerator is not None and accelerator.num_processes > 1:
        import torch.distributed as dist

        flag = torch.tensor([float(anywhere)], device=accelerator.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        anywhere = bool(flag.item())
    if anywhere:
        where = bad if bad is not None else "on another process"
        raise on_every_rank(NonFiniteError(f"the model's state is not finite {what} ({where}); refusing to evaluate or "
                                           "save it"))


class DeferredRows:
    """Log rows whose values are still tensors on the device (deferred mode): they are written at the next
    :meth:`FiniteGuard.check`, all of them with one host read, in step order. Anything else a trick logs meanwhile
    goes through :meth:`in_order`, which writes the waiting rows first."""

    def __init__(self, log: Callable[..., None]) -> None:
        self.log = log
        self.rows: list[tuple[int, dict[str, Any]]] = []

    def write(self, step: int, values: dict[str, Any], *, defer: bool) -> None:
        """Keep the row for the next flush (``defer``: its values may be device tensors), else log it now."""
        self.rows.append((step, values))
        if not defer:
            self.flush()

    def flush(self) -> None:
        rows, self.rows = self.rows, []
        tensors = [v for _, row in rows for v in row.values() if isinstance(v, Tensor)]
        floats = iter(torch.stack(tensors).tolist()) if tensors else iter(())  # one host read for them all
        for step, row in rows:
            self.log({k: next(floats) if isinstance(v, Tensor) else v for k, v in row.items()}, step=step)

    def in_order(self, log: Callable[..., None]) -> Callable[..., None]:
        def flushed_first(values: dict[str, Any], step: int | None = None) -> None:
            self.flush()
            log(values, step=step)

        return flushed_first
