"""A trained run's clean and adversarial (white-box FGSM / I-FGSM) error, as ``trickbox eval`` reports it.

The model comes from the run directory that ``trickbox train`` (or a sweep
trial) wrote: its final ``model.safetensors``, or, given
``RUN_DIR/checkpoints/step-N`` or a run that has no final model yet, that epoch
checkpoint (SHA-256 checked). The data split comes from the run's own
``config.yaml``. ε and the step size are in pixel units of 1/255.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def resolve_target(path: Path) -> tuple[Path, Path | None]:
    """RUN_DIR (its final model), RUN_DIR/checkpoints/step-N (that checkpoint), or a run that has no final
    model yet (preempted, stopped): its latest complete checkpoint. Returns (run_dir, checkpoint or None)."""
    from ..checkpoint import latest_checkpoint, verify

    if not path.is_dir():
        raise ConfigError(f"RUN_DIR {str(path)!r} is not a directory; give a folder written by trickbox train (or one "
                          "of its checkpoints/step-N)")
    if (path / "state.json").is_file() and path.parent.name == "checkpoints":
        run_dir = path.parent.parent
        if verify(path) is None:
            raise ConfigError(f"checkpoint {str(path)!r} is incomplete or corrupt (its SHA-256 does not match); pick "
                              f"another step under {path.parent}")
        checkpoint: Path | None = path
    elif (path / "model.json").is_file() and (path / "model.safetensors").is_file():
        run_dir, checkpoint = path, None
    else:
        run_dir = path
        latest = latest_checkpoint(path / "checkpoints")
        if latest is None:
            raise ConfigError(f"{str(path)!r} has no final model (model.json, model.safetensors) and no complete "
                              "checkpoint; give a run directory written by trickbox train")
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
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Clean top-1/top-5 error of the run's model on ``split`` and, per ε, the error under ``attack``; on the run's
    data, or on the data ``overrides`` (``data.root=OTHER``) name."""
    import torch

    from ..build import load_trained
    from ..checkpoint import read_card
    from ..config import load_config
    from ..data.opening import eval_split
    from .attacks import attack_metrics, make_normalize

    cfg = load_config([run_dir / "config.yaml"], overrides)
    bs = batch_size or cfg.train.eval_batch_size
    data = eval_split(cfg.data, split, batch_size=bs, progress=progress)
    card = read_card(run_dir) if checkpoint is None else {"name": cfg.model.name, "num_classes": data.num_classes,
                                                          "in_chans": data.in_chans}
    if data.num_classes != card["num_classes"]:
        raise ConfigError(f"the model in {str(run_dir)!r} has {card['num_classes']} classes but its data now has "
                          f"{data.num_classes}; was data.root changed?")
    if data.images == 0:
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

    def batches(desc: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from tqdm.auto import tqdm

        for x, y in tqdm(data.batches(), desc=desc, unit="batch", file=sys.stderr, disable=not progress,
                         leave=False, dynamic_ncols=True, total=-(-data.images // bs)):
            yield x.to(device, torch.float32) / 255.0, y.to(device)

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
        "data_root": cfg.data.root,
        "split": split,
        "n": int(data.images),
        "attack": attack,
        "iterations": iterations if attack == "ifgsm" else (1 if attack == "fgsm" else None),
        "step_size": step_size if attack == "ifgsm" else None,
        "eps_units": "pixel values / 255",
        "clean": _errors(clean),
        "attacked": rows,
    }


def _from_checkpoint(cfg: Any, path: Path, *, num_classes: int, in_chans: int) -> Any:
    from ..build import model_from_config
    from ..checkpoint import load_checkpoint, verify

    ckpt = verify(path)
    if ckpt is None:
        raise ConfigError(f"checkpoint {str(path)!r} is incomplete or corrupt; pick another step")
    model = model_from_config(cfg.model, num_classes=num_classes, in_chans=in_chans)[0]
    state, _ = load_checkpoint(ckpt)
    state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}  # saved from a torch.compile'd model
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"checkpoint {str(path)!r} does not fit model {cfg.model.name}: "
                          f"{str(exc).splitlines()[0]}") from None
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

