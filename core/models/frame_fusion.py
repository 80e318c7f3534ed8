"""Single-frame 2D CNN baselines for video: late fusion and early fusion of frames.

Paper: A. Karpathy, G. Toderici, S. Shetty, T. Leung, R. Sukthankar, L. Fei-Fei, "Large-scale
Video Classification with Convolutional Neural Networks", CVPR 2014. A CNN on single frames is a
very strong baseline; time can be fused late (after the network), early (in the first
convolution) or slowly (3D CNNs such as :mod:`core.models.c3d`).

* ``late_fusion_resnet18``: the same 2D CNN scores every frame; the clip's scores are the
  average of the per-frame scores (the single-frame model averaged over the clip). Any T.
* ``early_fusion_resnet18``: the T frames are stacked as channels (frame 0's RGB, then frame
  1's, ...) into the first convolution, which so sees 3T channels and combines the frames at
  the pixel level (the paper's 11 x 11 x 3 x T filters, T = 10); T is fixed.

Both take (B, T, 3, H, W) normalised frames (the ``"frames"`` layout of
:mod:`core.models.action_specs`) and return class scores (B, C). The 2D CNN is a torchvision
ResNet-18 built with ``weights=None``.
"""

from __future__ import annotations

import torch
from torch import nn

from core.models.frame_cnn import check_classes, resnet_trunk

SPORTS1M_CLASSES = 487  # the paper's data set
EARLY_FUSION_FRAMES = 10


class LateFusion(nn.Module):
    """Average of per-frame class scores of a 2D CNN.

    Shapes: (B, T, C, H, W) -> (B, K); :meth:`frame_scores` gives the (B, T, K) before averaging.
    """

    def __init__(self, num_classes: int = SPORTS1M_CLASSES, in_channels: int = 3,
                 backbone: str = "resnet18") -> None:
        super().__init__()
        check_classes(num_classes)
        self.cnn, features = resnet_trunk(in_channels, backbone)
        self.fc = nn.Linear(features, num_classes)

    def frame_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame class scores (B, T, K) of frames (B, T, C, H, W)."""
        b, t = x.shape[:2]
        return self.fc(self.cnn(x.flatten(0, 1))).view(b, t, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frame_scores(x).mean(dim=1)


class EarlyFusion(nn.Module):
    """A 2D CNN whose first convolution takes the T frames stacked as channels.

    Shapes: (B, frames, C, H, W) -> (B, K); the frames are stacked into (B, frames * C, H, W).
    """

    def __init__(self, num_classes: int = SPORTS1M_CLASSES, in_channels: int = 3,
                 frames: int = EARLY_FUSION_FRAMES, backbone: str = "resnet18") -> None:
        super().__init__()
        check_classes(num_classes)
        if frames < 1:
            raise ValueError(f"frames must be >= 1, not {frames}")
        self.frames, self.in_channels = frames, in_channels
        self.cnn, features = resnet_trunk(in_channels * frames, backbone)
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape[:3]
        if (t, c) != (self.frames, self.in_channels):
            raise ValueError(f"early fusion was built for {self.frames} frames of "
                             f"{self.in_channels} channels, got {t} of {c}")
        return self.fc(self.cnn(x.reshape(b, t * c, *x.shape[3:])))


def late_fusion_resnet18(num_classes: int = SPORTS1M_CLASSES, in_channels: int = 3,
                         backbone: str = "resnet18") -> LateFusion:
    """Late fusion: ResNet-18 per frame, scores averaged over the clip; random weights."""
    return LateFusion(num_classes, in_channels, backbone)


def early_fusion_resnet18(num_classes: int = SPORTS1M_CLASSES, in_channels: int = 3,
                          frames: int = EARLY_FUSION_FRAMES,
                          backbone: str = "resnet18") -> EarlyFusion:
    """Early fusion: ``frames`` frames stacked as channels into a ResNet-18; random weights."""
    return EarlyFusion(num_classes, in_channels, frames, backbone)
