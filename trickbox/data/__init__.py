"""Datasets as uint8 tensors and on-device training batches (see :func:`load_dataset`, :class:`InMemoryLoader`)."""
from __future__ import annotations

from .arrays import DatasetArrays, channel_stats
from .config import DATASET_NAMES, DataConfig
from .errors import DataError
from .load import load_dataset, open_source
from .loader import (
    InMemoryLoader,
    augment_batch,
    denormalize,
    make_eval_loader,
    make_train_loader,
    normalize,
)

__all__ = [
    "DATASET_NAMES",
    "DataConfig",
    "DataError",
    "DatasetArrays",
    "InMemoryLoader",
    "augment_batch",
    "channel_stats",
    "denormalize",
    "load_dataset",
    "make_eval_loader",
    "make_train_loader",
    "normalize",
    "open_source",
]
