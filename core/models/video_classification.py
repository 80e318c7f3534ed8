"""torchvision's video classification models: R3D, MC3, R(2+1)D, S3D, MViT v2, Video Swin.

Papers:

* ``r3d_18``, ``mc3_18``, ``r2plus1d_18``: D. Tran, H. Wang, L. Torresani, J. Ray, Y. LeCun,
  M. Paluri, "A Closer Look at Spatiotemporal Convolutions for Action Recognition", CVPR 2018.
  R3D is a ResNet-18 of 3 x 3 x 3 convolutions; MC3 ("mixed convolutions") uses 3D convolutions
  in the first stages and 2D ones (1 x 3 x 3) after; R(2+1)D factorises every 3 x 3 x 3
  convolution into a 1 x 3 x 3 spatial one and a 3 x 1 x 1 temporal one with a ReLU between
  (twice the non-linearities, parameters kept equal to R3D's by the middle width).
* ``s3d``: S. Xie, C. Sun, J. Huang, Z. Tu, K. Murphy, "Rethinking Spatiotemporal Feature
  Learning: Speed-Accuracy Trade-offs in Video Classification", ECCV 2018 (separable 3D
  Inception).
* ``mvit_v2_s``: Y. Li, C.-Y. Wu, H. Fan, K. Mangalam, B. Xiong, J. Malik, C. Feichtenhofer,
  "MViTv2: Improved Multiscale Vision Transformers for Classification and Detection", CVPR 2022.
* ``swin3d_t``: Z. Liu, J. Ning, Y. Cao, Y. Wei, Z. Zhang, S. Lin, H. Hu, "Video Swin
  Transformer", CVPR 2022.

Builders return torchvision's modules unchanged (same state-dict keys, so the official
Kinetics-400 files load with ``strict=True``), always with ``weights=None`` (these models have
no separate backbone weights): nothing touches the network. :data:`WEIGHTS` describes the
official files (file name in the torch hub cache, URL, hash prefix, the 400 Kinetics class names
of the weights' meta, normalisation of their transforms); :mod:`core.models.loading` loads them
offline. A project's own checkpoint can have any class count.

Input (B, 3, T, H, W) normalised clips, output class scores (B, C); see the clip specs
(:mod:`core.models.action_specs`) for each model's T, frame rate, resize and crop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torchvision.models import video as tv_video

from core.models.weights import Weights, torchvision_weights

KINETICS400_CLASSES = 400


def video_weights(member: Any, model: str, variant: str, description: str = "") -> Weights:
    """Describe one torchvision video weights enum member as :class:`Weights` (no download).

    File name and hash prefix come from the URL, class names from ``meta["categories"]``,
    mean and std from the member's ``VideoClassification`` transforms.
    """
    return torchvision_weights(member, f"{model}.{variant}", model, description=description)


_K400 = "Kinetics-400, 400 human action classes"

WEIGHTS: dict[str, Weights] = {
    w.name: w for w in (
        video_weights(tv_video.R3D_18_Weights.KINETICS400_V1, "r3d_18", "kinetics400", _K400),
        video_weights(tv_video.MC3_18_Weights.KINETICS400_V1, "mc3_18", "kinetics400", _K400),
        video_weights(tv_video.R2Plus1D_18_Weights.KINETICS400_V1, "r2plus1d_18", "kinetics400",
                      _K400),
        video_weights(tv_video.S3D_Weights.KINETICS400_V1, "s3d", "kinetics400", _K400),
        video_weights(tv_video.MViT_V2_S_Weights.KINETICS400_V1, "mvit_v2_s", "kinetics400",
                      _K400),
        video_weights(tv_video.Swin3D_T_Weights.KINETICS400_V1, "swin3d_t", "kinetics400",
                      _K400),
    )
}


def replace_first_conv3d(model: nn.Module, in_channels: int) -> None:
    """Swap the model's first ``Conv3d`` for one taking ``in_channels`` (random weights)."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv3d))
    if conv.in_channels == in_channels:
        return
    parent_name, _, attr = name.rpartition(".")
    new = nn.Conv3d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, bias=conv.bias is not None)
    setattr(model.get_submodule(parent_name), attr, new)


def _build(builder: Callable[..., nn.Module], num_classes: int, in_channels: int,
           **kwargs: Any) -> nn.Module:
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, not {num_classes}, "
                         f"{in_channels}")
    model = builder(weights=None, progress=False, num_classes=num_classes, **kwargs)
    replace_first_conv3d(model, in_channels)
    return model


def r3d_18(num_classes: int = KINETICS400_CLASSES, in_channels: int = 3,
           **kwargs: Any) -> nn.Module:
    """R3D-18 (torchvision ``r3d_18``), random weights: (B, C, T, 112, 112) -> (B, K)."""
    return _build(tv_video.r3d_18, num_classes, in_channels, **kwargs)


def mc3_18(num_classes: int = KINETICS400_CLASSES, in_channels: int = 3,
           **kwargs: Any) -> nn.Module:
    """MC3-18 (torchvision ``mc3_18``), random weights: (B, C, T, 112, 112) -> (B, K)."""
    return _build(tv_video.mc3_18, num_classes, in_channels, **kwargs)


def r2plus1d_18(num_classes: int = KINETICS400_CLASSES, in_channels: int = 3,
                **kwargs: Any) -> nn.Module:
    """R(2+1)D-18 (torchvision ``r2plus1d_18``), random weights: (B, C, T, 112, 112) -> (B, K)."""
    return _build(tv_video.r2plus1d_18, num_classes, in_channels, **kwargs)


def s3d(num_classes: int = KINETICS400_CLASSES, in_channels: int = 3,
        **kwargs: Any) -> nn.Module:
    """S3D (torchvision ``s3d``), random weights: (B, C, T >= 14, 224, 224) -> (B, K)."""
    return _build(tv_video.s3d, num_classes, in_channels, **kwargs)


def mvit_v2_s(num_classes: int = KINETICS400_CLASSES, in_channels: int = 3,
              **kwargs: Any) -> nn.Module:
    """MViT v2-S (torchvision ``mvit_v2_s``), random weights: (B, C, 16, 224, 224) -> (B, K)."""
    return _build(tv_video.mvit_v2_s, num_classes, in_channels, **kwargs)


def swin3d_t(num_classes: int = KINETICS400_CLASSES, in_channels: int = 3,
             **kwargs: Any) -> nn.Module:
    """Video Swin-T (torchvision ``swin3d_t``), random weights: (B, C, T, 224, 224) -> (B, K)."""
    return _build(tv_video.swin3d_t, num_classes, in_channels, **kwargs)
