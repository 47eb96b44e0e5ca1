"""Linear scaling of the learning rate with the batch size (Goyal et al., 2017; He et al., 2018, section 3.1).

The run's base rate becomes ``optim.lr × global batch / reference_batch``, the global batch counting every process
and accumulation step (``ctx.global_batch``): ``optim.lr=0.1`` at 8 processes × 128 images is 0.4. Every parameter
group is scaled by the same factor, so groups keep their ratios, and the schedule (SGDR and its warmup) runs from
the scaled rate: the ``lr`` logged, the LR curve and the optimizer all show the scaled rate.

It does so by setting ``ctx.base_lr`` in ``trickbox_setup`` (first, before a schedule plots its curve) and scaling
the groups in ``trickbox_configure_optimizer``; the rate the schedule sets is ``schedule(step) × lr_scale``, with
``lr_scale`` taken after the configure hooks.
"""
from __future__ import annotations

import torch

from ..context import RunContext
from ..functional import linear_scaled_lr
from ..trick import ConfigError, Param, Trick, hookimpl


class LinearScaling(Trick):
    name = "linear_scaling"
    summary = "learning rate × global batch / reference_batch (the rate given is the one for the reference batch)"
    params = (Param("reference_batch", int, 256, "the batch size optim.lr is meant for", low=1),)

    def __init__(self, **values: object) -> None:
        super().__init__(**values)
        self.factor = 1.0
        """global batch / reference_batch, once the run's sizes are known."""

    @hookimpl(tryfirst=True)
    def trickbox_setup(self, ctx: RunContext) -> None:
        if ctx.global_batch < 1:
            raise ConfigError("tricks.linear_scaling needs the batch size: pass batch_size= (per process) and "
                              "grad_accum= to tricks.setup")
        self.factor = linear_scaled_lr(1.0, ctx.global_batch, self.reference_batch)
        ctx.base_lr = linear_scaled_lr(ctx.base_lr, ctx.global_batch, self.reference_batch)

    @hookimpl
    def trickbox_configure_optimizer(self, optimizer: torch.optim.Optimizer, ctx: RunContext) -> None:
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * self.factor
