"""A run's data: :func:`open_run_data` picks the memory path (uint8 tensors on the device, :class:`InMemoryLoader`)
or the stream path (timm's pipeline in DataLoader workers) and returns the loaders of this process."""
from __future__ import annotations

from .arrays import DatasetArrays, channel_stats
from .config import DATASET_NAMES, DataConfig
from ..errors import DataError
from .run import RunData, TrainLoader, open_run_data
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
    "open_run_data",
    "open_source",
    "RunData",
    "TrainLoader",
]
