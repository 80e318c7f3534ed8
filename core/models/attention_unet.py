"""Attention U-Net: a U-Net whose skip connections pass through attention gates.

Paper: O. Oktay, J. Schlemper, L. Le Folgoc et al., "Attention U-Net: Learning Where to Look
for the Pancreas", MIDL 2018. Each gate computes additive attention coefficients
alpha = sigmoid(psi(ReLU(W_x x + W_g g))) in [0, 1] from the skip x and the coarser decoder
feature g (the gating signal), on g's grid, resamples them to the skip's size and multiplies the
skip by them, so the decoder sees only the regions the coarse context points at.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from core.models.unet import UNet


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al., 2018, grid attention).

    Args:
        skip_channels: Channels of the skip feature x (fine grid).
        gate_channels: Channels of the gating signal g (coarse grid, half x's size).
        inter_channels: Width of the attention's hidden layer (default skip_channels // 2).

    Shapes: skip (N, Cx, H, W), g (N, Cg, H/2, W/2) -> gated skip (N, Cx, H, W).
    """

    def __init__(self, skip_channels: int, gate_channels: int,
                 inter_channels: int | None = None) -> None:
        super().__init__()
        inter = inter_channels or max(1, skip_channels // 2)
        # W_x with stride 2 brings the skip onto the gating signal's grid, as in the paper.
        self.theta_x = nn.Conv2d(skip_channels, inter, kernel_size=2, stride=2, bias=False)
        self.phi_g = nn.Conv2d(gate_channels, inter, kernel_size=1)
        self.psi = nn.Conv2d(inter, 1, kernel_size=1)

    def coefficients(self, skip: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention coefficients alpha in [0, 1], shape (N, 1, H, W) (skip's size)."""
        theta = self.theta_x(skip)
        phi = self.phi_g(g)
        if phi.shape[-2:] != theta.shape[-2:]:
            phi = F.interpolate(phi, size=theta.shape[-2:], mode="bilinear", align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(theta + phi)))
        return F.interpolate(alpha, size=skip.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, skip: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return skip * self.coefficients(skip, g)


def _attention_gate(skip_channels: int, gate_channels: int, level: int) -> AttentionGate:
    return AttentionGate(skip_channels, gate_channels)


class AttentionUNet(UNet):
    """U-Net (see :class:`core.models.unet.UNet`) with an :class:`AttentionGate` on every skip.

    Shapes: (N, C, H, W) float -> logits (N, K, H, W), any H, W.
    """

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 32,
                 depth: int = 4, upsampling: str = "bilinear") -> None:
        super().__init__(in_channels, num_classes, base_channels, depth, upsampling,
                         gate=_attention_gate)


def attention_unet(num_classes: int = 2, in_channels: int = 3, **kwargs: Any) -> AttentionUNet:
    """Attention U-Net (Oktay et al., 2018) with random weights.

    Args:
        num_classes: Output classes K.
        in_channels: Input channels C.
        **kwargs: ``base_channels`` (32), ``depth`` (4), ``upsampling`` ("bilinear").

    Returns:
        A module mapping (N, C, H, W) to logits (N, K, H, W).
    """
    return AttentionUNet(in_channels, num_classes, **kwargs)
