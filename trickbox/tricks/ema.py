"""Model EMA: an exponential moving average of the weights, evaluated and saved next to the model.

The average follows :func:`trickbox.functional.ema_decay` / :func:`~trickbox.functional.ema_update_`, the
semantics of ``timm.utils.ModelEmaV3(model, decay, min_decay, update_after_step, use_warmup, warmup_gamma,
warmup_power, exclude_buffers)`` updated with ``step=`` the optimizer steps done: the first update copies the
weights, so the EMA starts from the trained model whatever it was initialised with.

Each evaluation adds the EMA's metrics (``val/ema_top1``, ``val/ema_nll``, …); at the end of the last epoch the main
process writes ``ema.safetensors`` into the run directory (load it like ``model.safetensors``). The average is not
part of the checkpoints: a resumed run restarts it from the resumed weights.
"""
from __future__ import annotations

import copy
import os
import warnings
from typing import Any

import torch

from ..context import RunContext
from ..functional import ema_decay, ema_update_
from ..trick import ConfigError, NonFiniteError, Param, Search, Trick, hookimpl

EMA_FILE = "ema.safetensors"


class ModelEMA(Trick):
    name = "ema"
    summary = "exponential moving average of the weights (timm's ModelEmaV3), evaluated each epoch and saved"
    params = (
        Param("decay", float, 0.9998, "decay per optimizer step (the ceiling with warmup)", low=0, high=1,
              high_open=True, search=Search(0.99, 0.9999)),
        Param("warmup", bool, False, "ramp the decay up as 1 - (1 + s/warmup_gamma)^-warmup_power (timm's use_warmup)"),
        Param("warmup_gamma", float, 1.0, "warmup's inverse multiplicative factor", low=0, low_open=True),
        Param("warmup_power", float, 2 / 3, "warmup's exponent (2/3 for long runs, 3/4 for shorter ones)",
              low=0, low_open=True, search=Search(0.5, 1.0)),
        Param("min_decay", float, 0.0, "floor of the warmed-up decay", low=0, high=1, high_open=True),
        Param("update_after_step", int, 0, "copy the weights (decay 0) up to this step, average afterwards", low=0),
        Param("exclude_buffers", bool, False, "average parameters only; copy buffers (BatchNorm statistics)"),
        Param("evaluate", bool, True, "evaluate the EMA weights whenever the model is evaluated (ema_* metrics)"),
        Param("save", bool, True, f"write {EMA_FILE} into the run directory at the end of training"),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.source: torch.nn.Module | None = None
        """The trained model (unwrapped): the EMA follows its weights."""
        self.ema_model: torch.nn.Module | None = None
        """The averaged copy, in eval mode, without gradients."""
        self.updates = 0
        """EMA updates made in this process."""

    def check(self) -> None:
        if self.min_decay > self.decay:
            raise ConfigError(f"tricks.ema.min_decay={self.min_decay} exceeds tricks.ema.decay={self.decay}; lower "
                              "min_decay")

    def decay_at(self, step: int) -> float:
        """The decay of the update after optimizer step ``step`` (1-based)."""
        return ema_decay(step, self.decay, warmup=self.warmup, warmup_gamma=self.warmup_gamma,
                         warmup_power=self.warmup_power, min_decay=self.min_decay,
                         update_after_step=self.update_after_step)

    @hookimpl(trylast=True)  # after the tricks that change the model (zero-γ): the copy has the final architecture
    def trickbox_configure_model(self, model: torch.nn.Module, ctx: RunContext) -> None:
        self.source = model
        self.ema_model = copy.deepcopy(model).eval().requires_grad_(False)

    @hookimpl
    def trickbox_after_step(self, ctx: RunContext) -> None:
        if self.source is None or self.ema_model is None:
            return
        if self.updates == 0 and ctx.step > self.update_after_step + 1:
            warnings.warn(f"tricks.ema: resumed at step {ctx.step - 1}; the average restarts from the resumed weights",
                          stacklevel=1)
            ema_update_(self.ema_model, self.source, 0.0)
        ema_update_(self.ema_model, self.source, self.decay_at(ctx.step), exclude_buffers=self.exclude_buffers)
        self.updates += 1

    @hookimpl
    def trickbox_evaluate(self, model: torch.nn.Module, split: str, ctx: RunContext) -> dict[str, float] | None:
        if not self.evaluate or ctx.evaluate is None or self.ema_model is None:
            return None
        return {f"ema_{k}": v for k, v in ctx.evaluate(self.ema_model, split).items()}

    @hookimpl
    def trickbox_state_tensors(self, ctx: RunContext) -> dict[str, torch.Tensor] | None:
        if self.ema_model is None:
            return None
        return {f"ema.{k}": v for k, v in self.ema_model.state_dict().items()}

    @hookimpl
    def trickbox_epoch_end(self, metrics: dict[str, Any], ctx: RunContext) -> None:
        if metrics.get("epoch") == ctx.epochs and self.save and ctx.is_main and ctx.run_dir is not None:
            self.write(ctx.run_dir)

    def write(self, directory: os.PathLike[str] | str) -> str:
        """Write the averaged weights to ``directory/ema.safetensors`` atomically; return the path."""
        from safetensors.torch import save_file

        if self.ema_model is None:
            raise RuntimeError("tricks.ema: no average yet (trickbox_configure_model was not called)")
        from ..guard import first_nonfinite

        state = self.ema_model.state_dict()
        bad = first_nonfinite(state)
        if bad is not None:
            raise NonFiniteError(f"tricks.ema: the averaged weights are not finite ({bad}); {EMA_FILE} is not written")
        target = os.path.join(directory, EMA_FILE)
        tmp = os.path.join(directory, f".{EMA_FILE}.tmp")
        save_file({k: v.detach().contiguous() for k, v in state.items()}, tmp)
        os.replace(tmp, target)
        return target

    @hookimpl
    def trickbox_teardown(self, ctx: RunContext) -> None:
        self.source = None
        self.ema_model = None
