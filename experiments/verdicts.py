"""The verdict list of docs/results/README.md, computed from the committed per-seed numbers.

    python experiments/verdicts.py            # rewrites the block between the verdict markers in docs/results/README.md

Each claim compares two rows of a table (``docs/results/paper_<table>.json``, written by
``experiments/paper.py``). Rows that depend on a hyperparameter (the best α, ε or σ) are chosen on
validation top-1, never on test. The rule, stated once for all claims: with d the difference of the
means in the claimed direction and s the sum of the two rows' standard deviations over seeds,
d > s is **reproduced**, d < −s is **not reproduced** (the opposite holds), anything else is
**inconclusive** at this scale. Claims of "no gain" are reproduced when the gain is not above s.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
START, END = "<!-- verdicts:start (python experiments/verdicts.py) -->", "<!-- verdicts:end -->"


class Table:
    def __init__(self, name: str) -> None:
        self.name = name
        path = RESULTS / f"paper_{name}.json"
        self.rows: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}

    def key(self, variant: str, **dims: Any) -> str:
        return json.dumps(dict(sorted({"variant": variant, **dims}.items())), ensure_ascii=False, default=str)

    def values(self, variant: str, metric: str, error: bool = True, **dims: Any) -> dict[str, float]:
        seeds = self.rows.get(self.key(variant, **dims), {})
        out = {s: m[metric] for s, m in seeds.items() if isinstance(m.get(metric), (int, float))}
        return {s: 100.0 * (1.0 - v) for s, v in out.items()} if error else out

    def best_by_val(self, variants: list[str], **dims: Any) -> str:
        scored = [(statistics.mean(v.values()), name) for name in variants if (v := self.values(name, "objective", error=False, **dims))]
        return max(scored)[1] if scored else variants[0]


def ms(vals: dict[str, float]) -> tuple[float, float]:
    v = list(vals.values())
    return (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else float("nan")) if v else (float("nan"), float("nan"))


def fmt(vals: dict[str, float]) -> str:
    m, s = ms(vals)
    return f"{m:.1f} ± {s:.1f}"


def better(a: dict[str, float], b: dict[str, float], lower: bool = True) -> str:
    """a is claimed to beat b (lower error by default)."""
    if len(a) < 2 or len(b) < 2:
        return "not run"
    (ma, sa), (mb, sb) = ms(a), ms(b)
    d = (mb - ma) if lower else (ma - mb)
    if d > sa + sb:
        return "reproduced"
    if d < -(sa + sb):
        return "not reproduced"
    return "inconclusive"


def no_gain(a: dict[str, float], b: dict[str, float]) -> str:
    """a is claimed to give no gain over b (error not lower beyond the stds)."""
    if len(a) < 2 or len(b) < 2:
        return "not run"
    (ma, sa), (mb, sb) = ms(a), ms(b)
    return "not reproduced" if mb - ma > sa + sb else "reproduced"


Claim = tuple[str, str, str, str, str]  # experiment, claim, verdict, numbers, source


ERM_MIXUP = (  # table, the scale it ran at
    ("erm_mixup", "CPU profile"),
    ("erm_mixup-full-23ep", "H100, PreAct ResNet-18, 23 epochs"),
    ("erm_mixup-full", "H100, PreAct ResNet-18, 60 epochs"),
)


def erm_against_mixup() -> list[Claim]:
    out: list[Claim] = []
    for name, scale in ERM_MIXUP:
        t = Table(name)
        if not t.rows:
            continue
        for metric, word in (("test/top1", "last epoch"), ("at_best_val/test/top1", "best-validation epoch")):
            erm, mix = t.values("ERM", metric), t.values("mixup (α=1)", metric)
            out.append((f"1 classification ({scale})", f"mixup (α=1) beats ERM (test error, {word})", better(mix, erm),
                        f"{fmt(mix)} % vs ERM {fmt(erm)} %", f"paper_{name}.md"))
    return out


def classification() -> list[Claim]:
    out: list[Claim] = erm_against_mixup()
    t = Table("alpha")
    alphas = ["α=0.1", "α=0.2", "α=0.4", "α=1", "α=2", "α=8"]
    best = t.best_by_val(alphas)
    erm, mix = t.values("ERM (α=0)", "test/top1"), t.values(best, "test/top1")
    out.append(("1 classification", "mixup beats ERM (α chosen on validation)", better(mix, erm),
                f"test error {best}: {fmt(mix)} % vs ERM {fmt(erm)} %", "paper_alpha.md"))
    hi, lo = t.values("α=8", "train/top1"), t.values("α=0.2", "train/top1")
    out.append(("1 classification", "a large α regularises more and can underfit (train error α=8 > α=0.2)", better(hi, lo, lower=False),
                f"train error α=8: {fmt(hi)} % vs α=0.2: {fmt(lo)} %; test α=8: {fmt(t.values('α=8', 'test/top1'))} %", "paper_alpha.md"))
    c = Table("capacity")
    gains: dict[str, dict[str, float]] = {}
    for model in ("cifar_resnet8", "cifar_resnet20"):
        e = c.values("ERM", "test/top1", **{"model.name": model})
        m = c.values("mixup (α=1)", "test/top1", **{"model.name": model})
        gains[model] = {s: e[s] - m[s] for s in e if s in m}
    out.append(("1 classification", "the bigger network gains more from mixup", better(gains["cifar_resnet20"], gains["cifar_resnet8"], lower=False),
                f"gain (ERM − mixup test error) resnet20: {fmt(gains['cifar_resnet20'])} pt vs resnet8: {fmt(gains['cifar_resnet8'])} pt",
                "paper_capacity.md"))
    s = Table("stack")
    if not s.rows:
        out.append(("1 classification (stack)", "each trick helps on top of the ones above (He et al.)", "not run",
                    "the CPU grid was not run; the H100 run of the same stack at CPU scale is below", "tricks.md"))
        return out
    order = ["baseline (constant LR)", "+ cosine", "+ label smoothing", "+ distillation", "+ mixup"]
    for prev, row in zip(order, order[1:]):
        a, b = s.values(row, "test/top1"), s.values(prev, "test/top1")
        out.append(("1 classification (stack)", f"{row.removeprefix('+ ')} helps on top of the row above", better(a, b),
                    f"test error {fmt(a)} % vs {fmt(b)} %", "paper_stack.md"))
    return out


def labels(name: str = "labels") -> list[Claim]:
    out: list[Claim] = []
    t = Table(name)
    exp = "2 corrupted labels" + (" (long)" if name == "labels_long" else "")
    src = f"paper_{name}.md"
    for noise in (0.2, 0.5, 0.8):
        d = {"data.label_noise": noise}
        last, best = t.values("ERM", "test/top1", **d), t.values("ERM", "at_best_val/test/top1", **d)
        # accuracy on the (noisy) training labels, in %: how much of the noise each method fits
        erm_fit = {s: 100 * v for s, v in t.values("ERM", "train/top1", error=False, **d).items()}
        mix_fit = {s: 100 * v for s, v in t.values("mixup (α=8)", "train/top1", error=False, **d).items()}
        out.append((exp, f"{int(noise * 100)} %: ERM memorises the noise, so its last test error exceeds its best",
                    better(last, best, lower=False), f"last {fmt(last)} % vs best {fmt(best)} %; train acc. on noisy labels {fmt(erm_fit)} %", src))
        for metric, word in (("at_best_val/test/top1", "best"), ("test/top1", "last")):
            mix, drop = t.values("mixup (α=8)", metric, **d), t.values("ERM + dropout", metric, **d)
            out.append((exp, f"{int(noise * 100)} %: mixup beats dropout ({word} test error)", better(mix, drop),
                        f"{fmt(mix)} % vs {fmt(drop)} %", src))
        both, mix = t.values("mixup (α=8) + dropout", "test/top1", **d), t.values("mixup (α=8)", "test/top1", **d)
        drop = t.values("ERM + dropout", "test/top1", **d)
        v1, v2 = better(both, mix), better(both, drop)
        verdict = v1 if v1 == v2 else ("inconclusive" if "not reproduced" not in (v1, v2) else "not reproduced")
        out.append((exp, f"{int(noise * 100)} %: mixup and dropout combine (last test error below each alone)", verdict,
                    f"{fmt(both)} % vs mixup {fmt(mix)} %, dropout {fmt(drop)} %", src))
        out.append((exp, f"{int(noise * 100)} %: ERM fits the noisy labels more than mixup (train accuracy on them)",
                    better(erm_fit, mix_fit, lower=False), f"{fmt(erm_fit)} % vs {fmt(mix_fit)} %", src))
    return out


def adversarial() -> list[Claim]:
    path = RESULTS / "paper_adversarial.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    out: list[Claim] = []
    for attack in ("fgsm", "ifgsm"):
        for eps in ("4.0", "8.0"):
            for k in ("top1", "top5"):
                erm = {str(i): 100 * r[eps][k] for i, r in enumerate(data.get("ERM (α=0)", {}).get(attack, [])) if eps in r}
                mix = {str(i): 100 * r[eps][k] for i, r in enumerate(data.get("α=1", {}).get(attack, [])) if eps in r}
                out.append(("3 adversarial", f"mixup (α=1) lowers the {attack.upper()} top-{k[-1]} error at ε={float(eps):g}/255", better(mix, erm),
                            f"{fmt(mix)} % vs ERM {fmt(erm)} %", "paper_adversarial.md"))
    return out


def ablation() -> list[Claim]:
    t = Table("ablation")
    e: Callable[[str], dict[str, float]] = lambda v: t.values(v, "test/top1")  # noqa: E731
    out: list[Claim] = []

    def claim(text: str, a: str, b: str, fn: Callable[..., str] = better) -> None:
        out.append(("4 ablation", text, fn(e(a), e(b)), f"{a}: {fmt(e(a))} % vs {b}: {fmt(e(b))} %", "paper_ablation.md"))

    claim("mixup (AC+RP) beats ERM", "mixup AC+RP", "ERM")
    claim("random pairs beat KNN pairs (all classes)", "mixup AC+RP", "mixup AC+KNN")
    claim("random pairs beat KNN pairs (same class)", "mixup SC+RP", "mixup SC+KNN")
    claim("pairs from all classes beat same-class pairs", "mixup AC+RP", "mixup SC+RP")
    for n in (1, 2, 3):
        claim(f"mixing inputs beats mixing hidden layer {n}", "mixup AC+RP", f"mix hidden layer {n}")
    claim("mixing the labels matters (beats inputs only)", "mixup AC+RP", "mix inputs only")
    ls = t.best_by_val([f"label smoothing ε={x}" for x in ("0.05", "0.1", "0.2")])
    claim("mixup beats label smoothing (ε chosen on validation)", "mixup AC+RP", ls)
    gn = t.best_by_val([f"Gaussian noise σ={x}" for x in ("0.05", "0.1", "0.2")])
    claim("mixup beats Gaussian input noise (σ chosen on validation)", "mixup AC+RP", gn)
    claim("3-way mixup gives no gain over 2-way", "3-way mixup", "mixup AC+RP", no_gain)
    return out


def render() -> str:
    claims = classification() + labels("labels") + labels("labels_long") + adversarial() + ablation()
    lines = ["| experiment | claim | verdict | numbers (mean ± std over seeds) | table |", "|---|---|---|---|---|"]
    for exp, text, verdict, numbers, src in claims:
        shown = f"**{verdict}**" if verdict in ("reproduced", "not reproduced") else verdict
        lines.append(f"| {exp} | {text} | {shown} | {numbers} | [{src}]({src}) |")
    counts: dict[str, int] = {}
    for c in claims:
        counts[c[2]] = counts.get(c[2], 0) + 1
    lines += ["", "Counts: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + "."]
    return "\n".join(lines)


def main() -> None:
    readme = RESULTS / "README.md"
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no verdict markers; add the lines {START!r} and {END!r} where the list goes")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    block = render()
    readme.write_text(f"{head}{START}\n{block}\n{END}{tail}")
    print(block)
    if "--check" in sys.argv and "not run" in block:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
