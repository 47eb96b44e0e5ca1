"""``trickbox eval RUN_DIR``: clean and adversarial (white-box FGSM / I-FGSM) error of a trained model.

    trickbox eval runs/digits-… --attack fgsm --eps 1,2,4,8
    trickbox eval runs/cifar-… --split val --attack ifgsm --eps 2,8 --iterations 10 --out robust.json

The model comes from the run directory that ``trickbox train`` (or a sweep
trial) wrote: its final ``model.safetensors``, or, given
``RUN_DIR/checkpoints/step-N`` or a run that has no final model yet, that epoch
checkpoint (SHA-256 checked). The data split comes from the run's own
``config.yaml``. ε and the step size are in pixel units of 1/255. The command
prints a small table and writes the numbers as JSON (default
``RUN_DIR/eval-<split>-<attack>.json``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator

from .trick import ConfigError

ATTACK_CHOICES = ("none", "fgsm", "ifgsm")
DEFAULT_EPS = "1,2,4,8"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``trickbox eval``."""
    p = subparsers.add_parser("eval", help="clean and FGSM / I-FGSM error of a trained run",
                              description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by trickbox train (its final model; without one, its latest "
                   "checkpoint), or one of its checkpoints/step-N")
    p.add_argument("--split", choices=("test", "val"), default="test", help="which split of the run's data (default test)")
    p.add_argument("--attack", choices=ATTACK_CHOICES, default="none", help="white-box attack (default none: clean error only)")
    p.add_argument("--eps", default=DEFAULT_EPS, metavar="E1,E2,…",
                   help=f"attack radii in pixel units of 1/255, comma-separated (default {DEFAULT_EPS})")
    p.add_argument("--iterations", default="10", metavar="N", help="I-FGSM steps (default 10)")
    p.add_argument("--step-size", default=None, metavar="S", help="I-FGSM step in pixel units of 1/255 (default eps/iterations)")
    p.add_argument("--batch-size", default=None, metavar="B", help="images per batch (default: the run's train.eval_batch_size)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="where to write the JSON (default RUN_DIR/eval-<split>-<attack>.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)


# ---------------------------------------------------------------------------
# argument checks (before anything is loaded)
# ---------------------------------------------------------------------------


def parse_eps(text: str) -> list[float]:
    """``"1,2,4,8"`` → ``[1.0, 2.0, 4.0, 8.0]``; each must be a number in (0, 255]."""
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(t == "" for t in items):
        raise ConfigError(f"--eps must be comma-separated numbers in (0, 255] (pixel units of 1/255), got {text!r}; e.g. --eps 1,2,4,8")
    out: list[float] = []
    for t in items:
        try:
            v = float(t)
        except ValueError:
            raise ConfigError(f"--eps value {t!r} is not a number; give numbers in (0, 255] (pixel units of 1/255), e.g. --eps 1,2,4,8") from None
        if not math.isfinite(v) or not 0 < v <= 255:
            raise ConfigError(f"--eps value {t} is outside (0, 255] (pixel units of 1/255: 8 means 8/255); e.g. --eps 1,2,4,8")
        out.append(v)
    return out


def _parse_int(name: str, text: str, minimum: int) -> int:
    try:
        v = int(str(text).strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {text!r}") from None
    if v < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {v}")
    return v


def _parse_step(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"--step-size must be a number > 0 (pixel units of 1/255), got {text!r}") from None
    if not math.isfinite(v) or not 0 < v <= 255:
        raise ConfigError(f"--step-size must be in (0, 255] (pixel units of 1/255), got {text}; or leave it out for eps/iterations")
    return v


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    eps = parse_eps(args.eps)  # checked even with --attack none: a typo should not pass silently
    iterations = _parse_int("--iterations", args.iterations, 1)
    step_size = _parse_step(args.step_size)
    batch_override = None if args.batch_size is None else _parse_int("--batch-size", args.batch_size, 1)
    run_dir, checkpoint = resolve_target(Path(args.run_dir))
    if checkpoint is not None:
        print(f"trickbox: evaluating the epoch checkpoint {checkpoint}", file=sys.stderr)

    result = evaluate_run(
        run_dir, split=args.split, attack=args.attack, eps=eps if args.attack != "none" else [], iterations=iterations, step_size=step_size,
        batch_size=batch_override, progress=not args.no_progress, checkpoint=checkpoint,
    )
    print(format_table(result))
    default_name = f"eval-{args.split}-{args.attack}" + (f"-{checkpoint.name}" if checkpoint is not None else "") + ".json"
    out = Path(args.out) if args.out else run_dir / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"trickbox: wrote {out}")
    return 0


def resolve_target(path: Path) -> tuple[Path, Path | None]:
    """RUN_DIR (its final model), RUN_DIR/checkpoints/step-N (that checkpoint), or a run that has no final
    model yet (preempted, stopped): its latest complete checkpoint. Returns (run_dir, checkpoint or None)."""
    from .checkpoint import latest_checkpoint, verify

    if not path.is_dir():
        raise ConfigError(f"RUN_DIR {str(path)!r} is not a directory; give a folder written by trickbox train (or one of its checkpoints/step-N)")
    if (path / "state.json").is_file() and path.parent.name == "checkpoints":
        run_dir = path.parent.parent
        if verify(path) is None:
            raise ConfigError(f"checkpoint {str(path)!r} is incomplete or corrupt (its SHA-256 does not match); pick another step under {path.parent}")
        checkpoint: Path | None = path
    elif (path / "model.json").is_file() and (path / "model.safetensors").is_file():
        run_dir, checkpoint = path, None
    else:
        run_dir = path
        latest = latest_checkpoint(path / "checkpoints")
        if latest is None:
            raise ConfigError(f"{str(path)!r} has no final model (model.json, model.safetensors) and no complete checkpoint; "
                              "give a run directory written by trickbox train")
        checkpoint = latest.path
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{str(run_dir)!r} has no config.yaml; give a directory written by trickbox train")
    return run_dir, checkpoint


def evaluate_run(
    run_dir: Path,
    *,
    split: str = "test",
    attack: str = "none",
    eps: list[float] | tuple[float, ...] = (),
    iterations: int = 10,
    step_size: float | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    checkpoint: Path | None = None,
) -> dict[str, Any]:
    """Clean top-1/top-5 error of the run's model on ``split`` and, per ε, the error under ``attack``."""
    import torch

    from .attacks import attack_metrics, make_normalize
    from .build import load_trained
    from .checkpoint import read_card
    from .config import load_config
    from .data import load_dataset

    cfg = load_config([run_dir / "config.yaml"])
    data = load_dataset(cfg.data, progress=progress)
    card = read_card(run_dir) if checkpoint is None else {"name": cfg.model.name, "num_classes": data.num_classes,
                                                          "in_chans": data.in_chans}
    if data.num_classes != card["num_classes"]:
        raise ConfigError(f"the model in {str(run_dir)!r} has {card['num_classes']} classes but its data now has {data.num_classes}; was data.root changed?")
    x, y = (data.test_x, data.test_y) if split == "test" else (data.val_x, data.val_y)
    if len(y) == 0:
        raise ConfigError(f"the run's {split} split is empty (data.val_fraction=0?); use --split test")
    mean = card.get("mean") or list(data.mean)
    std = card.get("std") or list(data.std)
    normalize = make_normalize(mean, std)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if checkpoint is None:
        model = load_trained(str(run_dir), num_classes=card["num_classes"], in_chans=card["in_chans"])
    else:
        model = _from_checkpoint(cfg, checkpoint, num_classes=data.num_classes, in_chans=data.in_chans)
    model = model.to(device).eval()
    bs = batch_size or cfg.train.eval_batch_size

    def batches(desc: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from tqdm.auto import tqdm

        starts = range(0, len(y), bs)
        for s in tqdm(starts, desc=desc, unit="batch", file=sys.stderr, disable=not progress, leave=False, dynamic_ncols=True):
            yield x[s : s + bs].to(device, torch.float32) / 255.0, y[s : s + bs].to(device)

    clean = _clean_metrics(model, batches("clean"), normalize)
    rows = []
    for e in eps:
        m = attack_metrics(model, batches(f"{attack} eps={e:g}"), attack=attack, eps=e, iterations=iterations,
                           step_size=step_size, normalize=normalize)
        rows.append({"eps": e, **_errors(m)})
    return {
        "run_dir": str(run_dir),
        "model": card["name"],
        "data": cfg.data.name,
        "split": split,
        "n": int(len(y)),
        "attack": attack,
        "iterations": iterations if attack == "ifgsm" else (1 if attack == "fgsm" else None),
        "step_size": step_size if attack == "ifgsm" else None,
        "eps_units": "pixel values / 255",
        "clean": _errors(clean),
        "attacked": rows,
    }


def _from_checkpoint(cfg: Any, path: Path, *, num_classes: int, in_chans: int) -> Any:
    from .build import model_from_config
    from .checkpoint import load_checkpoint, verify

    ckpt = verify(path)
    if ckpt is None:
        raise ConfigError(f"checkpoint {str(path)!r} is incomplete or corrupt; pick another step")
    model = model_from_config(cfg.model, num_classes=num_classes, in_chans=in_chans)
    state, _ = load_checkpoint(ckpt)
    state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}  # saved from a torch.compile'd model
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"checkpoint {str(path)!r} does not fit model {cfg.model.name}: {str(exc).splitlines()[0]}") from None
    return model


def _clean_metrics(model: Any, batches: Iterator[Any], normalize: Any) -> dict[str, float]:
    import torch

    from .metrics import MetricAccumulator

    acc = MetricAccumulator()
    with torch.no_grad():
        for pixels, labels in batches:
            acc.update(model(normalize(pixels)), labels)
    m = acc.compute()
    return {"top1_error": 1.0 - m["top1"], "top5_error": 1.0 - m["top5"], **m}


def _errors(m: dict[str, float]) -> dict[str, float]:
    return {k: float(m[k]) for k in ("top1_error", "top5_error", "nll", "ece")}


def format_table(result: dict[str, Any]) -> str:
    """A small fixed-width table: one clean row and one row per ε."""
    head = f"{result['model']} on {result['data']} {result['split']} ({result['n']} images), {result['run_dir']}"
    lines = [head, f"{'attack':<8} {'eps':>6} {'top-1 err':>10} {'top-5 err':>10}"]
    c = result["clean"]
    lines.append(f"{'clean':<8} {'-':>6} {c['top1_error']:>10.4f} {c['top5_error']:>10.4f}")
    name = result["attack"] + (f"({result['iterations']})" if result["attack"] == "ifgsm" else "")
    for r in result["attacked"]:
        lines.append(f"{name:<8} {r['eps']:>6g} {r['top1_error']:>10.4f} {r['top5_error']:>10.4f}")
    return "\n".join(lines)
