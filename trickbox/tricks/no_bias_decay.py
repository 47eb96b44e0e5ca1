"""No bias decay (He et al., 2018, section 3.1): weight decay only on the weights of convolutions and linear layers.

Biases and normalisation parameters (every tensor of at most one dimension), the names the model lists in timm's
``no_weight_decay()`` (a ViT's ``pos_embed``, ``cls_token``) and the ``exclude`` globs move to copies of their
parameter groups with ``weight_decay=0`` (:func:`trickbox.functional.split_no_decay`); everything else keeps the
optimizer's decay. Without this trick every parameter decays, as in plain PyTorch.
"""
from __future__ import annotations

import torch

from ..context import RunContext
from ..functional import split_no_decay
from ..trick import ConfigError, Param, Trick, hookimpl


class NoBiasDecay(Trick):
    name = "no_bias_decay"
    summary = "no weight decay on biases and normalisation parameters"
    params = (Param("exclude", list, None, "more parameter-name globs without decay, e.g. ['*.pos_embed']",
                    optional=True),)

    def check(self) -> None:
        if self.exclude is not None and not all(isinstance(g, str) and g for g in self.exclude):
            raise ConfigError("tricks.no_bias_decay.exclude must be a list of parameter-name globs, got "
                              f"{self.exclude!r}; "
                              "e.g. exclude=['*.pos_embed']")

    @hookimpl
    def trickbox_configure_optimizer(self, optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                                     ctx: RunContext) -> None:
        names = {id(p): n for n, p in model.named_parameters()}
        listed = model.no_weight_decay() if callable(getattr(model, "no_weight_decay", None)) else ()
        globs = [*(self.exclude or ()), *sorted(listed)]
        optimizer.param_groups[:] = split_no_decay(optimizer.param_groups, names, globs)
        return None
