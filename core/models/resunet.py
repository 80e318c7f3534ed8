"""ResUNet-a: a U-Net of residual blocks with parallel atrous convolutions and pyramid pooling.

Paper: F. I. Diakogiannis, F. Waldner, P. Caccetta, C. Wu, "ResUNet-a: a deep learning framework
for semantic segmentation of remotely sensed data", ISPRS J. Photogramm. Remote Sens. 2020
(after Zhang et al.'s ResUNet, 2018). Every level is a ResBlock-a (parallel atrous branches with
dilation rates that shrink with depth, summed with the shortcut); the bridge is PSP pooling
(Zhao et al., CVPR 2017).

Differences from the paper: downsampling is the shared U-Net max-pool (so every decoder
upsampling mode, max-unpooling included, works) rather than a strided 1x1 convolution; the
multi-task heads (boundary, distance, colour) are left out: one segmentation head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from core.models.blocks import ConvBNReLU, ResidualBlock
from core.models.unet import UNet

# ResUNet-a d6: dilation rates of the ResBlock-a at each level (the deepest repeat the last).
DEFAULT_DILATIONS: tuple[tuple[int, ...], ...] = (
    (1, 3, 15, 31), (1, 3, 15, 31), (1, 3, 15), (1, 3, 15), (1,), (1,))


class PSPPooling(nn.Module):
    """Pyramid scene pooling: max-pool to ``bins`` grids, 1x1 conv, upsample, fuse.

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, channels: int, bins: Sequence[int] = (1, 2, 4, 8)) -> None:
        super().__init__()
        branch_channels = max(1, channels // len(bins))
        # No batch norm on the pooled maps: a 1x1 map of one image has no batch statistics.
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AdaptiveMaxPool2d(b), nn.Conv2d(channels, branch_channels, 1),
                          nn.ReLU(inplace=True))
            for b in bins
        )
        self.fuse = ConvBNReLU(channels + branch_channels * len(bins), channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(branch(x), size=size, mode="nearest") for branch in self.branches]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class _ResBlockA:
    """``block(in, out, level)`` building a ResBlock-a with the level's dilation rates."""

    def __init__(self, dilations: Sequence[Sequence[int]]) -> None:
        self.dilations = [tuple(d) for d in dilations]

    def __call__(self, in_channels: int, out_channels: int, level: int) -> nn.Module:
        rates = self.dilations[min(level, len(self.dilations) - 1)]
        return ResidualBlock(in_channels, out_channels, rates)


class ResUNet(UNet):
    """ResUNet-a: :class:`core.models.unet.UNet` with ResBlock-a units and a PSP bridge.

    Args:
        in_channels: Input channels C.
        num_classes: Output channels K.
        base_channels: Width of the full-resolution level (doubles per level).
        depth: Number of downsamplings (input padded to a multiple of ``2**depth``).
        upsampling: ``"nearest"``, ``"bilinear"``, ``"transpose"`` or ``"maxunpool"``.
        dilations: Dilation rates per level (level 0 first; deeper levels repeat the last).
        psp_bins: Grid sizes of the bridge's pyramid pooling (empty: no PSP bridge).

    Shapes: (N, C, H, W) float -> logits (N, K, H, W), any H, W.
    """

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 32,
                 depth: int = 4, upsampling: str = "bilinear",
                 dilations: Sequence[Sequence[int]] = DEFAULT_DILATIONS,
                 psp_bins: Sequence[int] = (1, 2, 4, 8)) -> None:
        bridge = PSPPooling(base_channels * 2**depth, psp_bins) if psp_bins else None
        super().__init__(in_channels, num_classes, base_channels, depth, upsampling,
                         block=_ResBlockA(dilations), bridge=bridge)


def resunet(num_classes: int = 2, in_channels: int = 3, **kwargs: Any) -> ResUNet:
    """ResUNet-a (Diakogiannis et al., 2020) with random weights.

    Args:
        num_classes: Output classes K.
        in_channels: Input channels C.
        **kwargs: ``base_channels`` (32), ``depth`` (4), ``upsampling`` ("bilinear"),
            ``dilations`` (ResUNet-a d6 rates), ``psp_bins`` ((1, 2, 4, 8)).

    Returns:
        A module mapping (N, C, H, W) to logits (N, K, H, W).
    """
    return ResUNet(in_channels, num_classes, **kwargs)
