"""``trickbox ablate``'s engine: the rows run look by look, each look one grid study on the sweep engine.

Look ``k`` (:meth:`Rule.looks`) trains the rows of the comparisons still open on the seeds ``n_{k-1} … n_k − 1``
(look 1: every row on the first seeds), as the grid study ``<study>.look-<k>`` under ``OUT_DIR/<study>/``: its
spec is written to ``looks/look-<k>.yaml`` and run by ``trickbox sweep``, with its workers, storage, retries and
resume. Every row of a look shares its seeds, so each comparison is paired by seed.

Which rows a look needs follows from the finished looks' results alone (:func:`replay`), so running the same
command again rebuilds the same looks: finished ones are read back, an interrupted one is continued (its killed
trial retried from its checkpoint), and no run is lost or trained twice.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .design import Contrast, Design, Row
from .rule import UNDECIDED, Rule, Verdict, judge

RECORD = "ablation.json"
LOOKS_DIR = "looks"
ACCURACY = ("top1", "top5", "acc", "accuracy")


@dataclass
class Request:
    """What one ``trickbox ablate`` command asks for (validated); its fingerprint names the ablation."""

    study: str
    base: dict[str, Any]
    """The run config with every listed trick enabled."""
    design: Design
    metric: str
    direction: str
    rule: Rule
    budget: int | None
    train_first: dict[str, Any] | None
    artifacts: dict[str, list[str]]
    out_dir: Path
    storage: str | None = None
    workers: str = "1"

    @property
    def dir(self) -> Path:
        return self.out_dir / self.study

    @property
    def sign(self) -> float:
        return 1.0 if self.direction == "maximize" else -1.0

    @property
    def scale(self) -> float:
        """Accuracy-like metrics (fractions) are shown and bounded (``--min-effect``) in points."""
        return 100.0 if self.metric.split("/")[-1] in ACCURACY else 1.0

    def identity(self) -> dict[str, Any]:
        return {"base": self.base, "design": self.design.kind, "tricks": list(self.design.tricks),
                "metric": self.metric, "direction": self.direction, "alpha": self.rule.alpha,
                "min_effect": self.rule.min_effect, "looks": self.rule.looks(), "train_first": self.train_first}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True, default=str).encode()).hexdigest()[:12]

    def look_name(self, k: int) -> str:
        return f"{self.study}.look-{k}"


# -- the looks' specs ---------------------------------------------------------------------------------
def look_mapping(req: Request, k: int, rows: Sequence[Row], seeds: Sequence[int]) -> dict[str, Any]:
    """The sweep spec of look ``k``: a grid of ``rows`` × ``seeds``. Look 1 trains the ``train_first`` run;
    later looks name its directory directly, so it is trained once."""
    base = copy.deepcopy(req.base)
    raw: dict[str, Any] = {
        "study": req.look_name(k),
        "description": f"trickbox ablate {req.study}: look {k} ({req.design.kind})",
        "base": base, "variants": {r.name: req.design.fragment(r) for r in rows}, "seeds": list(seeds),
        "objective": req.metric, "direction": req.direction, "sampler": "grid", "pruner": "none",
    }
    if req.train_first is not None:
        if k == 1:
            raw["train_first"] = copy.deepcopy(req.train_first)
        else:
            first = str((req.dir / req.look_name(1) / "train_first").resolve())
            for trick, names in req.artifacts.items():
                values = (base.get("tricks") or {}).get(trick)
                if isinstance(values, dict):
                    for n in names:
                        values.setdefault(n, None)
                        values[n] = values[n] or first
    return raw


def check_look(raw: Mapping[str, Any]) -> Any:
    """The look's spec, validated as ``trickbox sweep`` would (nothing is written)."""
    from ..sweep.spec import spec_from_mapping

    return spec_from_mapping(raw)


def distributed() -> bool:
    """Under ``accelerate launch`` with several processes: every rank runs the driver, and each trial on all ranks."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def main_rank() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def write_look(req: Request, k: int, raw: Mapping[str, Any]) -> Path:
    import yaml

    path = req.dir / LOOKS_DIR / f"look-{k}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (f"# look {k} of `trickbox ablate` {req.study} (written by it; rerun the ablate command, not this file)\n"
            + yaml.safe_dump(dict(raw), sort_keys=False, allow_unicode=True))
    if main_rank() and (not path.is_file() or path.read_text() != text):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def run_look(req: Request, path: Path, raw: Mapping[str, Any]) -> int:
    """The look's grid study, as ``trickbox sweep LOOK --workers N [--storage URL]`` runs it: its supervisor, workers
    (processes that run ``trickbox sweep`` on the same file), storage, retries and progress."""
    from ..sweep.spec import load_spec
    from ..sweep.storage import resolve_storage
    from ..sweep.workers import run_distributed, supervise

    spec = check_look(raw) if distributed() else load_spec(path)
    study_dir = req.dir / spec.study
    target = resolve_storage(req.storage, study_dir)
    if distributed():  # `accelerate launch train.py --ablate ...`: each trial on every rank (DDP)
        return run_distributed(spec, target, study_dir, deadline=None, end=False)
    storage = str(target.journal) if target.kind == "journal" else target.url
    worker_args = [str(path), "--storage", storage, "--study", spec.study, "--out-dir", str(req.dir)]
    return supervise(spec, target, study_dir, workers=req.workers, worker_args=worker_args, deadline=None)


# -- results and decisions ----------------------------------------------------------------------------
@dataclass
class Results:
    """Per row and seed, the metrics of its finished run (one per (row, seed): a retry replaces its failure)."""

    runs: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    failed: dict[str, list[int]] = field(default_factory=dict)
    seconds: float = 0.0
    trials: int = 0
    wall: tuple[float, float] | None = None

    def value(self, row: str, seed: int, metric: str) -> float | None:
        v = self.runs.get(row, {}).get(seed, {}).get(metric)
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None

    def values(self, row: str, metric: str) -> list[float]:
        return [v for s in sorted(self.runs.get(row, {})) if (v := self.value(row, s, metric)) is not None]


def collect(req: Request, looks: int) -> Results:
    """The finished trials of looks ``1 … looks`` from their storage."""
    from optuna.trial import TrialState

    from ..sweep.report import SEED_PARAM, load_study
    from ..sweep.spec import VARIANT

    out = Results()
    for k in range(1, looks + 1):
        study, _ = load_study(req.look_name(k), req.storage, req.dir)
        trials = study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials}
        for t in trials:
            if not t.state.is_finished():
                continue
            out.seconds += float(t.user_attrs.get("seconds") or 0.0)
            if t.datetime_start and t.datetime_complete:
                a, b = t.datetime_start.timestamp(), t.datetime_complete.timestamp()
                out.wall = (min(a, out.wall[0]), max(b, out.wall[1])) if out.wall else (a, b)
            if t.state == TrialState.FAIL and t.number in retried:
                continue
            out.trials += 1
            row, seed = str(t.params.get(VARIANT)), int(t.params.get(SEED_PARAM, 0))
            if t.state == TrialState.COMPLETE:
                out.runs.setdefault(row, {})[seed] = dict(t.user_attrs.get("metrics") or {})
            else:
                out.failed.setdefault(row, []).append(seed)
    return out


def paired(req: Request, res: Results, c: Contrast, n: int) -> list[float]:
    """Per-seed differences (with − without, "better" positive) over the seeds ``< n`` both rows finished."""
    out = []
    for s in range(n):
        a, b = res.value(c.with_row, s, req.metric), res.value(c.without_row, s, req.metric)
        if a is not None and b is not None:
            out.append(req.sign * (a - b))
    return out


@dataclass
class State:
    """Where the ablation stands after the looks run so far."""

    verdicts: dict[str, Verdict]
    used: dict[str, int]
    """Per comparison, the seed count it was judged at last (its diffs stop growing once it is decided)."""
    open: list[Contrast]


def replay(req: Request, res: Results, looks_done: int, *, final: bool = False) -> State:
    """Apply the rule to the finished looks, in order; ``final``: no more seeds will come."""
    contrasts = list(req.design.contrasts)
    still, used, verdicts = list(contrasts), {}, {}
    for n in req.rule.looks()[:looks_done]:
        for c in still:
            used[c.name] = n
        verdicts = judge({c.name: paired(req, res, c, used[c.name]) for c in contrasts}, req.rule)
        still = [c for c in still if not verdicts[c.name].verdict]
        if not still:
            break
    if final or not still or looks_done >= len(req.rule.looks()):
        verdicts = judge({c.name: paired(req, res, c, used.get(c.name, 0)) for c in contrasts}, req.rule, final=True)
    return State(verdicts, used, still)


def rows_for(req: Request, open_: Sequence[Contrast], first: bool) -> list[Row]:
    """Every row at the first look; later, the rows of the comparisons still open (in the design's order)."""
    if first:
        return list(req.design.rows)
    names = {n for c in open_ for n in (c.with_row, c.without_row)}
    return [r for r in req.design.rows if r.name in names]


def planned_runs(req: Request, k: int, rows: Sequence[Row]) -> tuple[list[int], int]:
    looks = req.rule.looks()
    seeds = list(range(looks[k - 2] if k > 1 else 0, looks[k - 1]))
    return seeds, len(rows) * len(seeds)


def check_record(req: Request) -> None:
    """An existing ablation directory must hold this same ablation (its rerun continues it)."""
    path = req.dir / RECORD
    if not path.is_file():
        return
    try:
        theirs = json.loads(path.read_text()).get("fingerprint")
    except (OSError, ValueError):
        return
    if theirs != req.fingerprint():
        raise ConfigError(f"{req.dir} holds another ablation (its config, tricks, design, metric or seeds differ); "
                          "use --study NEW_NAME, or the command that made it to continue it")


Recorder = Callable[[Request, "State | None", "Results | None", dict[str, Any]], Any]


def ablate(req: Request, record: Recorder = lambda *a: None) -> tuple[int, State | None, Results | None,
                                                                      dict[str, Any]]:
    """Run (or continue) the ablation; (exit code, final state, results, what the compute was). ``record`` writes
    the answer so far after every look, and the final one (:func:`trickbox.ablation.answer.write_record`)."""
    looks = req.rule.looks()
    res, done, spent, stopped = Results(), 0, 0, ""
    while True:
        state = replay(req, res, done)
        if not state.open or done >= len(looks):
            break
        k = done + 1
        rows = rows_for(req, state.open, first=k == 1)
        seeds, runs = planned_runs(req, k, rows)
        if req.budget is not None and spent + runs > req.budget:
            stopped = f"the budget of {req.budget} runs leaves {req.budget - spent}; look {k} needs {runs}"
            say(f"stopping before look {k}: {stopped}")
            break
        raw = look_mapping(req, k, rows, seeds)
        check_look(raw)
        say(f"look {k}/{len(looks)}: {len(rows)} rows x seeds {seeds[0]}-{seeds[-1]} ({runs} runs); "
            f"{len(state.open)} comparison(s) open")
        code = run_look(req, write_look(req, k, raw), raw)
        if code != 0:
            say(f"look {k} stopped (exit code {code}); the finished runs are kept: run the same command again to "
                "continue")
            return code, None, None, {}
        done, spent = k, spent + runs
        res = collect(req, done)
        record(req, replay(req, res, done), res, _compute(res, done, ""))  # what `trickbox report` shows meanwhile
    state = replay(req, res, done, final=True)
    compute = {**_compute(res, done, stopped), "final": True}
    record(req, state, res, compute)
    return 0, state, res, compute


def _compute(res: Results, looks: int, stopped: str) -> dict[str, Any]:
    return {"looks": looks, "runs": res.trials, "train_seconds": res.seconds,
            "wall_seconds": (res.wall[1] - res.wall[0]) if res.wall else 0.0, "stopped": stopped}


def say(msg: str) -> None:
    print(f"trickbox ablate: {msg}", file=sys.stderr, flush=True)


__all__ = ["UNDECIDED", "Request", "ablate", "collect", "replay"]
