"""Two-stream network: appearance from one RGB frame, motion from stacked optical flow.

Paper: K. Simonyan, A. Zisserman, "Two-Stream Convolutional Networks for Action Recognition in
Videos", NeurIPS 2014. The *spatial* stream is an image CNN on a single RGB frame (scenes,
objects); the *temporal* stream is the same kind of CNN on a stack of the horizontal and
vertical optical flow fields of L consecutive frames (2L input channels, L = 10 in the paper:
field k's x and y components in channels 2k and 2k + 1), which sees the motion explicitly. The
streams are trained separately and fused at the class scores, by averaging their softmax scores
(UCF101 86.9 %) or with a linear SVM on them (88.0 %).

This module's fusion options:

* ``"average"`` (default): the class distribution is the mean of the two streams' softmax
  distributions; the output is its logarithm, so the usual softmax of the output gives exactly
  that mean (and cross-entropy trains it);
* ``"linear"``: a learned linear layer on the two streams' concatenated scores (2C -> C), the
  trainable counterpart of the paper's SVM fusion, initialised to the average of the two
  streams' logits.

:meth:`TwoStream.forward_streams` returns each stream's scores, to train or evaluate the streams
apart. Both streams are torchvision ResNet-18s built with ``weights=None``.

Call: ``module(rgb, flow)``, rgb (B, 3, H, W) normalised, flow (B, 2L, H, W) (the
``"two_stream"`` layout of :mod:`core.models.action_specs`); output class scores (B, C).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from core.models.frame_cnn import check_classes, resnet_trunk

UCF101_CLASSES = 101
FLOW_FRAMES = 10  # L
FUSIONS = ("average", "linear")


class TwoStream(nn.Module):
    """Spatial (RGB) and temporal (stacked flow) streams fused at the class scores.

    Args:
        num_classes: C.
        in_channels: Channels of the RGB frame.
        flow_frames: L; the temporal stream takes 2L channels.
        fusion: One of :data:`FUSIONS`.
        backbone: ``"resnet18"`` or ``"resnet34"`` (both streams).
        dropout: Before each stream's classifier (the paper uses heavy dropout, 0.9 / 0.5 on
            its fully connected layers; 0.5 here).

    Shapes: rgb (B, in_channels, H, W), flow (B, 2L, H, W) -> (B, C).
    """

    def __init__(self, num_classes: int = UCF101_CLASSES, in_channels: int = 3,
                 flow_frames: int = FLOW_FRAMES, fusion: str = "average",
                 backbone: str = "resnet18", dropout: float = 0.5) -> None:
        super().__init__()
        check_classes(num_classes)
        if flow_frames < 1:
            raise ValueError(f"flow_frames must be >= 1, not {flow_frames}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, not {fusion!r}")
        self.flow_frames, self.fusion_mode = flow_frames, fusion
        spatial, features = resnet_trunk(in_channels, backbone)
        temporal, _ = resnet_trunk(self.flow_channels, backbone)
        self.spatial = nn.Sequential(spatial, nn.Dropout(dropout), nn.Linear(features, num_classes))
        self.temporal = nn.Sequential(temporal, nn.Dropout(dropout),
                                      nn.Linear(features, num_classes))
        self.fusion: nn.Linear | None = None
        if fusion == "linear":
            self.fusion = nn.Linear(2 * num_classes, num_classes)
            with torch.no_grad():  # start as the average of the two streams' logits
                eye = torch.eye(num_classes) * 0.5
                self.fusion.weight.copy_(torch.cat([eye, eye], dim=1))
                self.fusion.bias.zero_()

    @property
    def flow_channels(self) -> int:
        """2L, channels of the temporal stream's input."""
        return 2 * self.flow_frames

    def forward_streams(self, rgb: torch.Tensor,
                        flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(spatial scores, temporal scores), each (B, C)."""
        if flow.shape[1] != self.flow_channels:
            raise ValueError(f"the temporal stream takes {self.flow_channels} flow channels "
                             f"(L = {self.flow_frames} fields of x and y), got {flow.shape[1]}")
        return self.spatial(rgb), self.temporal(flow)

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        spatial, temporal = self.forward_streams(rgb, flow)
        if self.fusion is not None:
            return self.fusion(torch.cat([spatial, temporal], dim=1))
        log_probs = torch.stack([spatial.log_softmax(dim=1), temporal.log_softmax(dim=1)])
        return torch.logsumexp(log_probs, dim=0) - math.log(2.0)


def two_stream_resnet18(num_classes: int = UCF101_CLASSES, in_channels: int = 3,
                        flow_frames: int = FLOW_FRAMES, fusion: str = "average",
                        backbone: str = "resnet18", dropout: float = 0.5) -> TwoStream:
    """Two-stream network of two ResNet-18s (RGB frame, 2L flow channels); random weights."""
    return TwoStream(num_classes, in_channels, flow_frames, fusion, backbone, dropout)
