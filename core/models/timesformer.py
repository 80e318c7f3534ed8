"""TimeSformer: a convolution-free video transformer with divided space-time attention.

Paper: G. Bertasius, H. Wang, L. Torresani, "Is Space-Time Attention All You Need for Video
Understanding?", ICML 2021. Every frame is cut into P x P patches, each linearly embedded (a
ViT's patch embedding, shared by the frames); a learned spatial position embedding (shared by
the frames) and a temporal embedding (one per frame) are added, and a classification token is
prepended. Each block then applies, with pre-norm residual connections:

1. *temporal* attention: for every patch position, the T tokens at that position in the T
   frames attend to each other (T x T attention, N times);
2. *spatial* attention: within every frame, its N patch tokens and the classification token
   attend to each other ((N + 1) x (N + 1) attention, T times; the T outputs of the
   classification token are averaged);
3. an MLP.

Divided attention costs T^2 N + N^2 T pairs per layer instead of (T N)^2 for joint space-time
attention, and was the most accurate scheme of the paper. As in the paper's code, the temporal
attention's residual passes through a linear layer initialised to zero (the block starts as a
purely spatial ViT block).

The defaults are a small configuration for CPUs: 8 frames of 112 x 112, patches of 16 (7 x 7 =
49 per frame), width 192, depth 4, 3 heads (the paper's base model: 8 x 224 x 224, width 768,
depth 12, 12 heads). Frames and image size are fixed by the learned embeddings.

Input (B, T, 3, H, W) normalised frames (the ``"frames"`` layout of
:mod:`core.models.action_specs`); output class scores (B, C) from the classification token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

KINETICS400_CLASSES = 400


class SelfAttention(nn.Module):
    """Multi-head self-attention over the tokens of each sequence: (N, L, D) -> (N, L, D)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        qkv = self.qkv(x).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2],
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(n, length, dim))


class DividedSpaceTimeBlock(nn.Module):
    """Temporal attention, then spatial attention, then an MLP (pre-norm, residual).

    Tokens are (B, 1 + T * N, D): the classification token, then frame 0's N patches, frame 1's...
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.temporal_norm = nn.LayerNorm(dim)
        self.temporal_attn = SelfAttention(dim, heads, dropout)
        self.temporal_fc = nn.Linear(dim, dim)
        nn.init.zeros_(self.temporal_fc.weight)
        nn.init.zeros_(self.temporal_fc.bias)
        self.spatial_norm = nn.LayerNorm(dim)
        self.spatial_attn = SelfAttention(dim, heads, dropout)
        self.mlp_norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        b, length, d = x.shape
        n = (length - 1) // frames
        cls, tokens = x[:, :1], x[:, 1:]
        # 1. temporal: one sequence of T tokens per (clip, patch position)
        seq = tokens.reshape(b, frames, n, d).transpose(1, 2).reshape(b * n, frames, d)
        res = self.temporal_attn(self.temporal_norm(seq))
        res = res.reshape(b, n, frames, d).transpose(1, 2).reshape(b, frames * n, d)
        tokens = tokens + self.temporal_fc(res)
        # 2. spatial: one sequence of 1 + N tokens per (clip, frame); the class token in each
        seq = torch.cat([cls.expand(b, frames, d).reshape(b * frames, 1, d),
                         tokens.reshape(b * frames, n, d)], dim=1)
        res = self.spatial_attn(self.spatial_norm(seq))
        cls = cls + res[:, 0].reshape(b, frames, d).mean(dim=1, keepdim=True)
        tokens = tokens + res[:, 1:].reshape(b, frames * n, d)
        x = torch.cat([cls, tokens], dim=1)
        # 3. MLP on every token
        return x + self.mlp(self.mlp_norm(x))


class TimeSformer(nn.Module):
    """TimeSformer with divided space-time attention.

    Args:
        num_classes: C.
        in_channels: Channels per frame.
        frames: T (fixed by the temporal embedding).
        image_size: Frame side (fixed by the position embedding); a multiple of ``patch_size``.
        patch_size: P.
        dim: Token width D.
        depth: Blocks.
        heads: Attention heads (divide D).
        mlp_ratio: MLP hidden width / D.
        dropout: In attention, MLP and on the embeddings.

    Shapes: (B, frames, in_channels, image_size, image_size) -> (B, num_classes).
    """

    def __init__(self, num_classes: int = KINETICS400_CLASSES, in_channels: int = 3,
                 frames: int = 8, image_size: int = 112, patch_size: int = 16, dim: int = 192,
                 depth: int = 4, heads: int = 3, mlp_ratio: float = 4.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1 or frames < 1 or depth < 1:
            raise ValueError("num_classes, in_channels, frames and depth must be >= 1")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch_size}")
        self.frames, self.image_size, self.in_channels = frames, image_size, in_channels
        self.patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patches + 1, dim))
        self.time_embed = nn.Parameter(torch.zeros(1, frames, 1, dim))
        self.embed_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(DividedSpaceTimeBlock(dim, heads, mlp_ratio, dropout)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        for p in (self.cls_token, self.pos_embed, self.time_embed):
            nn.init.trunc_normal_(p, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        if (t, c, h, w) != (self.frames, self.in_channels, self.image_size, self.image_size):
            raise ValueError(
                f"this TimeSformer takes {self.frames} frames of {self.in_channels} x "
                f"{self.image_size} x {self.image_size}, got {t} of {c} x {h} x {w}")
        tokens = self.patch_embed(x.flatten(0, 1)).flatten(2).transpose(1, 2)  # (B T, N, D)
        d = tokens.shape[-1]
        tokens = tokens + self.pos_embed[:, 1:]  # spatial position, shared by the frames
        tokens = tokens.reshape(b, t, self.patches, d) + self.time_embed  # which frame
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(b, 1, d)
        x = self.embed_dropout(torch.cat([cls, tokens.reshape(b, t * self.patches, d)], dim=1))
        for block in self.blocks:
            x = block(x, t)
        return self.head(self.norm(x[:, 0]))


def timesformer(num_classes: int = KINETICS400_CLASSES, in_channels: int = 3, frames: int = 8,
                image_size: int = 112, patch_size: int = 16, dim: int = 192, depth: int = 4,
                heads: int = 3, mlp_ratio: float = 4.0, dropout: float = 0.0) -> TimeSformer:
    """TimeSformer (divided space-time attention), small configuration by default; random
    weights."""
    return TimeSformer(num_classes, in_channels, frames, image_size, patch_size, dim, depth,
                       heads, mlp_ratio, dropout)
