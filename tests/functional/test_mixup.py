"""Mixup and its ablation variants: against timm's Mixup, brute force, and invariants."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.data import Mixup

from trickbox.functional import (
    knn_partners,
    knn_table,
    kway_weights,
    mix,
    mix_k,
    one_hot,
    random_partners,
    same_class_partners,
    sample_lambda,
    smooth_targets,
)

from ..conftest import raises_one_line

K = 5


def _batch(b: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 4, 4, generator=g), torch.randint(0, K, (b,), generator=g)


def _timm_mixup(mode: str, smoothing: float) -> Mixup:
    return Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, prob=1.0, mode=mode, label_smoothing=smoothing, num_classes=K)


# --- against timm -----------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_batch_mixup_matches_timm(smoothing: float) -> None:
    x, labels = _batch()
    lam = 0.37
    mixer = _timm_mixup("batch", smoothing)
    mixer._params_per_batch = lambda: (lam, False)  # make timm use our lambda
    timm_x, timm_y = mixer(x.clone(), labels)

    perm = torch.arange(x.shape[0]).flip(0)  # timm mixes with the flipped batch
    ours_x, ours_y = mix(x, one_hot(labels, K), lam, perm)
    assert torch.allclose(ours_x, timm_x, atol=1e-6)
    assert torch.allclose(smooth_targets(ours_y, smoothing), timm_y, atol=1e-6)


def test_per_sample_mixup_matches_timm_elem_mode() -> None:
    x, labels = _batch()
    lam = np.array([0.1, 0.9, 0.5, 1.0, 0.0, 0.33], dtype=np.float32)
    mixer = _timm_mixup("elem", 0.0)
    mixer._params_per_elem = lambda batch_size: (lam.copy(), np.zeros(batch_size, dtype=bool))
    timm_x, timm_y = mixer(x.clone(), labels)

    ours_x, ours_y = mix(x, one_hot(labels, K), torch.from_numpy(lam), torch.arange(6).flip(0))
    assert torch.allclose(ours_x, timm_x, atol=1e-6)
    assert torch.allclose(ours_y, timm_y, atol=1e-6)
    # a numpy array of per-sample lambdas works too
    assert torch.allclose(mix(x, one_hot(labels, K), lam, torch.arange(6).flip(0))[0], timm_x, atol=1e-6)


def test_sample_lambda_is_beta_like_timm() -> None:
    # timm draws np.random.beta(alpha, alpha); our Generator-based draw has the same law
    draws = sample_lambda(0.4, 4000, np.random.default_rng(0))
    assert isinstance(draws, np.ndarray) and draws.shape == (4000,)
    assert draws.mean() == pytest.approx(0.5, abs=0.03)
    assert draws.var() == pytest.approx(1 / (4 * (2 * 0.4 + 1)), abs=0.02)  # Beta(a, a) variance
    one = sample_lambda(0.4, None, np.random.default_rng(1))
    assert isinstance(one, float) and 0 <= one <= 1
    assert one == sample_lambda(0.4, None, np.random.default_rng(1))


# --- ERM limit and the ablations ---------------------------------------------


def _assert_each_is_an_original(xm: torch.Tensor, ym: torch.Tensor, x: torch.Tensor, y1h: torch.Tensor) -> None:
    for b in range(xm.shape[0]):
        matches = [j for j in range(x.shape[0]) if torch.allclose(xm[b], x[j], atol=1e-6)]
        assert matches, f"mixed sample {b} is not an original sample"
        assert any(torch.allclose(ym[b], y1h[j], atol=1e-6) for j in matches)


@pytest.mark.parametrize("alpha", [0.0, 1e-6])
@pytest.mark.parametrize("per_sample", [False, True])
def test_alpha_to_zero_is_erm(alpha: float, per_sample: bool) -> None:
    x, labels = _batch(b=7)
    y1h = one_hot(labels, K)
    rng = np.random.default_rng(3)
    g = torch.Generator().manual_seed(3)
    lam = sample_lambda(alpha, 7 if per_sample else None, rng)
    if alpha == 0:
        assert np.all(np.asarray(lam) == 1.0) and (per_sample or type(lam) is float)
    xm, ym = mix(x, y1h, lam, random_partners(7, g))
    _assert_each_is_an_original(xm, ym, x, y1h)

    w = kway_weights(alpha, 3, 7 if per_sample else None, rng)
    perms = [torch.arange(7), random_partners(7, g), random_partners(7, g)]
    xk, yk = mix_k(x, y1h, w, perms)
    _assert_each_is_an_original(xk, yk, x, y1h)


def test_inputs_only_leaves_targets_unchanged() -> None:
    x, labels = _batch()
    y1h = one_hot(labels, K)
    perm = random_partners(6, torch.Generator().manual_seed(0))
    xm, ym = mix(x, y1h, 0.6, perm, mix_targets=False)
    assert ym is y1h
    assert torch.allclose(xm, 0.6 * x + 0.4 * x[perm])
    # hard labels pass straight through when targets are not mixed
    assert mix(x, labels, 0.6, perm, mix_targets=False)[1] is labels
    w = kway_weights(1.0, 3, None, np.random.default_rng(0))
    assert mix_k(x, y1h, w, [perm, perm, perm], mix_targets=False)[1] is y1h


@pytest.mark.parametrize("b", [1, 5])
def test_odd_and_single_batch(b: int) -> None:
    x, labels = _batch(b=b)
    perm = random_partners(b, torch.Generator().manual_seed(1))
    assert sorted(perm.tolist()) == list(range(b))
    xm, ym = mix(x, one_hot(labels, K), 0.7, perm)
    assert xm.shape == x.shape and torch.allclose(ym.sum(1), torch.ones(b))
    lam = sample_lambda(1.0, b, np.random.default_rng(0))
    xm, ym = mix(x, one_hot(labels, K), lam, perm)
    assert xm.shape == x.shape and torch.allclose(ym.sum(1), torch.ones(b))


def test_mix_does_not_modify_inputs_and_keeps_dtype() -> None:
    x, labels = _batch()
    x_copy, y1h = x.clone(), one_hot(labels, K)
    mix(x, y1h, 0.3, torch.arange(6).flip(0))
    assert torch.equal(x, x_copy)
    xb = x.bfloat16()
    xm, _ = mix(xb, y1h, torch.full((6,), 0.3), torch.arange(6).flip(0))
    assert xm.dtype == torch.bfloat16


def test_random_partners_device_and_generator() -> None:
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(random_partners(10, g1), random_partners(10, g2))
    assert random_partners(4, device="cpu").device.type == "cpu"
    assert random_partners(0).shape == (0,)


def test_same_class_partners() -> None:
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3, 1, 0])
    g = torch.Generator().manual_seed(0)
    seen: set[tuple[int, int]] = set()
    for _ in range(200):
        perm = same_class_partners(labels, g)
        assert sorted(perm.tolist()) == list(range(9))
        assert torch.equal(labels[perm], labels)
        assert perm[3] == 3 and perm[6] == 6  # alone in their class
        seen.update(zip(range(9), perm.tolist()))
    # every same-class pairing (self included) occurs: the permutation is random within classes
    expected = {(i, j) for i in range(9) for j in range(9) if labels[i] == labels[j]}
    assert seen == expected


def test_partner_inputs_from_the_dataset() -> None:
    x, labels = _batch()
    px, plabels = _batch(seed=1)
    y1h, py = one_hot(labels, K), one_hot(plabels, K)
    xm, ym = mix(x, y1h, 0.8, None, partner_x=px, partner_y=py)
    assert torch.allclose(xm, 0.8 * x + 0.2 * px)
    assert torch.allclose(ym, 0.8 * y1h + 0.2 * py)
    xm2, ym2 = mix(x, y1h, 0.8, None, partner_x=px, mix_targets=False)
    assert torch.allclose(xm2, xm) and ym2 is y1h


def test_kway_weights_and_mix_k() -> None:
    rng = np.random.default_rng(0)
    w = kway_weights(0.5, 4, 8, rng)
    assert w.shape == (8, 4) and np.allclose(w.sum(1), 1.0) and (w >= 0).all()
    w1 = kway_weights(0.5, 3, None, rng)
    assert w1.shape == (3,) and w1.sum() == pytest.approx(1.0)
    assert np.allclose(kway_weights(1e-6, 3, 50, rng).sum(1), 1.0)

    x, labels = _batch(b=8)
    y1h = one_hot(labels, K)
    g = torch.Generator().manual_seed(0)
    perms = [torch.arange(8)] + [random_partners(8, g) for _ in range(3)]
    xm, ym = mix_k(x, y1h, w, perms)
    wt = torch.from_numpy(w).float()
    exp_x = sum(wt[:, j].view(8, 1, 1, 1) * x[p] for j, p in enumerate(perms))
    exp_y = sum(wt[:, j].view(8, 1) * y1h[p] for j, p in enumerate(perms))
    assert torch.allclose(xm, exp_x, atol=1e-6) and torch.allclose(ym, exp_y, atol=1e-6)
    assert torch.allclose(ym.sum(1), torch.ones(8))
    # 2-way mix_k is pairwise mixup
    w2 = np.array([0.3, 0.7])
    xk, yk = mix_k(x, y1h, w2, perms[:2])
    xm2, ym2 = mix(x, y1h, 0.3, perms[1])
    assert torch.allclose(xk, xm2, atol=1e-6) and torch.allclose(yk, ym2, atol=1e-6)


# --- KNN partners ----------------------------------------------------------


def _brute_force_knn_dists(f: torch.Tensor, k: int, labels: torch.Tensor | None = None) -> torch.Tensor:
    d = torch.cdist(f.double(), f.double())
    d.fill_diagonal_(float("inf"))
    if labels is not None:
        d[labels[:, None] != labels[None, :]] = float("inf")
    return d.topk(k, dim=1, largest=False).values, d


@pytest.mark.parametrize("chunk_size", [7, 2048])
def test_knn_table_matches_brute_force(chunk_size: int) -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(53, 6, generator=g) + 10.0
    table = knn_table(f, 4, chunk_size=chunk_size)
    ref = torch.cdist(f.double(), f.double())
    ref.fill_diagonal_(float("inf"))
    assert table.dtype == torch.int64 and table.shape == (53, 4)
    assert torch.equal(table, ref.topk(4, dim=1, largest=False).indices)


def test_knn_table_uint8_and_same_class() -> None:
    g = torch.Generator().manual_seed(1)
    f = torch.randint(0, 256, (40, 12), generator=g, dtype=torch.uint8)
    labels = torch.arange(40) % 3
    for lab in (None, labels):
        table = knn_table(f, 3, labels=lab, chunk_size=5)
        ref_vals, d = _brute_force_knn_dists(f, 3, lab)
        got = torch.gather(d, 1, table)  # distances of the returned neighbours (ties may swap indices)
        assert torch.allclose(got, ref_vals)
        assert not (table == torch.arange(40)[:, None]).any()
        if lab is not None:
            assert torch.equal(labels[table], labels[:, None].expand(-1, 3))


def test_knn_table_keep_self() -> None:
    f = torch.randn(20, 3, generator=torch.Generator().manual_seed(2))
    table = knn_table(f, 2, exclude_self=False, chunk_size=6)
    assert torch.equal(table[:, 0], torch.arange(20))


def test_knn_partners_are_among_the_nearest() -> None:
    g = torch.Generator().manual_seed(3)
    f = torch.randn(30, 5, generator=g)
    labels = torch.arange(30) % 2
    for lab in (None, labels):
        table = knn_table(f, 3, labels=lab, chunk_size=8)
        _, d = _brute_force_knn_dists(f, 3, lab)
        nearest = d.topk(3, dim=1, largest=False).indices
        index = torch.tensor([0, 7, 7, 29, 13, 2])
        chosen: set[tuple[int, int]] = set()
        for _ in range(60):
            partners = knn_partners(index, table, g)
            assert partners.dtype == torch.int64 and partners.shape == (6,)
            for i, p in zip(index.tolist(), partners.tolist()):
                assert p in nearest[i].tolist()
                if lab is not None:
                    assert labels[p] == labels[i]
                chosen.add((i, p))
        assert len(chosen) == 5 * 3  # every one of the k neighbours gets drawn


# --- errors ------------------------------------------------------------------


def test_value_errors() -> None:
    rng = np.random.default_rng(0)
    x, labels = _batch()
    y1h = one_hot(labels, K)
    perm = torch.arange(6)
    with raises_one_line("alpha must be >= 0"):
        sample_lambda(-1.0, None, rng)
    with raises_one_line("size must be >= 0"):
        sample_lambda(1.0, -2, rng)
    with raises_one_line("k must be >= 2"):
        kway_weights(1.0, 1, None, rng)
    with raises_one_line("alpha must be >= 0"):
        kway_weights(-0.1, 3, None, rng)
    with raises_one_line("size must be >= 0"):
        kway_weights(1.0, 3, -1, rng)
    with raises_one_line("batch_size must be >= 0"):
        random_partners(-1)
    with raises_one_line("labels must be a 1-D integer tensor"):
        same_class_partners(y1h)
    with raises_one_line("x must be floating point"):
        mix(x.to(torch.uint8), y1h, 0.5, perm)
    with raises_one_line(r"lam must lie in \[0, 1\]"):
        mix(x, y1h, 1.5, perm)
    with raises_one_line(r"lam must lie in \[0, 1\]"):
        mix(x, y1h, torch.full((6,), -0.1), perm)
    with raises_one_line("lam must be a float, a 0-d tensor or have shape"):
        mix(x, y1h, torch.full((5,), 0.5), perm)
    with raises_one_line("x and y must have the same batch size"):
        mix(x, y1h[:5], 0.5, perm)
    with raises_one_line("perm must be an integer tensor of shape"):
        mix(x, y1h, 0.5, perm[:5])
    with raises_one_line("perm is None and no partner_x"):
        mix(x, y1h, 0.5, None)
    with raises_one_line("partner_x must have the shape of x"):
        mix(x, y1h, 0.5, None, partner_x=x[:3])
    with raises_one_line("partner_x was given without partner_y"):
        mix(x, y1h, 0.5, None, partner_x=x)
    with raises_one_line("partner_y must have the shape of y"):
        mix(x, y1h, 0.5, None, partner_x=x, partner_y=y1h[:, :3])
    with raises_one_line("y must be floating-point soft targets"):
        mix(x, labels, 0.5, perm)
    with raises_one_line("x must be floating point"):
        mix_k(x.long(), y1h, np.array([0.5, 0.5]), [perm, perm])
    with raises_one_line("weights must have shape"):
        mix_k(x, y1h, np.array([0.2, 0.3, 0.5]), [perm, perm])
    with raises_one_line("x and y must have the same batch size"):
        mix_k(x, y1h[:4], np.array([0.5, 0.5]), [perm, perm])
    with raises_one_line(r"perms\[1\] must be an integer tensor"):
        mix_k(x, y1h, np.array([0.5, 0.5]), [perm, perm.float()])
    with raises_one_line("y must be floating-point soft targets"):
        mix_k(x, labels, np.array([0.5, 0.5]), [perm, perm])
    f = torch.randn(10, 3)
    with raises_one_line("features must have shape"):
        knn_table(f[0], 2)
    with raises_one_line("k must be >= 1"):
        knn_table(f, 0)
    with raises_one_line("chunk_size must be >= 1"):
        knn_table(f, 2, chunk_size=0)
    with raises_one_line("too few for k=10 neighbours"):
        knn_table(f, 10)
    with raises_one_line("labels must be a 1-D integer tensor"):
        knn_table(f, 2, labels=torch.zeros(10))
    with raises_one_line("labels must have one entry per feature row"):
        knn_table(f, 2, labels=torch.zeros(9, dtype=torch.long))
    with raises_one_line("class 1 has 2 samples, too few for k=2"):
        knn_table(f, 2, labels=torch.tensor([0] * 8 + [1] * 2))
    table = knn_table(f, 2)
    with raises_one_line("index must be a 1-D integer tensor"):
        knn_partners(torch.tensor([0.0]), table)
    with raises_one_line("table must have shape"):
        knn_partners(torch.tensor([0]), table[:, 0])
    with raises_one_line(r"index must lie in \[0, 10\)"):
        knn_partners(torch.tensor([-1, 3]), table)
