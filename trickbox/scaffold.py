"""The package ``trickbox new-plugin NAME`` writes: a third-party trick that installs and passes its test at once.

The package follows ``plugins/trickbox-cutmix`` (the worked example in
``docs/plugins.md``)::

    trickbox-NAME/
      pyproject.toml              the entry point  NAME = "trickbox_NAME:ClassName"
      README.md                   install, use, test, publish
      src/trickbox_NAME/__init__.py   a working example trick (a confidence penalty) to edit
      tests/test_NAME.py          its invariants, a hand-written loop, and the installed entry point

The example trick adds one named loss term, ``NAME = −weight · H(softmax(logits))``
(the confidence penalty of Pereyra et al., 2017), with one parameter.
"""
from __future__ import annotations

import keyword
import os
import re
import shutil
import tempfile
from pathlib import Path
from string import Template

from .errors import ConfigError

NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")


def check_name(name: str) -> str:
    """``name`` if it can be a trick name, a config key and part of a module name; else :class:`ConfigError`."""
    if not NAME_RE.fullmatch(name) or keyword.iskeyword(name) or name.endswith("_") or "__" in name:
        raise ConfigError(
            f"plugin name {name!r} is not valid: use lowercase letters, digits and single underscores, "
            "starting with a letter (at most 40 characters), e.g. confidence_penalty"
        )
    from .registry import discover

    info = discover().tricks.get(name)
    if info is not None:
        raise ConfigError(f"trick name {name!r} is already taken by {info.package} ({info.target}); choose another "
                          "name")
    return name


def class_name(name: str) -> str:
    """``confidence_penalty`` -> ``ConfidencePenalty``."""
    return "".join(part.capitalize() for part in name.split("_"))


def plugin_files(name: str, extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Relative path -> text of every file of the package for trick ``name`` (and, in the same package, each
    trick of ``extra``: its own module ``src/trickbox_NAME/EXTRA.py``, test and entry point)."""
    from . import __version__

    major_minor = ".".join(__version__.split(".")[:2])
    fields = {
        "name": name,
        "dist": "trickbox-" + name.replace("_", "-"),
        "module": f"trickbox_{name}",
        "cls": class_name(name),
        "trickbox_req": f"trickbox>={major_minor}",
    }
    files = {path.format(**fields): Template(text).substitute(fields) for path, text in _TEMPLATES.items()}
    for other in extra:
        more = {**fields, "name": other, "module": f"{fields['module']}.{other}", "cls": class_name(other)}
        files[f"src/{fields['module']}/{other}.py"] = Template(_MODULE).substitute(more)
        files[f"tests/test_{other}.py"] = Template(_TEST).substitute(more)
        files["pyproject.toml"] = files["pyproject.toml"].replace(
            f'{name} = "{fields["module"]}:{fields["cls"]}"\n',
            f'{name} = "{fields["module"]}:{fields["cls"]}"\n{other} = "{more["module"]}:{more["cls"]}"\n')
    return files


def write_plugin(name: str, directory: Path | None = None, extra: tuple[str, ...] = ()) -> Path:
    """Write the package for trick ``name`` (and ``extra`` tricks) into ``directory`` (default ``./trickbox-NAME``);
    never overwrite."""
    for n in (name, *extra):
        check_name(n)
    if len({name, *extra}) != 1 + len(extra):
        raise ConfigError(f"trick names must differ, got {[name, *extra]}")
    target = Path(directory) if directory is not None else Path("trickbox-" + name.replace("_", "-"))
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{str(target)!r} already exists and is not empty; pass --dir with a new directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".trickbox-new-plugin-", dir=target.parent))
    try:
        for rel, text in plugin_files(name, tuple(extra)).items():
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the package should look like any new directory
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(staging, target)  # the package appears whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


# -- templates ($name, $dist, $module, $cls, $trickbox_req) --------------------------------------

_PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "The $name trick for trickbox"
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["$trickbox_req", "torch"]

[project.optional-dependencies]
test = ["pytest>=8"]

# trickbox finds tricks through this entry-point group; the key must equal the class's `name`.
[project.entry-points."trickbox.tricks"]
$name = "$module:$cls"

[tool.setuptools.packages.find]
where = ["src"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

_MODULE = '''\
"""The $name trick for trickbox.

This example adds one named loss term, a confidence penalty (Pereyra et al., 2017):

    $name = −weight · mean_b H(softmax(z_b)),   H(p) = −Σ_k p_k log p_k

It rewards spread-out predictions, much like label smoothing does. Replace
the function and the hook with your own trick; keep the layout: a pure
function that works in any loop, and a thin Trick class that plugs it in.
Hooks you can implement, and when they run: ``trickbox/hookspecs.py``.
"""
from __future__ import annotations

import torch
from torch import Tensor

import trickbox
from trickbox import Batch, Param, RunContext, Search, hookimpl

__all__ = ["$cls", "confidence_penalty"]
__version__ = "0.1.0"


def confidence_penalty(logits: Tensor) -> Tensor:
    """``−mean_b H(softmax(logits_b))``: low when predictions are spread out. Computed in float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(dim=-1)
    return -entropy.mean()


class $cls(trickbox.Trick):
    name = "$name"
    summary = "confidence penalty: a loss term that rewards high-entropy predictions"
    params = (
        Param("weight", float, 0.1, "weight of the penalty", low=0, search=Search(0.01, 1.0, log=True)),
    )

    @hookimpl
    def trickbox_loss(self, logits: Tensor, batch: Batch, ctx: RunContext) -> dict[str, Tensor]:
        # A named term: trickbox adds it to the total and logs it as loss/$name.
        return {"$name": self.weight * confidence_penalty(logits)}
'''

_TEST = '''\
"""Tests of the $name trick: its formula, its parameters, a hand-written loop and the installed entry point."""
from __future__ import annotations

import math

import pytest
import torch

import trickbox
from trickbox import Batch, RunContext
from $module import $cls, confidence_penalty

K = 10


def ctx() -> RunContext:
    return RunContext(num_classes=K, epochs=1, steps_per_epoch=4, base_lr=0.1)


def batch(b: int = 4) -> Batch:
    labels = torch.arange(b) % K
    return Batch(x=torch.randn(b, 3, 8, 8), y=torch.nn.functional.one_hot(labels, K).float(), labels=labels,
                 index=torch.arange(b))


def test_penalty_is_minus_the_entropy():
    assert float(confidence_penalty(torch.zeros(2, K))) == pytest.approx(-math.log(K))  # uniform: maximal entropy
    assert float(confidence_penalty(torch.tensor([[100.0] + [0.0] * (K - 1)]))) == pytest.approx(0.0, abs=1e-6)


def test_hook_returns_one_named_weighted_term():
    logits = torch.randn(4, K)
    parts = $cls(weight=0.5).trickbox_loss(logits=logits, batch=batch(), ctx=ctx())
    assert set(parts) == {"$name"}
    assert torch.allclose(parts["$name"], 0.5 * confidence_penalty(logits))


def test_parameters_are_validated():
    with pytest.raises(trickbox.ConfigError, match=r"tricks\\.$name\\.weight"):
        $cls(weight=-1.0)
    with pytest.raises(trickbox.ConfigError, match="unknown parameter"):
        $cls(wieght=0.1)


def test_in_a_hand_written_loop():
    tricks = trickbox.load_tricks({"$name": {"weight": 0.1}}, extra=[$cls])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, K))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tricks.setup(model, optimizer, num_classes=K, epochs=1, steps_per_epoch=4)
    for _ in range(4):
        b = tricks.batch(torch.randn(8, 3, 8, 8), torch.randint(0, K, (8,)))
        parts = tricks.loss(tricks.forward(model, b), b)
        assert set(parts.parts) == {"ce", "$name"}
        parts.total.backward()
        optimizer.step()
        optimizer.zero_grad()
        tricks.step()


def test_installed_entry_point_is_found():
    """Passes once the package is installed (pip install -e .)."""
    tricks = trickbox.load_tricks(["$name"])
    assert type(tricks.tricks[0]) is $cls
'''

_README = '''\
# $dist

The `$name` trick for trickbox, as a separate package.
trickbox finds it through the entry point in `pyproject.toml`; nothing in trickbox changes.

As generated, `$name` is a confidence penalty (Pereyra et al., 2017): it adds the loss
term `$name = −weight · H(softmax(logits))`, which rewards spread-out predictions.
Edit `src/$module/__init__.py` to make it your own trick.

## Install and test

```bash
pip install -e ".[test]"   # registers the entry point  $name = "$module:$cls"; [test] adds pytest
pytest -q                   # the formula, the parameters, a hand-written loop, the entry point
trickbox list               # shows: $name  ($dist 0.1.0)  ...
```

## Use

```bash
trickbox train tricks.$name.weight=0.1                 # trickbox's own loop
```

```python
tricks = trickbox.load_tricks({"$name": {"weight": 0.1}, "mixup": {"alpha": 0.2}})   # your own loop
```

The loss term is logged as `loss/$name`. In a sweep spec, `$name.weight: {}` searches
the range the parameter declares (`Search(0.01, 1.0, log=True)`).

## Parameters

| name | type | default | valid | search |
|------|------|---------|-------|--------|
| `weight` | float | 0.1 | [0, ∞) | [0.01, 1] log |

## Make it yours

1. Pick the hook: `trickbox_transform_batch` (change inputs and targets), `trickbox_transform_targets`
   (targets only), `trickbox_loss` (add a named term), `trickbox_lr_schedule`, … — all in trickbox's `hookspecs.py`.
2. Declare every hyperparameter as a `Param` with its valid range and, where it makes sense, a `Search` range.
3. Draw randomness from `ctx.rng("$name")` or `ctx.generator("$name")`, so a resumed run draws the same numbers.
4. Return a new value (`batch.replace(...)`, a dict of loss terms); never change what you were given.

trickbox checks the class when it loads it: a misspelled hook or an argument the hook does not
provide is reported by `trickbox list` with the reason, and the other tricks keep working.

## Publish

```bash
python -m build && twine upload dist/*
```
'''

_TEMPLATES = {
    "pyproject.toml": _PYPROJECT,
    "README.md": _README,
    "src/{module}/__init__.py": _MODULE,
    "tests/test_{name}.py": _TEST,
}
