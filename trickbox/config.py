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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data.config import DataConfig
from .errors import ConfigError
from .scalars import bounded, check_fields, check_scalar, did_you_mean

SEED_LIMITS = dict(low=0, high=2**32, high_open=True)
PRECISIONS = ("no", "bf16", "fp16")


@dataclass
class ModelConfig:
    name: str = "cifar_resnet8"
    """Any timm model name, or one of trickbox's CIFAR models (``trickbox list --models``)."""
    drop_rate: float = bounded(0.0, low=0, high=1, high_open=True)
    """Dropout before the classifier (timm's ``--drop``)."""
    drop_path_rate: float = bounded(0.0, low=0, high=1, high_open=True)
    """Stochastic depth (timm's ``--drop-path``): the rate at the deepest block; 0: off. A model without stochastic
    depth refuses a nonzero rate in one line."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``timm.create_model`` (not ``pretrained``: use ``model.pretrained``)."""
    pretrained: bool = False
    """Start from timm's pretrained weights, loaded by timm (offline: from the Hugging Face cache), with the
    classifier reset to the data's classes and the stem adapted to its channels."""
    pretrained_file: str | None = None
    """Start from the weights in this file instead (``.safetensors``, or a ``.pth`` that
    ``torch.load(weights_only=True)`` reads; a trickbox run's ``model.safetensors`` too; inside a checkpoint dict
    under ``state_dict``, ``model``, ``state_dict_ema`` or ``model_ema``; ``module.`` and ``_orig_mod.`` stripped).
    Every key must fit (the classifier is reset for other classes, the stem adapted for other channels); one line
    says what was loaded. Implies ``pretrained``."""
    pretrained_strict: bool = True
    """False: load the tensors of ``pretrained_file`` that fit, with a warning naming the rest (timm's
    ``strict=False``)."""
    pretrained_prefix: str | None = None
    """Load only the keys under this prefix of ``pretrained_file``, stripped (e.g. ``backbone.``)."""
    channels_last: bool | None = None
    """Channels-last memory format; None: the device profile's (on for CUDA, off for the CPU:
    :mod:`trickbox.device_defaults`)."""
    compile: bool | None = None
    """``torch.compile`` the model; None: the device profile's (on for CUDA, off for the CPU). A graph torch cannot
    compile runs eagerly (a warning says so); false skips the attempt."""
    compile_backend: str = "inductor"
    """``torch.compile``'s backend (timm's ``--torchcompile``): ``inductor``, or e.g. ``aot_eager`` (no code
    generation, quick to start)."""


@dataclass
class OptimConfig:
    name: str = "sgd"
    """``sgd`` (Nesterov, or plain with ``nesterov: false``) and ``adamw`` are torch's, with fused kernels; any other
    name is an optimizer of ``timm.optim.create_optimizer_v2`` (lamb, lars, lion, adan, adopt, nadamw, …: ``python
    -c "import timm.optim; print(timm.optim.list_optimizers())"``)."""
    lr: float = bounded(0.1, low=0, low_open=True)
    momentum: float = bounded(0.9, low=0, high=1, high_open=True)
    """For the optimizers that have one (SGD, LARS, RMSprop …)."""
    betas: list[float] | None = None
    """For the optimizers that have them (Adam-like, LAMB, Lion: 2; Adan: 3); None: the optimizer's defaults."""
    eps: float | None = bounded(None, low=0, low_open=True)
    """For the optimizers that have one; None: the optimizer's default."""
    weight_decay: float = bounded(5e-4, low=0)
    nesterov: bool = True
    lr_mult: dict[str, float] = field(default_factory=dict)
    """Learning-rate multipliers by parameter name: ``{"fc.*": 10}`` (shell: ``optim.lr_mult='{fc.*: 10}'``). A
    parameter takes the first matching glob (``fnmatch``); the others keep 1. Every group keeps its ratio under the
    schedule."""
    layer_decay: float | None = bounded(None, low=0, low_open=True, high=1)
    """Layer-wise LR decay (BEiT, timm's ``param_groups_layer_decay``): the layer n steps below the head trains at
    ``layer_decay**n`` times the rate. Multiplies with ``lr_mult``. None: off."""
    fused: bool | None = None
    """Fused optimizer kernels (they skip a non-finite step on the device); None: the device profile's (on where torch
    has them: CPU, CUDA)."""


MAX_EPOCHS = 1_000_000
"""Bounds on the numbers that size work or memory: a typo (``1e30``) is refused at once instead of hanging setup."""
MAX_BATCH = 2**20
MAX_GRAD_ACCUM = 2**16
MAX_NAME_BYTES = 255
"""The longest file name Linux file systems take (``NAME_MAX``)."""


@dataclass
class TrainConfig:
    epochs: int = bounded(30, low=1, high=MAX_EPOCHS)
    batch_size: int = bounded(64, low=1, high=MAX_BATCH)
    """Per-process batch size."""
    eval_batch_size: int = bounded(512, low=1, high=MAX_BATCH)
    grad_accum: int = bounded(1, low=1, high=MAX_GRAD_ACCUM)
    seed: int = bounded(0, **SEED_LIMITS)
    mixed_precision: str | None = bounded(None, choices=PRECISIONS)
    """``no``, ``bf16`` or ``fp16``; unset (the default), Accelerate's own setting applies: ``accelerate config``,
    ``accelerate launch --mixed_precision bf16`` or ``ACCELERATE_MIXED_PRECISION``."""
    deterministic: bool = False
    device_defaults: str = bounded("auto", choices=("auto", "cuda", "cpu"))
    """Whose defaults fill the device-dependent keys left unset (``model.channels_last``, ``model.compile``,
    ``optim.fused``, ``data.pin_memory``): ``auto``, the training device's; ``cuda`` runs CUDA's on any device (how
    CI tests them on a CPU); ``cpu``. See :mod:`trickbox.device_defaults`."""
    out_dir: str = "runs"
    run_name: str | None = None
    tracker: str = bounded("wandb", choices=("wandb", "none"))
    project: str = "trickbox"
    group: str | None = None
    """The W&B group of the run (job type ``train``); None: ``<data.name>-<model.name>``. A sweep's trials are grouped
    by their study instead (job type ``trial``)."""
    system_metrics: bool = False
    """W&B's system metrics (CPU, GPU, memory) for the run; off by default, which keeps short runs and tests fast."""
    log_every: int = bounded(1, low=1)
    """Log the loss and its parts every this many optimizer steps (the values are read with the deferred rows, so
    every step costs no host sync)."""
    log_grad_norm: bool = False
    """Log the global gradient norm (``grad_norm``) every step also without ``grad_clip`` (which always logs it)."""
    keep_checkpoints: int = bounded(2, low=1)
    finite_check_every: int = bounded(32, low=1)
    """Optimizer steps between host reads of the non-finite flag (and, with several processes, of a stop signal):
    a NaN or inf stops the run within this many steps, and no update from its step on is applied
    (:mod:`trickbox.guard`). 1 reads it after every step."""
    resume_allow: list[str] = field(default_factory=list)
    """Settings ``--resume`` may find changed (dotted keys, e.g. ``[train.epochs]``: train longer, on a schedule
    recomputed for the new length); any other change from the checkpoint's settings is refused."""
    stop_after_epoch: int | None = None
    """Stop (with a checkpoint) after this epoch, as if preempted; for resume tests."""
    progress: bool = True
    eval_each_epoch: list[str] = field(default_factory=list)
    """Splits evaluated after every epoch besides ``val``: ``test`` (logged as ``test/*``, for curves; model
    selection still uses ``val``) and ``train`` (the training images as trained on, labels included, without
    augmentation: ``train/top1`` is how well the labels, noisy ones too, are fitted)."""
    eval_at_end: list[str] = field(default_factory=list)
    """Splits evaluated once more after the last epoch, besides ``test``: ``train`` gives the final ``train/*``
    (the fit to the training labels) in the summary without the cost of a pass over the training set every epoch."""


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
    runtime: dict[str, Any] = field(default_factory=dict)
    """Where the run trained (processes, device, precision, data path): written into ``config.yaml`` and the W&B
    config by trickbox, ignored when a config is read."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Every bounded key, then the rules that span keys (tricks are checked by the registry)."""
        for section in ("model", "optim", "train"):
            check_fields(getattr(self, section), section)
        t = self.train
        if not isinstance(t.eval_each_epoch, list) or any(s not in ("test", "train") for s in t.eval_each_epoch):
            raise ConfigError("train.eval_each_epoch must be a list of splits from [test, train], got "
                              f"{t.eval_each_epoch!r}; e.g. train.eval_each_epoch=[test]")
        if not isinstance(t.eval_at_end, list) or any(s != "train" for s in t.eval_at_end):
            raise ConfigError("train.eval_at_end must be a list of splits from [train] (test is always evaluated at "
                              f"the end), got {t.eval_at_end!r}; e.g. train.eval_at_end=[train]")
        if t.run_name is not None and (t.run_name in ("", ".", "..") or "/" in t.run_name or "\\" in t.run_name
                                       or t.run_name != t.run_name.strip() or "\0" in t.run_name):
            raise ConfigError("train.run_name must be one folder name under train.out_dir (no '/', not '..'), got "
                              f"{t.run_name!r}; "
                              "e.g. train.run_name=mixup-a02")
        if t.run_name is not None and len(t.run_name.encode()) > MAX_NAME_BYTES:
            raise ConfigError(f"train.run_name is {len(t.run_name.encode())} bytes long, above the {MAX_NAME_BYTES} a "
                              f"folder name may have ({t.run_name[:40]!r}…); choose a shorter train.run_name")
        if "pretrained" in self.model.kwargs:
            raise ConfigError("model.kwargs.pretrained is not allowed; use model.pretrained=true (timm's weights, "
                              "offline from the Hugging Face cache) or model.pretrained_file=PATH")
        if t.stop_after_epoch is not None and not 1 <= t.stop_after_epoch <= t.epochs:
            raise ConfigError(f"train.stop_after_epoch must be in [1, train.epochs={t.epochs}], got "
                              f"{t.stop_after_epoch}")
        self.data.validate()


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
    if hint is str and value is False:
        return value  # YAML's bare ``no``: the field's own check (check_fields) knows whether "no" is a choice
    if hint in (bool, int, float, str):
        return check_scalar(key, value, hint)
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


def _trick_mapping(value: Any) -> Mapping[str, Any]:
    """``tricks`` as a mapping: ``{mixup: {alpha: 0.2}}``, or a list of trick names (each with its defaults)."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return {name: {} for name in value}
    raise ConfigError(f"tricks must be a mapping of trick names to parameters or a list of trick names, got {value!r}; "
                      "e.g. tricks='{mixup: {alpha: 0.2}}' or tricks=[mixup,label_smoothing]")


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if key == "tricks" and value is None:
            out["tricks"] = {}  # `tricks=null` switches every trick off
        elif key == "tricks":
            # tricks merge per trick: a later file adds or changes tricks; null removes one.
            value = _trick_mapping(value)
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


def default_config_path() -> Path:
    """The embedded default config (digits, offline): what ``trickbox train`` uses without ``--config``."""
    return Path(__file__).with_name("configs") / "default.yaml"


def not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file (``does not exist``, ``is a directory``, ``is a FIFO, a device or a
    socket``), or None. Checked before opening: opening a FIFO blocks until something writes to it."""
    import stat

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return "is a directory"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a FIFO, a device or a socket)"
    return None


class _UniqueKeys(yaml.SafeLoader):
    """``safe_load`` that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise ConfigError(f"key {key!r} appears twice in one mapping (lines {seen[key] + 1} and "
                                  f"{key_node.start_mark.line + 1}); keep one of them")
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str, where: str) -> Any:
    """``text`` as safe YAML, keys unique, nesting bounded; every failure is a :class:`ConfigError` that names
    ``where``."""
    try:
        return yaml.load(text, Loader=_UniqueKeys)  # noqa: S506 (a SafeLoader)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{where} is nested deeper than can be read; a config needs a few levels, not thousands"
                          ) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping read with ``safe_load`` (no Python tags)."""
    p = Path(path)
    if not p.is_file() and not p.suffix and Path(__file__).with_name("configs").joinpath(f"{p.name}.yaml").is_file():
        p = Path(__file__).with_name("configs") / f"{p.name}.yaml"  # an embedded config by name
    problem = not_a_regular_file(p)
    if problem:
        raise ConfigError(f"config file {str(p)!r} {problem}; pass a YAML file")
    try:
        data = load_yaml_text(p.read_text(encoding="utf-8"), f"config file {str(p)!r}")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text (byte {exc.start}); save it as UTF-8 "
                          "YAML") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(p)!r} cannot be read ({exc.strerror or exc}); check its "
                          "permissions") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {str(p)!r} is not safe YAML: {first}") from None
    if data is None:
        raise ConfigError(f"config file {str(p)!r} is empty; put at least one key in it (e.g. train: {{epochs: 5}}) or "
                          "drop it")
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
        value = load_yaml_text(raw, f"override {key}") if raw != "" else ""
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


def merged_mapping(
    files: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``base``, then each YAML file, then each ``key=value`` override, merged (not yet checked)."""
    merged = _merge({}, base or {})
    for f in files:
        merged = _merge(merged, read_yaml(f))
    for o in overrides:
        merged = _merge(merged, parse_override(o))
    return merged


def load_config(
    files: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> RunConfig:
    """Defaults, then each YAML file, then each ``key=value`` override; all validated."""
    merged = merged_mapping(files, overrides, base)
    tricks = merged.pop("tricks", None)
    cfg = build(RunConfig, merged)
    cfg.tricks = {} if tricks is None else _trick_section(tricks)
    cfg.validate()
    return cfg


def key_type(parts: Sequence[str]) -> Any:
    """The type of the config key ``parts`` (``["optim", "lr"]`` → float); ``None`` inside a free-form mapping
    such as ``model.kwargs``. An unknown key is a :class:`ConfigError` with the closest valid spelling."""
    cls: Any = RunConfig
    hint: Any = None
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            if cls is dict:
                return None
            raise ConfigError(f"config key {'.'.join(parts)}: {'.'.join(parts[:i])} has no sub-keys")
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            raise ConfigError(f"unknown config key {'.'.join(parts[: i + 1])!r}{did_you_mean(part, names)}")
        hint = typing.get_type_hints(cls)[part]
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(inner) == 1:
            hint = inner[0]
        cls = typing.get_origin(hint) or hint
    return hint


def _trick_section(tricks: Any) -> dict[str, dict[str, Any] | None]:
    if isinstance(tricks, list):
        return {str(t): {} for t in tricks}
    if not isinstance(tricks, Mapping):
        raise ConfigError(f"tricks must be a mapping of trick name to parameters, got {tricks!r}")
    return {str(k): (dict(v) if isinstance(v, Mapping) else v) for k, v in tricks.items()}


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
