"""trickbox: the "Bag of Tricks for Image Classification" as plugins for PyTorch, timm and Accelerate."""
from __future__ import annotations

from .api import TrickSet, load_tricks
from .batch import Batch, Logged, LossParts
from .context import RunContext
from .trick import ConfigError, NonFiniteError, Param, Search, Trick, hookimpl

__all__ = [
    "Batch",
    "ConfigError",
    "Logged",
    "LossParts",
    "NonFiniteError",
    "Param",
    "RunContext",
    "Search",
    "Trick",
    "TrickSet",
    "hookimpl",
    "load_tricks",
]
__version__ = "0.1.0"
