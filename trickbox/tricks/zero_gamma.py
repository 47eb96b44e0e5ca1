"""Zero-γ: every residual block starts as its shortcut (Goyal et al., 2017; He et al., 2018, section 3.1).

The last normalisation layer of each residual branch gets γ = 0 (:func:`trickbox.functional.zero_init_residuals_`),
so the network starts shallower and easier to train. timm's ResNets already do this by default
(``zero_init_last=True``); with them the trick states it in the config, and ``model.kwargs.zero_init_last=false``
without the trick is the baseline. trickbox's CIFAR models start without it.
Do not combine it with pretrained weights: it zeroes their trained γ.
"""
from __future__ import annotations

import torch

from ..context import RunContext
from ..functional import zero_init_residuals_
from ..trick import ConfigError, Trick, hookimpl


class ZeroGamma(Trick):
    name = "zero_gamma"
    summary = "the last norm layer of every residual block starts at γ = 0 (each block starts as its shortcut)"
    params = ()

    @hookimpl(tryfirst=True)  # before tricks that copy the model (EMA)
    def trickbox_configure_model(self, model: torch.nn.Module, ctx: RunContext) -> None:
        if not zero_init_residuals_(model):
            arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
            raise ConfigError(f"tricks.zero_gamma: model {arch!r} has no residual blocks with zero_init_last() "
                              "(timm's ResNet family, trickbox's CIFAR ResNets); remove tricks.zero_gamma")
