"""``trickbox report STUDY``: best parameters, a self-contained HTML report and, for grids, a Markdown table.

Everything comes from the study's storage (no W&B needed). The HTML file
embeds plotly.js once, inline, so it opens offline: optimisation history,
intermediate values (pruning), parameter importances (two or more
parameters and enough finished trials), parallel coordinates, and a table of
all trials. A grid study also gets ``report.md``: one row per grid point with
the objective's mean ± std over seeds. With W&B on (the study's tracker, and
``WANDB_MODE`` not ``disabled``) the same plots go to a W&B run with job type
``summary`` in the study's group.
"""
from __future__ import annotations

import html
import json
import math
import os
import statistics
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..trick import ConfigError
from .storage import open_storage, resolve_storage

SEED_PARAM = "train.seed"
MIN_TRIALS_FOR_IMPORTANCE = 3


@dataclass
class Report:
    study: str
    html: Path
    markdown: Path | None
    best: dict[str, Any] | None
    counts: dict[str, int]
    text: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


def load_study(name: str, storage: str | None, out_dir: Path) -> tuple[Any, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    target = resolve_storage(storage, (out_dir / name).resolve())
    if target.kind == "journal" and not (target.journal and target.journal.is_file()):
        raise ConfigError(f"no study {name!r} at {target.display()}; pass --storage URL (or --out-dir) where the sweep ran")
    store = open_storage(target)
    try:
        return optuna.load_study(study_name=name, storage=store), target
    except KeyError:
        names = optuna.get_all_study_names(storage=store)
        raise ConfigError(f"no study {name!r} in {target.display()} (studies there: {', '.join(names) or 'none'})") from None


def figures(study: Any) -> dict[str, Any]:
    """Plotly figures of the study; a figure that the data cannot support is left out."""
    import optuna.visualization as vis
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = sorted({k for t in complete for k in t.params})
    varying = [n for n in names if len({json.dumps(t.params.get(n), default=str) for t in complete}) > 1]
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if complete:
            out["Optimisation history"] = vis.plot_optimization_history(study)
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            out["Intermediate values (pruning)"] = vis.plot_intermediate_values(study)
        if len(varying) >= 2 and len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
            try:
                out["Parameter importances"] = vis.plot_param_importances(study, params=varying)
            except (ValueError, RuntimeError, ZeroDivisionError):
                pass
        if complete and names:
            out["Parallel coordinates"] = vis.plot_parallel_coordinate(study, params=names)
    return out


def grid_table(study: Any, objective: str, order: list[str] | None = None, *,
               choices: dict[str, list[Any]] | None = None, columns: list[dict[str, Any]] | None = None) -> str:
    """One Markdown row per grid point (seeds pooled): parameters, objective and ``columns`` as mean ± std, trials, states.

    Rows follow the order of the spec's choices (variants in the order written), not the order trials ran.
    """
    rows = grid_rows(study, order, choices)
    names: list[str] = [n for n in (order or []) if n != SEED_PARAM]
    for row in rows:
        names += [k for k in row["params"] if k not in names]
    # a column that no finished trial has (e.g. train/* without train.eval_each_epoch) is left out
    cols = [c for c in (columns or []) if any(c["metric"] in m for row in rows for m in row["metrics"])]
    header = [*names, f"{objective} (mean ± std)", *(c["title"] for c in cols), "seeds", "trials"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        stat = _stat(row["values"])
        extra = [_stat([m[c["metric"]] for m in row["metrics"] if isinstance(m.get(c["metric"]), (int, float))], c["error"])
                 for c in cols]
        states = ", ".join(f"{n} {s}" for s, n in sorted(_count(row["states"]).items()))
        cells = [_cell(row["params"].get(n)) for n in names] + [stat, *extra, str(len(row["values"])), states]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def grid_rows(study: Any, order: list[str] | None = None, choices: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """The grid points of a study with their trials pooled over seeds: ``params``, ``values`` (objective of
    complete trials), ``metrics`` (each complete trial's stored metrics), ``states``, ``trials`` (numbers)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {u.user_attrs.get("retry_of") for u in trials}
    rows: dict[str, dict[str, Any]] = {}
    for t in trials:
        if t.state not in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
            continue
        if t.state == TrialState.FAIL and t.number in retried:
            continue  # replaced by its retry
        point = {k: v for k, v in sorted(t.params.items()) if k != SEED_PARAM}
        key = json.dumps(point, sort_keys=True, default=str)
        row = rows.setdefault(key, {"params": point, "values": [], "metrics": [], "states": [], "trials": []})
        if t.state == TrialState.COMPLETE and t.value is not None:
            row["values"].append(float(t.value))
            row["metrics"].append(dict(t.user_attrs.get("metrics") or {}))
        row["states"].append(t.state.name.lower())
        row["trials"].append(t.number)
    keys = [n for n in (order or []) if n != SEED_PARAM]
    ranks = {n: {json.dumps(c, default=str): i for i, c in enumerate((choices or {}).get(n, []))} for n in keys}

    def position(row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(ranks[n].get(json.dumps(row["params"].get(n), default=str), len(ranks[n])) for n in keys)

    return sorted(rows.values(), key=position)


def _stat(vals: list[float], error: bool = False) -> str:
    if error:
        vals = [100.0 * (1.0 - v) for v in vals]
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.2f}" if error else f"{vals[0]:.4f}"
    if error:
        return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"
    return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"


def _count(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _trial_rows(study: Any) -> str:
    rows = []
    for t in study.get_trials(deepcopy=False):
        value = "" if t.value is None else f"{t.value:.4f}"
        params = ", ".join(f"{k}={_cell(v)}" for k, v in t.params.items())
        note = []
        if t.user_attrs.get("retry_of") is not None:
            note.append(f"retry of {t.user_attrs['retry_of']}")
        if t.user_attrs.get("error"):
            note.append(str(t.user_attrs["error"])[:200])
        rows.append(f"<tr><td>{t.number}</td><td>{t.state.name.lower()}</td><td>{value}</td>"
                    f"<td>{html.escape(params)}</td><td>{html.escape('; '.join(note))}</td></tr>")
    return "\n".join(rows)


def render_html(study: Any, info: dict[str, Any], figs: dict[str, Any], best: dict[str, Any] | None, counts: dict[str, int]) -> str:
    parts = []
    first = True
    for title, fig in figs.items():
        fig.update_layout(title=title)
        body = fig.to_html(full_html=False, include_plotlyjs="inline" if first else False, default_width="100%")
        first = False
        parts.append(f'<section class="figure"><h2>{html.escape(title)}</h2>{body}</section>')
    best_html = "<p>No complete trial yet.</p>"
    if best is not None:
        items = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_cell(v))}</td></tr>" for k, v in best["params"].items())
        best_html = (f"<p>Trial {best['number']}: <b>{html.escape(info.get('objective', 'value'))} = {best['value']:.4f}</b></p>"
                     f"<table><tr><th>parameter</th><th>value</th></tr>{items}</table>")
    count_text = ", ".join(f"{v} {k}" for k, v in counts.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>trickbox study {html.escape(study.study_name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}section.figure{{margin:2em 0}}</style></head>
<body>
<h1>Study {html.escape(study.study_name)}</h1>
<p>{html.escape(info.get('direction', ''))} {html.escape(info.get('objective', ''))}; sampler {html.escape(str(info.get('sampler', '')))},
pruner {html.escape(str(info.get('pruner', '')))}; trials: {html.escape(count_text)}.</p>
<p>Search space: {html.escape('; '.join(info.get('search', [])))}</p>
<h2>Best trial</h2>
{best_html}
{''.join(parts)}
<h2>All trials</h2>
<table><tr><th>#</th><th>state</th><th>value</th><th>parameters</th><th>notes</th></tr>
{_trial_rows(study)}
</table>
</body></html>
"""


def write_report(name: str, *, storage: str | None = None, out_dir: Path = Path("sweeps_out"), html: Path | None = None,
                 use_wandb: bool = True) -> Report:
    """Write ``report.html`` (and ``report.md`` for a grid study); log the plots to W&B when it is on."""
    from optuna.trial import TrialState

    study, target = load_study(name, storage, out_dir)
    info = dict(study.user_attrs.get("trickbox") or {})
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(1 for t in trials if t.state == s) for s in TrialState if any(t.state == s for t in trials)}
    best = None
    try:
        bt = study.best_trial
        best = {"number": bt.number, "value": float(bt.value), "params": dict(bt.params)}
    except ValueError:
        pass
    figs = figures(study)
    html_path = html or (out_dir / name / "report.html")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(study, info, figs, best, counts))
    md_path = None
    table = ""
    if info.get("grid"):
        table = grid_table(study, info.get("objective", "value"), info.get("params"), choices=info.get("choices"),
                           columns=info.get("columns"))
        md_path = html_path.with_suffix(".md")
        md_path.write_text(f"# Study {name}\n\n{table}")
    lines = [f"study {name}: {len(trials)} trials ({', '.join(f'{v} {k}' for k, v in counts.items())})"]
    if best is not None:
        lines.append(f"best {info.get('objective', 'value')} = {best['value']:.4f} (trial {best['number']})")
        lines += [f"  {k}: {_cell(v)}" for k, v in best["params"].items()]
    if table:
        lines.append(table.rstrip())
    lines.append(f"HTML report: {html_path}")
    if md_path:
        lines.append(f"Markdown table: {md_path}")
    report = Report(name, html_path, md_path, best, counts, figures=figs)
    if use_wandb and _wandb_on(info):
        where = _log_wandb(name, info, figs, best, trials, table)
        if where:
            lines.append(f"W&B summary run: {where}")
    report.text = "\n".join(lines)
    return report


def _wandb_on(info: dict[str, Any]) -> bool:
    from ..tracking import wandb_mode

    return info.get("tracker", "wandb") == "wandb" and wandb_mode() != "disabled"


def _log_wandb(name: str, info: dict[str, Any], figs: dict[str, Any], best: dict[str, Any] | None, trials: list[Any], table: str) -> str | None:
    """The plots and the trial table in one W&B run (job type ``summary``); never fails the report."""
    from ..tracking import wandb_mode

    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        settings = wandb.Settings(mode=wandb_mode(), console="off", x_disable_stats=True)
        run = wandb.init(project=info.get("project") or "trickbox", group=name, job_type="summary", name=f"{name}-summary",
                         config={"study": name, **{k: v for k, v in info.items() if k in ("objective", "direction", "sampler", "pruner", "search")}},
                         settings=settings, reinit="finish_previous")
        logged: dict[str, Any] = {}
        for title, fig in figs.items():
            logged["study/" + title.split(" (")[0].lower().replace(" ", "_")] = wandb.Html(fig.to_html(include_plotlyjs="cdn"))
        columns = ["number", "state", "value", "params"]
        rows = [[t.number, t.state.name.lower(), None if t.value is None else float(t.value), json.dumps(t.params, default=str)] for t in trials]
        logged["study/trials"] = wandb.Table(columns=columns, data=rows)
        run.log(logged)
        if best is not None:
            run.summary["best/value"] = best["value"]
            run.summary["best/trial"] = best["number"]
            for k, v in best["params"].items():
                run.summary[f"best/{k}"] = v if not (isinstance(v, float) and not math.isfinite(v)) else str(v)
        where = getattr(run, "dir", None)
        run.finish()
        return str(Path(where).parent) if where else "logged"
    except Exception as exc:
        print(f"trickbox report: W&B logging skipped ({type(exc).__name__}: {exc})")
        return None
