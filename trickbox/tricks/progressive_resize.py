"""Progressive resizing, low resolution first (FFCV's ImageNet recipes, Composer's ``ProgressiveResizing``, timm's
progressive size schedule): the training images start small and grow to full size, then hold it.

The size of each epoch is :func:`trickbox.functional.progressive_size`, a pure function of the epoch, so a resumed
run trains at the sizes of the uninterrupted one. The data path makes the images at that size: on the stream path
each epoch's transform crops (and decodes) at it, so the workers do less; on the memory path the resized crop samples
at it and the pad crop's batches are resized on the device. In a loop of your own whose loader has no
``set_sizes``, the batches are resized on the device before the other batch tricks.

Evaluation stays at ``data.image_size`` (the final size, or larger: FFCV evaluates above its last training size).
Batch size and learning rate stay as configured, so an epoch has the same steps at every size.
"""
from __future__ import annotations

from typing import Any

import torch

from ..batch import Batch
from ..context import RunContext
from ..errors import first_line
from ..functional.resize import progressive_size, resize_batch
from ..trick import ConfigError, Param, Trick, hookimpl


class ProgressiveResize(Trick):
    name = "progressive_resize"
    summary = "train at a small image size first and grow it to full size (low resolution first)"
    params = (
        Param("start", int, 0, "first epoch's image side in pixels (0: half of end)", low=0),
        Param("end", int, 0, "image side at the end of the ramp (0: the run's training size; evaluation stays at "
              "data.image_size)", low=0),
        Param("ramp", float, 0.75, "fraction of the epochs over which the size grows; the rest hold end", low=0,
              low_open=True, high=1),
        Param("mode", str, "linear", "linear: grow by one multiple at a time; step: in stages - 1 equal jumps",
              choices=("linear", "step")),
        Param("stages", int, 3, "sizes in step mode, start and end included", low=2),
        Param("multiple", int, 32, "sizes between start and end are multiples of this (e.g. 32 for ResNets)",
              low=1),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.sizes: dict[int, int] = {}
        self.by_loader = False

    def check(self) -> None:
        if self.start and self.end and self.start > self.end:
            raise ConfigError(f"tricks.progressive_resize.start={self.start} is larger than end={self.end}; low "
                              "resolution first means start <= end")

    def schedule(self, epochs: int, full: int) -> dict[int, int]:
        """The side of every 0-based epoch of a run of ``epochs`` whose training images are ``full`` pixels."""
        end = self.end or full
        if end < 1:
            raise ConfigError("tricks.progressive_resize needs the training image size: set data.image_size "
                              "(or tricks.progressive_resize.end)")
        if self.start:
            start = self.start
        elif end >= 2 * self.multiple:  # half of end, on the multiples
            start = self.multiple * round(end / 2 / self.multiple)
        else:
            start = max(1, end // 2)
        if start > end:
            raise ConfigError(f"tricks.progressive_resize.start={start} is larger than the end size {end}; lower "
                              "start or raise end")
        stages = self.stages if self.mode == "step" else 0
        return {e: progressive_size(e, epochs=epochs, start=start, end=end, ramp=self.ramp, multiple=self.multiple,
                                    stages=stages) for e in range(epochs)}

    @hookimpl
    def trickbox_setup(self, ctx: RunContext) -> None:
        loader = ctx.train_loader
        full = int(getattr(loader, "image_size", 0) or 0)
        if full < 1:  # a loop of your own: the batches' size is known at the first batch
            full = self.end
        self.sizes = self.schedule(ctx.epochs, full) if full else {}
        if self.sizes and callable(getattr(loader, "set_sizes", None)):
            loader.set_sizes(self.sizes)
            self.by_loader = True
        ctx.image_sizes = dict(self.sizes)  # drawn under the LR curve

    @hookimpl
    def trickbox_configure_model(self, model: torch.nn.Module, ctx: RunContext) -> None:
        """Refuse, before training, a size the model cannot take (a ViT built for a fixed size, a net too deep)."""
        was_training = model.training
        model.eval()
        try:
            for size in sorted(set(self.sizes.values())):
                probe = torch.zeros(1, ctx.in_chans, size, size, device=next(model.parameters()).device)
                try:
                    with torch.no_grad():
                        model(probe)
                except Exception as e:  # noqa: BLE001 - any failure of the forward pass is the answer
                    raise ConfigError(
                        f"tricks.progressive_resize: the model cannot take {size}x{size} images "
                        f"({first_line(e)[:200]}); raise "
                        "tricks.progressive_resize.start, or build the model for any size (for timm ViTs "
                        "model.kwargs.dynamic_img_size=true)") from None
        finally:
            model.train(was_training)

    @hookimpl(tryfirst=True)
    def trickbox_transform_batch(self, batch: Batch, ctx: RunContext) -> Batch | None:
        """A loop of your own (its loader has no ``set_sizes``): resize the batch on the device."""
        if self.by_loader:
            return None
        if not self.sizes:
            self.sizes = self.schedule(ctx.epochs, int(batch.x.shape[-1]))
        size = self.sizes.get(ctx.epoch, self.sizes[max(self.sizes)])
        return batch.replace(x=resize_batch(batch.x, size))

    @hookimpl
    def trickbox_epoch_end(self, metrics: dict[str, Any], ctx: RunContext) -> None:
        epoch = int(metrics.get("epoch", ctx.epoch)) - 1
        if epoch in self.sizes:
            ctx.log({"train/image_size": self.sizes[epoch]}, step=ctx.step)
