"""CIFAR-style models; importing this package registers them in timm's model registry."""
from __future__ import annotations

from . import cifar
from .cifar import CifarResNet, cifar_preact_resnet18, cifar_resnet8, cifar_resnet20, preact_resnet18

__all__ = ["CifarResNet", "cifar", "cifar_preact_resnet18", "cifar_resnet8", "cifar_resnet20", "preact_resnet18"]
