"""The answer of an ablation: ``ablation.md``, ``report.html``, the forest plot ``forest.png`` and ``ablation.json``
under ``OUT_DIR/<study>/``, and (W&B on) a summary run in the study's group with the table and the plot."""
from __future__ import annotations

import base64
import html
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .rule import EQUIVALENT, HELPS, HURTS

if TYPE_CHECKING:
    from .looks import Request, Results, State

EXTRA = ("test/top1", "test/nll")
"""Reported beside the judged metric when the runs have them (never used to decide)."""
COLOURS = {HELPS: "#2a9d4b", HURTS: "#c0392b", EQUIVALENT: "#4c72b0"}


def _mean_std(vals: list[float], scale: float) -> str:
    v = [scale * x for x in vals]
    if not v:
        return "—"
    return f"{v[0]:.2f}" if len(v) == 1 else f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}"


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def table_rows(req: Request, state: State, res: Results) -> list[dict[str, Any]]:
    """One entry per row: its numbers, and the comparison shown on it (if any)."""
    out = []
    for row in req.design.rows:
        c = req.design.contrast_of(row)
        v = state.verdicts.get(c.name) if c is not None else None
        entry: dict[str, Any] = {
            "row": row.name, "tricks_on": list(row.on), "seeds": sorted(res.runs.get(row.name, {})),
            "failed": res.failed.get(row.name, []),
            "values": {m: res.values(row.name, m) for m in (req.metric, *EXTRA) if res.values(row.name, m)},
        }
        if c is not None and v is not None:
            entry["comparison"] = {"trick": c.trick, "with": c.with_row, "without": c.without_row,
                                   "delta": v.mean, "ci": [v.ci_low, v.ci_high], "p_adjusted": v.p_adjusted,
                                   "pairs": v.seeds, "verdict": v.verdict}
        out.append(entry)
    return out


def markdown(req: Request, rows: list[dict[str, Any]], compute: dict[str, Any]) -> str:
    unit = " (points)" if req.scale == 100 else ""
    extra = [m for m in EXTRA if m != req.metric and any(m in r["values"] for r in rows)]
    head = ["row", f"{req.metric} (mean ± std)", *(f"{m}" for m in extra), "seeds",
            f"Δ{unit} [95 % CI]", "against", "p (Holm)", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        c = r.get("comparison")
        cells = [r["row"], _mean_std(r["values"].get(req.metric, []), req.scale),
                 *(_mean_std(r["values"].get(m, []), 100.0 if m.endswith("top1") else 1.0) for m in extra),
                 str(len(r["seeds"])) + (f" ({len(r['failed'])} failed)" if r["failed"] else "")]
        if c is None:
            cells += ["", "", "", "reference"]
        else:
            s = req.scale
            lo, hi = c["ci"]
            ci = f"[{s * lo:+.2f}, {s * hi:+.2f}]" if math.isfinite(lo) and math.isfinite(hi) else "[—]"
            cells += [f"{s * c['delta']:+.2f} {ci}", c["without"] if req.design.kind != "leave-one-out" else c["with"],
                      _p(c["p_adjusted"]), f"**{c['verdict']}**" if c["verdict"] else "open (more seeds)"]
        lines.append("| " + " | ".join(cells) + " |")
    delta = req.rule.min_effect * req.scale
    minutes = compute.get("train_seconds", 0.0) / 60
    rule = req.rule
    looks = ", ".join(str(n) for n in rule.looks())
    text = [
        f"# Ablation {req.study}: {req.design.kind} of {', '.join(req.design.tricks)}",
        "",
        "\n".join(lines),
        "",
        "![forest plot](forest.png)",
        "",
        f"- Judged on `{req.metric}` ({req.direction}); Δ is the row with the trick minus the row without it, "
        f"paired by seed, positive when the trick {'raises' if req.sign > 0 else 'lowers'} it.",
        f"- Verdicts: **helps** / **hurts**: a group-sequential paired t-test (looks at {looks} seeds, level "
        f"{rule.alpha:g} spent ∝ n³) with Holm's correction over the {len(req.design.contrasts)} comparisons; "
        f"**no effect > δ**: TOST, the interval inside ±{delta:g}{unit}; **undecided (budget)**: neither when the "
        "seeds or the budget ran out (see docs/ablation.md).",
        f"- Compute: {compute.get('runs', 0)} runs over {compute.get('looks', 0)} look(s), {minutes:.1f} min of "
        f"training; {compute.get('wall_seconds', 0.0) / 60:.1f} min from the first run's start to the last one's end"
        + (f"; stopped early: {compute['stopped']}" if compute.get("stopped") else "") + ".",
    ]
    return "\n".join(text) + "\n"


def forest_plot(req: Request, rows: list[dict[str, Any]], path: Path) -> Path:
    """Every comparison's Δ with its 95 % interval, coloured by verdict, against 0 and ±δ."""
    from ..plots import _pyplot

    plt = _pyplot()
    shown = [r for r in rows if r.get("comparison")]
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * len(shown) + 1.4), dpi=100)
    s, delta = req.scale, req.rule.min_effect * req.scale
    ax.axvspan(-delta, delta, color="#dddddd", alpha=0.6, lw=0, label=f"±δ = {delta:g}")
    ax.axvline(0, color="black", lw=0.8)
    for i, r in enumerate(reversed(shown)):
        c = r["comparison"]
        lo, hi = (s * x if math.isfinite(x) else s * c["delta"] for x in c["ci"])
        colour = COLOURS.get(c["verdict"], "#7f7f7f")
        ax.errorbar([s * c["delta"]], [i], xerr=[[s * c["delta"] - lo], [hi - s * c["delta"]]], fmt="o",
                    color=colour, capsize=3)
        ax.annotate(c["verdict"], (hi, i), xytext=(6, 0), textcoords="offset points", va="center", fontsize=8,
                    color=colour)
    ax.set_yticks(range(len(shown)), [f"{r['comparison']['trick']}" for r in reversed(shown)])
    ax.set_xlabel(f"Δ {req.metric}" + (" (points)" if s == 100 else "") + ", 95 % CI")
    ax.set_title(f"{req.study}: {req.design.kind}", fontsize=10)
    ax.margins(x=0.25)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.legend(loc="best", fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def page(req: Request, md: str, png: Path) -> str:
    """``report.html``: the Markdown's table, notes and the plot in one self-contained page."""
    e = html.escape
    parts, table = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            if not line.startswith("|---"):
                tag = "th" if not table else "td"
                cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
                table.append("<tr>" + "".join(f"<{tag}>{e(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if table:
            parts.append("<table>" + "".join(table) + "</table>")
            table = []
        if line.startswith("# "):
            parts.append(f"<h1>{e(line[2:])}</h1>")
        elif line.startswith("- "):
            parts.append(f"<p>{e(line[2:].replace('**', '').replace('`', ''))}</p>")
        elif line.startswith("!["):
            img = base64.b64encode(png.read_bytes()).decode()
            parts.append(f'<img alt="forest plot" src="data:image/png;base64,{img}">')
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>trickbox ablation '
            f'{e(req.study)}</title><style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}'
            'table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>\n'
            + "\n".join(parts) + "\n</body></html>\n")


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a kill mid-write leaves the previous file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_record(req: Request, state: State | None, res: Results | None, compute: dict[str, Any]) -> Path:
    """``ablation.json`` (what was asked, and the answer once there is one); with an answer, the pages too."""
    req.dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"fingerprint": req.fingerprint(), "request": {
        **req.identity(), "storage": req.storage, "budget": req.budget, "workers": req.workers}}
    if state is not None and res is not None:
        rows = table_rows(req, state, res)
        md = markdown(req, rows, compute)
        png = forest_plot(req, rows, req.dir / "forest.png")
        _write(req.dir / "ablation.md", md)
        _write(req.dir / "report.html", page(req, md, png))
        record.update(rows=rows, compute=compute, written=time.time(),
                      per_seed={r: {str(s): m for s, m in seeds.items()} for r, seeds in res.runs.items()})
        if compute.get("final"):
            log_wandb(req, rows, png)
    _write(req.dir / "ablation.json", json.dumps(record, indent=1, default=str) + "\n")
    return req.dir / "ablation.json"


def log_wandb(req: Request, rows: list[dict[str, Any]], png: Path) -> str | None:
    """The table (a ``wandb.Table``) and the forest plot in one run of job type ``summary`` in the study's group;
    never fails the ablation."""
    from ..tracking import wandb_mode

    train = req.base.get("train") or {}
    if train.get("tracker", "wandb") != "wandb" or wandb_mode() == "disabled":
        return None
    try:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        run = wandb.init(project=train.get("project") or "trickbox", group=req.study, job_type="summary",
                         name=f"{req.study}-ablation", config={"ablation": req.identity()},
                         settings=wandb.Settings(mode=wandb_mode(), console="off", x_disable_stats=True),
                         reinit="finish_previous")
        columns = ["row", "trick", "mean", "std", "seeds", "delta", "ci_low", "ci_high", "p_adjusted", "verdict"]
        data = []
        for r in rows:
            v = [req.scale * x for x in r["values"].get(req.metric, [])]
            c = r.get("comparison") or {}
            data.append([r["row"], c.get("trick", ""), statistics.mean(v) if v else None,
                         statistics.stdev(v) if len(v) > 1 else None, len(r["seeds"]),
                         *((req.scale * c["delta"], req.scale * c["ci"][0], req.scale * c["ci"][1], c["p_adjusted"],
                            c["verdict"]) if c else (None, None, None, None, "reference"))])
        data = [[None if isinstance(x, float) and not math.isfinite(x) else x for x in row] for row in data]
        run.log({"ablation/table": wandb.Table(columns=columns, data=data),
                 "ablation/forest": wandb.Image(str(png))})
        where = getattr(run, "dir", None)
        run.finish()
        return str(Path(where).parent) if where else "logged"
    except Exception as exc:
        print(f"trickbox ablate: W&B logging skipped ({type(exc).__name__}: {exc})")
        return None
