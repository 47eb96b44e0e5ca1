"""The pictures of the paper tables: bars per row, per-epoch curves, error against α, error against ε.

Each function draws one PNG from a grid study's rows (``trickbox.sweep.report.grid_rows``), mean ± std over seeds.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any


def row_label(row: dict[str, Any]) -> str:
    return ", ".join(str(v) if k == "variant" else f"{k.split('.')[-1]}={v}" for k, v in row["params"].items())


def mean_std(vals: list[float]) -> tuple[float, float]:
    if not vals:
        return float("nan"), float("nan")
    return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def err(vals: list[float]) -> list[float]:
    return [100.0 * (1.0 - v) for v in vals]


def bar_plot(rows: list[dict[str, Any]], metric: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row_label(r) for r in rows]
    stats = [mean_std(err([m[metric] for m in r["metrics"] if metric in m])) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    y = range(len(rows))
    ax.barh(list(y), [s[0] for s in stats], xerr=[s[1] for s in stats], color="#4c72b0", capsize=3)
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    lo = min(s[0] - s[1] for s in stats if s[0] == s[0])
    ax.set_xlim(left=max(0.0, lo - 5))
    ax.set_xlabel(f"{title} (mean ± std over seeds)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def curves_plot(study: Any, rows: list[dict[str, Any]], metrics: list[tuple[str, str]], group: str | None,
                path: Path) -> None:
    """Per-epoch curves (mean over seeds) from each trial's metrics.jsonl, one panel per value of ``group``
    (one panel: None)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    groups = sorted({r["params"].get(group) for r in rows}) if group else [None]
    fig, axes = plt.subplots(len(metrics), len(groups), figsize=(4.2 * len(groups), 3.2 * len(metrics)), squeeze=False)
    for gi, g in enumerate(groups):
        for row in (r for r in rows if group is None or r["params"].get(group) == g):
            series: dict[str, list[list[float]]] = {m: [] for m, _ in metrics}
            for n in row["trials"]:
                run_dir = by_number[n].user_attrs.get("run_dir")
                f = Path(run_dir or "") / "metrics.jsonl"
                if not f.is_file():
                    continue
                recs = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
                recs = [r for r in recs if "val/top1" in r]  # epoch records (the final test record repeats the last)
                for m, _ in metrics:
                    vals = [r[m] for r in recs if m in r]
                    if vals:
                        series[m].append(vals)
            for mi, (m, label) in enumerate(metrics):
                runs = series[m]
                if not runs:
                    continue
                n_ep = min(len(v) for v in runs)
                mean = [statistics.mean(100.0 * (1.0 - v[e]) for v in runs) for e in range(n_ep)]
                axes[mi][gi].plot(range(1, n_ep + 1), mean, label=str(row["params"].get("variant", "")))
                axes[mi][gi].set_title(f"{group.split('.')[-1]}={g}" if group else "")
                axes[mi][gi].set_xlabel("epoch")
                axes[mi][gi].set_ylabel(label)
                axes[mi][gi].grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def alpha_plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, test, train = [], [], []
    for r in rows:
        v = str(r["params"].get("variant"))
        a = 0.0 if v.startswith("ERM") else float(v.split("=")[1])
        xs.append(a)
        test.append(mean_std(err([m["test/top1"] for m in r["metrics"] if "test/top1" in m])))
        train.append(mean_std(err([m["train/top1"] for m in r["metrics"] if "train/top1" in m])))
    pos = list(range(len(xs)))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.errorbar(pos, [t[0] for t in test], yerr=[t[1] for t in test], marker="o", capsize=3, label="test error")
    if all(t[0] == t[0] for t in train):
        ax.errorbar(pos, [t[0] for t in train], yerr=[t[1] for t in train], marker="s", capsize=3,
                    label="train error (clean labels, no aug.)")
    ax.set_xticks(pos, [f"{a:g}" for a in xs])
    ax.set_xlabel("mixup α (0 = ERM)")
    ax.set_ylabel("error (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def adversarial_plot(results_md: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for line in results_md.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        model, attack, eps, t1 = cells[0], cells[1], cells[2], cells[3]
        if eps == "clean":
            continue
        m, s = (float(x) for x in t1.split("±"))
        series.setdefault((model, attack), []).append((float(eps), m, s))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (model, attack), pts in series.items():
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker="o", capsize=3,
                    linestyle="-" if attack == "FGSM" else "--", label=f"{model}, {attack}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("ε (pixel units of 1/255)")
    ax.set_ylabel("top-1 error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
