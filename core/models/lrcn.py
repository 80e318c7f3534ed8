"""LRCN: a per-frame CNN feeding an LSTM, for long-term structure in video.

Paper: J. Donahue, L. A. Hendricks, S. Guadarrama, M. Rohrbach, S. Venugopalan, K. Saenko,
T. Darrell, "Long-term Recurrent Convolutional Networks for Visual Recognition and
Description", CVPR 2015. Each frame goes through a 2D CNN; the sequence of feature vectors goes
through an LSTM, which predicts a class distribution at every time step. For activity
recognition the paper averages the per-step predictions over the clip (``pooling="mean"``);
``pooling="last"`` keeps only the last step's, which has seen the whole clip.

The CNN is a torchvision ResNet-18 (``weights=None``) with its classifier removed (512 features
per frame). Input (B, T, 3, H, W) normalised frames (the ``"frames"`` layout of
:mod:`core.models.action_specs`), any T; output class scores (B, C).
"""

from __future__ import annotations

import torch
from torch import nn

from core.models.frame_cnn import check_classes, resnet_trunk

UCF101_CLASSES = 101
POOLINGS = ("mean", "last")


class LRCN(nn.Module):
    """Per-frame ResNet features -> LSTM -> per-step scores -> one prediction per clip.

    Args:
        num_classes: C.
        in_channels: Channels per frame.
        hidden: LSTM hidden size.
        layers: Stacked LSTM layers.
        pooling: ``"mean"`` of the per-step scores, or the ``"last"`` step's.
        backbone: ``"resnet18"`` or ``"resnet34"``.
        dropout: On the LSTM outputs before the classifier.

    Shapes: (B, T, C, H, W) -> (B, num_classes); :meth:`step_scores` gives (B, T, num_classes).
    """

    def __init__(self, num_classes: int = UCF101_CLASSES, in_channels: int = 3,
                 hidden: int = 256, layers: int = 1, pooling: str = "mean",
                 backbone: str = "resnet18", dropout: float = 0.5) -> None:
        super().__init__()
        check_classes(num_classes)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {pooling!r}")
        self.pooling = pooling
        self.cnn, features = resnet_trunk(in_channels, backbone)
        self.lstm = nn.LSTM(features, hidden, num_layers=layers, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden, num_classes)

    def step_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores after every frame (B, T, C), each step having seen frames 0..t."""
        b, t = x.shape[:2]
        features = self.cnn(x.flatten(0, 1)).view(b, t, -1)
        outputs, _ = self.lstm(features)
        return self.fc(self.dropout(outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.step_scores(x)
        return scores.mean(dim=1) if self.pooling == "mean" else scores[:, -1]


def lrcn_resnet18(num_classes: int = UCF101_CLASSES, in_channels: int = 3, hidden: int = 256,
                  layers: int = 1, pooling: str = "mean", backbone: str = "resnet18",
                  dropout: float = 0.5) -> LRCN:
    """LRCN with ResNet-18 frame features and an LSTM; random weights."""
    return LRCN(num_classes, in_channels, hidden, layers, pooling, backbone, dropout)
