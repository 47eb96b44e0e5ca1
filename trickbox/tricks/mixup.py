"""mixup (Zhang et al., 2018) and the ablation variants of its paper.

x̃ = λ·x_i + (1−λ)·x_j,  ỹ = λ·y_i + (1−λ)·y_j,  λ ~ Beta(α, α).

Variants, all options of this one trick:

- ``pairing``: ``random`` partners (a permutation of the batch, RP) or
  ``knn`` (one of the ``k`` nearest training images in input space, KNN);
- ``scope``: partners from ``all`` classes (AC) or the ``same`` class (SC);
- ``layer``: 0 mixes inputs; ``n ≥ 1`` mixes the output of the model's
  feature stage n (manifold mixup, through a forward hook);
- ``mix_labels``: false mixes inputs only and keeps the first sample's label;
- ``ways``: mix 3 or more samples with Dirichlet(α, …, α) weights.

All randomness comes from generators seeded by (seed, step, rank), so a resumed
run draws the same λ and partners.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..batch import Batch
from ..context import RunContext
from ..functional import (
    feature_stages,
    knn_partners,
    knn_table,
    kway_weights,
    mix,
    mix_k,
    one_hot,
    random_partners,
    same_class_partners,
    sample_lambda,
)
from ..trick import ConfigError, NonFiniteError, Param, Search, Trick, hookimpl


class Mixup(Trick):
    name = "mixup"
    summary = "convex combinations of pairs (or k-tuples) of samples and their labels"
    params = (
        Param("alpha", float, 0.2, "λ ~ Beta(α, α); small α is close to ERM; to train without mixup remove it "
              "(tricks.mixup=null)", low=0, low_open=True,
              search=Search(0.05, 4.0, log=True)),
        Param("per_sample", bool, False, "one λ per sample instead of one per batch"),
        Param("off_last_epochs", int, 0, "switch mixup off for the last N epochs", low=0),
        Param("pairing", str, "random", "random permutation (RP) or k nearest neighbours (KNN)",
              choices=("random", "knn")),
        Param("scope", str, "all", "partners from all classes (AC) or the same class (SC)", choices=("all", "same")),
        Param("k", int, 200, "neighbours per image for pairing=knn", low=1),
        Param("layer", int, 0, "0 mixes inputs; n >= 1 mixes the output of feature stage n", low=0),
        Param("mix_labels", bool, True, "false mixes inputs only and keeps the first sample's targets"),
        Param("ways", int, 2, "number of samples mixed (>= 3 uses Dirichlet weights)", low=2),
        Param("grid", bool, True, "save and log a grid of mixed samples once per epoch"),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._table: Tensor | None = None
        self._stage: torch.nn.Module | None = None
        self._warned_past_end = False

    def check(self) -> None:
        if self.ways > 2 and (self.pairing == "knn" or self.layer > 0):
            raise ConfigError("tricks.mixup.ways > 2 works with pairing=random and layer=0 only")
        if self.pairing == "knn" and self.layer > 0:
            raise ConfigError(
                "tricks.mixup.pairing=knn pairs images by their nearest neighbours in input space, so it mixes inputs "
                f"only; use layer=0 with pairing=knn, or pairing=random with layer={self.layer}"
            )

    # -- setup -------------------------------------------------------------
    @hookimpl
    def trickbox_setup(self, ctx: RunContext) -> None:
        if self.pairing != "knn":
            return
        loader = ctx.train_loader
        if loader is None or not hasattr(loader, "knn_features") or not hasattr(loader, "fetch"):
            raise ConfigError("tricks.mixup.pairing=knn needs trickbox's training loader; use pairing=random in your "
                              "own loop")
        features, labels = loader.knn_features()
        self._table = knn_table(features, self.k, labels=labels if self.scope == "same" else None).to(ctx.device)

    @hookimpl
    def trickbox_configure_model(self, model: torch.nn.Module, ctx: RunContext) -> None:
        if self.layer == 0:
            return None
        stages = feature_stages(model)
        if self.layer > len(stages):
            raise ConfigError(
                f"tricks.mixup.layer={self.layer} but model {type(model).__name__} has {len(stages)} stages; use "
                f"0..{len(stages)}"
            )
        self._stage = stages[self.layer - 1][1]
        return None

    # -- per batch ---------------------------------------------------------
    def active(self, ctx: RunContext) -> bool:
        if ctx.step >= ctx.total_steps and not self._warned_past_end:  # an own loop that trains longer than it said
            self._warned_past_end = True
            warnings.warn(f"tricks.mixup: step {ctx.step} is past the {ctx.epochs} epochs x {ctx.steps_per_epoch} "
                          "steps given to tricks.setup; mixup is off from here on (pass the real epochs to setup)",
                          stacklevel=2)
        return ctx.epoch < ctx.epochs - self.off_last_epochs

    @hookimpl
    def trickbox_transform_batch(self, batch: Batch, ctx: RunContext) -> Batch | None:
        if not self.active(ctx):
            return None
        rng = ctx.rng("mixup")
        gen = ctx.generator("mixup", device="cpu")
        size = batch.size if self.per_sample else None
        if self.ways > 2:
            return self._mix_k(batch, rng, gen, size)
        lam_np = sample_lambda(self.alpha, size, rng)
        if not np.isfinite(lam_np).all():  # λ is drawn on the host: checking it reads nothing from the device
            raise NonFiniteError(f"mixup drew a non-finite λ ({lam_np})")
        lam: float | Tensor = (float(lam_np) if size is None
                               else torch.as_tensor(lam_np, dtype=batch.x.dtype).to(batch.x.device, non_blocking=True))
        meta: dict[str, Any] = {"lam": lam, "mixup_layer": self.layer}
        if self.pairing == "knn":
            assert self._table is not None
            partner_index = knn_partners(batch.index.cpu(), self._table.cpu(), gen).to(batch.index.device)
            partner_x = ctx.train_loader.fetch(partner_index, epoch_step=ctx.step)
            partner_labels = ctx.train_loader.labels[partner_index.to(ctx.train_loader.labels.device)]
            partner_y = one_hot(partner_labels.to(batch.y.device), batch.y.shape[1])
            x, y = mix(batch.x, batch.y, lam, torch.arange(batch.size, device=batch.x.device),
                       mix_targets=self.mix_labels, partner_x=partner_x, partner_y=partner_y)
            meta.update(partner_labels=partner_labels, **self._grid_inputs(ctx, batch.x, partner_x))
            return batch.replace(x=x, y=y, meta=meta)
        perm = (same_class_partners(batch.labels.cpu(), gen) if self.scope == "same"
                else random_partners(batch.size, gen)).to(batch.x.device, non_blocking=True)
        meta.update(perm=perm, partner_labels=batch.labels[perm])
        if self.layer > 0:
            _, y = mix(batch.y, batch.y, lam, perm, mix_targets=self.mix_labels)
            return batch.replace(y=y, meta=meta)
        x, y = mix(batch.x, batch.y, lam, perm, mix_targets=self.mix_labels)
        meta.update(self._grid_inputs(ctx, batch.x, batch.x[perm]))
        return batch.replace(x=x, y=y, meta=meta)

    def _grid_inputs(self, ctx: RunContext, a: Tensor, b: Tensor, n: int = 8) -> dict[str, Any]:
        """On the step whose samples the grid shows (an epoch's first, main process), the two inputs of each mix."""
        if not (self.grid and ctx.is_main and ctx.run_dir is not None and ctx.step % max(ctx.steps_per_epoch, 1) == 0):
            return {}
        return {"grid_inputs": (a[:n].detach().clone(), b[:n].detach().clone())}

    def _mix_k(self, batch: Batch, rng: Any, gen: torch.Generator, size: int | None) -> Batch:
        w = torch.as_tensor(kway_weights(self.alpha, self.ways, size, rng), dtype=batch.x.dtype, device=batch.x.device)
        pick = ((lambda: same_class_partners(batch.labels.cpu(), gen)) if self.scope == "same"
                else (lambda: random_partners(batch.size, gen)))
        perms = [torch.arange(batch.size)] + [pick() for _ in range(self.ways - 1)]
        perms = [p.to(batch.x.device, non_blocking=True) for p in perms]
        x, y = mix_k(batch.x, batch.y, w, perms)
        if not self.mix_labels:
            y = batch.y
        return batch.replace(x=x, y=y, meta={"weights": w, "perms": perms})

    @hookimpl
    def trickbox_forward(self, model: torch.nn.Module, batch: Batch, ctx: RunContext) -> Tensor | None:
        """Manifold mixup: mix the chosen stage's output with the batch's λ and partners."""
        if self._stage is None or "perm" not in batch.meta:
            return None
        lam, perm = batch.meta["lam"], batch.meta["perm"]

        def mix_output(module: torch.nn.Module, args: Any, output: Tensor) -> Tensor:
            mixed, _ = mix(output, output, lam, perm)
            return mixed

        handle = self._stage.register_forward_hook(mix_output)
        try:
            return model(batch.x)
        finally:
            handle.remove()

    @hookimpl
    def trickbox_after_step(self, batch: Batch, ctx: RunContext) -> None:
        first_of_epoch = (ctx.step - 1) % max(ctx.steps_per_epoch, 1) == 0
        if not (self.grid and first_of_epoch and ctx.is_main and ctx.run_dir is not None) or "lam" not in batch.meta:
            return
        if self.layer > 0:
            return
        from ..plots import mixup_grid

        path = mixup_grid(batch, ctx, ctx.run_dir / f"mixup_epoch{ctx.epoch:03d}.png")
        ctx.log_images({"mixup_samples": [path]}, step=ctx.step)
