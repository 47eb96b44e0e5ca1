"""Building models and optimizers from the config, and loading trained models."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .checkpoint import load_weights, read_card
from .config import ModelConfig, OptimConfig
from .pretrained import LoadReport
from .scalars import Limits, check_scalar
from .trick import ConfigError, did_you_mean


def create_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int,
    drop_rate: float = 0.0,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """``timm.create_model`` with trickbox's CIFAR models registered (:func:`create_model_reported` says more)."""
    return create_model_reported(name, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate,
                                 pretrained=pretrained, pretrained_file=pretrained_file, **kwargs)[0]


def create_model_reported(
    name: str,
    *,
    num_classes: int,
    in_chans: int,
    drop_rate: float = 0.0,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    strict: bool = True,
    prefix: str | None = None,
    **kwargs: Any,
) -> tuple[torch.nn.Module, LoadReport | None]:
    """The model, and what was loaded into it (``None``: trained from scratch).

    ``pretrained`` loads timm's weights through timm (offline: the Hugging Face cache); timm resets the classifier
    when ``num_classes`` differs from the weights' and adapts the stem when ``in_chans`` does. ``pretrained_file``
    is read by :func:`trickbox.pretrained.load_pretrained`: strict, with the same resets. Missing or unfitting
    weights raise :class:`ConfigError`.
    """
    import timm

    from .pretrained import LoadReport, classifier_keys, load_pretrained

    _check_known(name)
    if pretrained or pretrained_file:
        pretrained_source(name, pretrained_file)  # one line naming where it looked, before timm tries
    try:
        model = timm.create_model(name, pretrained=bool(pretrained and not pretrained_file), num_classes=num_classes,
                                  in_chans=in_chans, drop_rate=drop_rate, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r} rejected its arguments: {exc}; check model.kwargs") from None
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        if not pretrained:
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"cannot load timm's weights for {name!r} into model {name!r} ({num_classes} classes, "
                          f"{in_chans} channels): {first}; give weights of this architecture with "
                          "model.pretrained_file=PATH") from None
    if pretrained_file:
        return model, load_pretrained(model, str(Path(pretrained_file).expanduser()), name=name, strict=strict,
                                      prefix=prefix)
    if not pretrained:
        return model, None
    file_classes = int((model.pretrained_cfg or {}).get("num_classes") or 0)
    reset = file_classes != num_classes
    loaded = len(model.state_dict()) - (len(classifier_keys(model)) if reset else 0)
    return model, LoadReport(source=f"timm's weights for {name!r}", loaded=loaded,
                             classifier=(file_classes, num_classes) if reset else None)


def model_from_config(cfg: ModelConfig, *, num_classes: int, in_chans: int,
                      image_size: int | None = None) -> tuple[torch.nn.Module, LoadReport | None]:
    """The run's model: ``model.name`` with ``model.kwargs``, from scratch or from pretrained weights, and what was
    loaded into it. A model that takes ``img_size`` (ViT, DeiT, Swin …) is built for ``image_size``."""
    check_model_config(cfg)
    kwargs = model_kwargs(cfg, image_size)
    fixed = _fixed_size(cfg.name) if "img_size" in kwargs and "img_size" not in cfg.kwargs else None
    try:
        model, report = create_model_reported(
            cfg.name, num_classes=num_classes, in_chans=in_chans, drop_rate=cfg.drop_rate, pretrained=cfg.pretrained,
            pretrained_file=cfg.pretrained_file, strict=cfg.pretrained_strict, prefix=cfg.pretrained_prefix, **kwargs)
    except ConfigError as exc:
        if cfg.drop_path_rate and "drop_path_rate" in str(exc):
            raise ConfigError(f"model {cfg.name!r} has no stochastic depth to set (model.drop_path_rate="
                              f"{cfg.drop_path_rate:g}); drop model.drop_path_rate") from None
        if fixed and "img_size" in kwargs and "img_size" in str(exc):
            raise ConfigError(f"model {cfg.name!r} takes {fixed[0]}x{fixed[1]} inputs only and cannot be built for "
                              f"data.image_size={image_size}; set data.image_size={fixed[0]}") from None
        raise
    return model, report


def model_kwargs(cfg: ModelConfig, image_size: int | None = None) -> dict[str, Any]:
    """``model.kwargs`` plus what the config implies: ``drop_path_rate``, and ``img_size`` for a model built for a
    fixed input size other than ``image_size`` (the model card keeps them, so a saved run rebuilds the same way)."""
    kwargs = dict(cfg.kwargs)
    if cfg.drop_path_rate:
        kwargs.setdefault("drop_path_rate", cfg.drop_path_rate)
    fixed = _fixed_size(cfg.name) if image_size is not None and "img_size" not in kwargs else None
    if fixed and fixed != (image_size, image_size):
        kwargs["img_size"] = image_size
    return kwargs


def _fixed_size(name: str) -> tuple[int, int] | None:
    """The input size timm's model ``name`` is built for, when it is fixed (ViT, DeiT, Swin …: ``img_size``)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, allow_unregistered=False)
    if cfg is None or not getattr(cfg, "fixed_input_size", False) or not cfg.input_size:
        return None
    return int(cfg.input_size[-2]), int(cfg.input_size[-1])


def check_model_config(cfg: ModelConfig) -> None:
    """The model section's rules that need timm, without building the model: a known name, no
    ``kwargs.pretrained``, and pretrained weights that can be found now (offline: in the Hugging Face cache)."""
    if "pretrained" in cfg.kwargs:
        raise ConfigError("model.kwargs.pretrained is not allowed; use model.pretrained=true (timm's weights, offline "
                          "from the Hugging Face cache) or model.pretrained_file=PATH")
    if "pretrained_cfg_overlay" in cfg.kwargs and cfg.pretrained_file:
        raise ConfigError("model.kwargs.pretrained_cfg_overlay and model.pretrained_file both say where the weights "
                          "are; keep model.pretrained_file")
    _check_known(cfg.name)
    if cfg.pretrained or cfg.pretrained_file:
        pretrained_source(cfg.name, cfg.pretrained_file)


def _check_known(name: str) -> None:
    import timm

    from . import models  # noqa: F401  registers the CIFAR models in timm

    if not timm.is_model(name):
        known = timm.list_models("*cifar*") + ["preact_resnet18", "resnet18", "resnet50"]
        raise ConfigError(f"unknown model {name!r}{did_you_mean(name, known)}")


def pretrained_source(name: str, pretrained_file: str | None = None) -> str:
    """Where the pretrained weights of model ``name`` will be read from (a file, or timm's own source), or
    :class:`ConfigError` with one line naming where it looked and how to give a file.

    Offline (``HF_HUB_OFFLINE=1``), timm's weights must already be in the Hugging Face cache (or, for timm models
    with only a URL, in torch hub's checkpoint directory); online, timm downloads them.
    """
    if pretrained_file:
        from .checkpoint import weights_file_problem

        path = Path(pretrained_file).expanduser()
        problem = weights_file_problem(path)
        if problem:
            raise ConfigError(f"model.pretrained_file={pretrained_file!r} {problem}; give a .safetensors or .pth "
                              "weights file (e.g. a trickbox run's model.safetensors)")
        try:
            with open(path, "rb") as f:
                f.read(8)
        except OSError as exc:
            raise ConfigError(f"model.pretrained_file={pretrained_file!r} cannot be read ({exc.strerror or exc}); "
                              "check its permissions") from None
        return f"file {path}"
    from timm.models import get_pretrained_cfg

    _check_known(name)
    cfg = get_pretrained_cfg(name, allow_unregistered=False)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    url = getattr(cfg, "url", None) if cfg is not None else None
    if not hub_id and not url:
        ours = " (trickbox's CIFAR models are trained from scratch)" if name in _cifar_models() else ""
        raise ConfigError(f"model {name!r} has no pretrained weights{ours}; give your own with "
                          "model.pretrained_file=PATH (e.g. a trickbox run's model.safetensors) or drop "
                          "model.pretrained")
    if hub_id:
        found = _hf_cached(hub_id, getattr(cfg, "hf_hub_filename", None))
        if found is not None:
            return f"Hugging Face cache {found}"
        if _offline():
            raise ConfigError(f"no pretrained weights for model {name!r} offline: looked in the Hugging Face cache "
                              f"{_hf_repo_dir(hub_id)}; download them there (huggingface-cli download "
                              f"{hub_id.partition('@')[0]}) or give a file with model.pretrained_file=PATH")
        return f"Hugging Face Hub {hub_id} (download)"
    cached = _torch_hub_file(str(url))
    if cached.is_file():
        return f"torch hub cache {cached}"
    if _offline():
        raise ConfigError(f"no pretrained weights for model {name!r} offline: looked for {cached}; download {url} "
                          "there or give a file with model.pretrained_file=PATH")
    return f"URL {url} (download)"


def _cifar_models() -> set[str]:
    import timm

    from . import models  # noqa: F401

    return set(timm.list_models("*cifar*")) | {"preact_resnet18"}


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hf_repo_dir(hub_id: str) -> Path:
    from huggingface_hub import constants

    repo = hub_id.partition("@")[0]
    return Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"


def _hf_cached(hub_id: str, filename: str | None) -> Path | None:
    """The cached weights file timm would load for ``hub_id`` (its safetensors alternative first), or ``None``."""
    from huggingface_hub import try_to_load_from_cache

    repo, _, revision = hub_id.partition("@")
    wanted = filename or "pytorch_model.bin"
    names = [wanted] if wanted.endswith(".safetensors") else [_safe_name(wanted), wanted]
    for n in names:
        hit = try_to_load_from_cache(repo, n, revision=revision or None)
        if isinstance(hit, str):
            return Path(hit)
    return None


def _safe_name(filename: str) -> str:
    """The ``.safetensors`` file timm looks for first instead of a pickle (``pytorch_model.bin`` →
    ``model.safetensors``)."""
    if filename == "pytorch_model.bin":
        return "model.safetensors"
    if filename == "open_clip_pytorch_model.bin":
        return "open_clip_model.safetensors"
    return filename.rsplit(".", 1)[0] + ".safetensors"


def _torch_hub_file(url: str) -> Path:
    from urllib.parse import urlparse

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def model_card(cfg: ModelConfig, *, num_classes: int, in_chans: int, **extra: Any) -> dict[str, Any]:
    """What ``load_trained`` needs to rebuild this model (``kwargs=`` in ``extra``: those it was built with)."""
    return {"name": cfg.name, "num_classes": num_classes, "in_chans": in_chans, "kwargs": dict(cfg.kwargs), **extra}


def load_trained(source: str, checkpoint: str | None = None, *, num_classes: int, in_chans: int) -> torch.nn.Module:
    """A trained model from a trickbox run directory, or from a timm name plus a weights file."""
    path = Path(source)
    if checkpoint is None and path.is_dir():
        card = read_card(path)
        if card["num_classes"] != num_classes:
            raise ConfigError(f"model in {source!r} has {card['num_classes']} classes, the data has {num_classes}")
        model = create_model(card["name"], num_classes=card["num_classes"], in_chans=card["in_chans"],
                             **card.get("kwargs", {}))
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


def create_optimizer(model: torch.nn.Module, cfg: OptimConfig, *, fused: bool | None = None) -> torch.optim.Optimizer:
    """The optimizer over :func:`param_groups`: torch's SGD (Nesterov) or AdamW with fused kernels unless ``fused``
    is false (a run passes its resolved :class:`~trickbox.device_defaults.DeviceDefaults`; None: ``optim.fused``,
    else on), or any other optimizer ``timm.optim.create_optimizer_v2`` knows, over the same groups.

    Every parameter decays by ``optim.weight_decay``, as in plain PyTorch; the ``no_bias_decay`` trick exempts
    biases and normalisation parameters.
    """
    groups = param_groups(model, cfg)
    fused = fused if fused is not None else cfg.fused is not False
    extra = {k: v for k, v in (("betas", tuple(cfg.betas) if cfg.betas else None), ("eps", cfg.eps)) if v is not None}
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay, fused=fused or None)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused or None, **extra)
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(groups, opt=cfg.name, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                               **extra)


def check_optim_config(cfg: OptimConfig) -> None:
    """``optim.name`` (torch's or timm's), ``optim.betas``/``optim.eps`` where that optimizer has them, and
    ``optim.lr_mult``: glob → multiplier >= 0 (``optim.layer_decay`` is checked with the other bounded keys)."""
    _check_optimizer(cfg)
    if not isinstance(cfg.lr_mult, dict):
        raise ConfigError(f"optim.lr_mult must map parameter-name globs to multipliers, got {cfg.lr_mult!r}; "
                          "e.g. optim.lr_mult='{fc.*: 10}'")
    for pattern, mult in cfg.lr_mult.items():
        where = f"optim.lr_mult[{pattern!r}]"
        if isinstance(mult, dict):  # optim.lr_mult.fc.*=10 splits the glob at its dots
            raise ConfigError(f"{where} must be a number, got {mult!r}; write the glob whole: "
                              f"optim.lr_mult='{{{pattern}.*: 10}}'")
        check_scalar(where, mult, float, Limits(low=0))


def _check_optimizer(cfg: OptimConfig) -> None:
    import timm.optim

    known = timm.optim.list_optimizers()
    if cfg.name not in ("sgd", "adamw") and cfg.name not in known:
        import difflib

        close = difflib.get_close_matches(cfg.name, ["sgd", "adamw", *known], n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown optimizer optim.name={cfg.name!r}{hint} (valid: sgd, adamw, or any of timm's "
                          f"{len(known)}: python -c 'import timm.optim; print(timm.optim.list_optimizers())')")
    info = timm.optim.get_optimizer_info(cfg.name)
    if cfg.betas is not None:
        wanted = info.num_betas if info.has_betas else 0
        if not wanted:
            raise ConfigError(f"optim.betas={cfg.betas!r}: optimizer {cfg.name!r} has no betas; drop optim.betas")
        if (not isinstance(cfg.betas, list) or len(cfg.betas) != wanted
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in cfg.betas)):
            raise ConfigError(f"optim.betas must be {wanted} numbers in [0, 1) for optimizer {cfg.name!r}, got "
                              f"{cfg.betas!r}; e.g. optim.betas=[{', '.join(['0.9', '0.999', '0.99'][:wanted])}]")
    if cfg.eps is not None and not info.has_eps:
        raise ConfigError(f"optim.eps={cfg.eps!r}: optimizer {cfg.name!r} has no eps; drop optim.eps")


def param_groups(model: torch.nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """One parameter group per learning-rate factor (``optim.layer_decay`` scale × ``optim.lr_mult`` multiplier),
    in order of first appearance, each with ``lr = optim.lr × factor`` and ``weight_decay = optim.weight_decay``.
    Without either option this is one group of every trainable parameter."""
    check_optim_config(cfg)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    scales = layer_scales(model, cfg.layer_decay) if cfg.layer_decay is not None else {}
    mults = lr_multipliers([n for n, _ in named], cfg.lr_mult, model)
    by_factor: dict[float, list[torch.nn.Parameter]] = {}
    for name, p in named:
        by_factor.setdefault(scales.get(name, 1.0) * mults.get(name, 1.0), []).append(p)
    return [{"params": ps, "lr": cfg.lr * factor, "weight_decay": cfg.weight_decay} for factor, ps in by_factor.items()]


def lr_multipliers(names: list[str], lr_mult: dict[str, float], model: torch.nn.Module) -> dict[str, float]:
    """Each name's multiplier: the first glob of ``lr_mult`` it matches. A glob that matches nothing is an error."""
    import fnmatch

    out: dict[str, float] = {}
    used: set[str] = set()
    for name in names:
        for pattern, mult in lr_mult.items():
            if fnmatch.fnmatchcase(name, pattern):
                out[name] = float(mult)
                used.add(pattern)
                break
    unused = [p for p in lr_mult if p not in used]
    if unused:
        tops = sorted({n.split(".")[0] for n in names})
        head = names[-1].split(".")[0] if names else "fc"  # timm models list their classifier last
        raise ConfigError(f"optim.lr_mult glob {unused[0]!r} matches no parameter of {_model_name(model)} (its "
                          f"parameters start with {', '.join(tops)}); e.g. optim.lr_mult='{{{head}.*: 10}}'")
    return out


def layer_scales(model: torch.nn.Module, layer_decay: float) -> dict[str, float]:
    """Each parameter name's layer-wise LR scale, ``layer_decay ** (layers above it)``, from timm's layer grouping
    (the model's ``group_matcher``, else timm's automatic grouping)."""
    from timm.optim import param_groups_layer_decay

    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, float] = {}
    for group in param_groups_layer_decay(model, weight_decay=0.0, layer_decay=layer_decay):
        for p in group["params"]:
            out[names[id(p)]] = float(group["lr_scale"])
    if len(set(out.values())) < 2:
        raise ConfigError(f"optim.layer_decay={layer_decay} has no effect on {_model_name(model)}: timm puts all its "
                          "parameters in one layer (no group_matcher); remove optim.layer_decay or use optim.lr_mult")
    return out


def _model_name(model: torch.nn.Module) -> str:
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    return f"model {arch!r}" if arch else f"the model ({type(model).__name__})"
