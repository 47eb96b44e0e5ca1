"""The regression check: retrain the short table ``sweeps/paper/regression.yaml`` and compare its effect with the committed one.

    python experiments/regression.py                        # trains into a temporary folder; exit 1 if an effect is gone
    python experiments/regression.py --keep DIR             # keep the study and the table in DIR

An effect is the difference of two rows' means on one metric (:data:`EFFECTS`). It passes when the new
difference has the sign of the committed one (``docs/results/paper_regression.json``) and at least
:data:`KEEP` of its size: a trick that stops working, or a change that silently makes the two rows
train alike, fails here. The committed table is made by ``python experiments/paper.py regression``.
"""  # noqa: E501 - the usage lines are --help text (description=__doc__); wrapping them would change it
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "docs" / "results" / "paper_regression.json"
KEEP = 0.5
"""The share of the committed effect that must remain (same sign, at least this fraction of its size)."""
# metric, row a, row b, what a − b means. Only effects far beyond the seeds' spread belong here: the committed
# test-error gap of this short table (1.2 points, std ~1) is not one of them, the fit to the noisy labels
# (59 points) is.
EFFECTS = (
    ("train/top1", "ERM", "mixup (α=8)", "ERM fits more of the noisy training labels than mixup (accuracy on them)"),
)


def effect(table: dict[str, Any], metric: str, a: str, b: str) -> float:
    """mean(a) − mean(b) of ``metric`` over the seeds, in percentage points."""
    def vals(variant: str) -> list[float]:
        seeds = table.get(json.dumps({"variant": variant}, ensure_ascii=False), {})
        return [float(m[metric]) for m in seeds.values() if isinstance(m.get(metric), (int, float))]

    va, vb = vals(a), vals(b)
    if not va or not vb:
        raise KeyError(f"no seeds of row {a if not va else b!r} with {metric} in the table")
    return 100.0 * (statistics.mean(va) - statistics.mean(vb))


def compare(new: dict[str, Any], committed: dict[str, Any]) -> list[str]:
    """One line per effect that lost its committed direction or more than 1 − KEEP of its size; empty: all kept."""
    problems = []
    for metric, a, b, text in EFFECTS:
        then, now = effect(committed, metric, a, b), effect(new, metric, a, b)
        kept = then != 0 and now * then > 0 and abs(now) >= KEEP * abs(then)
        line = f"{text}: {metric} {a} − {b} = {now:+.1f} pt now, {then:+.1f} pt committed"
        print(("kept  " if kept else "LOST  ") + line)
        if not kept:
            problems.append(line + f" (needs the same sign and at least {KEEP:.0%} of the size)")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the table's base config, e.g. data.root=PATH")
    p.add_argument("--keep", metavar="DIR", help="train into DIR and keep it (default: a temporary folder)")
    p.add_argument("--workers", default="2", help="sweep workers (default 2, as the committed table was trained)")
    args = p.parse_args(argv)
    if not COMMITTED.is_file():
        print(f"regression.py: error: {COMMITTED} is missing; make it with: python experiments/paper.py regression",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="trickbox-regression-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        cmd = [sys.executable, str(REPO / "experiments" / "paper.py"), "regression", "--workers", args.workers,
               "--out-dir", str(work / "out"), "--docs-dir", str(work / "docs"), *args.overrides]
        res = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL)
        if res.returncode != 0:
            print(f"regression.py: error: the table did not train (exit {res.returncode}): {' '.join(cmd)}",
                  file=sys.stderr)
            return res.returncode
        new = json.loads((work / "docs" / "paper_regression.json").read_text())
    problems = compare(new, json.loads(COMMITTED.read_text()))
    if problems:
        print("regression: an effect is gone:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("regression: every committed effect kept its direction")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
