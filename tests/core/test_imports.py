"""The package's import graph: no module of trickbox/ imports itself back through others (no import circle).

Every ``import`` and ``from ... import`` in every module counts, also the ones inside functions
(lazy imports still tie two modules together), and ``from . import x`` where ``x`` is a module.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

from ..conftest import REPO

PACKAGE = REPO / "trickbox"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (REPO / rel).with_suffix(".py").is_file() or (REPO / rel / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """The trickbox modules that the file at ``path`` imports."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "trickbox"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "trickbox":
                continue
            subs = {f"{target}.{a.name}" for a in node.names if is_module(f"{target}.{a.name}")}
            found |= subs or {target}
    return {m for m in found if is_module(m) and m != me}


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_walker_reads_relative_and_lazy_imports():
    graph = import_graph()
    assert "trickbox.api" in graph["trickbox.loop"]  # from .api import ...
    assert "trickbox.sweep.workers" in graph["trickbox.cli.sweep"]  # a lazy import inside a function


def test_no_import_circle_in_the_package():
    found = circles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_core_never_names_a_trick():
    """The sweep, the loop, the API and the registry ask the tricks; none of them names a built-in one."""
    import re

    from trickbox.registry import discover

    names = sorted(discover(autoload=False).tricks)
    assert {"sgdr", "mixup"} <= set(names)
    core = sorted((PACKAGE / "sweep").glob("*.py")) + [PACKAGE / f for f in ("loop.py", "api.py", "registry.py")]
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    found = [f"{p.relative_to(REPO)}:{i}: {m.group(0)}" for p in core for i,
             line in enumerate(p.read_text().splitlines(), 1)
             for m in [pattern.search(line)] if m]
    assert not found, found


def test_no_function_is_longer_than_80_lines_and_train_fits_a_screen():
    lengths = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths[f"{module_name(path)}.{node.name}"] = node.end_lineno - node.lineno + 1
    assert lengths["trickbox.loop.train"] <= 60
    long = {k: v for k, v in lengths.items() if v > 80}
    assert not long, long  # docs/architecture.md would have to say why for each


def code_lines(source: str) -> int:
    """Lines that hold code: not blank, not only a comment, not part of a docstring or other bare string."""
    import io
    import tokenize

    strings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            strings |= set(range(node.lineno, node.end_lineno + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines |= set(range(tok.start[0], tok.end[0] + 1))
    return len(lines - strings)


DATA_CODE_LINES_AT_2280CDD = 1413
"""``trickbox/data/`` before the move to the layout by path (17 files), by :func:`code_lines`."""
DATA_CODE_LINES_ADDED = {"issue 30: each epoch's size on both paths (TrainTransform, set_sizes), decoding.py": 177}
"""Code lines features added to ``data/`` after the layout by path held less code than 2280cdd (1,412 < 1,413)."""


def test_code_lines_counts_code_only():
    assert code_lines('"""doc"""\n\n# note\nx = 1  # one\ny = (\n    2)\n"""more"""\n') == 3


def test_data_is_laid_out_by_path_in_at_most_13_modules():
    modules = sorted(p.name for p in (PACKAGE / "data").glob("*.py"))
    assert len(modules) <= 13, modules
    total = sum(code_lines(p.read_text()) for p in (PACKAGE / "data").glob("*.py"))
    budget = DATA_CODE_LINES_AT_2280CDD + sum(DATA_CODE_LINES_ADDED.values())
    assert total < budget, total  # less code than before, with the one data semantics in it, plus the new features
    for name in ("opening.py", "layout.py", "memory.py", "streaming.py", "folders.py", "shards.py", "sources.py"):
        assert name in modules  # the table in trickbox/data/__init__.py names each


def test_modules_are_named_for_what_they_hold():
    """No ``helper``, ``run`` or ``util`` module; ``build.py`` is the one verb, and docs/architecture.md says why."""
    names = {p.stem for p in PACKAGE.rglob("*.py")}
    assert not names & {"helper", "helpers", "run", "util", "utils", "misc"}, sorted(names & {"helper", "run"})
    assert "`build.py` keeps a verb for a name" in (REPO / "docs" / "architecture.md").read_text()


def test_the_pseudocode_names_every_hook_and_every_step_of_train():
    """hookspecs.py's loop is the truth: every hook is in it, and every step ``loop.train`` calls is named there."""
    import inspect

    from trickbox import hookspecs, loop

    doc = hookspecs.__doc__ or ""
    hooks = [n for n, f in vars(hookspecs).items() if n.startswith("trickbox_") and callable(f)]
    assert hooks and all(f"{h}(" in doc or h == "trickbox_report_epochs" for h in hooks), \
        [h for h in hooks if f"{h}(" not in doc]
    steps = [s for s in re.findall(r"\b([a-z_]+)\(run\b", inspect.getsource(loop.train)) if s != "range"]
    assert steps and all(s in doc for s in steps), [s for s in steps if s not in doc]


def test_help_and_a_refused_config_answer_without_importing_torch():
    """``trickbox --help`` and a bad value are answered before torch (seconds) is imported."""
    import subprocess
    import sys

    probe = ("import sys\nfrom trickbox.cli import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('help', 'torch' in sys.modules)\n"
             "main(['train', 'train.epochs=-1'])\nprint('refused', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert "help False" in out.stdout and "refused False" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert "train.epochs must be an integer in [1, 1000000], got -1" in out.stderr


def test_trickset_is_the_hook_facade_and_fits_in_240_lines():
    """The LR driver is trickbox/lr.py, deferred rows and the stop agreement are guard.py, the configure chains are
    registry.py: what stays in api.py is the facade over the hooks."""
    lines = (PACKAGE / "api.py").read_text().splitlines()
    assert len(lines) <= 240, len(lines)


RANGE_FIELDS = {"low", "high"}
RANGES = {
    "trickbox.scalars.Limits": "the values a setting accepts (open or closed ends), checked by check_scalar",
    "trickbox.trick.Search": "a search range; Search.distribution() makes the Optuna distribution a sweep draws from",
    "trickbox.trick.Param": "its low/high are the constructor's spelling of Param.limits (a Limits)",
}


def test_one_definition_of_a_range():
    """A search range is spelled :class:`trickbox.Search` and drawn from as an Optuna distribution; no other class of
    the package keeps a ``low`` and a ``high`` of its own, and only ``Search`` builds Optuna distributions."""
    found, builders = set(), set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                fields = {t.target.id for t in node.body
                          if isinstance(t, ast.AnnAssign) and isinstance(t.target, ast.Name)}
                if RANGE_FIELDS <= fields:
                    found.add(f"{module_name(path)}.{node.name}")
            if isinstance(node, ast.Name) and node.id.endswith("Distribution") and node.id != "BaseDistribution":
                builders.add(module_name(path))
    assert found == set(RANGES), found
    assert builders <= {"trickbox.trick", "trickbox.sweep.spec"}, builders  # spec only tells the three kinds apart
