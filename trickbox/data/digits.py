"""scikit-learn's 8x8 handwritten digits (1797 images), with a fixed stratified 20% test split."""
from __future__ import annotations

import numpy as np
import torch

from ..seeding import generator
from .source import Source, in_memory_source
from .splits import stratified_take

TEST_FRACTION = 0.2
TEST_SEED = 0
"""The digits test split is fixed: it does not depend on ``data.split_seed``."""


def digits_source() -> Source:
    """The digits as uint8 ``(N, 1, 8, 8)`` (0..16 scaled to 0..255) with a fixed test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)), 0, 255)
    x = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1).contiguous()
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    classes = [str(k) for k in range(10)]
    g = generator(TEST_SEED, "digits_test")
    test, train = stratified_take(y, round(TEST_FRACTION * len(y)), len(classes), g)
    return in_memory_source(classes, x[train], y[train], x[test], y[test])
