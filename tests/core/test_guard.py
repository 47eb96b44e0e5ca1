"""The non-finite guard: no host synchronisation in the training step, and a bounded stop that applies nothing bad."""
from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
import torch

import trickbox
from trickbox import Trick, hookimpl
from trickbox.checkpoint import list_checkpoints, load_checkpoint, verify
from trickbox.config import load_config
from trickbox.errors import NonFiniteError
from trickbox.guard import FiniteGuard
from trickbox.loop import train

SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def counting_host_reads():
    """Count every Python-level call that makes the host wait for a tensor's value."""
    counts = {name: 0 for name in SYNCS}
    originals = {name: getattr(torch.Tensor, name) for name in SYNCS}

    def wrap(name: str) -> Any:
        def counted(self: torch.Tensor, *a: Any, **k: Any) -> Any:
            counts[name] += 1
            return originals[name](self, *a, **k)
        return counted

    for name in SYNCS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield counts
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def test_the_training_step_reads_nothing_back_from_the_device():
    tricks = trickbox.load_tricks({"mixup": {"alpha": 0.4, "grid": False}, "label_smoothing": {"eps": 0.1},
                                   "sgdr": {"t0": 1}})
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 6 * 6, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)
    tricks.setup(model, optimizer, num_classes=10, epochs=2, steps_per_epoch=20, finite_check_every=32)
    batches = [(torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))) for _ in range(10)]
    with counting_host_reads() as counts:
        for x, y in batches:
            batch = tricks.batch(x, y)
            parts = tricks.loss(tricks.forward(model, batch), batch)
            parts.total.backward()
            tricks.before_optimizer_step(model)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tricks.step(parts, batch)
    assert counts == {name: 0 for name in SYNCS}, counts
    with counting_host_reads() as counts:
        tricks.check()  # every finite_check_every steps: the flag, and the buffered loss values for the log
    assert counts["tolist"] == 2 and sum(counts.values()) == 2, counts


def test_the_sync_counter_sees_a_host_read():
    with counting_host_reads() as counts:
        float(torch.ones(()))
        torch.ones(2).tolist()
    assert counts["__float__"] == 1 and counts["tolist"] == 1


class NanAt(Trick):
    name = "nan_at"

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    @hookimpl
    def trickbox_loss(self, logits, batch, ctx):
        return {"poison": logits.sum() * float("nan")} if ctx.step == self.at else None


@pytest.mark.parametrize("every", [1, 5])
def test_a_nan_stops_the_run_within_finite_check_every_steps_and_no_checkpoint_holds_it(tmp_path, every, fault):
    fault(f"NaN loss at step 7, finite_check_every={every}")
    cfg = load_config([], ["data.name=digits", "train.epochs=2", "train.batch_size=32", "train.tracker=none",
                           "train.progress=false", f"train.finite_check_every={every}", f"train.out_dir={tmp_path}",
                           "train.run_name=n", "train.log_every=1"])
    with pytest.raises(NonFiniteError, match="loss is not finite at step 7 .*poison=nan"):
        train(cfg, tricks=trickbox.TrickSet([NanAt(7)]))
    rows = [json.loads(line) for line in (tmp_path / "n" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) < 7 + every  # stopped within the bound
    assert list_checkpoints(tmp_path / "n" / "checkpoints") == []  # epoch 1 (41 steps) never ended
    for ckpt_dir in list_checkpoints(tmp_path / "n" / "checkpoints"):
        state, _ = load_checkpoint(verify(ckpt_dir))
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_the_guard_reports_the_first_bad_step_and_term():
    guard = FiniteGuard(every=10)
    guard.attach(torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1, fused=True))
    guard.observe(torch.tensor(1.0), 3, "ce")
    guard.observe(torch.tensor(float("inf")), 4, "kd")
    guard.observe(torch.tensor(float("nan")), 5, "ce")
    with pytest.raises(NonFiniteError, match=r"loss is not finite at step 4 \(ce=nan, kd=inf\)"):
        guard.check()
