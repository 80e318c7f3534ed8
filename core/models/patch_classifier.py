"""Sliding-window patch classifier: the lecture's "very inefficient" segmentation baseline.

Papers: C. Farabet, C. Couprie, L. Najman, Y. LeCun, "Learning Hierarchical Features for Scene
Labeling", TPAMI 2013; P. O. Pinheiro, R. Collobert, "Recurrent Convolutional Neural Networks
for Scene Labeling", ICML 2014. A small CNN classifies the centre pixel of the P x P patch cut
around every pixel. Overlapping patches share no computation, on purpose: SegStudio keeps it to
measure how much slower it is than a fully convolutional network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from core.models.blocks import ConvBNReLU, pad_mode


class PatchClassifier(nn.Module):
    """Classifies every pixel from the P x P patch centred on it.

    Args:
        in_channels: Input channels C.
        num_classes: Output classes K.
        patch_size: Patch side P (odd, >= 3); the image is reflect-padded by P // 2.
        chunk: Patches classified per batch (memory bound; at least one image row).
        width: Channels of the CNN's first convolution (then 2x, 4x).

    Shapes: (N, C, H, W) float -> logits (N, K, H, W), any H, W.
    """

    def __init__(self, in_channels: int, num_classes: int, patch_size: int = 33,
                 chunk: int = 4096, width: int = 16) -> None:
        super().__init__()
        if patch_size < 3 or patch_size % 2 == 0:
            raise ValueError(f"patch_size must be odd and >= 3, not {patch_size}")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, not {chunk}")
        self.patch_size = patch_size
        self.chunk = chunk
        self.num_classes = num_classes
        # No batch norm: a patch's logits must not depend on the other patches of its batch.
        self.cnn = nn.Sequential(
            ConvBNReLU(in_channels, width, norm=False),
            nn.MaxPool2d(2, ceil_mode=True),
            ConvBNReLU(width, 2 * width, norm=False),
            nn.MaxPool2d(2, ceil_mode=True),
            ConvBNReLU(2 * width, 4 * width, norm=False),
            nn.AdaptiveAvgPool2d(3),  # keeps a coarse layout around the centre
            nn.Flatten(),
            nn.Linear(4 * width * 9, 4 * width),
            nn.ReLU(inplace=True),
            nn.Linear(4 * width, num_classes),
        )

    def classify_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """Centre-pixel logits of patches.

        Args:
            patches: (M, C, P, P).

        Returns:
            Logits (M, K).
        """
        return self.cnn(patches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, H, W): every pixel's patch classified independently."""
        n, c, h, w = x.shape
        p = self.patch_size
        r = p // 2
        padded = F.pad(x, (r, r, r, r), mode=pad_mode((h, w), (r, r)))
        # A view (N, H, W, C, P, P) of every pixel's patch; only one chunk is copied at a time.
        windows = padded.unfold(2, p, 1).unfold(3, p, 1).permute(0, 2, 3, 1, 4, 5)
        rows = max(1, self.chunk // w)
        images = []
        for i in range(n):
            logits = [self.classify_patches(windows[i, top:top + rows].reshape(-1, c, p, p))
                      for top in range(0, h, rows)]
            images.append(torch.cat(logits).reshape(h, w, self.num_classes))
        return torch.stack(images).permute(0, 3, 1, 2).contiguous()


def patch_classifier(num_classes: int = 2, in_channels: int = 3, patch_size: int = 33,
                     chunk: int = 4096, width: int = 16) -> PatchClassifier:
    """Sliding-window patch classifier (Farabet et al., 2013) with random weights.

    Args:
        num_classes: Output classes K.
        in_channels: Input channels C.
        patch_size: Patch side P (odd).
        chunk: Patches per batch.
        width: First convolution's channels.

    Returns:
        A module mapping (N, C, H, W) to logits (N, K, H, W).
    """
    return PatchClassifier(in_channels, num_classes, patch_size, chunk, width)
