"""``trickbox report STUDY``: best parameters, a self-contained HTML report and, for grids, a Markdown table.

Everything comes from the study's storage (no W&B needed). The HTML embeds
plotly.js once, inline, so it opens offline: the history of every finished
trial (complete and pruned, the y axis fitted to the values), the pruner's
view (intermediate values), parameter importances, parallel coordinates
(Optuna's: categorical choices as categories, log ranges on log axes) and a
table of all trials. A grid study also gets ``report.md``: one row per grid
point, the objective's mean ± std over seeds. With W&B on, the same plots go
to a W&B run of job type ``summary`` in the study's group.
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

from ..errors import ConfigError
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
        raise ConfigError(f"no study {name!r} at {target.display()}; pass --storage URL (or --out-dir) where the sweep "
                          "ran")
    store = open_storage(target)
    try:
        return optuna.load_study(study_name=name, storage=store), target
    except KeyError:
        names = optuna.get_all_study_names(storage=store)
        raise ConfigError(f"no study {name!r} in {target.display()} (studies there: "
                          f"{', '.join(names) or 'none'})") from None


def objective_name(study: Any, info: dict[str, Any]) -> str:
    return (study.metric_names or [None])[0] or info.get("objective", "objective")


def history_figure(study: Any, objective: str) -> Any:
    """Every finished trial's value by trial number: complete trials and, at their last report, pruned ones."""
    import plotly.graph_objects as go
    from optuna.trial import TrialState

    fig = go.Figure()
    for state, symbol in ((TrialState.COMPLETE, "circle"), (TrialState.PRUNED, "x")):
        trials = [t for t in study.get_trials(deepcopy=False, states=(state,))
                  if t.value is not None or t.intermediate_values]
        ys = [t.value if t.value is not None else t.intermediate_values[max(t.intermediate_values)] for t in trials]
        fig.add_scatter(x=[t.number for t in trials], y=ys, mode="markers", name=state.name.lower(),
                        marker_symbol=symbol)
    values = [v for d in fig.data for v in d.y if v is not None and math.isfinite(v)]
    if values:
        pad = 0.05 * (max(values) - min(values) or abs(max(values)) or 1.0)
        fig.update_yaxes(range=[min(values) - pad, max(values) + pad])
    return fig.update_layout(xaxis_title="trial", yaxis_title=objective)


def figures(study: Any, objective: str) -> dict[str, Any]:
    """Plotly figures of the study; a figure that the data cannot support is left out."""
    import optuna.visualization as vis
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = sorted({k for t in complete for k in t.params})
    varying = [n for n in names if len({json.dumps(t.params.get(n), default=str) for t in complete}) > 1]
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            out["Optimisation history"] = history_figure(study, objective)
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


def grid_rows(study: Any, order: list[str] | None = None,
              choices: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """The grid points of a study with their trials pooled over seeds: ``params``, ``values`` (objective of
    complete trials), ``metrics`` (each complete trial's stored metrics), ``states``, ``trials`` (numbers).
    Rows follow the order of the spec's choices (variants in the order written), not the order trials ran."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {u.user_attrs.get("retry_of") for u in trials}
    rows: dict[str, dict[str, Any]] = {}
    for t in trials:
        if not t.state.is_finished() or (t.state == TrialState.FAIL and t.number in retried):
            continue  # running, or replaced by its retry
        point = {k: v for k, v in sorted(t.params.items()) if k != SEED_PARAM}
        row = rows.setdefault(json.dumps(point, sort_keys=True, default=str),
                              {"params": point, "values": [], "metrics": [], "states": [], "trials": []})
        if t.state == TrialState.COMPLETE and t.value is not None:
            row["values"].append(float(t.value))
            row["metrics"].append(dict(t.user_attrs.get("metrics") or {}))
        row["states"].append(t.state.name.lower())
        row["trials"].append(t.number)
    keys = [n for n in (order or []) if n != SEED_PARAM]
    ranks = {n: {json.dumps(c, default=str): i for i, c in enumerate((choices or {}).get(n, []))} for n in keys}
    return sorted(rows.values(),
                  key=lambda r: tuple(ranks[n].get(json.dumps(r["params"].get(n), default=str), len(ranks[n]))
                                                       for n in keys))


def grid_table(study: Any, objective: str, order: list[str] | None = None, *,
               choices: dict[str, list[Any]] | None = None, columns: list[dict[str, Any]] | None = None) -> str:
    """One Markdown row per grid point (seeds pooled): parameters, objective and ``columns`` as mean ± std, trials,
    states."""
    rows = grid_rows(study, order, choices)
    names = [n for n in (order or []) if n != SEED_PARAM]
    names += [k for row in rows for k in row["params"] if k not in names]
    names = list(dict.fromkeys(names))
    # a column that no finished trial has (e.g. train/* without train.eval_each_epoch) is left out
    cols = [c for c in (columns or []) if any(c["metric"] in m for row in rows for m in row["metrics"])]
    header = [*names, f"{objective} (mean ± std)", *(c["title"] for c in cols), "seeds", "trials"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        extra = [_stat([m[c["metric"]] for m in row["metrics"] if isinstance(m.get(c["metric"]), (int, float))],
                       c["error"])
                 for c in cols]
        counts: dict[str, int] = {}
        for state in row["states"]:
            counts[state] = counts.get(state, 0) + 1
        states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        cells = ([_cell(row["params"].get(n)) for n in names]
                 + [_stat(row["values"]), *extra, str(len(row["values"])), states])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _stat(vals: list[float], error: bool = False) -> str:
    vals = [100.0 * (1.0 - v) for v in vals] if error else vals
    digits = 2 if error else 4
    if len(vals) < 2:
        return f"{vals[0]:.{digits}f}" if vals else "—"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _cell(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def render_html(study: Any, info: dict[str, Any], figs: dict[str, Any], best: dict[str, Any] | None,
                counts: dict[str, int], objective: str) -> str:
    e = html.escape
    parts = [f'<section class="figure"><h2>{e(title)}</h2>'
             + fig.update_layout(title=title).to_html(full_html=False, include_plotlyjs="inline" if i == 0 else False,
                                                      default_width="100%")
             + "</section>" for i, (title, fig) in enumerate(figs.items())]
    best_html = "<p>No complete trial yet.</p>"
    if best is not None:
        items = "".join(f"<tr><td>{e(k)}</td><td>{e(_cell(v))}</td></tr>" for k, v in best["params"].items())
        best_html = (f"<p>Trial {best['number']}: <b>{e(objective)} = {best['value']:.4f}</b></p>"
                     f"<table><tr><th>parameter</th><th>value</th></tr>{items}</table>")
    rows = []
    for t in study.get_trials(deepcopy=False):
        note = ([f"retry of {t.user_attrs['retry_of']}"] if t.user_attrs.get("retry_of") is not None else []) + \
               ([str(t.user_attrs["error"])[:200]] if t.user_attrs.get("error") else [])
        params = ", ".join(f"{k}={_cell(v)}" for k, v in t.params.items())
        rows.append(f"<tr><td>{t.number}</td><td>{t.state.name.lower()}</td>"
                    f"<td>{'' if t.value is None else f'{t.value:.4f}'}"
                    f"</td><td>{e(params)}</td><td>{e('; '.join(note))}</td></tr>")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>trickbox study {e(study.study_name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}section.figure{{margin:2em 0}}</style></head>
<body>
<h1>Study {e(study.study_name)}</h1>
<p>{e(info.get('direction', ''))} {e(objective)}; sampler {e(str(info.get('sampler', '')))},
pruner {e(str(info.get('pruner', '')))}; trials: {e(', '.join(f'{v} {k}' for k, v in counts.items()))}.</p>
<p>Search space: {e('; '.join(info.get('search', [])))}</p>
<h2>Best trial</h2>
{best_html}
{''.join(parts)}
<h2>All trials</h2>
<table><tr><th>#</th><th>state</th><th>{e(objective)}</th><th>parameters</th><th>notes</th></tr>
{chr(10).join(rows)}
</table>
</body></html>
"""


def write_report(name: str, *, storage: str | None = None, out_dir: Path = Path("sweeps_out"), html: Path | None = None,
                 use_wandb: bool = True) -> Report:
    """Write ``report.html`` (and ``report.md`` for a grid study); log the plots to W&B when it is on."""
    study, _ = load_study(name, storage, out_dir)
    info = dict(study.user_attrs.get("trickbox") or {})
    objective = objective_name(study, info)
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    try:
        bt = study.best_trial
        best: dict[str, Any] | None = {"number": bt.number, "value": float(bt.value), "params": dict(bt.params)}
    except ValueError:
        best = None
    figs = figures(study, objective)
    html_path = html or (out_dir / name / "report.html")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(study, info, figs, best, counts, objective))
    lines = [f"study {name}: {len(trials)} trials ({', '.join(f'{v} {k}' for k, v in counts.items())})"]
    if best is not None:
        lines += ([f"best {objective} = {best['value']:.4f} (trial {best['number']})"]
                  + [f"  {k}: {_cell(v)}" for k, v in best["params"].items()])
    md_path, table = None, ""
    if info.get("grid"):
        table = grid_table(study, objective, info.get("params"), choices=info.get("choices"),
                           columns=info.get("columns"))
        md_path = html_path.with_suffix(".md")
        md_path.write_text(f"# Study {name}\n\n{table}")
        lines.append(table.rstrip())
    lines += [f"HTML report: {html_path}"] + ([f"Markdown table: {md_path}"] if md_path else [])
    if use_wandb and _wandb_on(info):
        where = _log_wandb(name, info, figs, best, trials)
        lines += [f"W&B summary run: {where}"] if where else []
    return Report(name, html_path, md_path, best, counts, "\n".join(lines), figs)


def _wandb_on(info: dict[str, Any]) -> bool:
    from ..tracking import wandb_mode

    return info.get("tracker", "wandb") == "wandb" and wandb_mode() != "disabled"


def _log_wandb(name: str, info: dict[str, Any], figs: dict[str, Any], best: dict[str, Any] | None,
               trials: list[Any]) -> str | None:
    """The plots and the trial table in one W&B run (job type ``summary``); never fails the report."""
    from ..tracking import wandb_mode

    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        config = {"study": name,
                  **{k: v for k, v in info.items() if k in ("objective", "direction", "sampler", "pruner", "search")}}
        run = wandb.init(project=info.get("project") or "trickbox", group=name, job_type="summary",
                         name=f"{name}-summary", config=config,
                         settings=wandb.Settings(mode=wandb_mode(), console="off", x_disable_stats=True),
                         reinit="finish_previous")
        logged: dict[str, Any] = {"study/" + t.split(" (")[0].lower().replace(" ", "_"):
                                  wandb.Html(f.to_html(include_plotlyjs="cdn")) for t, f in figs.items()}
        rows = [[t.number, t.state.name.lower(), None if t.value is None else float(t.value),
                 json.dumps(t.params, default=str)]
                for t in trials]
        logged["study/trials"] = wandb.Table(columns=["number", "state", "value", "params"], data=rows)
        run.log(logged)
        if best is not None:
            run.summary.update({"best/value": best["value"], "best/trial": best["number"],
                                **{f"best/{k}": v if not (isinstance(v, float) and not math.isfinite(v)) else str(v)
                                   for k, v in best["params"].items()}})
        where = getattr(run, "dir", None)
        run.finish()
        return str(Path(where).parent) if where else "logged"
    except Exception as exc:
        print(f"trickbox report: W&B logging skipped ({type(exc).__name__}: {exc})")
        return None
