"""C3D: a 3D convolutional network on 16-frame clips.

Paper: D. Tran, L. Bourdev, R. Fergus, L. Torresani, M. Paluri, "Learning Spatiotemporal
Features with 3D Convolutional Networks", ICCV 2015. Eight 3 x 3 x 3 convolutions (stride 1,
padding 1: time, height and width kept) and five max poolings that fuse time slowly; the first
pooling is 1 x 2 x 2 so that time is not merged too early.

=========  ====================  ===================
layer      operation             output (C x T x H x W)
=========  ====================  ===================
input                            3 x 16 x 112 x 112
conv1      64, 3x3x3             64 x 16 x 112 x 112
pool1      max 1x2x2, stride 1x2x2   64 x 16 x 56 x 56
conv2      128, 3x3x3            128 x 16 x 56 x 56
pool2      max 2x2x2             128 x 8 x 28 x 28
conv3a/b   256, 3x3x3            256 x 8 x 28 x 28
pool3      max 2x2x2             256 x 4 x 14 x 14
conv4a/b   512, 3x3x3            512 x 4 x 14 x 14
pool4      max 2x2x2             512 x 2 x 7 x 7
conv5a/b   512, 3x3x3            512 x 2 x 7 x 7
pool5      max 2x2x2             512 x 1 x 3 x 3
fc6        4608 -> 4096, ReLU, dropout 0.5
fc7        4096 -> 4096, ReLU, dropout 0.5
fc8        4096 -> C (class scores)
=========  ====================  ===================

pool5 and the 3 x 3 of the table: a 2 x 2 x 2 pooling with stride 2 and *no* padding on the
2 x 7 x 7 map gives 1 x 3 x 3 (the last row and column are dropped, floor rounding), so fc6 has
512 * 3 * 3 = 4608 inputs. This file uses that padding (0, 0, 0) by default, as the lecture's
table does. The released C3D model (Caffe, which rounds poolings up) instead produces
512 x 1 x 4 x 4 = 8192 fc6 inputs; PyTorch ports write that as pool5 padding (0, 1, 1).
``pool5_padding=(0, 1, 1)`` builds that variant (fc6 then takes 8192 inputs).

Dropout: 0.5 after fc6 and after fc7, as in the paper's training setup. Every convolution and
fc6 / fc7 are followed by a ReLU.

Input (B, 3, 16, 112, 112) normalised clips (the clip spec: 16 consecutive frames resized to
128 x 171, centre crop 112); output class scores (B, C).
"""

from __future__ import annotations

import torch
from torch import nn

CLIP_FRAMES = 16
CLIP_SIZE = 112
SPORTS1M_CLASSES = 487  # the paper's training set


def _conv(in_channels: int, out_channels: int) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)


def _pool_output(size: int, kernel: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // kernel + 1


class C3D(nn.Module):
    """C3D (Tran et al., ICCV 2015); layer names follow the paper's table.

    Args:
        num_classes: C, outputs of fc8.
        in_channels: Channels per frame (3 for RGB).
        dropout: Dropout probability after fc6 and fc7 (0.5 in the paper).
        pool5_padding: (T, H, W) padding of pool5: (0, 0, 0) gives the table's 1 x 3 x 3,
            (0, 1, 1) the released model's 1 x 4 x 4.
        frames, size: Clip length and crop side the fully connected layers are sized for.

    Shapes: (B, in_channels, 16, 112, 112) -> (B, num_classes).
    """

    def __init__(self, num_classes: int = SPORTS1M_CLASSES, in_channels: int = 3,
                 dropout: float = 0.5, pool5_padding: tuple[int, int, int] = (0, 0, 0),
                 frames: int = CLIP_FRAMES, size: int = CLIP_SIZE) -> None:
        super().__init__()
        if num_classes < 1 or in_channels < 1:
            raise ValueError("C3D needs num_classes >= 1 and in_channels >= 1")
        self.conv1 = _conv(in_channels, 64)
        self.pool1 = nn.MaxPool3d(kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.conv2 = _conv(64, 128)
        self.pool2 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.conv3a = _conv(128, 256)
        self.conv3b = _conv(256, 256)
        self.pool3 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.conv4a = _conv(256, 512)
        self.conv4b = _conv(512, 512)
        self.pool4 = nn.MaxPool3d(kernel_size=2, stride=2)
        self.conv5a = _conv(512, 512)
        self.conv5b = _conv(512, 512)
        self.pool5 = nn.MaxPool3d(kernel_size=2, stride=2, padding=tuple(pool5_padding))
        t, s = frames, size // 2  # after pool1
        for _ in range(3):  # pool2-pool4
            t, s = t // 2, s // 2
        self.pool5_shape = (512, _pool_output(t, 2, pool5_padding[0]),
                            _pool_output(s, 2, pool5_padding[1]),
                            _pool_output(s, 2, pool5_padding[2]))
        flat = self.pool5_shape[0] * self.pool5_shape[1] * self.pool5_shape[2] * self.pool5_shape[3]
        self.fc6 = nn.Linear(flat, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(p=dropout)
        self._stages = (
            (self.conv1, self.pool1), (self.conv2, self.pool2),
            (self.conv3a, self.conv3b, self.pool3), (self.conv4a, self.conv4b, self.pool4),
            (self.conv5a, self.conv5b, self.pool5))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """pool5 output (B, 512, 1, 3, 3) of a clip (B, C, 16, 112, 112)."""
        for stage in self._stages:
            for layer in stage:
                x = layer(x) if isinstance(layer, nn.MaxPool3d) else self.relu(layer(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (B, C) of clips (B, in_channels, T, H, W)."""
        x = self.features(x).flatten(1)
        x = self.dropout(self.relu(self.fc6(x)))
        x = self.dropout(self.relu(self.fc7(x)))
        return self.fc8(x)


def c3d(num_classes: int = SPORTS1M_CLASSES, in_channels: int = 3, dropout: float = 0.5,
        pool5_padding: tuple[int, int, int] = (0, 0, 0)) -> C3D:
    """C3D, random weights (no published weights: train it, or load a checkpoint).

    Args:
        num_classes: C (487 = Sports-1M, the paper's; 101 for UCF101).
        in_channels: Channels per frame.
        dropout: After fc6 and fc7.
        pool5_padding: (0, 0, 0): pool5 512 x 1 x 3 x 3 as tabled; (0, 1, 1): the released
            model's 512 x 1 x 4 x 4.

    Returns:
        A module mapping (B, in_channels, 16, 112, 112) to class scores (B, num_classes).
    """
    return C3D(num_classes, in_channels, dropout, tuple(pool5_padding))
