"""Fine-tuning from a weights file: every key matched, strict by default, and one line saying what was loaded.

timm's own file loading (``pretrained_cfg_overlay=dict(file=…)``) loads with ``strict=False`` and says little: weights
of another depth or with a foreign key prefix start a run from random weights without a word. trickbox reads the file
itself, so that::

    loaded 120 tensors from F; classifier reset (1000 → 4 classes)

is the whole story, and anything that does not fit is one line naming the first keys and their counts.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .checkpoint import read_weights
from .errors import ConfigError

WRAPPERS = ("module.", "_orig_mod.")
"""Prefixes that wrappers add to every key (DDP's ``module.``, ``torch.compile``'s ``_orig_mod.``): always stripped."""
SHOWN = 3
"""Keys named per kind of problem in the one line."""


@dataclass
class LoadReport:
    """What a fine-tune loaded: recorded in the W&B config and the model card."""

    source: str
    loaded: int
    container: str | None = None
    stripped: list[str] = field(default_factory=list)
    classifier: tuple[int, int] | None = None
    """(classes in the file, classes now) when the classifier was reset; ``None`` when it was loaded."""
    stem: tuple[int, int] | None = None
    """(channels in the file, channels now) when the first convolution was adapted."""
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)

    def line(self) -> str:
        parts = [f"loaded {self.loaded} tensors from {self.source}"]
        if self.container:
            parts[0] += f" (its {self.container!r})"
        if self.stripped:
            parts.append("stripped " + " and ".join(repr(p) for p in self.stripped))
        if self.classifier:
            old, new = self.classifier
            parts.append(f"classifier reset ({old} → {new} classes)" if old else "classifier reset (none in the file)")
        if self.stem:
            parts.append(f"stem adapted ({self.stem[0]} → {self.stem[1]} channels)")
        if self.problems():
            parts.append(f"left at their initial values: {self.problems()}")
        return "; ".join(parts)

    def problems(self) -> str:
        """``3 missing (a, b, c …), 1 unexpected (d)``, or ``""`` when every key fits."""
        said = []
        for what, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                           ("with another shape", self.mismatched)):
            if keys:
                more = " …" if len(keys) > SHOWN else ""
                said.append(f"{len(keys)} {what} ({', '.join(keys[:SHOWN])}{more})")
        return ", ".join(said)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_pretrained(model: torch.nn.Module, path: str, *, name: str, strict: bool = True,
                    prefix: str | None = None) -> LoadReport:
    """Load the weights file at ``path`` into ``model`` (timm model ``name``) and say what happened.

    The classifier is reset when its shape differs (another number of classes); the first convolution is adapted
    with timm's ``adapt_input_conv`` when only its input channels differ. Any other missing, unexpected or misshapen
    key is a :class:`ConfigError` (``strict``), or a warning and a partial load (not ``strict``).
    """
    state, container = read_weights(path)
    target = model.state_dict()
    state, stripped = _strip(state, prefix, path)
    head = classifier_keys(model)
    stem = _first_conv(model)
    fit: dict[str, torch.Tensor] = {}
    report = LoadReport(source=path, loaded=0, container=container, stripped=stripped)
    for key, value in state.items():
        want = target.get(key)
        if want is None:
            report.unexpected.append(key)
        elif want.shape == value.shape:
            fit[key] = value
        elif key in head:
            report.classifier = (int(value.shape[0]), int(want.shape[0]))
        elif key == stem and value.dim() == 4 and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]:
            from timm.models import adapt_input_conv

            fit[key] = adapt_input_conv(int(want.shape[1]), value)
            report.stem = (int(value.shape[1]), int(want.shape[1]))
        else:
            report.mismatched.append(f"{key} {tuple(value.shape)}→{tuple(want.shape)}")
    absent = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    report.missing = [k for k in absent if k not in head]
    if any(k in head for k in absent) and report.classifier is None:
        report.classifier = (0, _classes(model))
    _check(report, fit, model=name, strict=strict, foreign=_foreign_prefix(state, set(target)))
    model.load_state_dict(fit, strict=False)
    report.loaded = len(fit)
    return report


def classifier_keys(model: torch.nn.Module) -> set[str]:
    """The state-dict keys of the model's classifier (timm's ``pretrained_cfg["classifier"]``, or
    ``get_classifier()``)."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    names = [names] if isinstance(names, str) else list(names or ())
    if not names and hasattr(model, "get_classifier"):
        head = model.get_classifier()
        names = [n for n, m in model.named_modules() if m is head and n]
    return {f"{n}.{p}" for n in names for p in ("weight", "bias")}


def _classes(model: torch.nn.Module) -> int:
    return int(getattr(model, "num_classes", 0) or 0)


def _first_conv(model: torch.nn.Module) -> str | None:
    conv = (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    if isinstance(conv, str):
        return f"{conv}.weight"
    first = next((n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)), None)
    return f"{first}.weight" if first else None


def _strip(state: dict[str, torch.Tensor], prefix: str | None, path: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    stripped = []
    if prefix:
        if not any(k.startswith(prefix) for k in state):
            starts = sorted({k.split(".", 1)[0] + "." for k in state})[:4]
            raise ConfigError(f"model.pretrained_prefix={prefix!r}: no key of {path!r} starts with it (its keys start "
                              f"with {', '.join(repr(s) for s in starts)}); fix or drop model.pretrained_prefix")
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        stripped.append(prefix)
    for _ in range(2):  # module._orig_mod. (a compiled model inside DDP) and the other way round
        for wrapper in WRAPPERS:
            if all(k.startswith(wrapper) for k in state):
                state = {k[len(wrapper):]: v for k, v in state.items()}
                stripped.append(wrapper)
    return state, stripped


def _foreign_prefix(state: dict[str, torch.Tensor], model_keys: set[str]) -> str | None:
    """A first key component (``backbone.``) that, stripped, makes most of the file's keys the model's."""
    if len(set(state) & model_keys) >= len(model_keys) // 2:
        return None
    for head, _count in Counter(k.split(".", 1)[0] + "." for k in state if "." in k).most_common(3):
        rest = {k[len(head):] for k in state if k.startswith(head)}
        if len(rest & model_keys) >= max(1, len(model_keys) // 2):
            return head
    return None


def _check(report: LoadReport, fit: dict[str, torch.Tensor], *, model: str, strict: bool, foreign: str | None) -> None:
    problems = report.problems()
    where = f"model.pretrained_file={report.source!r}"
    if foreign:
        raise ConfigError(f"{where}: its keys carry the prefix {foreign!r} ({problems}); set "
                          f"model.pretrained_prefix={foreign} to load what is under it")
    if not problems:
        return
    if not fit:
        raise ConfigError(f"{where} holds no tensor of model {model!r} ({problems}); give weights of this "
                          "architecture")
    if strict:
        raise ConfigError(f"{where} does not fit model {model!r}: {problems}; give weights of this architecture, or "
                          f"set model.pretrained_strict=false to load the {len(fit)} tensors that fit")
    import warnings

    warnings.warn(f"trickbox: {where} fits model {model!r} only in part: {problems}; loading the {len(fit)} "
                  "tensors that fit (model.pretrained_strict=false)", stacklevel=3)
