"""Gradient clipping, by global norm or by value, once per optimizer step.

It runs in ``trickbox_before_optimizer_step``: after the backward passes of every accumulated batch (and the
gradients' synchronisation between processes), before ``optimizer.step()``. With an Accelerator it calls
``accelerator.clip_grad_norm_`` (or unscales with ``accelerator.unscale_gradients`` before clipping by value), so
the threshold applies to the true fp16 gradients; without one, ``torch.nn.utils.clip_grad_norm_`` /
``clip_grad_value_``. The global norm before clipping is logged with each step as ``grad_norm``.
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
            norm = clip_norm(params, self.max_norm, norm_type=self.norm_type)
        else:
            if acc is not None:
                acc.unscale_gradients()  # what acc.clip_grad_value_ does first: the true gradients under fp16
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            torch.nn.utils.clip_grad_value_(params, self.max_value)
        if norm is not None:
            ctx.row["grad_norm"] = norm.detach().float()  # before clipping; logged with the step, no host sync
