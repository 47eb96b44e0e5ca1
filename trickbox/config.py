"""Typed run configuration: defaults, YAML files (safe_load) and dotted overrides.

Every key is checked: an unknown key, a wrong type or a bad value raises
:class:`ConfigError` with one line that names the key and, for names, the
closest valid spelling. Trick parameters are checked by the tricks' own
declarations (:mod:`trickbox.registry`).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from .data.config import DataConfig
from .trick import ConfigError, did_you_mean


@dataclass
class ModelConfig:
    name: str = "cifar_resnet8"
    """Any timm model name, or one of trickbox's CIFAR models (``trickbox list --models``)."""
    drop_rate: float = 0.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``timm.create_model`` (``pretrained`` is not allowed)."""
    channels_last: bool = False
    compile: bool = False


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    """Per-process batch size."""
    eval_batch_size: int = 512
    grad_accum: int = 1
    seed: int = 0
    mixed_precision: str = "no"
    deterministic: bool = False
    out_dir: str = "runs"
    run_name: str | None = None
    tracker: str = "wandb"
    project: str = "trickbox"
    log_every: int = 10
    keep_checkpoints: int = 2
    stop_after_epoch: int | None = None
    """Stop (with a checkpoint) after this epoch, as if preempted; for resume tests."""
    progress: bool = True
    eval_each_epoch: list[str] = field(default_factory=list)
    """Splits evaluated after every epoch besides ``val``: ``test`` (logged as ``test/*``, for curves; model
    selection still uses ``val``) and ``train`` (the training images as trained on, labels included, without
    augmentation: ``train/top1`` is how well the labels, noisy ones too, are fitted)."""


@dataclass
class PluginsConfig:
    block: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tricks: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """Enabled tricks, in order, with their parameters: ``{"mixup": {"alpha": 0.2}}``."""
    plugins: PluginsConfig = field(default_factory=PluginsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Cross-field checks of the core keys (tricks are checked by the registry)."""
        t, o = self.train, self.optim
        _choice("train.mixed_precision", t.mixed_precision, ("no", "bf16", "fp16"))
        _choice("train.tracker", t.tracker, ("wandb", "none"))
        _choice("optim.name", o.name, ("sgd", "adamw"))
        _positive("train.epochs", t.epochs)
        _positive("train.batch_size", t.batch_size)
        _positive("train.eval_batch_size", t.eval_batch_size)
        _positive("train.grad_accum", t.grad_accum)
        _positive("train.log_every", t.log_every)
        _positive("train.keep_checkpoints", t.keep_checkpoints)
        if not isinstance(t.eval_each_epoch, list) or any(s not in ("test", "train") for s in t.eval_each_epoch):
            raise ConfigError(f"train.eval_each_epoch must be a list of splits from [test, train], got {t.eval_each_epoch!r}; e.g. train.eval_each_epoch=[test]")
        _positive("optim.lr", o.lr)
        if o.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {o.weight_decay}")
        if not 0 <= o.momentum < 1:
            raise ConfigError(f"optim.momentum must be in [0, 1), got {o.momentum}")
        if not 0 <= self.model.drop_rate < 1:
            raise ConfigError(f"model.drop_rate must be in [0, 1), got {self.model.drop_rate}")
        if "pretrained" in self.model.kwargs:
            raise ConfigError("model.kwargs.pretrained is not allowed: trickbox trains from scratch offline; remove it")
        if t.stop_after_epoch is not None and not 1 <= t.stop_after_epoch <= t.epochs:
            raise ConfigError(f"train.stop_after_epoch must be in [1, train.epochs={t.epochs}], got {t.stop_after_epoch}")
        try:
            self.data.validate()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


def _choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}{did_you_mean(value, choices)}")


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value}")


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type ``hint`` (int, float, str, bool, X | None, list, dict)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        last: ConfigError | None = None
        for a in inner:
            try:
                return _convert(value, a, key)
            except ConfigError as exc:
                last = exc
        assert last is not None
        raise last
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return build(hint, value, key)
    if hint is Any:
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


def build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """An instance of dataclass ``cls`` from ``values``, every key and type checked."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}{did_you_mean(str(key), names)}")
        kwargs[key] = _convert(value, hints[key], full)
    return cls(**kwargs)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if key == "tricks" and value is None:
            out["tricks"] = {}  # `tricks=null` switches every trick off
        elif key == "tricks":
            # tricks merge per trick: a later file adds or changes tricks; null removes one.
            tricks = dict(out.get("tricks") or {})
            for tname, params in (value or {}).items():
                if params is None and tname in tricks and isinstance(value, Mapping):
                    tricks.pop(tname)
                elif isinstance(params, Mapping) and isinstance(tricks.get(tname), Mapping):
                    tricks[tname] = {**tricks[tname], **params}
                else:
                    tricks[tname] = params if params is not None else {}
            out["tricks"] = tricks
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping read with ``safe_load`` (no Python tags)."""
    p = Path(path)
    if not p.is_file() and not p.suffix and Path(__file__).with_name("configs").joinpath(f"{p.name}.yaml").is_file():
        p = Path(__file__).with_name("configs") / f"{p.name}.yaml"  # an embedded config by name
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; pass an existing YAML file")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {str(p)!r} is not safe YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping, got {type(data).__name__}")
    return data


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` → ``{"a": {"b": {"c": value}}}``; the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. train.epochs=5")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key; use e.g. tricks.mixup.alpha=0.2")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:  # YAML 1.1 reads 1e-3 as a string; a number is meant
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    parts = key.split(".")
    if parts[0] == "tricks" and len(parts) == 2 and value is None:
        return {"tricks": {parts[1]: None}}
    return nested(parts, value)


def nested(path: Sequence[str], value: Any) -> dict[str, Any]:
    """``["a", "b"], 1`` → ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    cur = out
    for part in path[:-1]:
        cur = cur.setdefault(part, {})
    cur[path[-1]] = value
    return out


def load_config(
    files: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Defaults, then each YAML file, then each ``key=value`` override; all validated."""
    merged: dict[str, Any] = {}
    if base:
        merged = _merge(merged, base)
    for f in files:
        merged = _merge(merged, read_yaml(f))
    for o in overrides:
        merged = _merge(merged, parse_override(o))
    tricks = merged.pop("tricks", None)
    cfg = build(RunConfig, merged)
    cfg.tricks = {} if tricks is None else _trick_section(tricks)
    cfg.validate()
    return cfg


def _trick_section(tricks: Any) -> dict[str, dict[str, Any] | None]:
    if isinstance(tricks, list):
        return {str(t): {} for t in tricks}
    if not isinstance(tricks, Mapping):
        raise ConfigError(f"tricks must be a mapping of trick name to parameters, got {tricks!r}")
    return {str(k): (dict(v) if isinstance(v, Mapping) else v) for k, v in tricks.items()}


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
