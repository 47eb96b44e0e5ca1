"""A study spec (``sweeps/*.yaml``, the format key by key in ``docs/sweeps.md``), validated whole before anything runs.

The sweep knows no trick by name: it asks the installed tricks (their parameter declarations, whether they
implement ``trickbox_report_epochs``, which parameters are artifacts a ``train_first:`` run fills).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..scalars import Limits, bounded, check_fields, check_scalar, did_you_mean
from ..trick import Param, Search

SPEC_KEYS = ("study", "base", "search", "objective", "direction", "sampler", "pruner", "pruning", "seeds",
             "train_first", "variants", "columns", "description", "n_trials", "timeout", "retries", "heartbeat",
             "distributed", "keep_checkpoints")
VARIANT = "variant"
FIRST_DIR = "train_first"
"""The folder under the study where the ``train_first:`` run is trained."""
CONFIG_SECTIONS = ("data", "model", "optim", "train", "plugins")
NOT_SEARCHABLE = (
    "train.out_dir", "train.run_name", "train.tracker", "train.mixed_precision", "train.project",
    "train.progress", "train.stop_after_epoch",
)
SAMPLERS = {"tpe": "TPESampler", "random": "RandomSampler", "grid": "GridSampler"}
PRUNERS = {"median": "MedianPruner", "hyperband": "HyperbandPruner", "threshold": "ThresholdPruner",
           "none": "NopPruner"}
MAXIMIZE = ("top1", "top5", "best_top1", "accuracy", "acc")
MINIMIZE = ("nll", "ece", "loss", "error", "err")
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
RANGE_KEYS = ("low", "high", "log", "step", "choices", "type")
SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: the Optuna distribution it is drawn from and where its value goes in the config."""

    name: str
    distribution: Any
    """An ``optuna.distributions`` object, built by :meth:`trickbox.Search.distribution`."""
    target: tuple[str, ...] = ()
    """Path in the config mapping, e.g. ``("tricks", "<trick>", "<param>")``; ``()`` for a script's own parameter."""
    step_given: bool = field(default=False, compare=False, repr=False)
    """Whether an integer range spelled its step (only :meth:`identity` tells ``step: 1`` from no step)."""

    @classmethod
    def of(cls, name: str, kind: str, search: Search, target: tuple[str, ...] = ()) -> Dimension:
        return cls(name, search.distribution(kind), target, step_given=search.step is not None)

    @property
    def kind(self) -> str:
        from optuna.distributions import CategoricalDistribution, IntDistribution

        d = self.distribution
        return "categorical" if isinstance(d, CategoricalDistribution) else "int" if isinstance(d, IntDistribution) \
            else "float"

    @property
    def search(self) -> Search:
        return Search.of(self.distribution)

    @property
    def choices(self) -> tuple[Any, ...] | None:
        return self.search.choices

    def bounds(self) -> list[Any]:
        """The values that must all be valid: every choice, or both ends of the range."""
        s = self.search
        return list(s.choices) if s.choices is not None else [s.low, s.high]

    def suggest(self, trial: Any) -> Any:
        d = self.distribution
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(d.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, d.low, d.high, log=d.log, step=d.step)
        return trial.suggest_float(self.name, d.low, d.high, log=d.log, step=d.step)

    def describe(self) -> str:
        return f"{self.name} in {self.search.describe()}"

    def identity(self) -> dict[str, Any]:
        """What the study fingerprint hashes. The keys and values are those fingerprints have always hashed, so a
        study created by an earlier trickbox still matches its spec."""
        s = self.search
        step = s.step if self.kind != "int" or self.step_given else None
        return {"name": self.name, "kind": self.kind, "low": s.low, "high": s.high, "log": s.log, "step": step,
                "choices": s.choices, "target": self.target}


@dataclass(frozen=True)
class Choice:
    """A sampler or pruner: its name and its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Heartbeat:
    """Optuna's heartbeats on RDB storages, and the lease of journal trials (seconds)."""

    interval: int = bounded(10, low=1)
    grace: int | None = bounded(None, low=1)
    """Default: 3 x interval."""


@dataclass
class Distributed:
    timeout: float = bounded(1800.0, low=0, low_open=True)
    """The process-group timeout of ``accelerate launch train.py --sweep`` (the backstop against a hang)."""
    failure_wait: float = bounded(60.0, low=0, low_open=True)
    """How long a failed rank waits for the others to leave the trial too."""


@dataclass
class Options:
    """The spec's plain keys: checked like a config section (unknown keys, types, ranges)."""

    description: str = ""
    n_trials: int | None = bounded(None, low=1)
    timeout: float | None = bounded(None, low=0, low_open=True)
    retries: int = bounded(2, low=0)
    keep_checkpoints: bool = False
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    distributed: Distributed = field(default_factory=Distributed)


@dataclass
class SweepSpec:
    """A validated study spec. Build it with :func:`load_spec`."""

    study: str
    base: dict[str, Any]
    """The training config mapping every trial starts from (files, inline keys and overrides merged)."""
    search: list[Dimension]
    objective: str
    direction: str
    sampler: Choice = field(default_factory=lambda: Choice("tpe"))
    pruner: Choice = field(default_factory=lambda: Choice("median"))
    restart_aware: bool = False
    n_trials: int | None = None
    timeout: float | None = None
    seeds: list[int] | None = None
    train_first: dict[str, Any] | None = None
    """A config trained once before the trials; its run directory fills every unset artifact parameter."""
    artifacts: dict[str, list[str]] = field(default_factory=dict)
    """Per trick, its parameters declared ``Param(artifact=True)`` (filled from ``train_first``)."""
    options: Options = field(default_factory=Options)
    path: Path | None = None
    script: bool = False
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Named config fragments; the dimension ``variant`` picks one per trial."""
    columns: list[dict[str, Any]] = field(default_factory=list)
    """``report.md`` columns: ``{"metric": key, "title": str, "error": bool}``."""

    @property
    def retries(self) -> int:
        return self.options.retries

    @property
    def heartbeat(self) -> tuple[int, int]:
        """(interval, grace) in seconds."""
        hb = self.options.heartbeat
        return hb.interval, hb.grace or 3 * hb.interval

    @property
    def is_grid(self) -> bool:
        return self.sampler.name == "grid"

    @property
    def grid_size(self) -> int:
        return math.prod(len(d.bounds()) for d in self.search) if self.is_grid else 0

    def dimension(self, name: str) -> Dimension:
        for d in self.search:
            if d.name == name:
                return d
        raise KeyError(name)

    def trial_mapping(self, params: Mapping[str, Any], first_dir: str | None = None) -> dict[str, Any]:
        """The training config mapping of one trial: the base with ``params`` (and the ``train_first`` run) in place."""
        from ..config import _merge, nested

        mapping = copy.deepcopy(self.base)
        if VARIANT in params and self.variants:
            mapping = _merge(mapping, copy.deepcopy(self.variants[params[VARIANT]]))
        for d in self.search:
            if d.name in params and d.target and d.name != VARIANT:
                mapping = _merge(mapping, nested(d.target, params[d.name]))
        if first_dir is not None:
            tricks = mapping.get("tricks") or {}
            for trick, names in self.artifacts.items():
                if trick in tricks:
                    unset = {n: first_dir for n in names if not (tricks[trick] or {}).get(n)}
                    mapping = _merge(mapping, {"tricks": {trick: unset}})
        return mapping

    def base_train(self) -> Mapping[str, Any]:
        """The base config's ``train`` section as written (empty when it has none)."""
        train = self.base.get("train")
        return train if isinstance(train, Mapping) else {}

    def first_mapping(self) -> dict[str, Any]:
        """The ``train_first`` run's config. It trains on the sweep's Accelerator, so it tracks as the trials do:
        the base's ``train.tracker``, when the base sets one, wins over its own."""
        from ..config import _merge

        mapping = copy.deepcopy(self.train_first or {})
        if "tracker" in self.base_train():
            mapping = _merge(mapping, {"train": {"tracker": self.base_train()["tracker"]}})
        return mapping

    def fingerprint(self) -> str:
        """What makes two specs the same study: base, search space, objective, sampler, seeds."""
        body = {
            "base": self.base, "search": [d.identity() for d in self.search], "objective": self.objective,
            "direction": self.direction, "sampler": self.sampler.name, "seeds": self.seeds, "teacher": self.train_first,
        }
        if self.variants:
            body["variants"] = self.variants
        return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def summary(self) -> dict[str, Any]:
        """What the study records about itself (for ``trickbox report``)."""
        train = self.base_train()
        return {
            "fingerprint": self.fingerprint(), "objective": self.objective, "direction": self.direction,
            "sampler": self.sampler.name, "pruner": self.pruner.name, "grid": self.is_grid, "seeds": self.seeds,
            "search": [d.describe() for d in self.search], "params": [d.name for d in self.search],
            "spec": str(self.path) if self.path else None, "project": train.get("project", "trickbox"),
            "tracker": train.get("tracker", "wandb"), "script": self.script,
            "choices": {d.name: d.bounds() for d in self.search if d.kind == "categorical"},
            "columns": self.columns,
        }


# -- loading -----------------------------------------------------------------
def load_spec(path: str | Path, overrides: Sequence[str] = (), **kwargs: Any) -> SweepSpec:
    """Read and validate a spec file; every problem is a one-line :class:`ConfigError`."""
    from ..config import read_yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep spec {str(p)!r} does not exist; pass a YAML file such as sweeps/smoke.yaml")
    return spec_from_mapping(read_yaml(p), path=p, overrides=overrides, **kwargs)


def spec_from_mapping(
    raw: Mapping[str, Any],
    *,
    path: Path | None = None,
    overrides: Sequence[str] = (),
    study: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    script: bool = False,
    catalog: Any = None,
) -> SweepSpec:
    from ..registry import discover

    where = str(path) if path else "spec"
    for key in raw:
        if key == "teacher":
            raise ConfigError(f"{where}: the key teacher: is now called train_first: (a run trained once before the "
                              "trials); rename it")
        if key not in SPEC_KEYS + tuple(f.name for f in dataclasses.fields(Options)):
            raise ConfigError(f"unknown key {key!r} in {where}{did_you_mean(str(key), SPEC_KEYS)}")
    root = path.parent if path else Path.cwd()
    name = study or raw.get("study") or (path.stem if path else None)
    if not isinstance(name, str) or not STUDY_NAME.match(name):
        raise ConfigError(f"study name {name!r} must be 1-100 letters, digits, '_', '.' or '-' (set study: NAME or "
                          "--study NAME)")

    base = _base_mapping(raw.get("base"), root, overrides, "base")
    cat = catalog or discover(block=_block_list(base))
    first = _base_mapping(raw["train_first"], root, (), "train_first") if raw.get("train_first") is not None else None
    artifacts = _artifacts(cat)
    _check_base(base, cat, artifacts if first is not None else {})
    variants = _variants(raw.get("variants"), base, cat, artifacts if first is not None else {})
    if first is not None:
        _check_first(first, [base, *(_merged(base, v) for v in variants.values())], artifacts)

    search_raw = raw.get("search")
    if search_raw is None and variants:
        search_raw = {}
    if not isinstance(search_raw, Mapping) or not (search_raw or variants):
        raise ConfigError("search must be a non-empty mapping of parameter: range, e.g. optim.lr: {low: 0.01, high: "
                          "0.2, log: true}")
    if VARIANT in search_raw:
        raise ConfigError(f"search: {VARIANT!r} is the dimension that variants: creates; list the rows under variants: "
                          "instead")
    dims = [_dimension(str(k), v, base, cat, script) for k, v in search_raw.items()]
    if variants:
        dims.insert(0, Dimension.of(VARIANT, "categorical", Search(choices=tuple(variants)), (VARIANT,)))
    names = [d.name for d in dims]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"search names {dupes[0]!r} twice (as <trick>.<param> and tricks.<trick>.<param>); keep one")

    objective, direction = _objective(raw.get("objective"), raw.get("direction"))
    sampler = _choice("sampler", raw.get("sampler", "tpe"), SAMPLERS)
    pruner = _choice("pruner", raw.get("pruner", "median"), PRUNERS)
    seeds = _seeds(raw.get("seeds"), sampler, names)
    if seeds is not None:
        dims.append(Dimension.of("train.seed", "categorical", Search(choices=tuple(seeds)), ("train", "seed")))
    loose = [d for d in dims if d.kind != "categorical"]
    if sampler.name == "grid" and loose:
        raise ConfigError(f"sampler grid needs choices for every searched parameter; {loose[0].describe()} is a range: "
                          f"write {loose[0].name}: {{choices: [...]}}")

    spec = SweepSpec(
        study=name, base=base, search=dims, objective=objective, direction=direction, sampler=sampler, pruner=pruner,
        restart_aware=_pruning(raw.get("pruning"), base, cat), seeds=seeds, train_first=first, artifacts=artifacts,
        path=path, script=script, variants=variants, columns=_columns(raw.get("columns")),
        options=_options(raw, n_trials, timeout),
    )
    spec.n_trials, spec.timeout = spec.options.n_trials, spec.options.timeout
    if spec.is_grid:
        if spec.n_trials is None:
            spec.n_trials = spec.grid_size
        elif spec.n_trials > spec.grid_size:
            raise ConfigError(f"n_trials={spec.n_trials} exceeds the grid's {spec.grid_size} points; drop n_trials or "
                              "add choices")
    if spec.n_trials is None and spec.timeout is None:
        raise ConfigError("give the study a budget: n_trials: N and/or timeout: SECONDS")
    _check_trial_configs(spec)
    return spec


def _block_list(base: Mapping[str, Any]) -> list[str]:
    plugins = base.get("plugins")
    block = plugins.get("block") if isinstance(plugins, Mapping) else None
    return [str(b) for b in block] if isinstance(block, list) else []


def _base_mapping(value: Any, root: Path, overrides: Sequence[str], key: str) -> dict[str, Any]:
    """Config files named by ``config:`` (relative to the spec), then the inline keys, then overrides."""
    from ..config import default_config_path, merged_mapping

    if not isinstance(value, (Mapping, type(None))):
        raise ConfigError(f"{key} must be a training config mapping (data:, model:, train:, tricks: ...), got "
                          f"{value!r}")
    inline = dict(value or {})
    files = inline.pop("config", None) or []
    files = [files] if isinstance(files, str) else files
    if not (isinstance(files, list) and all(isinstance(f, str) for f in files)):
        raise ConfigError(f"{key}.config must be a file name or a list of file names, got {files!r}")
    paths = [default_config_path() if f == "default" else Path(f) if Path(f).is_absolute() or Path(f).is_file()
             else root / f
             for f in files]
    return merged_mapping([], overrides, _merged(merged_mapping(paths), inline))


def _merged(base: Mapping[str, Any], fragment: Mapping[str, Any]) -> dict[str, Any]:
    from ..config import _merge

    return _merge(copy.deepcopy(dict(base)), copy.deepcopy(dict(fragment)))


def _artifacts(cat: Any) -> dict[str, list[str]]:
    return {name: [p.name for p in info.cls.params if p.artifact] for name, info in cat.tricks.items()
            if any(p.artifact for p in info.cls.params)}


def _check_base(base: dict[str, Any], cat: Any, filled: dict[str, list[str]]) -> None:
    """Core keys through the config loader; trick parameters through their declarations (artifacts filled in)."""
    from ..config import load_config

    cfg = load_config(base=copy.deepcopy(base))
    for name, values in cfg.tricks.items():
        info = cat.get(name)
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"base.tricks.{name} must be a mapping of parameters, got {values!r}")
        vals = dict(values or {})
        for pname in filled.get(name, []):
            vals.setdefault(pname, "<the train_first run>")
        info.cls.resolve(vals)


def _check_first(first: dict[str, Any], configs: list[dict[str, Any]], artifacts: dict[str, list[str]]) -> None:
    from ..config import load_config

    users = [(t, p) for cfg in configs for t, values in (cfg.get("tricks") or {}).items() if t in artifacts
             for p in artifacts[t] if values is not None]
    if not users:
        needy = ", ".join(f"{t}.{p}" for t, ps in artifacts.items() for p in ps) or "none is installed"
        raise ConfigError(f"train_first: trains a run for a trick parameter that names one ({needy}), but no enabled "
                          "trick has such a parameter; enable the trick under base.tricks or drop train_first:")
    for trick, pname in users:
        if ((configs[0].get("tricks") or {}).get(trick) or {}).get(pname):
            raise ConfigError(f"give tricks.{trick}.{pname} either in base (a run directory) or as a train_first: "
                              "section, not both")
    for trick in first.get("tricks") or {}:
        if trick in artifacts:
            raise ConfigError(f"the train_first: run cannot use {trick} itself (it needs a run trained first); "
                              f"remove tricks.{trick} from train_first:")
    load_config(base=copy.deepcopy(first))


def _variants(value: Any, base: dict[str, Any], cat: Any, filled: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """``variants:``: names → config fragments; each merged over ``base`` must be a valid config."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not value:
        raise ConfigError("variants must be a mapping of row name: config fragment, e.g. {baseline: {tricks: {<trick>: "
                          "null}}, with it: {}}")
    out: dict[str, dict[str, Any]] = {}
    for name, frag in value.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"variant names must be non-empty strings, got {name!r}")
        if not isinstance(frag, (Mapping, type(None))):
            raise ConfigError(f"variant {name!r} must be a config fragment (data:, model:, train:, tricks: ...), got "
                              f"{frag!r}")
        try:
            _check_base(_merged(base, frag or {}), cat, filled)
        except ConfigError as exc:
            raise ConfigError(f"variant {name!r}: {exc}") from None
        out[name] = copy.deepcopy(dict(frag or {}))
    return out


def _columns(value: Any) -> list[dict[str, Any]]:
    """``columns:``: metric names, or ``{metric, title, error}`` mappings (error: shown as 100·(1 − value) %)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"columns must be a list of metric names or {{metric: KEY, title: TEXT, error: BOOL}}, got "
                          f"{value!r}")
    out = []
    for item in value:
        item = {"metric": item} if isinstance(item, str) else item
        if not isinstance(item, Mapping) or not isinstance(item.get("metric"), str) or not item["metric"]:
            raise ConfigError(f"columns entry {item!r} needs metric: KEY, e.g. test/top1 or at_best_val/test/top1")
        extra = set(item) - {"metric", "title", "error"}
        if extra:
            raise ConfigError(f"columns entry {dict(item)!r}: unknown key {sorted(extra)[0]!r}; use metric, title, "
                              "error")
        error = check_scalar(f"columns entry {item['metric']}: error", item.get("error", False), bool)
        title = item.get("title") or (f"{item['metric']} error (%)" if error else item["metric"])
        out.append({"metric": item["metric"], "title": str(title), "error": error})
    return out


def _check_trial_configs(spec: SweepSpec) -> None:
    """Every searched bound and choice of a config key must make a valid training config."""
    from ..config import load_config

    if spec.script:
        return
    for d in spec.search:
        if not d.target or d.target[0] == "tricks" or d.name == VARIANT:
            continue
        for v in d.bounds():
            try:
                load_config(base=spec.trial_mapping({d.name: int(v) if d.kind == "int" else v}))  # type: ignore[arg-type]
            except ConfigError as exc:
                raise ConfigError(f"search {d.name}: value {v!r} makes an invalid config: {exc}") from None


# -- search dimensions ---------------------------------------------------------
def _dimension(key: str, value: Any, base: Mapping[str, Any], cat: Any, script: bool) -> Dimension:
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"search key {key!r} must be dotted, e.g. <trick>.<param> or optim.lr")
    if parts[0] == "tricks":
        if len(parts) != 3:
            raise ConfigError(f"search key {key!r} must be tricks.<trick>.<param>")
        parts = parts[1:]
    elif parts[0] in CONFIG_SECTIONS:
        return _config_dimension(key, parts, value)
    if len(parts) == 2 and (parts[0] in cat.tricks or parts[0] in (base.get("tricks") or {})):
        return _trick_dimension(parts[0], parts[1], value, base, cat)
    if script:
        return _script_dimension(key, value)
    if len(parts) == 2 and parts[0] not in cat.tricks:
        cat.get(parts[0])  # raises: unknown trick, with did-you-mean and the valid names
    valid = sorted(cat.tricks) + list(CONFIG_SECTIONS)
    raise ConfigError(f"search key {key!r} is neither <trick>.<param> nor a config key{did_you_mean(parts[0], valid)}")


def _trick_dimension(trick: str, pname: str, value: Any, base: Mapping[str, Any], cat: Any) -> Dimension:
    params = {p.name: p for p in cat.get(trick).cls.params}
    if pname not in params:
        raise ConfigError(f"search key {trick}.{pname}: trick {trick} has no parameter "
                          f"{pname!r}{did_you_mean(pname, list(params))}")
    if trick not in (base.get("tricks") or {}):
        raise ConfigError(f"search key {trick}.{pname}: trick {trick} is not enabled; add {trick}: {{}} under "
                          "base.tricks")
    p: Param = params[pname]
    name = f"{trick}.{pname}"
    if p.type not in (str, bool, int, float) and p.choices is None:
        raise ConfigError(f"search key {name}: a {p.type.__name__} parameter cannot be searched")
    kind = "categorical" if p.type in (str, bool) or p.choices is not None else p.type.__name__
    dim = _parse_range(name, value, _declared(p), kind, ("tricks", trick, pname))
    for v in dim.bounds():  # every bound is a valid value
        p.validate(int(v) if dim.kind == "int" else v, f"search {name}")  # type: ignore[arg-type]
    return dim


def _declared(p: Param) -> dict[str, Any] | None:
    s = p.search
    if s is not None:
        return ({"choices": list(s.choices)} if s.choices is not None
                else {k: v for k, v in dataclasses.asdict(s).items() if k != "choices"})
    if p.choices is not None:
        return {"choices": list(p.choices)}
    return {"choices": [False, True]} if p.type is bool else None


def _config_dimension(key: str, parts: list[str], value: Any) -> Dimension:
    from ..config import key_type

    if key in NOT_SEARCHABLE or parts[0] == "plugins":
        raise ConfigError(f"search key {key} cannot be searched: the sweep sets it (or all trials share it); set it in "
                          "base:")
    try:
        hint = key_type(parts)
    except ConfigError as exc:
        raise ConfigError(f"search key {key}: {exc}") from None
    if value is None or value == "default" or (isinstance(value, Mapping) and not value):
        raise ConfigError(f"search key {key} is a config key with no declared range; give {{low: ..., high: ...}} or "
                          f"{{choices: [...]}}")
    return _parse_range(key, value, None, {float: "float", int: "int"}.get(hint, "categorical"), tuple(parts))


def _script_dimension(key: str, value: Any) -> Dimension:
    if value is None or value == "default" or (isinstance(value, Mapping) and not value):
        raise ConfigError(f"search key {key} is a parameter of the script; give {{low: ..., high: ...}} or {{choices: "
                          f"[...]}}")
    kind = "categorical"
    if isinstance(value, Mapping) and "choices" not in value:
        bounds = [value.get(k) for k in ("low", "high") if value.get(k) is not None]
        ints = bounds and all(isinstance(v, int) and not isinstance(v, bool) for v in bounds) and not value.get("log")
        kind = str(value.get("type") or ("int" if ints else "float"))
        if kind not in ("int", "float"):
            raise ConfigError(f"search {key}.type must be int or float, got {kind!r}")
    return _parse_range(key, value, None, kind, ())


def _parse_range(name: str, value: Any, declared: dict[str, Any] | None, kind: str,
                 target: tuple[str, ...]) -> Dimension:
    if value is None or value == "default" or (isinstance(value, Mapping) and not value):
        if declared is None:
            raise ConfigError(f"search {name}: the trick declares no search range; give {{low: ..., high: ...}} or "
                              f"{{choices: [...]}}")
        spec = dict(declared)
    elif isinstance(value, list):
        spec = {"choices": value}
    elif isinstance(value, Mapping):
        for k in value:
            if k not in RANGE_KEYS or (k == "type" and target):
                raise ConfigError(f"search {name}: unknown key {k!r}{did_you_mean(str(k), RANGE_KEYS[:5])}")
        if "choices" in value and len(value) > 1:
            raise ConfigError(f"search {name}: choices cannot be combined with "
                              f"{[k for k in value if k != 'choices'][0]}")
        spec = {} if "choices" in value or not declared or "choices" in declared else dict(declared)
        spec.update({k: v for k, v in value.items() if k != "type"})
    else:
        raise ConfigError(f"search {name}: give a range {{low: ..., high: ...}}, a list of choices, or default; got "
                          f"{value!r}")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"search {name}.choices must be a non-empty list, got {choices!r}")
        if not all(isinstance(c, SCALARS) for c in choices):
            raise ConfigError(f"search {name}.choices must hold numbers, strings, booleans or null, got {choices!r}")
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise ConfigError(f"search {name}.choices holds a value twice: {choices!r}")
        return Dimension.of(name, "categorical", Search(choices=tuple(choices)), target)
    if kind == "categorical":
        raise ConfigError(f"search {name} takes choices, not a range; write {name}: {{choices: [...]}}")
    number = int if kind == "int" else float
    low, high = (check_scalar(f"search {name}.{b}", spec.get(b), number) for b in ("low", "high"))
    log = check_scalar(f"search {name}.log", spec.get("log", False), bool)
    step = check_scalar(f"search {name}.step", spec.get("step"), number, Limits(low=0, low_open=True), optional=True)
    if not low < high:
        raise ConfigError(f"search {name}: low ({low:g}) must be below high ({high:g})")
    if log and step is not None:
        raise ConfigError(f"search {name}: log and step cannot be combined; drop one")
    if log and not low > 0:
        raise ConfigError(f"search {name}: a log range needs low > 0, got {low}")
    return Dimension.of(name, kind, Search(low, high, log, step), target)


# -- the rest of the spec --------------------------------------------------------
def _objective(objective: Any, direction: Any) -> tuple[str, str]:
    if not isinstance(objective, str) or not objective:
        raise ConfigError("objective must name a validation metric, e.g. objective: val/top1")
    if objective.startswith("test"):
        fix = "val" + objective[4:] if objective.startswith("test/") else "val/top1"
        raise ConfigError(f"objective {objective!r} uses the test split: a sweep selects on validation metrics "
                          f"(use {fix}); test is for the final report")
    if not objective.startswith("val/"):
        raise ConfigError(f"objective {objective!r} must be a validation metric: val/top1, val/top5, val/nll, val/ece "
                          "or a trick's val/* metric")
    metric = objective.split("/", 1)[1]
    if direction is None:
        direction = "maximize" if metric in MAXIMIZE else "minimize" if metric in MINIMIZE else None
        if direction is None:
            raise ConfigError(f"set direction: maximize or minimize for objective {objective!r}")
    check_scalar("direction", direction, str, Limits(choices=("maximize", "minimize")))
    return objective, direction


def _choice(key: str, value: Any, known: dict[str, str]) -> Choice:
    """A sampler or pruner by name, its options checked by constructing Optuna's own class with them."""
    import inspect

    import optuna

    name, options = (value, {}) if isinstance(value, str) else (None, {})
    if isinstance(value, Mapping):
        options = dict(value)
        name = options.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"{key} must be one of {', '.join(known)} or a mapping with name:, got {value!r}")
    if name not in known:
        raise ConfigError(f"{key} {name!r} is not supported{did_you_mean(name, list(known))}")
    cls = getattr(optuna.samplers if key == "sampler" else optuna.pruners, known[name])
    allowed = [p for p in inspect.signature(cls).parameters if p not in ("search_space", "self")]
    for k, v in options.items():
        if k not in allowed:
            raise ConfigError(f"{key} {name} has no option {k!r}{did_you_mean(str(k), allowed)}")
        if not isinstance(v, (bool, int, float, str, type(None))):
            raise ConfigError(f"{key}.{k} must be a number, a string or true/false, got {v!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cls(**({"search_space": {}} if name == "grid" else {}), **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key} {name}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}") from None
    return Choice(name, options)


def _seeds(seeds: Any, sampler: Choice, names: list[str]) -> list[int] | None:
    if seeds is None:
        return None
    if not isinstance(seeds, list) or not seeds:
        raise ConfigError(f"seeds must be a non-empty list of integers >= 0, e.g. [0, 1, 2]; got {seeds!r}")
    seeds = [check_scalar(f"seeds[{i}]", s, int,
                          Limits(low=0, high=2**32, high_open=True)) for i, s in enumerate(seeds)]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds holds a seed twice: {seeds!r}")
    if sampler.name != "grid":
        raise ConfigError("seeds repeats every grid point once per seed and needs sampler: grid; with tpe/random put "
                          "train.seed in search or drop seeds")
    if "train.seed" in names:
        raise ConfigError("give the seeds either as seeds: [...] or as search: train.seed, not both")
    return seeds


def _pruning(value: Any, base: Mapping[str, Any], cat: Any) -> bool:
    if not isinstance(value, (Mapping, type(None))) or set(value or {}) - {"restart_aware"}:
        raise ConfigError(f"pruning must be a mapping such as {{restart_aware: true}}, got {value!r}")
    ra = check_scalar("pruning.restart_aware", (value or {}).get("restart_aware", False), bool)
    if ra and not any(hasattr(cat.get(t).cls, "trickbox_report_epochs") for t in (base.get("tricks") or {})):
        raise ConfigError("pruning.restart_aware reports only at the epochs the tricks call fair (a schedule's cycle "
                          "ends); no trick under base.tricks declares them (trickbox_report_epochs): enable one or "
                          "drop it")
    return ra


def _options(raw: Mapping[str, Any], n_trials: int | None, timeout: float | None) -> Options:
    from ..config import build

    keys = {f.name for f in dataclasses.fields(Options)}
    values = {k: v for k, v in raw.items() if k in keys and v is not None}
    values.update({k: v for k, v in (("n_trials", n_trials), ("timeout", timeout)) if v is not None})
    opts = build(Options, values)
    for section, obj in (("", opts), ("heartbeat.", opts.heartbeat), ("distributed.", opts.distributed)):
        check_fields(obj, section.rstrip(".") or "spec")
    if opts.heartbeat.grace is not None and opts.heartbeat.grace <= opts.heartbeat.interval:
        raise ConfigError(f"heartbeat.grace ({opts.heartbeat.grace}) must exceed heartbeat.interval "
                          f"({opts.heartbeat.interval})")
    return opts
