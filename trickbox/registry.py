"""Finding tricks: entry points in the group ``trickbox.tricks``, checked before use.

Built-in and third-party tricks take the same path: each is an entry point
``name = "package.module:TrickClass"``. A trick that fails to import, or that
declares a hook that does not exist or takes arguments the hook does not
have, is recorded with the reason and left out; the others keep working.

``TRICKBOX_DISABLE_PLUGIN_AUTOLOAD=1`` loads only trickbox's own tricks.
``TRICKBOX_BLOCK=name,name`` (or ``plugins.block`` in a config) blocks tricks by name.
``TRICKBOX_PLUGINS=module,module:Class`` adds tricks from importable modules that are not installed
packages (a script's own trick, a test's fault injector), as pytest's ``PYTEST_PLUGINS`` does.
"""
from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError
from .scalars import did_you_mean
from .trick import PROJECT, Param, Trick

GROUP = "trickbox.tricks"
AUTOLOAD_ENV = "TRICKBOX_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "TRICKBOX_BLOCK"
PLUGINS_ENV = "TRICKBOX_PLUGINS"
CORE_DIST = "trickbox"


@dataclass(frozen=True)
class TrickInfo:
    """An installed trick: its class and where it came from."""

    name: str
    cls: type[Trick]
    package: str
    version: str
    target: str


@dataclass(frozen=True)
class BrokenPlugin:
    name: str
    package: str
    reason: str


def hook_problems(cls: type) -> list[str]:
    """Why ``cls`` is not a valid trick class (empty when it is)."""
    if not (isinstance(cls, type) and issubclass(cls, Trick)):
        return [f"{cls!r} is not a subclass of trickbox.Trick"]
    problems: list[str] = []
    if not cls.name or not cls.name.isidentifier():
        problems.append(f"name {cls.name!r} is not a valid identifier")
    for p in cls.params:
        if not isinstance(p, Param):
            problems.append(f"params holds {p!r}, which is not a trickbox.Param")
        elif p.search_problem():
            problems.append(f"{p.search_problem()}; its Search range must lie inside its valid range")
    marker = f"{PROJECT}_impl"
    for attr, fn in inspect.getmembers(cls, predicate=inspect.isfunction):
        if not hasattr(fn, marker):
            if attr.startswith("trickbox_"):
                problems.append(f"method {attr} looks like a hook but lacks @trickbox.hookimpl")
            continue
        spec = getattr(hookspecs, attr, None)
        if spec is None or not hasattr(spec, f"{PROJECT}_spec"):
            valid = [n for n in dir(hookspecs) if n.startswith("trickbox_")]
            problems.append(f"hook {attr} does not exist{did_you_mean(attr, valid)}")
            continue
        opts = getattr(fn, marker)
        if attr in hookspecs.CHAIN_HOOKS and (opts.get("wrapper") or opts.get("hookwrapper")):
            problems.append(f"hook {attr} is a chain (each implementation returns the next value); "
                            "it cannot be a wrapper: drop wrapper=True / hookwrapper=True")
        allowed = set(inspect.signature(spec).parameters)
        taken = [n for n in list(inspect.signature(fn).parameters)[1:]]
        extra = [n for n in taken if n not in allowed]
        if extra:
            problems.append(
                f"hook {attr} takes {', '.join(extra)}, which the hook does not provide "
                f"(it provides {', '.join(sorted(allowed))})"
            )
    return problems


@dataclass
class Catalog:
    """The tricks that can be used in this environment, and the ones that could not be loaded."""

    tricks: dict[str, TrickInfo] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)
    blocked: set[str] = field(default_factory=set)
    skipped: list[str] = field(default_factory=list)
    """Installed plugin tricks not loaded because autoload is off (``TRICKBOX_DISABLE_PLUGIN_AUTOLOAD``)."""

    def add(self, cls: type[Trick], package: str = "<local>", version: str = "", target: str = "") -> None:
        """Add a trick class directly (tests, or a script's own trick)."""
        problems = hook_problems(cls)
        name = getattr(cls, "name", "") or getattr(cls, "__name__", "?")
        if problems:
            self.broken.append(BrokenPlugin(name, package, "; ".join(problems)))
            return
        if cls.name in self.blocked:
            return
        if cls.name in self.tricks and self.tricks[cls.name].cls is not cls:
            first = self.tricks[cls.name]
            self.broken.append(
                BrokenPlugin(cls.name, package, f"name already taken by {first.package} ({first.target}); not loaded")
            )
            return
        self.tricks[cls.name] = TrickInfo(cls.name, cls, package, version,
                                          target or f"{cls.__module__}:{cls.__qualname__}")

    def get(self, name: str) -> TrickInfo:
        if name in self.tricks:
            return self.tricks[name]
        for b in self.broken:
            if b.name == name:
                raise ConfigError(f"trick {name!r} from {b.package} could not be loaded: {b.reason}")
        if name in self.blocked:
            raise ConfigError(f"trick {name!r} is blocked (by {BLOCK_ENV} or plugins.block); unblock it to use it")
        if self.skipped:
            raise ConfigError(f"unknown trick {name!r}: installed plugins were not loaded ({AUTOLOAD_ENV} is set); "
                              f"unset it to load them{did_you_mean(name, list(self.tricks) + self.skipped)}")
        raise ConfigError(f"unknown trick {name!r}{did_you_mean(name, list(self.tricks))}")

    def build(self, configured: Mapping[str, Mapping[str, Any] | None]) -> list[Trick]:
        """Instances of the configured tricks, in config order, with validated parameters."""
        out: list[Trick] = []
        for name, values in configured.items():
            info = self.get(name)
            if values is not None and not isinstance(values, Mapping):
                raise ConfigError(f"tricks.{name} must be a mapping of parameters, got {values!r}")
            out.append(info.cls(**dict(values or {})))
        for trick in out:
            trick.check_among(out)
        return out


def discover(*, autoload: bool | None = None, block: Iterable[str] = ()) -> Catalog:
    """Load every trick registered under the entry-point group ``trickbox.tricks``."""
    if autoload is None:
        autoload = os.environ.get(AUTOLOAD_ENV, "") in ("", "0", "false", "False")
    blocked = {b.strip() for b in os.environ.get(BLOCK_ENV, "").split(",") if b.strip()}
    blocked |= set(block)
    catalog = Catalog(blocked=blocked)
    points = sorted(metadata.entry_points(group=GROUP), key=lambda e: e.name)
    dists = {ep.name: ep.dist.metadata["Name"] if ep.dist is not None else "?" for ep in points}
    _warn_unknown_blocks(blocked, set(dists), set(dists.values()))
    for ep in points:
        dist, version = dists[ep.name], ep.dist.version if ep.dist is not None else ""
        if not autoload and dist != CORE_DIST:
            catalog.skipped.append(ep.name)
            continue
        if ep.name in blocked or dist in blocked:  # a distribution's name blocks every trick it installs
            catalog.blocked.add(ep.name)
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not break the others
            catalog.broken.append(BrokenPlugin(ep.name, dist, f"import failed: {type(exc).__name__}: {exc}"))
            continue
        if getattr(cls, "name", None) != ep.name:
            catalog.broken.append(
                BrokenPlugin(ep.name, dist,
                             f"entry point name {ep.name!r} differs from the class's name "
                             f"{getattr(cls, 'name', None)!r}")
            )
            continue
        catalog.add(cls, dist, version, ep.value)
    for entry in (e.strip() for e in os.environ.get(PLUGINS_ENV, "").split(",")):
        if entry:
            _add_module_tricks(catalog, entry)
    return catalog


_WARNED: set[str] = set()


def _warn_unknown_blocks(blocked: set[str], tricks: set[str], dists: set[str]) -> None:
    """One warning (per process) for a blocked name that is neither a trick nor a distribution."""
    for name in sorted(blocked - tricks - dists - _WARNED):
        _WARNED.add(name)
        print(f"trickbox: warning: {BLOCK_ENV}/plugins.block names {name!r}, which is neither an installed trick nor a "
              f"plugin distribution{did_you_mean(name, sorted(tricks | dists))}", file=sys.stderr)


def _add_module_tricks(catalog: Catalog, entry: str) -> None:
    """``module`` (every Trick subclass it defines) or ``module:Class`` from ``TRICKBOX_PLUGINS``."""
    module_name, _, attr = entry.partition(":")
    try:
        module = importlib.import_module(module_name)
        found = [getattr(module, attr)] if attr else [
            obj for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Trick) and obj is not Trick
               and obj.__module__ == module.__name__
        ]
    except Exception as exc:  # a broken plugin must not break the others
        catalog.broken.append(BrokenPlugin(entry, PLUGINS_ENV, f"import failed: {type(exc).__name__}: {exc}"))
        return
    for cls in found:
        if getattr(cls, "name", None) not in catalog.blocked:
            catalog.add(cls, f"{PLUGINS_ENV}={module_name}", "", f"{module_name}:{getattr(cls, '__qualname__', cls)}")


def plugin_manager(tricks: Iterable[Trick], plugins: Iterable[Any] = ()) -> pluggy.PluginManager:
    """A pluggy manager holding the core plugins, ``tricks`` (registered in order) and extra ``plugins``."""
    from .core_plugins import BaseLoss

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(BaseLoss(), name="base_loss")
    # pluggy calls the last registered first; register in reverse so config order is call order.
    for trick in reversed(list(tricks)):
        pm.register(trick, name=trick.name)
    for plugin in plugins:
        pm.register(plugin)
    return pm


def call_chain(pm: pluggy.PluginManager, hook_name: str, value: Any, **kwargs: Any) -> Any:
    """Call a chain hook: each implementation gets the previous result (``None`` keeps it)."""
    argname = hookspecs.CHAIN_HOOKS[hook_name]
    hook = getattr(pm.hook, hook_name)
    ctx = kwargs.get("ctx") if hook_name == "trickbox_transform_batch" else None
    for impl in reversed(hook.get_hookimpls()):
        if ctx is not None and getattr(impl.plugin, "name", None) in ctx.muted:
            continue  # sitting out this batch: a choosing trick (run first) picked another
        args = {argname: value, **kwargs}
        result = impl.function(**{k: args[k] for k in impl.argnames})
        if result is not None:
            value = result
    return value


def configure(pm: pluggy.PluginManager, model: Any, optimizer: Any, accelerator: Any, ctx: Any) -> tuple[Any, Any]:
    """The configure hooks' chains over ``model`` and ``optimizer``. After ``accelerator.prepare`` the hooks see the
    unwrapped model and may change it only in place: a replacement then is a :class:`ConfigError`."""
    inner = _unwrap(model, accelerator)
    prepared = inner is not model or any(cls.__name__ == "AcceleratedOptimizer" for cls in type(optimizer).__mro__)
    new_model = call_chain(pm, "trickbox_configure_model", inner, ctx=ctx)
    if new_model is not inner:
        if prepared:
            raise ConfigError("a trick replaced the model after accelerator.prepare; call tricks.setup before prepare")
        model = new_model
    new_optimizer = call_chain(pm, "trickbox_configure_optimizer", optimizer, model=_unwrap(model, accelerator),
                               ctx=ctx)
    if new_optimizer is not optimizer and prepared:
        raise ConfigError("a trick replaced the optimizer after accelerator.prepare; call tricks.setup before prepare")
    return model, new_optimizer


def _unwrap(model: Any, accelerator: Any) -> Any:
    return accelerator.unwrap_model(model) if accelerator is not None else getattr(model, "module", model)
