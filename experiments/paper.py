"""The mixup paper's experiments as grid studies: run one, render its table and plots into docs/results/.

    python experiments/paper.py alpha                       # classification: test error against α
    python experiments/paper.py capacity                    # ERM vs mixup at two model sizes
    python experiments/paper.py stack                       # He et al.: trickbox ablate --design stack (+ cosine, + LS, + KD, + mixup)
    python experiments/paper.py adversarial                 # FGSM / I-FGSM on the alpha grid's ERM and α=1 models
    python experiments/paper.py labels                      # corrupted labels: best / last test error
    python experiments/paper.py ablation                    # the ablation table
    python experiments/paper.py regression                  # the short table CI retrains (experiments/regression.py)
    python experiments/paper.py erm_mixup                   # ERM against mixup (α=1): the two headline rows, with test curves
    python experiments/paper.py alpha --profile full        # PreAct ResNet-18, 200 epochs, all of CIFAR-10 (GPUs)

Each table is the spec ``sweeps/paper/<table>.yaml`` run by ``trickbox sweep``, or, for the stack, the
``trickbox ablate --design stack`` command in :data:`ABLATE` (finished trials are kept, so an interrupted table
continues), then rendered from the study's storage (``trickbox report``'s
``report.md`` table) into ``docs/results/paper_<table>[-full].md`` with the exact command, the
commit, the machine and the wall time, plus plots next to it. ``--render-only`` re-renders from a
finished study without training.
"""  # noqa: E501 - the usage lines are --help text (description=__doc__); wrapping them would change it
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, commit, machine  # noqa: E402
from paper_plots import adversarial_plot, alpha_plot, bar_plot, curves_plot, mean_std  # noqa: E402

TABLES = ("erm_mixup", "alpha", "capacity", "stack", "tricks", "adversarial", "labels", "ablation", "regression")
PROFILES: dict[str, dict[str, list[str]]] = {
    # the CPU profile is the specs themselves (sweeps/paper/cifar_paper.yaml)
    "cpu": {},
    # the paper's scale: PreAct ResNet-18, all 45k training images (5k validation), full test set, 200 epochs
    "full": {
        "*": ["model.name=preact_resnet18", "train.epochs=200", "data.train_subset=null", "data.test_subset=null",
              "data.val_fraction=0.1", "optim.weight_decay=0.0001", "data.augment=true", "train.batch_size=128"],
        "ablation": ["tricks.mixup.k=200"],
        "capacity": [],  # cifar_resnet8 at the searched widths stays; only data and epochs change
    },
}
ATTACK_EPS = "1,2,4,8"


ABLATE: dict[str, tuple[list[str], list[str]]] = {
    # He et al., Table 6: each row adds one trick to the one above; distillation's teacher (cifar_resnet20 with
    # cosine decay) is trained once from the baseline config before the first row
    "stack": (["tricks.mixup.alpha=0.2", "tricks.mixup.grid=false", "tricks.label_smoothing.eps=0.1",
               "tricks.distillation.temperature=4"],
              ["--tricks", "sgdr,label_smoothing,distillation,mixup", "--design", "stack", "--seeds", "3",
               "--train-first", "model.name=cifar_resnet20", "--train-first", "tricks.sgdr={}"]),
}
"""Tables that are a ``trickbox ablate`` command on ``sweeps/paper/cifar_paper.yaml``: (overrides, options)."""
ABLATE_COLUMNS = [
    {"metric": "test/top1", "title": "test error (%)", "error": True},
    {"metric": "test/nll", "title": "test NLL", "error": False},
    {"metric": "test/ece", "title": "test ECE", "error": False},
    {"metric": "train/top1", "title": "final train error (%)", "error": True},
]


def ablate_command(table: str, args: argparse.Namespace) -> list[str]:
    overrides, options = ABLATE[table]
    return ["trickbox", "ablate", "--config", "sweeps/paper/cifar_paper.yaml", *overrides,
            *overrides_for(table, args.profile), *(["train.tracker=none"] if args.no_wandb else []), *args.overrides,
            *options, "--workers", str(args.workers), "--study", study_name(table, args.profile), "--out-dir",
            args.out_dir]


def overrides_for(table: str, profile: str) -> list[str]:
    spec_table = "alpha" if table == "adversarial" else table
    p = PROFILES[profile]
    out = list(p.get("*", []))
    if spec_table == "capacity":
        out = [o for o in out if not o.startswith("model.name=")]
    return out + p.get(spec_table, [])


def study_name(table: str, profile: str) -> str:
    base = "alpha" if table == "adversarial" else table
    return f"paper_{base}" + ("" if profile == "cpu" else f"-{profile}")


def run_sweep(table: str, args: argparse.Namespace) -> float:
    """Run (or continue) the table's grid; return the wall time of this invocation."""
    spec = REPO / "sweeps" / "paper" / f"{table}.yaml"
    cmd = ablate_command(table, args) if table in ABLATE else [
        "trickbox", "sweep", str(spec.relative_to(REPO)), "--workers", str(args.workers), "--study",
        study_name(table, args.profile), "--out-dir", args.out_dir, *overrides_for(table, args.profile),
        *(["train.tracker=none"] if args.no_wandb else []), *args.overrides]
    print("$", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if res.returncode != 0:
        raise SystemExit(f"trickbox sweep failed with exit code {res.returncode}; rerun the same command to continue")
    return time.perf_counter() - t0


def load_rows(table: str, args: argparse.Namespace) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    from trickbox.sweep.report import grid_rows, load_study

    name = study_name(table, args.profile)
    if table in ABLATE:  # its one look (fixed seeds) is the grid study
        study, _ = load_study(f"{name}.look-1", None, REPO / args.out_dir / name)
    else:
        study, _ = load_study(name, None, REPO / args.out_dir)
    info = dict(study.user_attrs.get("trickbox") or {})
    return study, grid_rows(study, info.get("params"), info.get("choices")), info


# -- adversarial -------------------------------------------------------------------
def adversarial(args: argparse.Namespace, rows: list[dict[str, Any]], study: Any) -> tuple[str, float]:
    """FGSM and I-FGSM through ``trickbox eval --attack`` on the alpha grid's ERM and α=1 models."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    picked = [r for r in rows if str(r["params"].get("variant")) in ("ERM (α=0)", "α=1")]
    if len(picked) != 2:
        raise SystemExit("the alpha grid has no finished ERM (α=0) and α=1 rows yet; "
                         "run: python experiments/paper.py alpha")
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    jobs: list[tuple[str, str, Path]] = [(str(row["params"]["variant"]), attack,
                                          Path(by_number[n].user_attrs["run_dir"]))
                                         for row in picked for n in row["trials"] for attack in ("fgsm", "ifgsm")]
    todo = [j for j in jobs if not (j[2] / f"eval-test-{j[1]}.json").is_file()]
    workers = int(args.workers) if str(args.workers).isdigit() else 1
    from trickbox.cli.eval import parse_eps
    from trickbox.evaluation.saved_runs import evaluate_run

    def attack_one(job: tuple[str, str, Path]) -> None:
        """What ``trickbox eval RUN --attack A --eps E`` writes, computed in this process (no torch import per run)."""
        cmd = ["trickbox", "eval", str(job[2]), "--attack", job[1], "--eps", ATTACK_EPS, "--no-progress"]
        print("$", shlex.join(cmd), flush=True)
        result = evaluate_run(job[2], split="test", attack=job[1], eps=parse_eps(ATTACK_EPS), iterations=10)
        (job[2] / f"eval-test-{job[1]}.json").write_text(json.dumps(result, indent=2) + "\n")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(attack_one, todo))
    ran = time.perf_counter() - t0 if todo else 0.0
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, attack, run_dir in jobs:
        results.setdefault(name, {}).setdefault(attack, []).append(
            json.loads((run_dir / f"eval-test-{attack}.json").read_text()))
    prov = json.loads(provenance_file(args).read_text()) if provenance_file(args).is_file() else {}
    if ran > 0 or "eval_seconds" not in prov:
        record_provenance(args, eval_seconds=ran if ran > 0 else time.perf_counter() - t0)
        prov = json.loads(provenance_file(args).read_text())
    summary = {name: {attack: [_adversarial_rows(r) for r in runs] for attack, runs in attacks.items()}
               for name, attacks in results.items()}
    (docs_dir(args) / f"paper_adversarial{'' if args.profile == 'cpu' else '-' + args.profile}.json").write_text(
        json.dumps({n: {a: [{str(e): v for e, v in r.items()} for r in rs] for a, rs in at.items()}
                    for n, at in summary.items()}, indent=1,
                   ensure_ascii=False) + "\n")
    return _adversarial_table(results), float(prov["eval_seconds"])


def _adversarial_rows(data: dict[str, Any]) -> dict[float, dict[str, float]]:
    """eps → {top1_error, top5_error} from one eval JSON (the clean row has eps 0)."""
    out = {0.0: {"top1": float(data["clean"]["top1_error"]), "top5": float(data["clean"]["top5_error"])}}
    for r in data["attacked"]:
        out[float(r["eps"])] = {"top1": float(r["top1_error"]), "top5": float(r["top5_error"])}
    return out


def _adversarial_table(results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    lines = ["| model | attack | ε (/255) | top-1 error (%) | top-5 error (%) | seeds |", "|---|---|---|---|---|---|"]
    for name, attacks in results.items():
        for attack, runs in attacks.items():
            parsed = [_adversarial_rows(r) for r in runs]
            for eps in sorted(parsed[0]):
                t1 = mean_std([100 * p[eps]["top1"] for p in parsed if eps in p])
                t5 = mean_std([100 * p[eps]["top5"] for p in parsed if eps in p])
                label = "clean" if eps == 0 else f"{eps:g}"
                lines.append(f"| {name} | {attack.upper()} | {label} | {t1[0]:.2f} ± {t1[1]:.2f} | {t5[0]:.2f} ± "
                             f"{t5[1]:.2f} | {len(parsed)} |")
    return "\n".join(lines) + "\n"


# -- one row again ---------------------------------------------------------------------
def docs_dir(args: argparse.Namespace) -> Path:
    d = Path(args.docs_dir)
    return d if d.is_absolute() else REPO / d


def row_key(params: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in sorted(params.items()) if k != "train.seed"}, ensure_ascii=False, default=str)


def per_seed(study: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The committed per-trial numbers behind the table: row → seed → metrics (for --rerun to compare)."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    out: dict[str, Any] = {}
    for row in rows:
        seeds: dict[str, Any] = {}
        for n in row["trials"]:
            t = by_number[n]
            if t.value is None:
                continue
            m = dict(t.user_attrs.get("metrics") or {})
            m["objective"] = float(t.value)
            seeds[str(t.params.get("train.seed"))] = {k: v for k, v in m.items() if not k.endswith("/n")}
        out[row_key(row["params"])] = seeds
    return out


def rerun(args: argparse.Namespace) -> int:
    """Train one (row, seed) of the table's spec with ``trickbox train`` and compare with the committed JSON."""
    import yaml

    from trickbox.sweep.spec import FIRST_DIR, VARIANT, load_spec
    from trickbox.trick import ConfigError

    name = study_name(args.table, args.profile)
    # an ablated table's rows are the spec its look wrote (the look's own overrides included)
    spec_file = (REPO / args.out_dir / name / "looks" / "look-1.yaml" if args.table in ABLATE
                 else REPO / "sweeps" / "paper" / f"{args.table}.yaml")
    try:
        if not spec_file.is_file():
            raise ConfigError(f"--rerun {args.table}: {spec_file} is written by the table's `trickbox ablate`; run "
                              f"`python experiments/paper.py {args.table}` first")
        spec = load_spec(spec_file, [] if args.table in ABLATE else
                         [*overrides_for(args.table, args.profile), *args.overrides])
        params: dict[str, Any] = {VARIANT: args.rerun, "train.seed": args.seed}
        for item in args.at:
            key, _, text = item.partition("=")
            params[key] = yaml.safe_load(text)
        for d in spec.search:
            if d.name not in params:
                raise ConfigError(f"--rerun needs the row's {d.name}: add --at {d.name}=VALUE (one of "
                                  f"{list(d.choices or ())})")
            # any seed may be rerun
            if d.choices is not None and params[d.name] not in d.choices and d.name != "train.seed":
                raise ConfigError(f"{d.name}={params[d.name]!r} is not a row of {args.table}; choose from "
                                  f"{list(d.choices)}")
        unknown = set(params) - {d.name for d in spec.search}
        if unknown:
            raise ConfigError(f"--at {sorted(unknown)[0]}: not a grid dimension of {args.table}; they are "
                              f"{[d.name for d in spec.search]}")
    except ConfigError as exc:
        print(f"paper.py: error: {exc}", file=sys.stderr)
        return 2
    # the table's train_first run (a teacher), when it has one
    first = REPO / args.out_dir / name / (f"{name}.look-1" if args.table in ABLATE else "") / FIRST_DIR
    mapping = spec.trial_mapping(params, str(first) if spec.train_first is not None else None)
    work = REPO / args.out_dir / f"{spec.study}-rerun"
    name = f"{hashlib.sha256(row_key(params).encode()).hexdigest()[:10]}-s{args.seed}"
    shutil.rmtree(work / name, ignore_errors=True)  # a rerun trains again from scratch
    work.mkdir(parents=True, exist_ok=True)
    cfg_file = work / f"{name}.yaml"
    cfg_file.write_text(yaml.safe_dump(mapping, allow_unicode=True, sort_keys=False))
    cmd = ["trickbox", "train", "--config", str(cfg_file), f"train.out_dir={work}", f"train.run_name={name}",
           "train.tracker=none"]
    print("$", shlex.join(cmd), flush=True)
    # the sweep's CPU workers train with cores/workers threads each; the same count makes the float sums,
    # and so the run, identical
    threads = max(1, (os.cpu_count() or 1) // int(args.workers)) if str(args.workers).isdigit() else None
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           **({"OMP_NUM_THREADS": str(threads)} if threads and "OMP_NUM_THREADS" not in os.environ else {})}
    res = subprocess.run(cmd, cwd=REPO, env=env)
    if res.returncode != 0:
        return res.returncode
    summary = json.loads((work / name / "summary.json").read_text())
    committed_file = docs_dir(args) / f"paper_{args.table}{'' if args.profile == 'cpu' else '-' + args.profile}.json"
    committed = json.loads(committed_file.read_text()) if committed_file.is_file() else {}
    row = committed.get(row_key(params), {})
    keys = [spec.objective, *(c["metric"] for c in spec.columns)]
    return compare_rerun(args, params, summary, row, keys, spec.objective)


def compare_rerun(args: argparse.Namespace, params: dict[str, Any], summary: dict[str, Any], row: dict[str, Any],
                  keys: list[str], objective: str) -> int:
    """Print the new run against the committed seeds' 95 % prediction interval, metric by metric; 0 when all inside."""
    from trickbox.ablation.stats import LEVEL, prediction_interval

    seen = str(args.seed) in row
    print(f"\nrow {args.rerun!r} {params}, seed {args.seed} "
          + ("(a committed seed: the same number is expected, up to float sums)" if seen
             else "(a seed the table never trained)"))
    print(f"committed seeds: {sorted(row, key=lambda x: int(x) if x.isdigit() else x) or 'none'}; "
          f"interval: {100 * (1 - LEVEL):.0f} % prediction interval for one new seed, mean ± t·s·√(1 + 1/n)")
    print(f"{'metric':<26} {'rerun':>9} {'committed':>10} {'row mean ± std':>18} {'prediction interval':>22}  inside")
    ok = True
    for k in keys:
        name = "objective" if k == objective else k
        mine = summary.get(k)
        vals = [v.get(name) for v in row.values()]
        vals = [v for v in vals if isinstance(v, (int, float))]
        theirs = row.get(str(args.seed), {}).get(name)
        theirs_s = "—" if theirs is None else f"{theirs:.4f}"
        if mine is None or len(vals) < 2:
            print(f"{k:<26} {mine if mine is not None else '—':>9} {theirs_s:>10}   (fewer than 2 committed seeds: "
                  "nothing to compare)")
            ok = False
            continue
        m, sd = statistics.mean(vals), statistics.stdev(vals)
        lo, hi = prediction_interval(vals)
        if all(0.0 <= v <= 1.0 for v in vals) and k.rsplit("/", 1)[-1].startswith("top"):
            lo, hi = max(lo, 0.0), min(hi, 1.0)  # an accuracy stays in [0, 1]
        inside = lo - 1e-12 <= mine <= hi + 1e-12
        ok = ok and inside
        print(f"{k:<26} {mine:>9.4f} {theirs_s:>10} {m:>9.4f} ± {sd:.4f} {f'[{lo:.4f}, {hi:.4f}]':>22}  "
              f"{'yes' if inside else 'NO'}")
    print("inside the committed seeds' prediction interval on every metric" if ok
          else "OUTSIDE the committed seeds' prediction interval on some metric (or nothing committed to compare)")
    return 0 if ok else 1


# -- the document ---------------------------------------------------------------------
def command_line(args: argparse.Namespace) -> str:
    parts = [args.table]
    if args.profile != "cpu":
        parts += ["--profile", args.profile]
    if args.workers != "2":
        parts += ["--workers", str(args.workers)]
    if not args.no_wandb:
        parts.append("--wandb")
    if args.out_dir != "sweeps_out":
        parts += ["--out-dir", args.out_dir]
    parts += args.overrides
    return "python experiments/paper.py " + " ".join(shlex.quote(p) for p in parts)


def train_time(study: Any) -> float:
    """Sum of the trials' own training times (what one worker would need) from the stored metrics."""
    return sum(float((t.user_attrs.get("metrics") or {}).get("seconds", 0.0)) for t in study.get_trials(deepcopy=False))


def study_wall(study: Any) -> float:
    """From the first trial's start to the last trial's end: the table's wall time, however often it was resumed."""
    starts = [t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start]
    ends = [t.datetime_complete for t in study.get_trials(deepcopy=False) if t.datetime_complete]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


def provenance_file(args: argparse.Namespace) -> Path:
    return REPO / args.out_dir / study_name(args.table, args.profile) / f"paper_{args.table}_run.json"


def record_provenance(args: argparse.Namespace, **extra: Any) -> None:
    """What trained the table: the commit and machine when the sweep (or the attack evaluation) ran."""
    f = provenance_file(args)
    f.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(f.read_text()) if f.is_file() else {}
    f.write_text(json.dumps({**old, "commit": commit(), "machine": machine(), "date": str(date.today()), **extra},
                            indent=1) + "\n")


def erm_fit(table: str, rows: list[dict[str, Any]]) -> str:
    """One line: ERM's final training error (or, under label noise, its accuracy on the noisy labels), per row."""
    want = ERM_ROW.get(table)
    parts = []
    for r in rows:
        if str(r["params"].get("variant")) != want:
            continue
        fit = [100.0 * m["train/top1"] for m in r["metrics"] if "train/top1" in m]
        if not fit:
            continue
        others = {k: v for k, v in r["params"].items() if k not in ("variant", "train.seed")}
        where = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in others.items())
        if table == "labels":
            m, sd = mean_std(fit)
            parts.append(f"{where}: {m:.1f} ± {sd:.1f} % accuracy on the noisy labels")
        else:
            m, sd = mean_std([100.0 - f for f in fit])
            parts.append(f"{where + ': ' if where else ''}{m:.1f} ± {sd:.1f} % ({len(fit)} seeds, max "
                         f"{max(100.0 - f for f in fit):.1f} %)")
    if not parts:
        return ""
    word = ("ERM's final fit to its training labels" if table == "labels"
            else "ERM's final training error (no augmentation, the labels trained on)")
    return f"**{word}** (row `{want}`): " + "; ".join(parts) + "."


def write_doc(args: argparse.Namespace, body: str, images: list[str], wall: float, train_seconds: float,
              rows: list[dict[str, Any]] | None = None) -> Path:
    name = f"paper_{args.table}" + ("" if args.profile == "cpu" else f"-{args.profile}")
    doc = docs_dir(args) / f"{name}.md"
    prov_file = provenance_file(args)
    prov = json.loads(prov_file.read_text()) if prov_file.is_file() else {}
    host = prov.get("machine") or machine()  # where the trials ran; this machine only when that was not recorded
    lines = [f"# {TITLES[args.table]} ({args.profile} profile)", ""]
    if args.profile == "cpu" and args.table in REGIME:
        lines += ["**Why these settings.** " + REGIME[args.table], ""]
    fit = erm_fit("alpha" if args.table == "adversarial" else args.table, rows or [])
    if fit:
        lines += [fit, ""]
    lines += [body.rstrip(), ""]
    for img in images:
        lines += [f"![{img}]({img})", ""]
    rendered = commit(exclude="docs/results")
    trained = prov.get("commit", "not recorded")
    spec = "alpha" if args.table == "adversarial" else args.table
    what = "attack evaluation" if args.table == "adversarial" else "trials"
    lines += [
        f"- Command: `{command_line(args)}` (" + (f"`{shlex.join(ablate_command(args.table, args))}`"
                                                  if args.table in ABLATE else f"spec `sweeps/paper/{spec}.yaml`")
        + (f", profile overrides `{' '.join(overrides_for(args.table, args.profile))}`" if args.profile != "cpu"
           else "") + ")",
        f"- Commit: {what} ran at {trained} ({prov.get('date', date.today())}); table rendered at {rendered}",
        f"- Machine: {host}",
        (f"- Wall time: {wall / 60:.1f} min for the attack evaluations ({args.workers} `trickbox eval` processes at a "
         "time)."
         if args.table == "adversarial" else
         f"- Wall time: {wall / 60:.1f} min from the first trial's start to the last one's end ({args.workers} "
         f"workers, {'one thread each' if 'no GPU' in host else 'sharing the GPU'}); "
         f"the trials' own training times add up to {train_seconds / 60:.1f} min."),
        "- Objective and model selection: validation top-1 (a split of the training images); the test split is only "
        "reported.",
        "- Verdicts: [README.md](README.md#verdicts), each with its test (Welch's or the paired t-test over the seeds, "
        "two-sided, level 0.05), the difference's 95 % interval and p; `--rerun ROW --seed N` checks one new seed "
        "against the row's 95 % prediction interval.",
        "",
    ]
    doc.write_text("\n".join(lines))
    return doc


TITLES = {
    "erm_mixup": "Classification: ERM against mixup (α = 1)",
    "alpha": "Classification: test error against mixup's α",
    "capacity": "Classification: ERM and mixup at two model sizes",
    "stack": "Classification: the tricks stacked (He et al.)",
    "tricks": "The tricks one at a time on cosine decay, and all four",
    "adversarial": "Adversarial examples: white-box FGSM and I-FGSM",
    "labels": "Corrupted labels: ERM, dropout and mixup",
    "ablation": "The mixup ablation",
    "regression": "Regression check (CI): ERM against mixup under 50 % label noise, 300 images",
}

ERM_ROW = {"erm_mixup": "ERM", "alpha": "ERM (α=0)", "capacity": "ERM", "stack": "+ sgdr", "labels": "ERM",
           "ablation": "ERM", "regression": "ERM"}
"""The row whose training error shows the regime: plain ERM (in the stack, ERM with cosine decay)."""

_PROFILE = ("The CPU profile (`sweeps/paper/cifar_paper.yaml`) puts the claim where the paper made it: ERM fits its "
            "training set. `cifar_resnet8` (75k parameters) on 800 CIFAR-10 images without augmentation memorises them "
            "in 25 epochs (batch 64, SGD with Nesterov momentum, lr 0.1 with cosine decay, weight decay 5e-4), while a "
            "table of 3 seeds per row still trains within an hour on 2 cores. With random crop and flip the same "
            "network fitted only 66.5 % of 1,000 images after 30 epochs (pilot run); the epochs it would need to "
            "memorise do not fit this machine, so mixup, the augmentation under test, is the only one. Validation: 500 "
            "images carved from the training split; test: 1,000 images of the test split. Expect high test errors "
            "(an 800-image classifier) and look at the differences.")
REGIME = {
    "erm_mixup": _PROFILE + " Test error is evaluated after every epoch, for the curves and for the epoch validation "
                            "picks.",
    "alpha": _PROFILE + " The training error of every α shows how much each one keeps the network from memorising.",
    "adversarial": "The alpha table's ERM and α=1 models (3 seeds each, the CPU profile: ERM memorises its 800 "
                   "images), attacked on the 1,000 test images.",
    "capacity": _PROFILE + " The larger network is the same ResNet at twice the width (32 channels in the first stage "
                           "instead of 16: four times the parameters, about 300k); both widths memorise their 800 "
                           "images, so the table asks whether the extra capacity makes mixup's regularisation pay "
                           "more.",
    "stack": _PROFILE + " Distillation's teacher is a `cifar_resnet20` with cosine decay, trained once on the same 800 "
                        "images; the constant-LR baseline is the one row without cosine decay.",
    "labels": "ERM must memorise the noisy labels, as in the paper. 500 training images (no augmentation, batch 32, "
              "weight decay 1e-4, the paper's setting for this experiment, 30 epochs with cosine decay) are few enough "
              "for `cifar_resnet8` to fit even 80 % random labels within the budget (a pilot with 80 % noise fitted "
              "90 % of them by epoch 21 of 40). The test split (1,000 images) is evaluated after every epoch: \"best\" "
              "is the test error of the epoch that the clean validation split (500 images) picks, \"last\" the final "
              "epoch's; the fit to the noisy training labels is measured once, at the end.",
    "regression": "A short table that CI retrains (`experiments/regression.py`, in `tests/e2e/test_paper_grids.py`): "
                  "two rows, two seeds, about two minutes on 2 cores. 300 images, half of their labels random, no "
                  "augmentation, 20 epochs (batch 32, weight decay 1e-4): ERM memorises the noisy labels, mixup (α = "
                  "8) does not, and CI fails when that gap loses its direction or half its size.",
    "ablation": _PROFILE + " KNN pairs use k = 3 of 800 images, the paper's 200 of 50,000 in proportion.",
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", choices=TABLES)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="extra overrides of the spec's base config, e.g. data.root=PATH")
    p.add_argument("--profile", choices=tuple(PROFILES), default="cpu",
                   help="cpu: the specs as written; full: the paper's scale")
    p.add_argument("--workers", default="2", help="trickbox sweep workers (default 2; 'auto' = one per GPU)")
    p.add_argument("--out-dir", default="sweeps_out", help="the studies' output directory (default sweeps_out)")
    p.add_argument("--wandb", dest="no_wandb", action="store_false",
                   help="log every trial to W&B (default: off for speed)")
    p.add_argument("--render-only", action="store_true", help="only re-render the doc from the finished study")
    p.add_argument("--docs-dir", default="docs/results",
                   help="where the table, its plots and its JSON go (default docs/results)")
    p.add_argument("--rerun", metavar="VARIANT",
                   help="train one row again (outside the study) and compare with the committed numbers")
    p.add_argument("--seed", type=int, default=0, help="--rerun: the seed (default 0)")
    p.add_argument("--at", action="append", default=[], metavar="KEY=VALUE",
                   help="--rerun: the row's other grid values, e.g. --at data.label_noise=0.8")
    args = p.parse_intermixed_args(argv)
    for o in args.overrides:
        if "=" not in o:
            p.error(f"override {o!r} must be KEY=VALUE, e.g. data.root=/data/cifar10-jpeg.zip")
    if args.rerun is not None:
        if args.table == "adversarial":
            p.error("--rerun trains a row of a grid; rerun the alpha grid's row, then render adversarial")
        raise SystemExit(rerun(args))
    if not args.render_only and args.table != "adversarial":
        record_provenance(args)
        run_sweep(args.table, args)
    study, rows, info = load_rows(args.table, args)
    out = docs_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"paper_{args.table}" + ("" if args.profile == "cpu" else f"-{args.profile}")
    images: list[str] = []
    if args.table == "adversarial":
        body, seconds = adversarial(args, rows, study)
        adversarial_plot(body, out / f"{stem}.png")
        images.append(f"{stem}.png")
    else:
        from trickbox.sweep.report import grid_table
        from trickbox.sweep.spec import load_spec

        # the spec's columns as written now (a column added after the study started shows too, where trials have it)
        columns = ABLATE_COLUMNS if args.table in ABLATE else load_spec(
            REPO / "sweeps" / "paper" / f"{args.table}.yaml", overrides_for(args.table, args.profile)).columns
        body = grid_table(study, info.get("objective", "value"), info.get("params"), choices=info.get("choices"),
                          columns=columns or info.get("columns"))
        if args.table == "alpha":
            alpha_plot(rows, out / f"{stem}.png")
        elif args.table == "labels":
            curves_plot(study, rows, [("test/top1", "test error (%)")], "data.label_noise", out / f"{stem}.png")
        elif args.table == "erm_mixup":
            curves_plot(study, rows, [("test/top1", "test error (%)")], None, out / f"{stem}.png")
        else:
            metric = "test/top1"
            bar_plot(rows, metric, "test error (%)", out / f"{stem}.png")
        images.append(f"{stem}.png")
    if args.table in ABLATE:  # the ablation's own answer: verdicts (paired by seed, Holm) and the forest plot
        answer = REPO / args.out_dir / study_name(args.table, args.profile)
        shutil.copyfile(answer / "forest.png", out / f"{stem}_forest.png")
        record = json.loads((answer / "ablation.json").read_text())
        (out / f"{stem}_ablation.json").write_text(json.dumps({k: record[k] for k in ("request", "rows", "compute")},
                                                              indent=1, ensure_ascii=False) + "\n")
        verdicts = (answer / "ablation.md").read_text().split("\n\n")[1]  # its table
        body += "\n**The ablation's verdicts** (`trickbox ablate`, judged on validation top-1):\n\n" + verdicts + "\n"
        images.append(f"{stem}_forest.png")
    if args.table != "adversarial":
        (out / f"{stem}.json").write_text(json.dumps(per_seed(study, rows), indent=1, ensure_ascii=False) + "\n")
    wall = float(seconds) if args.table == "adversarial" else study_wall(study)
    doc = write_doc(args, body, images, wall, train_time(study), rows)
    print(doc.read_text())
    print(f"wrote {doc}")


if __name__ == "__main__":
    main()
