"""Residual blocks of the CIFAR ResNets: post-activation (He et al. 2016) and pre-activation."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution with padding 1 and no bias (a BN follows or precedes it)."""
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, stride=stride, padding=1, bias=False)


class PadShortcut(nn.Module):
    """He et al.'s option-A shortcut: subsample by ``stride``, zero-pad the new channels."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        if out_chs < in_chs:
            raise ValueError(f"PadShortcut can only add channels, got in_chs={in_chs} > out_chs={out_chs}")
        self.stride = stride
        self.extra = out_chs - in_chs

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra:
            low = self.extra // 2
            x = F.pad(x, (0, 0, 0, 0, low, self.extra - low))
        return x


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a parameter-free shortcut, then ReLU (CIFAR ResNet-20/32/…)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_chs, out_chs, stride)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = conv3x3(out_chs, out_chs)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)
        needs_shortcut = stride != 1 or in_chs != out_chs
        self.shortcut: nn.Module = PadShortcut(in_chs, out_chs, stride) if needs_shortcut else nn.Identity()

    def zero_init_last(self) -> None:
        """Set the last BN's γ to 0 so the block starts as the identity ("zero γ" trick)."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv plus a shortcut (1×1 conv when the shape changes), as in the mixup paper."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = conv3x3(in_chs, out_chs, stride)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.conv2 = conv3x3(out_chs, out_chs)
        self.act = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_chs != out_chs:
            self.downsample = nn.Conv2d(in_chs, out_chs, kernel_size=1, stride=stride, bias=False)

    def zero_init_last(self) -> None:
        """Zero the last conv so the block starts as the identity (no BN ends a pre-act block)."""
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: Tensor) -> Tensor:
        pre = self.act(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(self.act(self.bn2(out)))
        return out + shortcut
