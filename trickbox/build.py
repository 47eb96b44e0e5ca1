"""Building models and optimizers from the config, and loading trained models."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_weights, read_card
from .config import ModelConfig, OptimConfig
from .trick import ConfigError, did_you_mean


def create_model(name: str, *, num_classes: int, in_chans: int, drop_rate: float = 0.0, **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model`` with trickbox's CIFAR models registered, never pretrained."""
    import timm

    from . import models  # noqa: F401  registers the CIFAR models in timm

    if not timm.is_model(name):
        raise ConfigError(f"unknown model {name!r}{did_you_mean(name, timm.list_models('*cifar*') + ['preact_resnet18', 'resnet18', 'resnet50'])}")
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r} rejected its arguments: {exc}; check model.kwargs") from None


def model_from_config(cfg: ModelConfig, *, num_classes: int, in_chans: int) -> torch.nn.Module:
    return create_model(cfg.name, num_classes=num_classes, in_chans=in_chans, drop_rate=cfg.drop_rate, **cfg.kwargs)


def model_card(cfg: ModelConfig, *, num_classes: int, in_chans: int, **extra: Any) -> dict[str, Any]:
    """What ``load_trained`` needs to rebuild this model."""
    return {"name": cfg.name, "num_classes": num_classes, "in_chans": in_chans, "kwargs": dict(cfg.kwargs), **extra}


def load_trained(source: str, checkpoint: str | None = None, *, num_classes: int, in_chans: int) -> torch.nn.Module:
    """A trained model from a trickbox run directory, or from a timm name plus a weights file."""
    path = Path(source)
    if checkpoint is None and path.is_dir():
        card = read_card(path)
        if card["num_classes"] != num_classes:
            raise ConfigError(f"model in {source!r} has {card['num_classes']} classes, the data has {num_classes}")
        model = create_model(card["name"], num_classes=card["num_classes"], in_chans=card["in_chans"], **card.get("kwargs", {}))
        weights = path / "model.safetensors"
    else:
        if checkpoint is None:
            raise ConfigError(f"{source!r} is not a run directory; also give a weights file")
        model = create_model(source, num_classes=num_classes, in_chans=in_chans)
        weights = Path(checkpoint)
    state = load_weights(weights)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"weights {str(weights)!r} do not fit model {source!r}: {first}") from None
    return model


def create_optimizer(model: torch.nn.Module, cfg: OptimConfig, *, device: torch.device | None = None) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; no weight decay on biases and norm parameters; fused kernels where torch has them."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    kind = device.type if device is not None else "cpu"
    fused = cfg.fused if cfg.fused is not None else kind in ("cpu", "cuda")
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               fused=fused or None)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=fused or None)
