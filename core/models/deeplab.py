"""DeepLabV3 (torchvision), returning plain logits.

Paper: L.-C. Chen, G. Papandreou, F. Schroff, H. Adam, "Rethinking Atrous Convolution for
Semantic Image Segmentation", arXiv 1706.05587, 2017: atrous spatial pyramid pooling (ASPP) on a
dilated backbone. Backbones: ResNet-50 (He et al., CVPR 2016; output stride 8) and
MobileNetV3-Large (Howard et al., ICCV 2019; output stride 16). The wrapper and the weight
descriptions are shared with :mod:`core.models.fcn`.
"""

from __future__ import annotations

from torchvision.models import segmentation as tv_segmentation

from core.models.fcn import TorchvisionSegmentation, weights_from_enum, wrap_torchvision
from core.models.weights import Weights

_COCO_VOC = "COCO train2017, the 20 Pascal VOC categories + background"

WEIGHTS: dict[str, Weights] = {
    w.name: w for w in (
        weights_from_enum(tv_segmentation.DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1,
                          "deeplabv3_resnet50", "coco_voc", _COCO_VOC),
        weights_from_enum(
            tv_segmentation.DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1,
            "deeplabv3_mobilenet_v3_large", "coco_voc", _COCO_VOC),
    )
}


def deeplabv3_resnet50(num_classes: int = 21, in_channels: int = 3,
                       aux_loss: bool = True) -> TorchvisionSegmentation:
    """DeepLabV3 with a dilated ResNet-50 backbone (torchvision), random weights.

    Args:
        num_classes: Output classes K (21 = the official COCO/VOC weights).
        in_channels: Input channels C.
        aux_loss: Keep the auxiliary FCN head on layer3 (in the official files).

    Returns:
        A module mapping (N, C, H, W) to logits (N, K, H, W).
    """
    return wrap_torchvision(tv_segmentation.deeplabv3_resnet50, num_classes, in_channels,
                            aux_loss)


def deeplabv3_mobilenet_v3_large(num_classes: int = 21, in_channels: int = 3,
                                 aux_loss: bool = True) -> TorchvisionSegmentation:
    """DeepLabV3 with a dilated MobileNetV3-Large backbone (torchvision), random weights.

    Args:
        num_classes: Output classes K (21 = the official COCO/VOC weights).
        in_channels: Input channels C.
        aux_loss: Keep the auxiliary FCN head (in the official files).

    Returns:
        A module mapping (N, C, H, W) to logits (N, K, H, W).
    """
    return wrap_torchvision(tv_segmentation.deeplabv3_mobilenet_v3_large, num_classes,
                            in_channels, aux_loss)
