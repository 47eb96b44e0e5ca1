"""CIFAR-style ResNets (32×32 inputs, no max-pool) registered in timm's model registry.

``timm.create_model("preact_resnet18" | "cifar_resnet20" | "cifar_resnet8", num_classes=…,
in_chans=…, drop_rate=…, width=…)`` builds them once ``trickbox.models`` is imported.
No pretrained weights are published; load your own with ``pretrained=True,
pretrained_cfg_overlay=dict(file=PATH)`` (trickbox's ``model.pretrained_file``) or ``checkpoint_path=PATH``.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

import torch
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from torch import Tensor, nn

from .blocks import BasicBlock, PreActBlock, conv3x3

__all__ = ["CifarResNet"]

BlockKind = Literal["basic", "preact"]
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class CifarResNet(nn.Module):
    """ResNet for small images: 3×3 stem, ``stages`` of residual blocks, global pool, linear head.

    ``block="basic"`` is He et al.'s post-activation CIFAR ResNet (stem conv-BN-ReLU);
    ``block="preact"`` the pre-activation ResNet with a final BN-ReLU (``norm``).
    Stage ``k`` is the submodule ``stages.k`` (see ``feature_info``).
    """

    def __init__(
        self,
        block: BlockKind,
        depths: Sequence[int],
        widths: Sequence[int],
        strides: Sequence[int],
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        zero_init_last: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        _check_args(block, depths, widths, strides, num_classes, in_chans, drop_rate)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        preact = block == "preact"
        block_cls = PreActBlock if preact else BasicBlock

        stem: OrderedDict[str, nn.Module] = OrderedDict(conv=conv3x3(in_chans, widths[0]))
        if not preact:
            stem.update(bn=nn.BatchNorm2d(widths[0]), act=nn.ReLU(inplace=True))
        self.stem = nn.Sequential(stem)

        stages: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        in_chs, reduction = widths[0], 1
        for i, (depth, out_chs, stride) in enumerate(zip(depths, widths, strides)):
            blocks = [block_cls(in_chs if j == 0 else out_chs, out_chs, stride if j == 0 else 1) for j in range(depth)]
            stages.append(nn.Sequential(*blocks))
            in_chs, reduction = out_chs, reduction * stride
            self.feature_info.append({"num_chs": out_chs, "reduction": reduction, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.norm: nn.Module = (
            nn.Sequential(nn.BatchNorm2d(in_chs), nn.ReLU(inplace=True)) if preact else nn.Identity()
        )

        self.num_features = self.head_hidden_size = in_chs
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        self._init_weights(zero_init_last)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def _init_weights(self, zero_init_last: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, (BasicBlock, PreActBlock)):
                    m.zero_init_last()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Regexes grouping parameters by stem / stage (coarse) or block (fine), for layer decay."""
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)"}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass to save memory."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> nn.Module | str:
        """The final linear layer (``nn.Identity`` when ``num_classes == 0``)."""
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a fresh one for ``num_classes`` (0 removes it)."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0 (0 removes the head), got {num_classes}")
        ref = self.stem.conv.weight
        self.num_classes = num_classes
        pool_type = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.fc = create_classifier(
            self.num_features, num_classes, pool_type=pool_type, device=ref.device, dtype=ref.dtype
        )
        self.global_pool.train(self.training)
        self.fc.train(self.training)

    def forward_features(self, x: Tensor) -> Tensor:
        """Stem, stages and (pre-act only) the final BN-ReLU: (B, C, H, W) → (B, num_features, h, w)."""
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(self.stages, x, flatten=True)
        else:
            x = self.stages(x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global pool, dropout, then the linear classifier unless ``pre_logits``."""
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _check_args(
    block: str,
    depths: Sequence[int],
    widths: Sequence[int],
    strides: Sequence[int],
    num_classes: int,
    in_chans: int,
    drop_rate: float,
) -> None:
    if block not in ("basic", "preact"):
        raise ValueError(f"block must be 'basic' or 'preact', got {block!r}")
    if not (len(depths) == len(widths) == len(strides) > 0):
        raise ValueError(f"depths, widths, strides need the same non-zero length, got {depths}, {widths}, {strides}")
    if min(depths) < 1 or min(widths) < 1 or min(strides) < 1:
        raise ValueError(f"depths, widths and strides must be >= 1, got {depths}, {widths}, {strides}")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0 (0 removes the head), got {num_classes}")
    if in_chans < 1:
        raise ValueError(f"in_chans must be >= 1 (3 for RGB, 1 for grey), got {in_chans}")
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "first_conv": "stem.conv",
        "classifier": "fc",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "preact_resnet18": _cfg(paper_ids="arXiv:1710.09412"),
        "cifar_preact_resnet18": _cfg(paper_ids="arXiv:1710.09412"),
        "cifar_resnet20": _cfg(paper_ids="arXiv:1512.03385"),
        "cifar_resnet8": _cfg(paper_ids="arXiv:1512.03385"),
    }
)


def _create(variant: str, pretrained: bool, arch: dict[str, Any], width: Any, kwargs: dict[str, Any]) -> CifarResNet:
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if pretrained and not (overlay.get("file") or overlay.get("state_dict")):
        raise ValueError(
            f"pretrained=True: no pretrained weights exist for {variant}; use pretrained=False, or give your own "
            "with pretrained_cfg_overlay=dict(file=PATH) (or checkpoint_path=PATH)"
        )
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int (base channels), got {width!r}")
    n_stages = len(arch["depths"])
    widths = tuple(width * 2**i for i in range(n_stages))
    feature_cfg = {"flatten_sequential": True, "out_indices": tuple(range(n_stages))}
    return build_model_with_cfg(
        CifarResNet, variant, pretrained=pretrained, feature_cfg=feature_cfg, widths=widths, **arch, **kwargs
    )


_PREACT18 = {"block": "preact", "depths": (2, 2, 2, 2), "strides": (1, 2, 2, 2)}


@register_model
def preact_resnet18(pretrained: bool = False, width: int = 64, **kwargs: Any) -> CifarResNet:
    """PreAct ResNet-18 for 32×32 inputs (mixup paper): 64/128/256/512 channels, ~11.2 M params."""
    return _create("preact_resnet18", pretrained, _PREACT18, width, kwargs)


@register_model
def cifar_preact_resnet18(pretrained: bool = False, width: int = 64, **kwargs: Any) -> CifarResNet:
    """Alias of ``preact_resnet18`` that ``timm.list_models("*cifar*")`` finds."""
    return _create("cifar_preact_resnet18", pretrained, _PREACT18, width, kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, width: int = 16, **kwargs: Any) -> CifarResNet:
    """He et al. 2016 CIFAR ResNet-20: 3 stages × 3 basic blocks, 16/32/64 channels, ~0.27 M params."""
    arch = {"block": "basic", "depths": (3, 3, 3), "strides": (1, 2, 2)}
    return _create("cifar_resnet20", pretrained, arch, width, kwargs)


@register_model
def cifar_resnet8(pretrained: bool = False, width: int = 16, **kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-8: 3 stages × 1 basic block, ~0.08 M params; the fast model for CPU runs."""
    arch = {"block": "basic", "depths": (1, 1, 1), "strides": (1, 2, 2)}
    return _create("cifar_resnet8", pretrained, arch, width, kwargs)
