"""Gradient clipping, by global norm or by value, once per optimizer step.

It runs in ``trickbox_before_optimizer_step``: after the backward passes of every accumulated batch (and the
gradients' synchronisation between processes), before ``optimizer.step()``. With an Accelerator it calls
``accelerator.clip_grad_norm_`` / ``clip_grad_value_``, which first unscale fp16 gradients (mixed precision), so the
threshold applies to the true gradients; without one, ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``.
"""
from __future__ import annotations

import torch

from ..context import RunContext
from ..trick import Param, Search, Trick, hookimpl


class GradClip(Trick):
    name = "grad_clip"
    summary = "clip the gradients by global norm (max_norm) or by value (max_value) before each optimizer step"
    params = (
        Param("mode", str, "norm", "norm: rescale so the global norm is <= max_norm; value: clamp each entry to "
              "[-max_value, max_value]", choices=("norm", "value")),
        Param("max_norm", float, 1.0, "mode=norm: the largest global gradient norm", low=0, low_open=True,
              search=Search(0.1, 10.0, log=True)),
        Param("norm_type", float, 2.0, "mode=norm: the p of the p-norm", low=0, low_open=True),
        Param("max_value", float, 1.0, "mode=value: the largest absolute gradient entry", low=0, low_open=True,
              search=Search(0.01, 10.0, log=True)),
    )

    @hookimpl
    def trickbox_before_optimizer_step(self, model: torch.nn.Module, ctx: RunContext) -> None:
        params = [p for p in model.parameters() if p.grad is not None]
        if not params:
            return
        acc = ctx.accelerator
        if self.mode == "norm":
            clip_norm = acc.clip_grad_norm_ if acc is not None else torch.nn.utils.clip_grad_norm_
            clip_norm(params, self.max_norm, norm_type=self.norm_type)
        else:
            clip_value = acc.clip_grad_value_ if acc is not None else torch.nn.utils.clip_grad_value_
            clip_value(params, self.max_value)
