"""TransUNet: a Vision Transformer encoder on CNN features with a U-Net decoder.

Paper: J. Chen, Y. Lu, Q. Yu et al., "TransUNet: Transformers Make Strong Encoders for Medical
Image Segmentation", arXiv 2102.04306, 2021; the Transformer is ViT's (Dosovitskiy et al.,
ICLR 2021). As in the paper's hybrid R50-ViT, a CNN produces skips at 1/2, 1/4 and 1/8 of the
input and a 1/16 map whose pixels are the tokens (patch size 1 on that map); a "cascaded
upsampler" decoder (bilinear 2x, concatenated skip, two 3x3 convolutions) goes back to full size.

Differences, for a model that trains from scratch on a laptop: a small residual CNN instead of
ResNet-50 and a small Transformer (dim 128, 4 heads, 4 layers). The learned position embedding
lives on a ``pos_grid`` x ``pos_grid`` grid and is bilinearly resampled to the actual token grid,
so one set of weights runs at any input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from core.models.blocks import ConvBNReLU, DecoderBlock, ResidualBlock, run_padded

STRIDE = 16  # the token grid is 1/16 of the (padded) input


class CNNStem(nn.Module):
    """Four stride-2 stages (conv + residual block): widths c, 2c, 4c, 8c.

    Shapes: (N, C, H, W) -> [(N, c, H/2, W/2), (N, 2c, H/4, W/4), (N, 4c, H/8, W/8),
    (N, 8c, H/16, W/16)] for H, W divisible by 16.
    """

    def __init__(self, in_channels: int, base_channels: int) -> None:
        super().__init__()
        widths = [base_channels * 2**i for i in range(4)]
        self.stages = nn.ModuleList(
            nn.Sequential(ConvBNReLU(c_in, c_out, stride=2), ResidualBlock(c_out, c_out))
            for c_in, c_out in zip([in_channels, *widths[:-1]], widths, strict=True)
        )
        self.widths = widths

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class ViTEncoder(nn.Module):
    """Token embedding, resampled position embedding and pre-norm Transformer layers.

    Args:
        in_channels: Channels of the feature map whose pixels become tokens.
        dim: Token width D.
        heads: Attention heads (must divide ``dim``).
        layers: Transformer layers.
        mlp_ratio: Hidden width of each layer's MLP, as a multiple of ``dim``.
        dropout: Dropout in the Transformer.
        pos_grid: Side of the grid the learned position embedding is stored on.

    Shapes: (N, in_channels, h, w) -> (N, D, h, w).
    """

    def __init__(self, in_channels: int, dim: int = 128, heads: int = 4, layers: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, pos_grid: int = 14) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, kernel_size=1)  # patch size 1 on the 1/16 map
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, pos_grid, pos_grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(dim),
                                                 enable_nested_tensor=False)

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """The position embedding resampled to an h x w token grid, shape (1, D, h, w)."""
        if self.pos_embed.shape[-2:] == (h, w):
            return self.pos_embed
        return F.interpolate(self.pos_embed, size=(h, w), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        n, d, h, w = x.shape
        x = x + self.position_embedding(h, w)
        tokens = self.dropout(x.flatten(2).transpose(1, 2))  # (N, h*w, D)
        tokens = self.transformer(tokens)
        return tokens.transpose(1, 2).reshape(n, d, h, w)


class TransUNet(nn.Module):
    """CNN stem + ViT encoder + cascaded-upsampler decoder with skips.

    Args:
        in_channels: Input channels C.
        num_classes: Output channels K.
        base_channels: Width c of the CNN stem's first stage (stages c, 2c, 4c, 8c).
        dim, heads, layers, mlp_ratio, dropout, pos_grid: See :class:`ViTEncoder`.
        decoder_channels: Widths of the four decoder stages (1/8, 1/4, 1/2, 1/1).

    Shapes: (N, C, H, W) float -> logits (N, K, H, W), any H, W (padded to a multiple of 16).
    """

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 16,
                 dim: int = 128, heads: int = 4, layers: int = 4, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, pos_grid: int = 14,
                 decoder_channels: Sequence[int] = (64, 32, 16, 16)) -> None:
        super().__init__()
        if len(decoder_channels) != 4:
            raise ValueError("decoder_channels needs four widths (1/8, 1/4, 1/2, 1/1)")
        self.stem = CNNStem(in_channels, base_channels)
        self.vit = ViTEncoder(self.stem.widths[-1], dim, heads, layers, mlp_ratio, dropout,
                              pos_grid)
        self.conv_more = ConvBNReLU(dim, dim)
        skip_widths = [*reversed(self.stem.widths[:-1]), 0]  # 1/8, 1/4, 1/2, none at 1/1
        in_widths = [dim, *decoder_channels[:-1]]
        self.decoder = nn.ModuleList(
            DecoderBlock(c_in, c_skip, c_out, "bilinear")
            for c_in, c_skip, c_out in zip(in_widths, skip_widths, decoder_channels, strict=True)
        )
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, H, W) for images (N, C, H, W)."""
        return run_padded(self._forward, x, STRIDE)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, deepest = self.stem(x)
        x = self.conv_more(self.vit(deepest))
        for block in self.decoder:
            x = block(x, skips.pop() if skips else None)
        return self.head(x)


def transunet(num_classes: int = 2, in_channels: int = 3, **kwargs: Any) -> TransUNet:
    """TransUNet (Chen et al., 2021), small configuration, random weights.

    Args:
        num_classes: Output classes K.
        in_channels: Input channels C.
        **kwargs: ``base_channels`` (16), ``dim`` (128), ``heads`` (4), ``layers`` (4),
            ``mlp_ratio`` (4.0), ``dropout`` (0.0), ``pos_grid`` (14),
            ``decoder_channels`` ((64, 32, 16, 16)).

    Returns:
        A module mapping (N, C, H, W) to logits (N, K, H, W).
    """
    return TransUNet(in_channels, num_classes, **kwargs)
