"""A study spec (``sweeps/*.yaml``): read with ``safe_load``, validated whole before anything runs.

::

    study: mixup                      # default: the file's stem
    base:                             # a training config, merged like a config file
      config: ../trickbox/configs/default.yaml   # optional file(s), relative to this spec
      train: {epochs: 30}
      tricks: {mixup: {}, sgdr: {}}
    search:
      mixup.alpha: {low: 0.05, high: 4, log: true}
      sgdr.t0: default                # the range the trick declares (Param.search)
      optim.lr: {low: 0.01, high: 0.2, log: true}
      mixup.pairing: {choices: [random, knn]}
    objective: val/top1               # a validation metric; test/* is refused
    direction: maximize               # inferred for top1/top5/nll/ece
    sampler: tpe                      # tpe | random | grid (grid: choices for every parameter)
    pruner: median                    # median | hyperband | threshold | none
    pruning: {restart_aware: false}   # true: report only at the end of each SGDR cycle
    n_trials: 20                      # and/or timeout: 3600 (seconds)
    seeds: [0, 1, 2]                  # grid only: every grid point once per seed
    teacher: {...}                    # distillation: train this teacher once, before the trials
    retries: 2                        # crashed trials are retried this often (same parameters)
    heartbeat: {interval: 10, grace: 30}       # RDB storages (PostgreSQL)
    distributed: {timeout: 1800, failure_wait: 60}
    keep_checkpoints: false           # keep finished trials' epoch checkpoints
    variants:                         # named rows, searched as the parameter "variant" (see below)
      ERM: {tricks: {mixup: null}}
      mixup AC+KNN: {tricks: {mixup: {pairing: knn}}}
    columns:                          # extra report.md columns (trial metrics), mean ± std over seeds
      - test/top1
      - {metric: at_best_val/test/top1, title: best test error (%), error: true}

A variant is a config fragment merged over ``base`` like a config file (a trick
set to ``null`` is switched off); the search dimension ``variant`` chooses among
them, so a table whose rows differ in more than one key is still one grid.

A search key is ``<trick>.<param>`` (or ``tricks.<trick>.<param>``), checked
against the installed tricks' parameter declarations, or a dotted config key
(``optim.lr``) with an explicit range. With ``--script`` other names are
allowed too (they are the script's own parameters; give a range).
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..trick import ConfigError, Param, did_you_mean

SPEC_KEYS = (
    "study", "description", "base", "search", "objective", "direction", "sampler", "pruner", "pruning",
    "n_trials", "timeout", "seeds", "teacher", "retries", "heartbeat", "distributed", "keep_checkpoints",
    "variants", "columns",
)
VARIANT = "variant"
CONFIG_SECTIONS = ("data", "model", "optim", "train", "plugins")
NOT_SEARCHABLE = (
    "train.out_dir", "train.run_name", "train.tracker", "train.mixed_precision", "train.project",
    "train.progress", "train.stop_after_epoch",
)
SAMPLERS = {"tpe": ("seed", "n_startup_trials", "multivariate", "constant_liar"), "random": ("seed",), "grid": ("seed",)}
PRUNERS = {
    "median": ("n_startup_trials", "n_warmup_steps", "interval_steps"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor"),
    "threshold": ("lower", "upper", "n_warmup_steps"),
    "none": (),
}
MAXIMIZE = ("top1", "top5", "best_top1", "accuracy", "acc")
MINIMIZE = ("nll", "ece", "loss", "error", "err")
STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
Scalar = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: its distribution and where its value goes in the training config."""

    name: str
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None
    target: tuple[str, ...] = ()
    """Path in the config mapping, e.g. ``("tricks", "mixup", "alpha")``; ``()`` for a script's own parameter."""

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices or ()))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))  # type: ignore[arg-type]
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)  # type: ignore[arg-type]

    def suggest(self, trial: Any) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices or ()))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))  # type: ignore[arg-type]
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log, step=self.step)  # type: ignore[arg-type]

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"{self.name} in {list(self.choices or ())}"
        extra = " log" if self.log else (f" step {self.step:g}" if self.step else "")
        return f"{self.name} in [{self.low:g}, {self.high:g}]{extra}"


@dataclass(frozen=True)
class Choice:
    """A sampler or pruner: its name and its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


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
    teacher: dict[str, Any] | None = None
    retries: int = 2
    heartbeat_interval: int = 10
    heartbeat_grace: int = 30
    dist_timeout: float = 1800.0
    failure_wait: float = 60.0
    keep_checkpoints: bool = False
    description: str = ""
    path: Path | None = None
    script: bool = False
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Named config fragments; the dimension ``variant`` picks one per trial."""
    columns: list[dict[str, Any]] = field(default_factory=list)
    """``report.md`` columns: ``{"metric": key, "title": str, "error": bool}``."""

    @property
    def is_grid(self) -> bool:
        return self.sampler.name == "grid"

    @property
    def grid_size(self) -> int:
        return math.prod(len(d.choices or ()) for d in self.search) if self.is_grid else 0

    def dimension(self, name: str) -> Dimension:
        for d in self.search:
            if d.name == name:
                return d
        raise KeyError(name)

    def trial_mapping(self, params: Mapping[str, Any], teacher_dir: str | None = None) -> dict[str, Any]:
        """The training config mapping of one trial: the base with ``params`` put in place."""
        from ..config import _merge, nested

        mapping = copy.deepcopy(self.base)
        if VARIANT in params and self.variants:
            mapping = _merge(mapping, copy.deepcopy(self.variants[params[VARIANT]]))
        for d in self.search:
            if d.name in params and d.target and d.name != VARIANT:
                mapping = _merge(mapping, nested(d.target, params[d.name]))
        if teacher_dir is not None and self.teacher is not None and "distillation" in (mapping.get("tricks") or {}):
            mapping = _merge(mapping, {"tricks": {"distillation": {"teacher": teacher_dir}}})
        return mapping

    def base_train(self) -> Mapping[str, Any]:
        """The base config's ``train`` section as written (empty when it has none)."""
        train = self.base.get("train")
        return train if isinstance(train, Mapping) else {}

    def teacher_mapping(self) -> dict[str, Any]:
        """The teacher's config mapping. It trains on the sweep's Accelerator, so it tracks as the trials do:
        the base's ``train.tracker``, when the base sets one, wins over the teacher's."""
        from ..config import _merge

        mapping = copy.deepcopy(self.teacher or {})
        if "tracker" in self.base_train():
            mapping = _merge(mapping, {"train": {"tracker": self.base_train()["tracker"]}})
        return mapping

    def fingerprint(self) -> str:
        """What makes two specs the same study: base, search space, objective, sampler, seeds."""
        body = {
            "base": self.base, "search": [dataclasses.asdict(d) for d in self.search], "objective": self.objective,
            "direction": self.direction, "sampler": self.sampler.name, "seeds": self.seeds, "teacher": self.teacher,
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
            "choices": {d.name: list(d.choices) for d in self.search if d.kind == "categorical" and d.choices},
            "columns": self.columns,
        }

    def report_epochs(self, epochs: int, sgdr: Mapping[str, Any] | None) -> list[int] | None:
        """Epochs (1-based) at which a restart-aware trial reports: the first epoch end at or after each cycle end."""
        if not self.restart_aware:
            return None
        from ..functional import sgdr_restarts

        sg = dict(sgdr or {})
        warmup = float(sg.get("warmup_epochs") or 0.0)
        t0 = sg.get("t0")
        t0 = float(t0) if t0 is not None else max(epochs - warmup, 1.0)
        ends = sgdr_restarts(float(epochs), t0, float(sg.get("t_mult") or 1.0), warmup)
        out = sorted({min(epochs, max(1, math.ceil(e - 1e-9))) for e in ends})
        return out or [epochs]


# -- loading -----------------------------------------------------------------
def load_spec(
    path: str | Path,
    overrides: Sequence[str] = (),
    *,
    study: str | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    script: bool = False,
    catalog: Any = None,
) -> SweepSpec:
    """Read and validate a spec file; every problem is a one-line :class:`ConfigError`."""
    from ..config import read_yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep spec {str(p)!r} does not exist; pass a YAML file such as sweeps/smoke.yaml")
    raw = read_yaml(p)
    return spec_from_mapping(raw, path=p, overrides=overrides, study=study, n_trials=n_trials, timeout=timeout,
                             script=script, catalog=catalog)


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
        if key not in SPEC_KEYS:
            raise ConfigError(f"unknown key {key!r} in {where}{did_you_mean(str(key), SPEC_KEYS)}")
    root = path.parent if path else Path.cwd()
    name = study or raw.get("study") or (path.stem if path else None)
    if not isinstance(name, str) or not STUDY_NAME.match(name):
        raise ConfigError(f"study name {name!r} must be 1-100 letters, digits, '_', '.' or '-' (set study: NAME or --study NAME)")

    base = _base_mapping(raw.get("base"), root, overrides, "base")
    cat = catalog or discover(block=_block_list(base))
    teacher = None
    if raw.get("teacher") is not None:
        teacher = _base_mapping(raw["teacher"], root, (), "teacher")
        _check_teacher(base, teacher)
    _check_base(base, cat, teacher is not None)

    variants = _variants(raw.get("variants"), base, cat, teacher is not None)
    search_raw = raw.get("search")
    if search_raw is None and variants:
        search_raw = {}
    if search_raw is None or not isinstance(search_raw, Mapping) or not (search_raw or variants):
        raise ConfigError("search must be a non-empty mapping of parameter: range, e.g. mixup.alpha: {low: 0.05, high: 4, log: true}")
    if VARIANT in search_raw:
        raise ConfigError(f"search: {VARIANT!r} is the dimension that variants: creates; list the rows under variants: instead")
    dims = [_dimension(str(k), v, base, cat, script) for k, v in search_raw.items()]
    if variants:
        dims.insert(0, Dimension(VARIANT, "categorical", choices=tuple(variants), target=(VARIANT,)))
    names = [d.name for d in dims]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"search names {sorted(dupes)[0]!r} twice (e.g. as mixup.x and tricks.mixup.x); keep one")

    objective, direction = _objective(raw.get("objective"), raw.get("direction"))
    sampler = _choice("sampler", raw.get("sampler", "tpe"), SAMPLERS)
    pruner = _choice("pruner", raw.get("pruner", "median"), PRUNERS)
    _check_pruner(pruner)
    restart_aware = _pruning(raw.get("pruning"), base)

    seeds = raw.get("seeds")
    if seeds is not None:
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise ConfigError(f"seeds must be a non-empty list of integers >= 0, e.g. [0, 1, 2]; got {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"seeds holds a seed twice: {seeds!r}")
        if sampler.name != "grid":
            raise ConfigError("seeds repeats every grid point once per seed and needs sampler: grid; with tpe/random put train.seed in search or drop seeds")
        if "train.seed" in names:
            raise ConfigError("give the seeds either as seeds: [...] or as search: train.seed, not both")
        dims.append(Dimension("train.seed", "categorical", choices=tuple(seeds), target=("train", "seed")))
    if sampler.name == "grid":
        loose = [d for d in dims if d.kind != "categorical"]
        if loose:
            raise ConfigError(
                f"sampler grid needs choices for every searched parameter; {loose[0].describe()} is a range: "
                f"write {loose[0].name}: {{choices: [...]}}"
            )

    n = n_trials if n_trials is not None else raw.get("n_trials")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ConfigError(f"n_trials must be an integer >= 1, got {n!r}")
    t = timeout if timeout is not None else raw.get("timeout")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0):
        raise ConfigError(f"timeout must be a number of seconds > 0, got {t!r}")
    spec = SweepSpec(
        study=name, base=base, search=dims, objective=objective, direction=direction, sampler=sampler, pruner=pruner,
        restart_aware=restart_aware, n_trials=n, timeout=float(t) if t is not None else None, seeds=seeds,
        teacher=teacher, path=path, script=script, description=str(raw.get("description") or ""),
        variants=variants, columns=_columns(raw.get("columns")),
    )
    if spec.is_grid:
        if spec.n_trials is None:
            spec.n_trials = spec.grid_size
        elif spec.n_trials > spec.grid_size:
            raise ConfigError(f"n_trials={spec.n_trials} exceeds the grid's {spec.grid_size} points; drop n_trials or add choices")
    if spec.n_trials is None and spec.timeout is None:
        raise ConfigError("give the study a budget: n_trials: N and/or timeout: SECONDS")
    spec.retries = _int_option(raw, "retries", 2, low=0)
    spec.keep_checkpoints = _bool_option(raw, "keep_checkpoints", False)
    hb = _section(raw, "heartbeat", ("interval", "grace"))
    spec.heartbeat_interval = _int_value("heartbeat.interval", hb.get("interval", 10), low=1)
    spec.heartbeat_grace = _int_value("heartbeat.grace", hb.get("grace", 3 * spec.heartbeat_interval), low=1)
    if spec.heartbeat_grace <= spec.heartbeat_interval:
        raise ConfigError(f"heartbeat.grace ({spec.heartbeat_grace}) must exceed heartbeat.interval ({spec.heartbeat_interval})")
    dist = _section(raw, "distributed", ("timeout", "failure_wait"))
    spec.dist_timeout = _seconds("distributed.timeout", dist.get("timeout", 1800))
    spec.failure_wait = _seconds("distributed.failure_wait", dist.get("failure_wait", 60))
    _check_trial_configs(spec, cat)
    return spec


def _block_list(base: Mapping[str, Any]) -> list[str]:
    plugins = base.get("plugins")
    block = plugins.get("block") if isinstance(plugins, Mapping) else None
    return [str(b) for b in block] if isinstance(block, list) else []


def _base_mapping(value: Any, root: Path, overrides: Sequence[str], key: str) -> dict[str, Any]:
    """Config files named by ``config:`` (relative to the spec), then the inline keys, then overrides."""
    from ..config import _merge, parse_override, read_yaml

    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a training config mapping (data:, model:, train:, tricks: ...), got {value!r}")
    inline = dict(value)
    files = inline.pop("config", None)
    if files is None:
        files = []
    elif isinstance(files, str):
        files = [files]
    elif not (isinstance(files, list) and all(isinstance(f, str) for f in files)):
        raise ConfigError(f"{key}.config must be a file name or a list of file names, got {files!r}")
    merged: dict[str, Any] = {}
    for f in files:
        merged = _merge(merged, read_yaml(_resolve_file(f, root)))
    merged = _merge(merged, inline)
    for o in overrides:
        merged = _merge(merged, parse_override(o))
    return merged


def _resolve_file(name: str, root: Path) -> Path:
    if name == "default":
        from ..config import default_config_path

        return default_config_path()
    p = Path(name)
    if p.is_absolute() or p.is_file():
        return p
    return root / p


def _check_base(base: dict[str, Any], cat: Any, has_teacher: bool) -> None:
    """Core keys through the config loader; trick parameters through their declarations."""
    from ..config import load_config

    probe = copy.deepcopy(base)
    cfg = load_config(base=probe)
    for name, values in cfg.tricks.items():
        info = cat.get(name)
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"base.tricks.{name} must be a mapping of parameters, got {values!r}")
        vals = dict(values or {})
        if name == "distillation" and has_teacher:
            vals.setdefault("teacher", "<trained by the spec's teacher section>")
        info.cls.resolve(vals)


def _check_teacher(base: dict[str, Any], teacher: dict[str, Any]) -> None:
    tricks = base.get("tricks") or {}
    if "distillation" not in tricks:
        raise ConfigError("teacher: trains a teacher for distillation, but base.tricks has no distillation; add distillation: {} or drop teacher:")
    dist = tricks.get("distillation") or {}
    if isinstance(dist, Mapping) and dist.get("teacher"):
        raise ConfigError("give the teacher either as base.tricks.distillation.teacher (a run directory) or as a teacher: section, not both")
    if "distillation" in (teacher.get("tricks") or {}):
        raise ConfigError("the teacher: config cannot use distillation itself; remove tricks.distillation from teacher:")
    from ..config import load_config

    load_config(base=copy.deepcopy(teacher))


def _variants(value: Any, base: dict[str, Any], cat: Any, has_teacher: bool) -> dict[str, dict[str, Any]]:
    """``variants:``: names → config fragments; each merged over ``base`` must be a valid config."""
    from ..config import _merge

    if value is None:
        return {}
    if not isinstance(value, Mapping) or not value:
        raise ConfigError("variants must be a mapping of row name: config fragment, e.g. {ERM: {tricks: {mixup: null}}, mixup: {}}")
    out: dict[str, dict[str, Any]] = {}
    for name, frag in value.items():
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"variant names must be non-empty strings, got {name!r}")
        if frag is None:
            frag = {}
        if not isinstance(frag, Mapping):
            raise ConfigError(f"variant {name!r} must be a config fragment (data:, model:, train:, tricks: ...), got {frag!r}")
        merged = _merge(copy.deepcopy(base), copy.deepcopy(dict(frag)))
        try:
            _check_base(merged, cat, has_teacher and "distillation" in (merged.get("tricks") or {}))
        except ConfigError as exc:
            raise ConfigError(f"variant {name!r}: {exc}") from None
        out[name] = copy.deepcopy(dict(frag))
    return out


def _columns(value: Any) -> list[dict[str, Any]]:
    """``columns:``: metric names, or ``{metric, title, error}`` mappings (error: shown as 100·(1 − value) %)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"columns must be a list of metric names or {{metric: KEY, title: TEXT, error: BOOL}}, got {value!r}")
    out = []
    for item in value:
        if isinstance(item, str):
            item = {"metric": item}
        if not isinstance(item, Mapping) or not isinstance(item.get("metric"), str) or not item["metric"]:
            raise ConfigError(f"columns entry {item!r} needs metric: KEY, e.g. test/top1 or at_best_val/test/top1")
        extra = set(item) - {"metric", "title", "error"}
        if extra:
            raise ConfigError(f"columns entry {dict(item)!r}: unknown key {sorted(extra)[0]!r}; use metric, title, error")
        error = item.get("error", False)
        if not isinstance(error, bool):
            raise ConfigError(f"columns entry {item['metric']}: error must be true or false, got {error!r}")
        title = item.get("title") or (f"{item['metric']} error (%)" if error else item["metric"])
        out.append({"metric": item["metric"], "title": str(title), "error": error})
    return out


def _check_trial_configs(spec: SweepSpec, cat: Any) -> None:
    """Every searched bound and choice must make a valid training config."""
    from ..config import load_config

    if spec.script:
        return
    for d in spec.search:
        if not d.target or d.target[0] == "tricks" or d.name == VARIANT:
            continue
        values = list(d.choices) if d.kind == "categorical" else [d.low, d.high]
        for v in values:
            if d.kind == "int":
                v = int(v)  # type: ignore[arg-type]
            try:
                load_config(base=spec.trial_mapping({d.name: v}))
            except ConfigError as exc:
                raise ConfigError(f"search {d.name}: value {v!r} makes an invalid config: {exc}") from None


# -- search dimensions ---------------------------------------------------------
def _dimension(key: str, value: Any, base: Mapping[str, Any], cat: Any, script: bool) -> Dimension:
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"search key {key!r} must be dotted, e.g. mixup.alpha or optim.lr")
    if parts[0] == "tricks":
        if len(parts) != 3:
            raise ConfigError(f"search key {key!r} must be tricks.<trick>.<param>, e.g. tricks.mixup.alpha")
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
    info = cat.get(trick)
    params = {p.name: p for p in info.cls.params}
    if pname not in params:
        raise ConfigError(f"search key {trick}.{pname}: trick {trick} has no parameter {pname!r}{did_you_mean(pname, list(params))}")
    if trick not in (base.get("tricks") or {}):
        raise ConfigError(f"search key {trick}.{pname}: trick {trick} is not enabled; add {trick}: {{}} under base.tricks")
    p: Param = params[pname]
    name = f"{trick}.{pname}"
    declared = _declared(p)
    if p.type in (str, bool) or p.choices is not None:
        typ = "categorical"
    elif p.type is int:
        typ = "int"
    elif p.type is float:
        typ = "float"
    else:
        raise ConfigError(f"search key {name}: a {p.type.__name__} parameter cannot be searched")
    dim = _parse_range(name, value, declared, typ, ("tricks", trick, pname))
    # every bound and choice must be a valid value of the parameter
    for v in (list(dim.choices) if dim.choices is not None else [dim.low, dim.high]):
        p.validate(int(v) if dim.kind == "int" else v, f"search {name}")
    return dim


def _declared(p: Param) -> dict[str, Any] | None:
    s = p.search
    if s is not None:
        if s.choices is not None:
            return {"choices": list(s.choices)}
        return {"low": s.low, "high": s.high, "log": s.log, "step": s.step}
    if p.choices is not None:
        return {"choices": list(p.choices)}
    if p.type is bool:
        return {"choices": [False, True]}
    return None


def _config_dimension(key: str, parts: list[str], value: Any) -> Dimension:
    from ..config import RunConfig

    if key in NOT_SEARCHABLE:
        raise ConfigError(f"search key {key} cannot be searched: the sweep sets it (or all trials share it); set it in base:")
    if parts[0] == "plugins":
        raise ConfigError(f"search key {key}: plugins.* cannot be searched")
    cls: Any = RunConfig
    hint: Any = None
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            if cls is dict:  # free-form mapping such as model.kwargs
                hint = None
                break
            raise ConfigError(f"search key {key}: {'.'.join(parts[:i])} has no sub-keys")
        names = [f.name for f in dataclasses.fields(cls)]
        if part not in names:
            raise ConfigError(f"search key {key}: unknown config key {'.'.join(parts[: i + 1])!r}{did_you_mean(part, names)}")
        hint = typing.get_type_hints(cls)[part]
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(inner) == 1:
            hint = inner[0]
        cls = typing.get_origin(hint) or hint
    if hint is float:
        typ = "float"
    elif hint is int:
        typ = "int"
    else:
        typ = "categorical"
    if value is None or value == "default" or (isinstance(value, Mapping) and not value):
        raise ConfigError(f"search key {key} is a config key with no declared range; give {{low: ..., high: ...}} or {{choices: [...]}}")
    return _parse_range(key, value, None, typ, tuple(parts))


def _script_dimension(key: str, value: Any) -> Dimension:
    if value is None or value == "default" or (isinstance(value, Mapping) and not value):
        raise ConfigError(f"search key {key} is a parameter of the script; give {{low: ..., high: ...}} or {{choices: [...]}}")
    typ = "categorical"
    if isinstance(value, Mapping) and "choices" not in value:
        typ = str(value.get("type") or "")
        if not typ:
            ints = [value.get(k) for k in ("low", "high") if value.get(k) is not None]
            typ = "int" if ints and all(isinstance(v, int) and not isinstance(v, bool) for v in ints) and not value.get("log") else "float"
        if typ not in ("int", "float"):
            raise ConfigError(f"search {key}.type must be int or float, got {typ!r}")
    return _parse_range(key, value, None, typ, ())


RANGE_KEYS = ("low", "high", "log", "step", "choices", "type")


def _parse_range(name: str, value: Any, declared: dict[str, Any] | None, typ: str, target: tuple[str, ...]) -> Dimension:
    if value is None or value == "default" or (isinstance(value, Mapping) and not value):
        if declared is None:
            raise ConfigError(f"search {name}: the trick declares no search range; give {{low: ..., high: ...}} or {{choices: [...]}}")
        spec = dict(declared)
    elif isinstance(value, list):
        spec = {"choices": value}
    elif isinstance(value, Mapping):
        for k in value:
            if k not in RANGE_KEYS or (k == "type" and target):
                raise ConfigError(f"search {name}: unknown key {k!r}{did_you_mean(str(k), RANGE_KEYS[:5])}")
        if "choices" in value:
            extra = [k for k in value if k not in ("choices",)]
            if extra:
                raise ConfigError(f"search {name}: choices cannot be combined with {extra[0]}")
            spec = {"choices": value["choices"]}
        else:
            spec = dict(declared or {}) if declared and "choices" not in declared else {}
            spec.update({k: v for k, v in value.items() if k != "type"})
    else:
        raise ConfigError(f"search {name}: give a range {{low: ..., high: ...}}, a list of choices, or default; got {value!r}")

    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"search {name}.choices must be a non-empty list, got {choices!r}")
        if not all(isinstance(c, Scalar) for c in choices):
            raise ConfigError(f"search {name}.choices must hold numbers, strings, booleans or null, got {choices!r}")
        if len({json.dumps(c) for c in choices}) != len(choices):
            raise ConfigError(f"search {name}.choices holds a value twice: {choices!r}")
        return Dimension(name, "categorical", choices=tuple(choices), target=target)
    if typ == "categorical":
        raise ConfigError(f"search {name} takes choices, not a range; write {name}: {{choices: [...]}}")
    low, high = spec.get("low"), spec.get("high")
    for bound, v in (("low", low), ("high", high)):
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"search {name}.{bound} must be a finite number, got {v!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"search {name}.log must be true or false, got {log!r}")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or not step > 0):
        raise ConfigError(f"search {name}.step must be a number > 0, got {step!r}")
    if not low < high:  # type: ignore[operator]
        raise ConfigError(f"search {name}: low ({low}) must be below high ({high})")
    if log and step is not None:
        raise ConfigError(f"search {name}: log and step cannot be combined; drop one")
    if log and not low > 0:  # type: ignore[operator]
        raise ConfigError(f"search {name}: a log range needs low > 0, got {low}")
    if typ == "int":
        for bound, v in (("low", low), ("high", high), ("step", step)):
            if v is not None and not float(v).is_integer():
                raise ConfigError(f"search {name}.{bound} must be an integer for an int parameter, got {v!r}")
        return Dimension(name, "int", low=int(low), high=int(high), log=log, step=int(step) if step else None, target=target)  # type: ignore[arg-type]
    return Dimension(name, "float", low=float(low), high=float(high), log=log, step=float(step) if step else None, target=target)  # type: ignore[arg-type]


# -- the rest of the spec --------------------------------------------------------
def _objective(objective: Any, direction: Any) -> tuple[str, str]:
    if not isinstance(objective, str) or not objective:
        raise ConfigError("objective must name a validation metric, e.g. objective: val/top1")
    if objective.startswith("test"):
        raise ConfigError(
            f"objective {objective!r} uses the test split: a sweep selects on validation metrics "
            f"(use {'val' + objective[4:] if objective.startswith('test/') else 'val/top1'}); test is for the final report"
        )
    if not objective.startswith("val/"):
        raise ConfigError(f"objective {objective!r} must be a validation metric: val/top1, val/top5, val/nll, val/ece or a trick's val/* metric")
    metric = objective.split("/", 1)[1]
    if direction is None:
        if metric in MAXIMIZE:
            direction = "maximize"
        elif metric in MINIMIZE:
            direction = "minimize"
        else:
            raise ConfigError(f"set direction: maximize or minimize for objective {objective!r}")
    if direction not in ("maximize", "minimize"):
        raise ConfigError(f"direction must be maximize or minimize, got {direction!r}{did_you_mean(str(direction), ('maximize', 'minimize'))}")
    return objective, direction


def _choice(key: str, value: Any, known: dict[str, tuple[str, ...]]) -> Choice:
    if isinstance(value, str):
        name, options = value, {}
    elif isinstance(value, Mapping):
        options = dict(value)
        name = options.pop("name", None)
        if not isinstance(name, str):
            raise ConfigError(f"{key} needs a name, e.g. {key}: {{name: {next(iter(known))}}}")
    else:
        raise ConfigError(f"{key} must be one of {', '.join(known)} or a mapping with name:, got {value!r}")
    if name not in known:
        raise ConfigError(f"{key} {name!r} is not supported{did_you_mean(name, list(known))}")
    for k, v in options.items():
        if k not in known[name]:
            raise ConfigError(f"{key} {name} has no option {k!r}{did_you_mean(str(k), known[name])}")
        if isinstance(v, bool) and k not in ("multivariate", "constant_liar"):
            raise ConfigError(f"{key}.{k} must be a number, got {v!r}")
        if k in ("multivariate", "constant_liar") and not isinstance(v, bool):
            raise ConfigError(f"{key}.{k} must be true or false, got {v!r}")
        if not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
            raise ConfigError(f"{key}.{k} must be a number, got {v!r}")
        if k in ("seed", "n_startup_trials", "n_warmup_steps", "interval_steps", "min_resource", "reduction_factor") and (
            not isinstance(v, int) or v < (1 if k in ("interval_steps", "min_resource") else 0)
        ):
            raise ConfigError(f"{key}.{k} must be an integer >= {1 if k in ('interval_steps', 'min_resource') else 0}, got {v!r}")
    return Choice(name, options)


def _check_pruner(pruner: Choice) -> None:
    if pruner.name == "threshold" and "lower" not in pruner.options and "upper" not in pruner.options:
        raise ConfigError("pruner threshold needs lower: and/or upper: (the objective's bounds below/above which a trial stops)")
    if pruner.name == "hyperband" and pruner.options.get("reduction_factor", 3) < 2:
        raise ConfigError("pruner hyperband reduction_factor must be >= 2")


def _pruning(value: Any, base: Mapping[str, Any]) -> bool:
    if value is None:
        return False
    if not isinstance(value, Mapping):
        raise ConfigError(f"pruning must be a mapping such as {{restart_aware: true}}, got {value!r}")
    for k in value:
        if k != "restart_aware":
            raise ConfigError(f"unknown key pruning.{k}{did_you_mean(str(k), ('restart_aware',))}")
    ra = value.get("restart_aware", False)
    if not isinstance(ra, bool):
        raise ConfigError(f"pruning.restart_aware must be true or false, got {ra!r}")
    if ra and "sgdr" not in (base.get("tricks") or {}):
        raise ConfigError("pruning.restart_aware reports at the end of SGDR cycles and needs sgdr under base.tricks")
    return ra


def _section(raw: Mapping[str, Any], key: str, keys: tuple[str, ...]) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a mapping with {', '.join(keys)}, got {value!r}")
    for k in value:
        if k not in keys:
            raise ConfigError(f"unknown key {key}.{k}{did_you_mean(str(k), keys)}")
    return dict(value)


def _int_value(key: str, v: Any, low: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{key} must be an integer >= {low}, got {v!r}")
    return v


def _int_option(raw: Mapping[str, Any], key: str, default: int, low: int) -> int:
    return _int_value(key, raw.get(key, default), low)


def _bool_option(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    v = raw.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false, got {v!r}")
    return v


def _seconds(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ConfigError(f"{key} must be a number of seconds > 0, got {v!r}")
    return float(v)
