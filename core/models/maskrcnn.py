"""Mask R-CNN (torchvision): instance segmentation, one mask per detected object.

Paper: K. He, G. Gkioxari, P. Dollár, R. Girshick, "Mask R-CNN", ICCV 2017. A Faster R-CNN
(Ren et al., NeurIPS 2015) on a ResNet-50 + FPN backbone (Lin et al., CVPR 2017) with a third
head that predicts a 28 x 28 mask per region of interest and class. ``maskrcnn_resnet50_fpn_v2``
is the improved recipe of Y. Li, S. Xie, X. Chen, P. Dollár, K. He, R. Girshick, "Benchmarking
Detection Transfer Learning with Vision Transformers", arXiv 2111.11429, 2021 (batch-normalised
convolutional box and mask heads, a deeper RPN head, longer training).

RoIAlign -- what makes the masks line up with the objects
----------------------------------------------------------
Both region heads read their input through ``torchvision.ops.MultiScaleRoIAlign`` (built by
torchvision's ``MaskRCNN``: ``roi_heads.box_roi_pool``, 7 x 7 bins, and
``roi_heads.mask_roi_pool``, 14 x 14 bins, ``sampling_ratio=2``), which picks the FPN level of
each box (stride 4, 8, 16 or 32 image pixels) and calls ``torchvision.ops.roi_align`` on it.
RoIAlign keeps the box in exact fractional feature-map coordinates: each bin is sampled by
bilinear interpolation at regularly spaced points (2 x 2 per bin here) and averaged, so nothing
is rounded. RoIPool (Fast R-CNN) rounds twice -- the box to the feature-map grid, then each bin's
edges -- and the features it pools are misaligned with the box by up to one feature-map pixel,
i.e. 4 to 32 image pixels on the FPN levels: harmless for a class score, visible in a mask that
is pasted back at the box's exact place. (``aligned=False`` is kept as in the original paper and
the official weights: torchvision's MultiScaleRoIAlign does not apply the half-pixel offset of
Detectron2's ``ROIAlignV2``.)

Input and output follow torchvision: the module takes a list of (C, H, W) float images in
[0, 1] (it normalises and resizes them itself, with ``module.transform``) and returns, in eval
mode, one dict per image: ``boxes`` (N, 4) x0, y0, x1, y1 in input pixels, ``labels`` (N,)
int64 (0 is the background, never returned), ``scores`` (N,), ``masks`` (N, 1, H, W) float mask
probabilities pasted at the input size. :mod:`core.inference.instances` runs it on images and
tiles.

Builders never touch the network (``weights=None, weights_backbone=None`` always). Official
weights are described by :data:`WEIGHTS` and loaded by :mod:`core.models.loading` (explicit
file, the torch hub cache, a download only when allowed, else a clear offline error), with the
91 COCO category names of the weights' meta (``"__background__"`` and the ``"N/A"`` gaps of the
original COCO ids included, so a label is its COCO category id). A project's own checkpoint can
have any class count (background included).
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models import detection as tv_detection
from torchvision.ops.misc import FrozenBatchNorm2d

from core.models.fcn import replace_first_conv
from core.models.weights import IMAGENET_MEAN, IMAGENET_STD, Weights, torchvision_weights

COCO_NUM_CLASSES = 91  # the official weights: background + 90 COCO ids (80 used, 10 "N/A")
_TRAINABLE_LAYERS = ("layer4", "layer3", "layer2", "layer1", "conv1")


def detection_weights(member: Any, model: str, variant: str, description: str = "") -> Weights:
    """Describe one torchvision detection weights enum member as :class:`Weights` (no download).

    Unlike the segmentation weights, a detection model normalises inside the module
    (``GeneralizedRCNNTransform``, ImageNet statistics), so the record's mean and std are
    those statistics rather than the enum's (absent) preprocessing values.

    Args:
        member: e.g. ``MaskRCNN_ResNet50_FPN_Weights.COCO_V1``.
        model: Registered model name.
        variant: Suffix of the weights name (``"<model>.<variant>"``).
        description: One line for menus.
    """
    return torchvision_weights(member, f"{model}.{variant}", model, description=description,
                               mean=IMAGENET_MEAN, std=IMAGENET_STD)


_COCO = "COCO train2017, 80 object categories (labels are COCO category ids)"

WEIGHTS: dict[str, Weights] = {
    w.name: w for w in (
        detection_weights(tv_detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1,
                          "maskrcnn_resnet50_fpn", "coco", _COCO),
        detection_weights(tv_detection.MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
                          "maskrcnn_resnet50_fpn_v2", "coco", _COCO),
    )
}


def _freeze_batch_norm(module: nn.Module) -> None:
    """Replace every ``BatchNorm2d`` under ``module`` by torchvision's ``FrozenBatchNorm2d``.

    torchvision builds the v1 backbone with frozen batch norm whenever it loads weights, and the
    official file was saved from that model (no ``num_batches_tracked`` entries), but with
    ``weights=None, weights_backbone=None`` it uses trainable ``BatchNorm2d``. The same
    structure as the file is rebuilt here offline. A fresh ``BatchNorm2d`` holds exactly a
    fresh ``FrozenBatchNorm2d``'s values (weight 1, bias 0, mean 0, var 1, eps 1e-5).
    """
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features, eps=child.eps))
        else:
            _freeze_batch_norm(child)


def _freeze_backbone_layers(model: nn.Module, trainable_layers: int) -> None:
    """Stop gradients in the backbone's first stages, as torchvision does with weights."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_backbone_layers must be in [0, 5], not {trainable_layers}")
    train = list(_TRAINABLE_LAYERS[:trainable_layers]) + (["bn1"] if trainable_layers == 5 else [])
    for name, parameter in model.backbone.body.named_parameters():
        if not any(name.startswith(layer) for layer in train):
            parameter.requires_grad_(False)


def _adapt_input(model: nn.Module, in_channels: int) -> None:
    """Take ``in_channels`` input channels: new first convolution and normalisation.

    The normalisation of the module's transform becomes the one SegStudio gives models of
    that many channels (ImageNet statistics for RGB, 0.5 / 0.5 otherwise).
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, not {in_channels}")
    if in_channels == 3:
        return
    replace_first_conv(model, in_channels)
    model.transform.image_mean = [0.5] * in_channels
    model.transform.image_std = [0.5] * in_channels


def _build(builder: Any, num_classes: int, in_channels: int, trainable_backbone_layers: int,
           frozen_batch_norm: bool, **kwargs: Any) -> nn.Module:
    if num_classes < 1:  # 1 (background only) is legal: core.models.loading probes with it
        raise ValueError(f"num_classes must be >= 1 (background included), not {num_classes}")
    # weights=None and weights_backbone=None: never a download (not even the ImageNet backbone).
    model = builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    if frozen_batch_norm:
        _freeze_batch_norm(model.backbone.body)
    _freeze_backbone_layers(model, trainable_backbone_layers)
    _adapt_input(model, in_channels)
    return model


def maskrcnn_resnet50_fpn(num_classes: int = COCO_NUM_CLASSES, in_channels: int = 3,
                          trainable_backbone_layers: int = 3, **kwargs: Any) -> nn.Module:
    """Mask R-CNN, ResNet-50 + FPN backbone (torchvision ``maskrcnn_resnet50_fpn``), random weights.

    The backbone uses frozen batch norm, as torchvision's model with weights does (the layout
    of the official file, which then loads with ``strict=True``).

    Args:
        num_classes: Classes including the background (91 = the official COCO weights).
        in_channels: Input channels (3; other counts get a new first convolution).
        trainable_backbone_layers: Backbone stages that learn when fine-tuning (0-5, counted
            from the last; torchvision's default with weights is 3).
        **kwargs: Options of torchvision's ``MaskRCNN`` (``min_size``, ``max_size``,
            ``box_score_thresh``, ``box_detections_per_img``, ``rpn_post_nms_top_n_test``...).

    Returns:
        torchvision's ``MaskRCNN`` module (list of (C, H, W) images -> list of dicts).
    """
    return _build(tv_detection.maskrcnn_resnet50_fpn, num_classes, in_channels,
                  trainable_backbone_layers, frozen_batch_norm=True, **kwargs)


def maskrcnn_resnet50_fpn_v2(num_classes: int = COCO_NUM_CLASSES, in_channels: int = 3,
                             trainable_backbone_layers: int = 3, **kwargs: Any) -> nn.Module:
    """Mask R-CNN v2 (torchvision ``maskrcnn_resnet50_fpn_v2``), random weights.

    Batch norm stays trainable everywhere, as in torchvision's model with weights (the
    official file holds the ``num_batches_tracked`` counters).

    Args:
        num_classes: Classes including the background (91 = the official COCO weights).
        in_channels: Input channels (3; other counts get a new first convolution).
        trainable_backbone_layers: Backbone stages that learn when fine-tuning (0-5).
        **kwargs: Options of torchvision's ``MaskRCNN``.

    Returns:
        torchvision's ``MaskRCNN`` module (list of (C, H, W) images -> list of dicts).
    """
    return _build(tv_detection.maskrcnn_resnet50_fpn_v2, num_classes, in_channels,
                  trainable_backbone_layers, frozen_batch_norm=False, **kwargs)
