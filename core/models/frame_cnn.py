"""2D CNN building blocks of the per-frame action models (fusion, two-stream, LRCN).

A *trunk* is a torchvision ResNet (He et al., CVPR 2016) without its classifier: (N, C, H, W)
-> features (N, F), F = 512 for ResNet-18/34, any H and W (global average pooling). Built with
``weights=None``: the action models that use it have no published weights, so they never touch
the network; train them, or load a checkpoint.
"""

from __future__ import annotations

from torch import nn
from torchvision import models as tv_models

_RESNETS = {"resnet18": tv_models.resnet18, "resnet34": tv_models.resnet34}


def resnet_trunk(in_channels: int = 3, backbone: str = "resnet18") -> tuple[nn.Module, int]:
    """A ResNet taking ``in_channels`` channels, classifier removed; returns (module, F)."""
    if backbone not in _RESNETS:
        raise ValueError(f"backbone must be one of {sorted(_RESNETS)}, not {backbone!r}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, not {in_channels}")
    model = _RESNETS[backbone](weights=None)
    if in_channels != 3:
        old = model.conv1
        model.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride,
                                old.padding, bias=False)
    features = model.fc.in_features
    model.fc = nn.Identity()
    return model, features


def check_classes(num_classes: int) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, not {num_classes}")
