"""Feature stages of a timm model, for manifold (hidden-layer) mixup."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["feature_stages"]


def _feature_dicts(model: torch.nn.Module) -> list[dict[str, Any]]:
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    if hasattr(info, "get_dicts"):  # timm FeatureInfo (features_only models): the selected out_indices
        return list(info.get_dicts())
    if isinstance(info, (list, tuple)):
        return [d for d in info if isinstance(d, dict)]
    return []


def feature_stages(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The model's feature stages in order, as ``(module name, module)`` pairs.

    Read from timm's ``model.feature_info`` (a list of dicts, or a ``FeatureInfo``
    for ``features_only`` models), one pair per entry, in order: stage 1 is
    the first entry (for timm CNNs usually the stem, reduction 2). Names with
    dots that a ``features_only`` wrapper flattened to underscores are resolved.
    """
    dicts = _feature_dicts(model)
    if not dicts:
        raise ValueError(
            f"model {type(model).__name__} exposes no feature stages (no timm feature_info); "
            f"use mixup.layer=0 (input mixup) or a timm model with feature_info"
        )
    stages: list[tuple[str, torch.nn.Module]] = []
    for d in dicts:
        name = d.get("module")
        if not isinstance(name, str):
            raise ValueError(
                f"model {type(model).__name__} has a feature_info entry without a 'module' name: {d}; "
                f"use a timm model whose feature_info names its stage modules"
            )
        module = None
        for candidate in (name, name.replace(".", "_")):
            try:
                module = model.get_submodule(candidate)
                name = candidate
                break
            except AttributeError:
                continue
        if module is None:
            raise ValueError(
                f"model {type(model).__name__} feature_info names module {name!r}, which the model does not have; "
                f"use a timm model whose feature_info matches its modules"
            )
        stages.append((name, module))
    return stages
