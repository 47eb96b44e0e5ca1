"""Seeded, stratified index splits and label noise (pure functions of labels and seeds), and the planned files of
a folder layout's splits: what both data paths train, validate and test on."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import DataError
from ..seeding import generator
from .config import DataConfig
from .layout import FolderSplit, Layout

TEST_SUBSET_SEED = 0
"""The test subset ignores ``split_seed`` so that runs with different split seeds share test images."""


@dataclass(frozen=True)
class SplitPlan:
    """Indices into the source splits: ``val`` and ``train`` into its train split, ``test`` into its test split."""

    val: Tensor
    train: Tensor
    test: Tensor


def stratified_take(labels: Tensor, n: int, num_classes: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Split ``arange(len(labels))`` into ``n`` taken positions and the rest, keeping class proportions.

    Per-class quotas use the largest-remainder rule; both outputs are sorted int64 tensors.
    """
    total = len(labels)
    if not 0 <= n <= total:
        raise DataError(f"cannot take {n} of {total} images; ask for at most {total}")
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    exact = counts * (n / total) if total else counts
    quota = exact.floor()
    missing = n - int(quota.sum().item())
    if missing > 0:
        order = torch.sort(-(exact - quota), stable=True).indices
        quota[order[:missing]] += 1
    by_class = torch.argsort(labels, stable=True)
    ends = torch.cumsum(counts.to(torch.int64), 0).tolist()
    taken: list[Tensor] = []
    for k in range(num_classes):
        members = by_class[(ends[k - 1] if k else 0) : ends[k]]
        q = int(quota[k].item())
        if q:
            taken.append(members[torch.randperm(len(members), generator=g)[:q]])
    chosen = torch.sort(torch.cat(taken)).values if taken else torch.zeros(0, dtype=torch.int64)
    keep = torch.ones(total, dtype=torch.bool)
    keep[chosen] = False
    return chosen, keep.nonzero().flatten()


def plan_splits(train_y: Tensor, test_y: Tensor, num_classes: int, cfg: DataConfig,
                val_fraction: float | None = None) -> SplitPlan:
    """Validation first from the full train split (``val_fraction``, default ``cfg.val_fraction``; 0 when the data
    has a validation split of its own), then ``train_subset`` from the rest, then ``test_subset``."""
    fraction = cfg.val_fraction if val_fraction is None else val_fraction
    val, rest = stratified_take(train_y, round(fraction * len(train_y)), num_classes, generator(cfg.split_seed, "val"))
    if len(rest) == 0:
        raise DataError(f"data.val_fraction={fraction} leaves none of {len(train_y)} images to train on; lower it")
    if cfg.train_subset is not None:
        if cfg.train_subset > len(rest):
            raise DataError(f"data.train_subset={cfg.train_subset} exceeds the {len(rest)} training images left after "
                            f"the validation split; set data.train_subset<={len(rest)} or null")
        g = generator(cfg.split_seed, "train_subset")
        rest = rest[stratified_take(train_y[rest], cfg.train_subset, num_classes, g)[0]]
    test = torch.arange(len(test_y))
    if cfg.test_subset is not None and cfg.test_subset < len(test_y):
        test, _ = stratified_take(test_y, cfg.test_subset, num_classes, generator(TEST_SUBSET_SEED, "test_subset"))
    return SplitPlan(val=val, train=rest, test=test)


def add_label_noise(labels: Tensor, fraction: float, num_classes: int, seed: int) -> Tensor:
    """A copy of ``labels`` with ``round(fraction * N)`` seeded positions set to uniform random classes."""
    g = generator(seed, "label_noise")
    n = round(fraction * len(labels))
    where = torch.randperm(len(labels), generator=g)[:n]
    out = labels.clone()
    out[where] = torch.randint(0, num_classes, (n,), generator=g, dtype=labels.dtype)
    return out


@dataclass(frozen=True)
class PlannedSplit:
    """The images of one split of a folder layout, by name, with their labels (noisy ones for ``train``)."""

    names: list[str]
    labels: Tensor
    clean: Tensor
    """The labels before ``data.label_noise`` (equal to ``labels`` outside ``train``)."""


def plan_folders(layout: Layout, cfg: DataConfig) -> dict[str, PlannedSplit]:
    """``train``, ``val`` and ``test`` of a folder layout: its own splits, or ``val`` carved from ``train`` (seeded,
    stratified), then ``train_subset``, ``test_subset`` and label noise, as :func:`plan_splits` does for any source."""
    assert isinstance(layout.train, FolderSplit) and isinstance(layout.test, FolderSplit)
    k = len(layout.classes)

    def of(split: FolderSplit) -> tuple[list[str], Tensor]:
        return [p for p, _ in split.samples], torch.tensor([y for _, y in split.samples], dtype=torch.int64)

    train_names, train_y = of(layout.train)
    test_names, test_y = of(layout.test)
    val = layout.val if isinstance(layout.val, FolderSplit) else None  # None: carved from train
    plan = plan_splits(train_y, test_y, k, cfg, val_fraction=None if val is None else 0.0)
    val_names, val_y = ([train_names[i] for i in plan.val.tolist()], train_y[plan.val]) if val is None else of(val)
    clean = train_y[plan.train]
    labels = add_label_noise(clean, cfg.label_noise, k, cfg.noise_seed)
    return {"train": PlannedSplit([train_names[i] for i in plan.train.tolist()], labels, clean),
            "val": PlannedSplit(val_names, val_y, val_y),
            "test": PlannedSplit([test_names[i] for i in plan.test.tolist()], test_y[plan.test], test_y[plan.test])}


def epoch_length(n: int, world_size: int, repeats: int = 0) -> int:
    """Samples per rank and epoch: ``ceil(n / world_size)``; with ``repeats`` >= 2 (``data.aug_repeats``), timm's
    ``RepeatAugSampler`` keeps the epoch about as long as without: ``floor(n // 256 * 256 / world_size)``."""
    if repeats < 2:
        return math.ceil(n / world_size)
    kept = math.floor(n // 256 * 256 / world_size)
    if kept == 0:
        raise DataError(f"data.aug_repeats={repeats} keeps no image of {n} (timm's RepeatAugSampler rounds to 256)")
    return kept


def epoch_order(n: int, *, seed: int, epoch: int, rank: int, world_size: int, shuffle: bool = True,
                repeats: int = 0) -> Tensor:
    """Rank ``rank``'s indices of one epoch: the ``(seed, epoch)`` permutation of ``range(n)``, padded by wrapping
    around to a multiple of ``world_size``, then every ``world_size``-th entry. Ranks get disjoint parts of equal
    length whose union is the epoch (plus at most ``world_size - 1`` repeats). Both data paths use it.

    ``repeats`` >= 2 is timm's ``RepeatAugSampler`` on that permutation: each index ``repeats`` times in a row,
    padded, dealt to the ranks in turn (so the copies of an image mostly land on different ranks), and cut to
    :func:`epoch_length`."""
    perm = torch.randperm(n, generator=generator(seed, "perm", epoch)) if shuffle else torch.arange(n)
    if repeats >= 2:
        total = math.ceil(n * repeats / world_size) * world_size
        dealt = perm.repeat_interleave(repeats)
        dealt = torch.cat([dealt, dealt[: total - len(dealt)]])
        return dealt[rank:total:world_size][: epoch_length(n, world_size, repeats)]
    total = math.ceil(n / world_size) * world_size
    if total > n:
        perm = torch.cat([perm, perm.repeat(math.ceil((total - n) / n))[: total - n]])
    return perm[rank::world_size]
