"""Pictures people would rather look at than read: the LR curve and mixup samples."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .batch import Batch
    from .context import RunContext


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lr_curve(lrs: Sequence[float], steps_per_epoch: int, path: Path) -> Path:
    """Learning rate against (fractional) epoch, saved as a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    epochs = [s / max(steps_per_epoch, 1) for s in range(len(lrs))]
    ax.plot(epochs, lrs, lw=1.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title("learning-rate schedule")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def mixup_grid(batch: Batch, ctx: RunContext, path: Path, n: int = 16) -> Path:
    """A grid of mixed inputs, each titled with λ and both labels."""
    import torch

    plt = _pyplot()
    n = min(n, batch.size)
    x = batch.x[:n].detach().float().cpu()
    if ctx.mean and ctx.std:
        mean = torch.tensor(ctx.mean).view(1, -1, 1, 1)
        std = torch.tensor(ctx.std).view(1, -1, 1, 1)
        x = x * std + mean
    x = x.clamp(0, 1)
    lam = batch.meta.get("lam", 1.0)
    lams = lam.detach().cpu().tolist() if isinstance(lam, torch.Tensor) else [lam] * n
    partner = batch.meta.get("partner_labels")
    names = ctx.classes or [str(i) for i in range(ctx.num_classes)]
    cols = 4
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.0, rows * 2.2), dpi=100, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = x[i].permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None, interpolation="nearest")
        a = names[int(batch.labels[i])]
        b = names[int(partner[i])] if partner is not None else "?"
        ax.set_title(f"λ={lams[i]:.2f}\n{a} + {b}", fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
