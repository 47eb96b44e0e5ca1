"""Initialisation tricks: zero-γ residual blocks (Goyal et al., 2017; He et al., 2018)."""
from __future__ import annotations

from torch import nn

__all__ = ["zero_init_residuals_"]


def zero_init_residuals_(model: nn.Module) -> list[str]:
    """Zero the last layer of every residual branch of ``model`` in place, so each block starts as its shortcut.

    A block opts in by having a ``zero_init_last()`` method, as the blocks of timm's ResNet family do (ResNet's
    ``BasicBlock`` and ``Bottleneck`` zero their last BN's γ; ResNetV2, RegNet, Res2Net, ResNeSt, SKNet and CSPNet
    blocks too), and trickbox's CIFAR blocks (``BasicBlock``: last BN's γ; ``PreActBlock``: last conv). Returns the
    names of the blocks that were initialised (empty when the model has none).
    """
    done = []
    for name, module in model.named_modules():
        zero_last = getattr(module, "zero_init_last", None)
        if callable(zero_last) and module is not model:
            zero_last()
            done.append(name)
    return done
