"""The batch that flows through the trick hooks, and the loss that comes back."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Batch:
    """One training batch, on the training device.

    ``x`` are normalised float inputs, ``y`` soft targets of shape (B, K) that
    sum to 1 per row, ``labels`` the hard labels the batch started with and
    ``index`` the dataset index of each sample (or -1 when unknown). ``meta``
    carries what a transform wants to report (``lam``, ``partner`` …); it is
    read by logging, never by another trick.

    A hook never mutates a Batch: it returns ``batch.replace(...)``.
    """

    x: Tensor
    y: Tensor
    labels: Tensor
    index: Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> Batch:
        """A copy with ``changes`` applied; ``meta`` entries are merged, not replaced."""
        if "meta" in changes:
            changes["meta"] = {**self.meta, **changes["meta"]}
        return dataclasses.replace(self, **changes)

    @property
    def size(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True)
class Logged:
    """A value a loss hook returns for logging only (``{"kd_kl": Logged(kl)}``): logged as ``loss/<name>``,
    never added to the total."""

    value: Tensor


@dataclass
class LossParts:
    """Named loss terms; the total is their sum. Logging reads ``parts`` (and ``logged``, never summed)."""

    parts: dict[str, Tensor] = field(default_factory=dict)
    logged: dict[str, Tensor] = field(default_factory=dict)

    @property
    def total(self) -> Tensor:
        if not self.parts:
            raise ValueError("no loss terms were produced; is the base loss plugin blocked?")
        terms = list(self.parts.values())
        out = terms[0]
        for t in terms[1:]:
            out = out + t
        return out

    def add(self, name: str, value: Tensor | Logged) -> None:
        if name in self.parts or name in self.logged:
            raise ValueError(f"two loss hooks returned a term named {name!r}; rename one of them")
        if isinstance(value, Logged):
            self.logged[name] = value.value.detach()
        else:
            self.parts[name] = value

    def detached(self, as_tensors: bool = False) -> dict[str, Any]:
        """Values for logging, with ``loss`` as the total: plain floats, or 0-d detached tensors (no host read)."""
        out: dict[str, Any] = {f"loss/{k}": v.detach().float().reshape(())
                               for k, v in {**self.parts, **self.logged}.items()}
        out["loss"] = self.total.detach().float().reshape(())
        return out if as_tensors else {k: float(v) for k, v in out.items()}


def hard_batch(x: Tensor, labels: Tensor, num_classes: int, index: Tensor | None = None) -> Batch:
    """A Batch whose targets are the one-hot of ``labels``."""
    y = torch.nn.functional.one_hot(labels.long(), num_classes).to(torch.float32)
    if index is None:
        index = torch.full_like(labels, -1)
    return Batch(x=x, y=y, labels=labels, index=index)
