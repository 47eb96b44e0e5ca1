"""trickbox: the "Bag of Tricks for Image Classification" as plugins for PyTorch, timm and Accelerate.

The names below are imported when first used, so that ``trickbox --help`` and a refused config answer without
loading torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy_names import lazy_getattr

if TYPE_CHECKING:
    from .api import TrickSet, load_tricks
    from .batch import Batch, Logged, LossParts
    from .context import RunContext
    from .trick import ConfigError, NonFiniteError, Param, Search, Trick, hookimpl

_HOME = {"TrickSet": "api", "load_tricks": "api", "Batch": "batch", "Logged": "batch", "LossParts": "batch",
         "RunContext": "context", "ConfigError": "trick", "NonFiniteError": "trick", "Param": "trick",
         "Search": "trick", "Trick": "trick", "hookimpl": "trick"}

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

__getattr__ = lazy_getattr(__name__, _HOME)
