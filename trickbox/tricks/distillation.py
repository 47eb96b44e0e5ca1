"""Knowledge distillation (Hinton et al., 2015): H = ℓ(p, softmax(z)) + w·T²·ℓ(softmax(r/T), softmax(z/T)).

The teacher is a timm model name plus a weights file, or a trickbox run
directory (which records its model). It runs in eval mode without gradients,
under the student's autocast, on the batch's (possibly mixed) inputs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..batch import Batch, Logged
from ..context import RunContext
from ..functional import distillation_kl, distillation_loss
from ..trick import ConfigError, NonFiniteError, Param, Search, Trick, hookimpl


class Distillation(Trick):
    name = "distillation"
    summary = "learn from a trained teacher's softened logits"
    params = (
        Param("teacher", str, None, "a trickbox run directory, or a timm model name (then set checkpoint)",
              artifact=True),
        Param("checkpoint", str, None, "teacher weights (.safetensors, or a weights_only-loadable .pt)", optional=True),
        Param("temperature", float, 4.0, "softening temperature T", low=0, low_open=True,
              search=Search(1.0, 10.0, log=True)),
        Param("weight", float, 1.0, "weight w of the distillation term", low=0, search=Search(0.1, 2.0, log=True)),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self.teacher_model: torch.nn.Module | None = None

    def check(self) -> None:
        path = Path(self.checkpoint) if self.checkpoint else Path(self.teacher)
        if self.checkpoint is None and not path.is_dir():
            raise ConfigError(
                f"tricks.distillation.teacher={self.teacher!r} is not a trickbox run directory; "
                "give a run directory or set tricks.distillation.checkpoint=FILE"
            )
        target = path / "model.safetensors" if path.is_dir() else path
        if not target.is_file() or not _readable(target):
            raise ConfigError(f"teacher weights {str(target)!r} are missing or unreadable; train a teacher first "
                              "(trickbox train)")

    @hookimpl
    def trickbox_setup(self, ctx: RunContext) -> None:
        from ..build import load_trained

        model = load_trained(self.teacher, self.checkpoint, num_classes=ctx.num_classes, in_chans=ctx.in_chans)
        model.eval().requires_grad_(False)
        self.teacher_model = model.to(ctx.device)

    @hookimpl
    def trickbox_loss(self, logits: Tensor, batch: Batch, ctx: RunContext) -> dict[str, Tensor]:
        assert self.teacher_model is not None, "trickbox_setup was not called"
        with torch.no_grad(), ctx.autocast():
            teacher_logits = self.teacher_model(batch.x)
        if not torch.isfinite(teacher_logits).all():
            raise NonFiniteError("teacher logits are not finite")
        student, teacher = logits.float(), teacher_logits.float()
        # kd is the formula's cross-entropy (it includes the teacher's entropy); kd_kl, logged only, goes to 0
        return {"kd": self.weight * distillation_loss(student, teacher, self.temperature),
                "kd_kl": Logged(self.weight * distillation_kl(student, teacher, self.temperature))}

    @hookimpl
    def trickbox_teardown(self, ctx: RunContext) -> None:
        self.teacher_model = None


def _readable(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return len(f.read(8)) == 8
    except OSError:
        return False
