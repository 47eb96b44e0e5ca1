"""Input mixup (Zhang et al., 2018) and the mixup paper's ablation variants.

Mixup trains on convex combinations of pairs of samples and of their labels:

    x~ = lam * x_i + (1 - lam) * x_j,   y~ = lam * y_i + (1 - lam) * y_j,   lam ~ Beta(alpha, alpha).

The ablations vary the partner ``j`` (random, same class, k nearest neighbours
in input space, same class + KNN), whether the labels are mixed ("inputs
only"), and the number of mixed samples (k-way mixing with Dirichlet weights).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._checks import check_hard_labels, check_soft_targets, is_cpu, randint, randperm

__all__ = [
    "sample_lambda",
    "random_partners",
    "same_class_partners",
    "mix",
    "kway_weights",
    "mix_k",
    "knn_table",
    "knn_partners",
]


# ---------------------------------------------------------------------------
# mixing coefficients
# ---------------------------------------------------------------------------


def sample_lambda(alpha: float, size: int | None, rng: np.random.Generator) -> float | np.ndarray:
    """Mixing coefficient ``lam ~ Beta(alpha, alpha)``.

    ``size=None`` draws one ``lam`` (a float, for the whole batch); an int draws
    one per sample (an array of shape (size,)). ``alpha = 0`` gives exactly 1.0
    (plain ERM, no mixing).
    """
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}; alpha=0 mixes nothing (lam = 1), alpha=0.2 is typical")
    if size is not None and size < 0:
        raise ValueError(f"size must be >= 0 or None, got {size}; use size=None for one lambda per batch")
    if alpha == 0:
        return 1.0 if size is None else np.ones(size, dtype=np.float64)
    if size is None:
        return float(rng.beta(alpha, alpha))
    return rng.beta(alpha, alpha, size=size)


def kway_weights(alpha: float, k: int, size: int | None, rng: np.random.Generator) -> np.ndarray:
    """k-way mixing weights ``w ~ Dirichlet(alpha, ..., alpha)``, shape (k,) or (size, k).

    Each row sums to 1; column 0 is the weight of the sample itself (``perms[0]``
    is the identity in :func:`mix_k`). ``alpha = 0`` gives ``w = (1, 0, ..., 0)`` (ERM).
    """
    if k < 2:
        raise ValueError(f"k must be >= 2 (number of samples mixed together), got {k}; use sample_lambda for 2-way "
                         "mixup")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}; alpha=0 mixes nothing (weights 1, 0, ...), alpha=1 is "
                         "typical")
    if size is not None and size < 0:
        raise ValueError(f"size must be >= 0 or None, got {size}; use size=None for one weight vector per batch")
    shape = (k,) if size is None else (size, k)
    if alpha == 0:
        w = np.zeros(shape, dtype=np.float64)
        w[..., 0] = 1.0
        return w
    w = rng.dirichlet(np.full(k, float(alpha)), size=size)
    return w / w.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------
# partners
# ---------------------------------------------------------------------------


def random_partners(
    batch_size: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """A uniformly random permutation of ``range(batch_size)``: sample ``b`` mixes with ``perm[b]``.

    Any batch size works (a sample may be its own partner, as with timm's flip
    for odd batches).
    """
    if batch_size < 0:
        raise ValueError(f"batch_size must be >= 0, got {batch_size}; pass x.shape[0]")
    return randperm(batch_size, generator, device)


def _class_sorted_order(labels: Tensor, generator: torch.Generator | None) -> Tensor:
    """Indices sorted by label, in a uniformly random order within each class."""
    shuffle = randperm(labels.shape[0], generator, labels.device)
    by_label = torch.sort(labels[shuffle], stable=True).indices
    return shuffle[by_label]


def same_class_partners(labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A permutation ``perm`` with ``labels[perm] == labels``, uniformly random within each class.

    Built from two independent label sorts with random tie order: the b-th
    element of one is paired with the b-th of the other. A sample alone in its
    class is paired with itself.
    """
    check_hard_labels(labels)
    first = _class_sorted_order(labels, generator)
    second = _class_sorted_order(labels, generator)
    perm = torch.empty_like(first)
    perm[first] = second
    return perm


# ---------------------------------------------------------------------------
# mixing
# ---------------------------------------------------------------------------


def _as_lam_tensor(lam: Tensor | np.ndarray, batch: int, like: Tensor) -> Tensor:
    """``lam`` as a float tensor on ``like``'s device, shaped to broadcast over ``like``'s trailing dims."""
    t = torch.as_tensor(lam)
    if t.dim() == 0:
        shape: tuple[int, ...] = ()
    elif t.shape == (batch,):
        shape = (batch,) + (1,) * (like.dim() - 1)
    else:
        raise ValueError(
            f"lam must be a float, a 0-d tensor or have shape ({batch},) (one per sample), got shape {tuple(t.shape)}; "
            f"use sample_lambda(alpha, size=batch_size, rng)"
        )
    if is_cpu(t) and t.numel() and bool(((t < 0) | (t > 1)).any()):
        raise ValueError(f"lam must lie in [0, 1], got values in [{float(t.min())}, {float(t.max())}]; draw it with "
                         "sample_lambda")
    dtype = torch.promote_types(like.dtype, torch.float32)
    return t.to(device=like.device, dtype=dtype).reshape(shape)


def _convex(a: Tensor, b: Tensor, lam: float | Tensor | np.ndarray, batch: int) -> Tensor:
    """``lam * a + (1 - lam) * b``; tensor ``lam`` is applied in at least float32, result in ``a.dtype``."""
    if isinstance(lam, (float, int)):
        return a * lam + b * (1.0 - lam)
    lt = _as_lam_tensor(lam, batch, a)
    return (a * lt + b * (1.0 - lt)).to(a.dtype)


def _check_perm(perm: Tensor, batch: int, name: str = "perm") -> None:
    if perm.shape != (batch,) or perm.dtype.is_floating_point or perm.dtype == torch.bool:
        raise ValueError(
            f"{name} must be an integer tensor of shape ({batch},), got dtype={perm.dtype} shape={tuple(perm.shape)}; "
            f"use random_partners(batch_size)"
        )


def mix(
    x: Tensor,
    y: Tensor,
    lam: float | Tensor | np.ndarray,
    perm: Tensor | None,
    *,
    mix_targets: bool = True,
    partner_x: Tensor | None = None,
    partner_y: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Pairwise mixup: ``x~ = lam * x + (1 - lam) * x[perm]``, ``y~ = lam * y + (1 - lam) * y[perm]``.

    ``partner_x`` / ``partner_y`` replace ``x[perm]`` / ``y[perm]`` (partners
    drawn from the dataset, e.g. KNN partners); ``perm`` may then be None. ``lam``
    is a float or a per-sample (B,) tensor/array broadcast over the trailing
    dims. ``y`` holds soft targets (B, K). ``mix_targets=False`` ("inputs only")
    returns ``y`` unchanged. Inputs are not modified. A tensor ``lam`` is
    range-checked only on the CPU (no host sync on accelerators).
    """
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be floating point, got dtype={x.dtype}; convert inputs with x.float() before mixing")
    batch = x.shape[0]
    if isinstance(lam, (float, int)) and not 0 <= lam <= 1:
        raise ValueError(f"lam must lie in [0, 1], got {lam}; draw it with sample_lambda(alpha, None, rng)")
    if y.shape[0] != batch:
        raise ValueError(f"x and y must have the same batch size, got {batch} and {y.shape[0]}; pass matching x and y")
    if perm is not None:
        _check_perm(perm, batch)
    if partner_x is None:
        if perm is None:
            raise ValueError("perm is None and no partner_x was given; pass perm=random_partners(batch_size) or "
                             "partner_x")
        x2 = x[perm]
    else:
        if partner_x.shape != x.shape:
            raise ValueError(
                f"partner_x must have the shape of x {tuple(x.shape)}, got {tuple(partner_x.shape)}; pass one partner "
                "per sample"
            )
        x2 = partner_x.to(x.dtype)
    xm = _convex(x, x2, lam, batch)
    if not mix_targets:
        return xm, y
    check_soft_targets(y, "y")
    if partner_y is None:
        if partner_x is not None or perm is None:
            raise ValueError("partner_x was given without partner_y; pass the partners' soft targets as partner_y, or "
                             "mix_targets=False")
        y2 = y[perm]
    else:
        if partner_y.shape != y.shape:
            raise ValueError(
                f"partner_y must have the shape of y {tuple(y.shape)}, got {tuple(partner_y.shape)}; pass soft targets "
                "(B, K)"
            )
        y2 = partner_y.to(y.dtype)
    ym = _convex(y, y2, lam, batch)
    return xm, ym


def mix_k(
    x: Tensor,
    y: Tensor,
    weights: Tensor | np.ndarray,
    perms: list[Tensor],
    *,
    mix_targets: bool = True,
) -> tuple[Tensor, Tensor]:
    """k-way mixup: ``x~ = sum_j w_j * x[perms[j]]``, ``y~ = sum_j w_j * y[perms[j]]``.

    ``weights`` has shape (k,) (one vector per batch) or (B, k) (one per sample),
    e.g. from :func:`kway_weights`; by convention ``perms[0]`` is the identity.
    ``mix_targets=False`` returns ``y`` unchanged.
    """
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be floating point, got dtype={x.dtype}; convert inputs with x.float() before mixing")
    batch = x.shape[0]
    w = torch.as_tensor(weights)
    k = len(perms)
    if w.shape not in ((k,), (batch, k)):
        raise ValueError(
            f"weights must have shape ({k},) or ({batch}, {k}) for {k} perms, got {tuple(w.shape)}; "
            f"use kway_weights(alpha, k=len(perms), size, rng)"
        )
    if y.shape[0] != batch:
        raise ValueError(f"x and y must have the same batch size, got {batch} and {y.shape[0]}; pass matching x and y")
    for j, p in enumerate(perms):
        _check_perm(p, batch, f"perms[{j}]")
    if mix_targets:
        check_soft_targets(y, "y")

    def combine(t: Tensor) -> Tensor:
        dtype = torch.promote_types(t.dtype, torch.float32)
        wt = w.to(device=t.device, dtype=dtype)
        out = torch.zeros(t.shape, device=t.device, dtype=dtype)
        for j, p in enumerate(perms):
            wj = wt[j] if wt.dim() == 1 else wt[:, j].reshape((batch,) + (1,) * (t.dim() - 1))
            out += wj * t[p]
        return out.to(t.dtype)

    xm = combine(x)
    return xm, (combine(y) if mix_targets else y)


# ---------------------------------------------------------------------------
# k nearest neighbours in input space
# ---------------------------------------------------------------------------


def _merge_topk(
    best_d: Tensor, best_i: Tensor, rows: slice, dist: Tensor, col_offset: int, k: int
) -> None:
    """Fold the distances ``dist`` (rows x cols, columns starting at ``col_offset``) into the running top-k."""
    kk = min(k, dist.shape[1])
    d, i = torch.topk(dist, kk, dim=1, largest=False, sorted=False)
    cand_d = torch.cat([best_d[rows], d], dim=1)
    cand_i = torch.cat([best_i[rows], i + col_offset], dim=1)
    top_d, pos = torch.topk(cand_d, k, dim=1, largest=False, sorted=True)
    best_d[rows] = top_d
    best_i[rows] = torch.gather(cand_i, 1, pos)


def _knn_all(features: Tensor, k: int, chunk_size: int, exclude_self: bool) -> Tensor:
    """Exact Euclidean k-NN of every row of ``features`` among all rows, by symmetric block matmuls."""
    n, dim = features.shape
    device = features.device
    acc = torch.float64 if device.type != "mps" else torch.float32
    # Centre the data (distances are translation invariant) to keep |a|^2 + |b|^2 - 2ab well conditioned.
    mean = torch.zeros(dim, dtype=acc, device=device)
    for s in range(0, n, chunk_size):
        mean += features[s : s + chunk_size].to(acc).sum(dim=0)
    mean = (mean / n).to(torch.float32)
    xs = torch.empty(n, dim, dtype=torch.float32, device=device)
    norms = torch.empty(n, dtype=torch.float32, device=device)
    for s in range(0, n, chunk_size):
        block = features[s : s + chunk_size].to(torch.float32) - mean
        xs[s : s + chunk_size] = block
        norms[s : s + chunk_size] = (block * block).sum(dim=1)
        del block

    best_d = torch.full((n, k), float("inf"), dtype=torch.float32, device=device)
    best_i = torch.zeros((n, k), dtype=torch.int64, device=device)
    starts = list(range(0, n, chunk_size))
    for bi, rs in enumerate(starts):
        re = min(rs + chunk_size, n)
        rows = slice(rs, re)
        for cs in starts[bi:]:
            ce = min(cs + chunk_size, n)
            cols = slice(cs, ce)
            # dist = |a|^2 + |b|^2 - 2 a.b, built in place in the Gram block.
            dist = xs[rows] @ xs[cols].T
            dist.mul_(-2.0).add_(norms[rows].unsqueeze(1)).add_(norms[cols].unsqueeze(0))
            if cs == rs:
                if exclude_self:
                    dist.fill_diagonal_(float("inf"))
                _merge_topk(best_d, best_i, rows, dist, cs, k)
            else:
                _merge_topk(best_d, best_i, rows, dist, cs, k)
                _merge_topk(best_d, best_i, cols, dist.T, rs, k)
            del dist
    return best_i


def knn_table(
    features: Tensor,
    k: int,
    *,
    labels: Tensor | None = None,
    chunk_size: int = 2048,
    exclude_self: bool = True,
) -> Tensor:
    """(N, k) int64 indices of each sample's k nearest neighbours, nearest first.

    Euclidean distance in input space on ``features`` (N, D), float or uint8
    (flatten images first). With ``labels`` (N,), only samples of the same class
    are candidates (the SC+KNN ablation). ``exclude_self`` drops the sample
    itself (by index; exact duplicates elsewhere still count).

    Computed exactly, in ``chunk_size`` x ``chunk_size`` blocks of
    ``|a|^2 + |b|^2 - 2 a.b`` (each block pair once, by symmetry) merged into a
    running ``torch.topk``. Extra memory is one float32 copy of ``features``
    (N * D * 4 bytes; 600 MB for CIFAR-10) plus a few blocks. Expected cost for
    CIFAR-10 (N=50,000, D=3072, uint8, k=10) on 2 shared CPU cores: about
    60-90 s without labels (~650 MB extra peak RSS), about 8 s with 10-class
    labels; run it on a GPU when available.
    """
    if features.dim() != 2:
        raise ValueError(
            f"features must have shape (N, D), got {tuple(features.shape)}; flatten images with features.flatten(1)"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}; use e.g. k=10 neighbours")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}; use chunk_size=2048")
    n = features.shape[0]
    need = k + 1 if exclude_self else k
    if labels is None:
        if n < need:
            raise ValueError(f"features has {n} samples, too few for k={k} neighbours (need {need}); use k <= "
                             f"{n - need + k}")
        return _knn_all(features, k, chunk_size, exclude_self)

    check_hard_labels(labels)
    if labels.shape[0] != n:
        raise ValueError(f"labels must have one entry per feature row ({n}), got {labels.shape[0]}; pass the dataset's "
                         "labels")
    labels = labels.to(features.device)
    classes, counts = torch.unique(labels, return_counts=True)
    smallest = int(counts.argmin())
    if int(counts[smallest]) < need:
        c, m = int(classes[smallest]), int(counts[smallest])
        raise ValueError(
            f"class {c} has {m} samples, too few for k={k} same-class neighbours (need {need}); use k <= {m - need + k}"
        )
    table = torch.empty((n, k), dtype=torch.int64, device=features.device)
    for c in classes.tolist():
        idx = torch.nonzero(labels == c).squeeze(1)
        local = _knn_all(features[idx], k, chunk_size, exclude_self)
        table[idx] = idx[local]
    return table


def knn_partners(index: Tensor, table: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """For each dataset index ``index[b]``, a neighbour ``table[index[b], j]`` with ``j`` uniform in ``[0, k)``.

    ``table`` comes from :func:`knn_table`; the result holds dataset indices on
    ``index``'s device (load the partners' inputs and targets with them).
    """
    check_hard_labels(index, "index")
    if table.dim() != 2 or table.shape[1] < 1:
        raise ValueError(f"table must have shape (N, k) with k >= 1, got {tuple(table.shape)}; build it with knn_table")
    if is_cpu(index) and index.numel():
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= table.shape[0]:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"index must lie in [0, {table.shape[0]}) (the table's dataset size), got {bad}; "
                f"pass dataset indices (batch.index), not -1 placeholders"
            )
    choice = randint(table.shape[1], (index.shape[0],), generator, table.device)
    return table[index.to(table.device), choice].to(index.device)
