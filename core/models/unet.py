"""U-Net: an encoder-decoder with skip connections at every level.

Paper: O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015. Differences from the paper: padded ("same") convolutions with batch
norm, so the output has the input's size; the decoder's upsampling is selectable among the
lecture's in-network upsampling modes (see :class:`core.models.blocks.UpsampleBlock`).

:class:`UNet` is also the skeleton of the other variants: Attention U-Net passes a gate for the
skips, ResUNet-a passes residual blocks and a pooling bridge.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from core.models.blocks import UPSAMPLING_MODES, DecoderBlock, DoubleConv, run_padded

# block(in_channels, out_channels, level) -> module keeping H, W.
LevelBlockFactory = Callable[[int, int, int], nn.Module]
# gate(skip_channels, coarse_channels, level) -> module gate(skip, coarse) -> skip, or None.
GateFactory = Callable[[int, int, int], nn.Module | None]


def _double_conv(in_channels: int, out_channels: int, level: int) -> nn.Module:
    return DoubleConv(in_channels, out_channels)


class _LevelBlock:
    """``block(in, out)`` for one decoder level (picklable, unlike a lambda)."""

    def __init__(self, factory: LevelBlockFactory, level: int) -> None:
        self.factory, self.level = factory, level

    def __call__(self, in_channels: int, out_channels: int) -> nn.Module:
        return self.factory(in_channels, out_channels, self.level)


class UNet(nn.Module):
    """U-Net of ``depth`` max-pool downsamplings and as many decoder levels.

    Widths are ``base_channels * 2**level`` (level 0 = full resolution, ``depth`` = bridge).

    Args:
        in_channels: Input channels C.
        num_classes: Output channels K (one logit per class).
        base_channels: Width of the full-resolution level.
        depth: Number of downsamplings; the input is padded to a multiple of ``2**depth``.
        upsampling: ``"nearest"``, ``"bilinear"``, ``"transpose"`` or ``"maxunpool"``.
        block: ``block(in, out, level)`` for encoder and decoder units (default DoubleConv).
        gate: ``gate(skip_ch, coarse_ch, level)`` gating each skip (default none).
        bridge: Module applied at the coarsest level (default identity).

    Shapes: (N, C, H, W) float -> logits (N, K, H, W), any H, W.
    """

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 32,
                 depth: int = 4, upsampling: str = "bilinear", *,
                 block: LevelBlockFactory = _double_conv, gate: GateFactory | None = None,
                 bridge: nn.Module | None = None) -> None:
        super().__init__()
        if upsampling not in UPSAMPLING_MODES:
            raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, not {upsampling!r}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, not {depth}")
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.depth = depth
        self.upsampling = upsampling
        self.stem = block(in_channels, widths[0], 0)
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.encoder = nn.ModuleList(block(widths[i], widths[i + 1], i + 1) for i in range(depth))
        self.bridge = bridge if bridge is not None else nn.Identity()
        self.decoder = nn.ModuleList(
            DecoderBlock(widths[i + 1], widths[i], widths[i], upsampling,
                         block=_LevelBlock(block, i),
                         gate=gate(widths[i], widths[i + 1], i) if gate else None)
            for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, H, W) for images (N, C, H, W)."""
        return run_padded(self._forward, x, 2**self.depth)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        indices: list[torch.Tensor] = []
        x = self.stem(x)
        for level in self.encoder:
            skips.append(x)
            x, idx = self.pool(x)
            indices.append(idx)
            x = level(x)
        x = self.bridge(x)
        for level in self.decoder:
            x = level(x, skips.pop(), indices.pop())
        return self.head(x)


def unet(num_classes: int = 2, in_channels: int = 3, **kwargs: Any) -> UNet:
    """U-Net (Ronneberger et al., 2015) with random weights.

    Args:
        num_classes: Output classes K.
        in_channels: Input channels C.
        **kwargs: ``base_channels`` (32), ``depth`` (4), ``upsampling`` ("bilinear").

    Returns:
        A module mapping (N, C, H, W) to logits (N, K, H, W).
    """
    return UNet(in_channels, num_classes, **kwargs)
