"""Pictures people would rather look at than read: the LR curve (and image size) and mixup samples."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .batch import Batch
    from .context import RunContext


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


LR_CURVE_POINTS = 4096
"""The most steps the LR curve evaluates: a figure 600 pixels wide shows no more, however long the run."""


def lr_curve_steps(total_steps: int, points: int = LR_CURVE_POINTS) -> list[int]:
    """The steps the LR curve is drawn at: all of them for a short run, else ``points`` spread evenly (the last
    included), so drawing costs the same for any run length."""
    if total_steps <= points:
        return list(range(total_steps))
    return sorted({round(i * (total_steps - 1) / (points - 1)) for i in range(points)})


def plot_lr_curve(lr: Callable[[int], float] | None, total_steps: int, steps_per_epoch: int, path: Path, *,
                  sizes: dict[int, int] | None = None) -> Path:
    """Learning rate ``lr(step)`` against (fractional) epoch, over a bounded sample of the run's steps, as a PNG;
    with ``sizes`` (0-based epoch → training image side) a second panel below draws them on the same epochs."""
    plt = _pyplot()
    panels = [p for p in ("lr" if lr is not None else "", "size" if sizes else "") if p]
    fig, axes = plt.subplots(len(panels), 1, figsize=(6, 3 * len(panels)), dpi=100, sharex=True, squeeze=False)
    for ax, panel in zip(axes[:, 0], panels):
        if panel == "lr":
            steps = lr_curve_steps(total_steps)
            ax.plot([s / max(steps_per_epoch, 1) for s in steps], [lr(s) for s in steps], lw=1.5)  # type: ignore[misc]
            ax.set_ylabel("learning rate")
            ax.set_title("learning-rate schedule")
        else:
            epochs = sorted(sizes)  # type: ignore[arg-type]
            ax.step([*epochs, epochs[-1] + 1], [*(sizes[e] for e in epochs), sizes[epochs[-1]]],  # type: ignore[index]
                    where="post", lw=1.5, color="tab:orange")
            ax.set_ylabel("image side (px)")
            ax.set_title("training image size")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("epoch")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def mixup_grid(batch: Batch, ctx: RunContext, path: Path, n: int = 8) -> Path:
    """One row per mixed sample: input A, its partner B and the mix, titled with their labels and λ
    (λ belongs to A: mix = λ·A + (1 − λ)·B). A λ shared by the batch is said once, in the figure's title."""
    import torch

    plt = _pyplot()
    pair = batch.meta.get("grid_inputs")
    n = min(n, batch.size, len(pair[0]) if pair is not None else n)
    mean = torch.tensor(ctx.mean or [0.0] * batch.x.shape[1]).view(1, -1, 1, 1)
    std = torch.tensor(ctx.std or [1.0] * batch.x.shape[1]).view(1, -1, 1, 1)
    columns = [*(pair if pair is not None else ()), batch.x[:n]]
    images = [(c[:n].detach().float().cpu() * std + mean).clamp(0, 1) for c in columns]
    lam = batch.meta.get("lam", 1.0)
    lams = lam.detach().cpu().tolist() if isinstance(lam, torch.Tensor) else None
    partner = batch.meta.get("partner_labels")
    names = ctx.classes or [str(i) for i in range(ctx.num_classes)]
    fig, axes = plt.subplots(n, len(images), figsize=(len(images) * 1.8, n * 1.9), dpi=100, squeeze=False,
                             gridspec_kw={"hspace": 0.35, "wspace": 0.05, "left": 0.02, "right": 0.98, "bottom": 0.01,
                                          "top": 0.95})
    for i in range(n):
        a = names[int(batch.labels[i])]
        b = names[int(partner[i])] if partner is not None else "?"
        share = f"λ={lams[i]:.2f}" if lams is not None else "mix"
        titles = [f"A: {a}", f"B: {b}", f"{share} (A + B)"] if pair is not None else [f"{share}: {a} + {b}"]
        for _j, (ax, img, title) in enumerate(zip(axes[i], images, titles)):
            pic = img[i].permute(1, 2, 0).numpy()
            ax.imshow(pic[..., 0] if pic.shape[-1] == 1 else pic, cmap="gray" if pic.shape[-1] == 1 else None,
                      interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    if lams is None:
        fig.suptitle(f"λ = {float(lam):.3f} for the whole batch (mix = λ·A + (1 − λ)·B)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
