"""A run's data. :func:`open_run_data` lists the images, settles the augmentation and picks the path that reads
them: the memory path (uint8 tensors on the device, :class:`InMemoryLoader`) or the stream path (timm's pipeline in
DataLoader workers). The path changes speed, never the run.

=================  ==========================================================================================
module             what it holds
=================  ==========================================================================================
``config``         :class:`DataConfig`, the ``data.*`` keys, and how a config is settled for its images
``layout``         the one listing rule: class folders (a directory or a .zip) and tar shards
``splits``         seeded stratified splits, label noise, the planned files of each split, epoch orders
``opening``        :func:`open_run_data`: the choice of path and why; ``trickbox eval``'s splits
``loaders``        what both paths give the loop: :class:`RunData`, :class:`TrainLoader`, :class:`LoaderOptions`
``memory``         the memory path: batched pad and resized crops on the device, evaluation views
``sources``        the memory path's sources: digits, CIFAR, class folders decoded once and cached
``arrays``         :class:`DatasetArrays`, the decoded splits, and their statistics
``streaming``      what the stream path shares: transforms (each epoch's size), worker records, unreadable images
``decoding``       the stream path's JPEGs decoded at the reduction their crop needs (``data.fast_decode``)
``folders``        class folders on the stream path
``shards``         WebDataset shards on the stream path
=================  ==========================================================================================
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DataError
from ..lazy_names import lazy_getattr
from .config import DATASET_NAMES, DataConfig

if TYPE_CHECKING:
    from .arrays import DatasetArrays, channel_stats
    from .loaders import LoaderOptions, RunData, TrainLoader
    from .memory import InMemoryLoader, augment_batch, denormalize, make_eval_loader, normalize, train_loader
    from .opening import choose, eval_split, open_run_data
    from .sources import load_dataset

# imported when first used: the config (``data.*``) is read and checked without loading torch
_HOME = {"DatasetArrays": "arrays", "channel_stats": "arrays", "LoaderOptions": "loaders", "RunData": "loaders",
         "TrainLoader": "loaders", "InMemoryLoader": "memory", "augment_batch": "memory", "denormalize": "memory",
         "make_eval_loader": "memory", "normalize": "memory", "train_loader": "memory", "choose": "opening",
         "eval_split": "opening", "open_run_data": "opening", "load_dataset": "sources"}

__all__ = ["DATASET_NAMES", "DataConfig", "DataError", "DatasetArrays", "InMemoryLoader", "LoaderOptions", "RunData",
           "TrainLoader", "augment_batch", "channel_stats", "choose", "denormalize", "eval_split", "load_dataset",
           "make_eval_loader", "normalize", "open_run_data", "train_loader"]

__getattr__ = lazy_getattr(__name__, _HOME)
