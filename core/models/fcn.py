"""Fully convolutional networks (torchvision's FCN-ResNet), returning plain logits.

Paper: J. Long, E. Shelhamer, T. Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015. torchvision's variant: a dilated ResNet-50/101 (output stride 8,
He et al., CVPR 2016), an FCN head and bilinear upsampling to the input size.

This file also holds what the torchvision wrappers share (DeepLabV3 uses it too):
:class:`TorchvisionSegmentation`, which returns a logits tensor instead of torchvision's dict
and keeps torchvision's state_dict keys (so official weight files load with ``strict=True``),
and :func:`weights_from_enum`, which describes an official weight file without downloading it.
Builders never touch the network: ``weights=None, weights_backbone=None`` always.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torchvision.models import segmentation as tv_segmentation

from core.models.weights import Weights, torchvision_weights


class TorchvisionSegmentation(nn.Module):
    """A torchvision segmentation model (FCN, DeepLabV3) that returns logits only.

    Registers the model's ``backbone``, ``classifier`` and ``aux_classifier`` under the same
    names, so the state_dict keys are exactly torchvision's. The auxiliary head is kept for
    the official files (they contain it) but skipped by :meth:`forward`.

    Args:
        model: A torchvision ``FCN`` or ``DeepLabV3``.
        first_conv_key: State-dict key of the first convolution's kernel (the one adapted when
            ``in_channels != 3``, see :func:`core.models.blocks.adapt_conv_weight`).

    Shapes: (N, C, H, W) float -> logits (N, K, H, W), any H, W.
    """

    def __init__(self, model: nn.Module, first_conv_key: str) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.classifier = model.classifier
        self.aux_classifier = model.aux_classifier
        self.first_conv_key = first_conv_key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, H, W) for normalised images (N, C, H, W)."""
        features = self.backbone(x)
        return self._upsample(self.classifier(features["out"]), x)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Main and auxiliary logits, both (N, K, H, W) (aux None without an aux head)."""
        features = self.backbone(x)
        out = self._upsample(self.classifier(features["out"]), x)
        if self.aux_classifier is None or "aux" not in features:
            return out, None
        return out, self._upsample(self.aux_classifier(features["aux"]), x)

    @staticmethod
    def _upsample(logits: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(logits, size=like.shape[-2:], mode="bilinear", align_corners=False)


def replace_first_conv(model: nn.Module, in_channels: int) -> str:
    """Swap the model's first ``Conv2d`` for one taking ``in_channels`` (random weights).

    Returns:
        The state-dict key of that convolution's kernel (unchanged name).
    """
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels != in_channels:
        parent_name, _, attr = name.rpartition(".")
        new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                        conv.padding, conv.dilation, conv.groups, bias=conv.bias is not None)
        setattr(model.get_submodule(parent_name), attr, new)
    return f"{name}.weight"


def wrap_torchvision(builder: Callable[..., nn.Module], num_classes: int, in_channels: int,
                     aux_loss: bool) -> TorchvisionSegmentation:
    """Build a torchvision segmentation model offline (random weights) and wrap it.

    Args:
        builder: e.g. ``torchvision.models.segmentation.fcn_resnet50``.
        num_classes: Output classes K.
        in_channels: Input channels C (the first convolution is replaced when not 3).
        aux_loss: Keep the auxiliary head (official weight files contain it).
    """
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes,
                    aux_loss=aux_loss)
    return TorchvisionSegmentation(model, replace_first_conv(model, in_channels))


def weights_from_enum(member: Any, model: str, variant: str, description: str = "") -> Weights:
    """Describe one torchvision weights enum member as :class:`Weights` (no download).

    Args:
        member: e.g. ``FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1``.
        model: Registered model name.
        variant: Suffix of the weights name (``"<model>.<variant>"``).
        description: One line for menus.
    """
    return torchvision_weights(member, f"{model}.{variant}", model, description=description)


_COCO_VOC = "COCO train2017, the 20 Pascal VOC categories + background"

WEIGHTS: dict[str, Weights] = {
    w.name: w for w in (
        weights_from_enum(tv_segmentation.FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
                          "fcn_resnet50", "coco_voc", _COCO_VOC),
        weights_from_enum(tv_segmentation.FCN_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1,
                          "fcn_resnet101", "coco_voc", _COCO_VOC),
    )
}


def fcn_resnet50(num_classes: int = 21, in_channels: int = 3,
                 aux_loss: bool = True) -> TorchvisionSegmentation:
    """FCN with a dilated ResNet-50 backbone (torchvision), random weights.

    Args:
        num_classes: Output classes K (21 = the official COCO/VOC weights).
        in_channels: Input channels C.
        aux_loss: Keep the auxiliary FCN head on layer3 (in the official files).

    Returns:
        A module mapping (N, C, H, W) to logits (N, K, H, W).
    """
    return wrap_torchvision(tv_segmentation.fcn_resnet50, num_classes, in_channels, aux_loss)


def fcn_resnet101(num_classes: int = 21, in_channels: int = 3,
                  aux_loss: bool = True) -> TorchvisionSegmentation:
    """FCN with a dilated ResNet-101 backbone (torchvision), random weights.

    Args:
        num_classes: Output classes K (21 = the official COCO/VOC weights).
        in_channels: Input channels C.
        aux_loss: Keep the auxiliary FCN head on layer3 (in the official files).

    Returns:
        A module mapping (N, C, H, W) to logits (N, K, H, W).
    """
    return wrap_torchvision(tv_segmentation.fcn_resnet101, num_classes, in_channels, aux_loss)
