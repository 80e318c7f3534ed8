"""The model registry: every model SegStudio can build, by name, without importing torch.

Each entry points at a builder ``"module:function"`` in its family file (one file per family,
as torchvision does); the module is imported only when the model is built, so listing models
(menus, ``segstudio-cli models``) stays fast and torch-free.

Builders of semantic models take ``num_classes`` and ``in_channels`` (plus family options) and
return an ``nn.Module`` mapping a float tensor (N, in_channels, H, W) to logits
(N, num_classes, H, W) for any H, W. Instance models (task ``"instance"``) take the same two
arguments (``num_classes`` counts the background) and return torchvision's detection modules
(a list of images -> a list of dicts of boxes, labels, scores and masks); see
:mod:`core.inference.instances`. Action models (task ``"action"``) take ``num_classes`` and
``in_channels`` (channels per frame) and map a clip to class scores (B, num_classes); each
carries a :class:`~core.models.action_specs.ClipSpec` (``ModelInfo.clip``: frames, size,
resize, normalisation and the call convention), read with
:func:`core.models.action_specs.clip_spec`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from core.errors import SegStudioError
from core.models.action_specs import SPECS as ACTION_SPECS
from core.models.action_specs import ClipSpec
from core.models.weights import Weights

TASKS = ("semantic", "instance", "flow", "action")


class UnknownModelError(SegStudioError):
    """No model of that name is registered."""


@dataclass(frozen=True)
class ModelInfo:
    """A registered model.

    Attributes:
        name: Registry name (``get_model(name)``).
        task: One of :data:`TASKS`.
        input_kind: ``"image"`` (N, C, H, W), ``"image-pair"`` or ``"clip"`` (a video clip:
            the tensor layout is ``clip.input``).
        builder: ``"module:function"`` that builds the ``nn.Module``.
        paper: The paper it comes from (author, venue, year).
        description: One line for menus and ``segstudio-cli models``.
        defaults: Keyword arguments passed to the builder unless given.
        weights_attr: ``"module:NAME"`` of a dict ``{weights name: Weights}`` of the family, or
            None when no published weights exist (train it, or load a checkpoint).
        fully_convolutional: Output at any input size (tiling-safe); False for models that
            must see whole patches (the sliding-window classifier).
        clip: How an action model's input is made (task ``"action"`` only).
    """

    name: str
    task: str
    input_kind: str
    builder: str
    paper: str
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    weights_attr: str | None = None
    fully_convolutional: bool = True
    clip: ClipSpec | None = None

    def build(self, **kwargs: Any):
        """Build the model (imports torch and the family module)."""
        module_name, function = self.builder.split(":")
        fn = getattr(importlib.import_module(module_name), function)
        return fn(**{**self.defaults, **kwargs})

    def weights(self) -> dict[str, Weights]:
        """Published weights of this model, by name (imports the family module)."""
        if self.weights_attr is None:
            return {}
        module_name, attr = self.weights_attr.split(":")
        table: dict[str, Weights] = getattr(importlib.import_module(module_name), attr)
        return {name: w for name, w in table.items() if w.model == self.name}


_MODELS: dict[str, ModelInfo] = {}


def register(info: ModelInfo) -> ModelInfo:
    if info.name in _MODELS:
        raise ValueError(f"model {info.name!r} registered twice")
    if info.task not in TASKS:
        raise ValueError(f"model {info.name!r}: unknown task {info.task!r}")
    if (info.task == "action") != (info.clip is not None):
        raise ValueError(f"model {info.name!r}: action models need a ClipSpec (clip=...), "
                         f"models of other tasks have none")
    _MODELS[info.name] = info
    return info


def list_models(task: str | None = None) -> list[str]:
    """Registered model names (of one task, if given), sorted."""
    return sorted(n for n, info in _MODELS.items() if task is None or info.task == task)


def model_info(name: str) -> ModelInfo:
    try:
        return _MODELS[name]
    except KeyError:
        known = ", ".join(list_models())
        raise UnknownModelError(f"Unknown model {name!r}; known models: {known}.") from None


def get_model(name: str, **kwargs: Any):
    """Build the model ``name`` with random weights (see core.models.loading for weights)."""
    return model_info(name).build(**kwargs)


_U = "core.models.unet"
_SEG = "Semantic segmentation"
for _info in (
    ModelInfo("patch_classifier", "semantic", "image", "core.models.patch_classifier:patch_classifier",
              "Farabet et al., TPAMI 2013; Pinheiro & Collobert, ICML 2014",
              "Sliding-window baseline: classifies the centre pixel of a patch around every pixel",
              fully_convolutional=False),
    ModelInfo("fcn_resnet50", "semantic", "image", "core.models.fcn:fcn_resnet50",
              "Long et al., CVPR 2015", "FCN with a ResNet-50 backbone (torchvision)",
              weights_attr="core.models.fcn:WEIGHTS"),
    ModelInfo("fcn_resnet101", "semantic", "image", "core.models.fcn:fcn_resnet101",
              "Long et al., CVPR 2015", "FCN with a ResNet-101 backbone (torchvision)",
              weights_attr="core.models.fcn:WEIGHTS"),
    ModelInfo("deeplabv3_resnet50", "semantic", "image", "core.models.deeplab:deeplabv3_resnet50",
              "Chen et al., arXiv 2017 (DeepLabV3)", "DeepLabV3, ResNet-50 backbone (torchvision)",
              weights_attr="core.models.deeplab:WEIGHTS"),
    ModelInfo("deeplabv3_mobilenet_v3_large", "semantic", "image",
              "core.models.deeplab:deeplabv3_mobilenet_v3_large",
              "Chen et al., arXiv 2017 (DeepLabV3); Howard et al., ICCV 2019 (MobileNetV3)",
              "DeepLabV3, MobileNetV3-Large backbone (torchvision)",
              weights_attr="core.models.deeplab:WEIGHTS"),
    ModelInfo("unet", "semantic", "image", f"{_U}:unet", "Ronneberger et al., MICCAI 2015",
              "U-Net; decoder upsampling: nearest, bilinear, transpose or maxunpool"),
    ModelInfo("attention_unet", "semantic", "image", "core.models.attention_unet:attention_unet",
              "Oktay et al., MIDL 2018", "U-Net with attention gates on the skip connections"),
    ModelInfo("resunet", "semantic", "image", "core.models.resunet:resunet",
              "Diakogiannis et al., ISPRS J. 2020 (ResUNet-a)",
              "U-Net of residual blocks with parallel atrous convolutions"),
    ModelInfo("transunet", "semantic", "image", "core.models.transunet:transunet",
              "Chen et al., arXiv 2021 (TransUNet)",
              "CNN stem + ViT encoder + U-Net decoder with skips"),
    ModelInfo("maskrcnn_resnet50_fpn", "instance", "image",
              "core.models.maskrcnn:maskrcnn_resnet50_fpn", "He et al., ICCV 2017 (Mask R-CNN)",
              "Mask R-CNN, ResNet-50 + FPN backbone, RoIAlign heads (torchvision)",
              weights_attr="core.models.maskrcnn:WEIGHTS"),
    ModelInfo("maskrcnn_resnet50_fpn_v2", "instance", "image",
              "core.models.maskrcnn:maskrcnn_resnet50_fpn_v2",
              "He et al., ICCV 2017 (Mask R-CNN); Li et al., arXiv 2021 (ViTDet benchmark recipe)",
              "Mask R-CNN v2: batch-normalised heads, improved training recipe (torchvision)",
              weights_attr="core.models.maskrcnn:WEIGHTS"),
):
    register(_info)


_V = "core.models.video_classification"
_TRAN18 = "Tran et al., CVPR 2018 (A Closer Look at Spatiotemporal Convolutions)"


def _action(name: str, builder: str, paper: str, description: str,
            weights_attr: str | None = None) -> ModelInfo:
    return ModelInfo(name, "action", "clip", builder, paper, description,
                     weights_attr=weights_attr, fully_convolutional=False,
                     clip=ACTION_SPECS[name])


for _info in (
    _action("c3d", "core.models.c3d:c3d", "Tran et al., ICCV 2015 (C3D)",
            "C3D: eight 3x3x3 convolutions on 16 x 112 x 112 clips, fc6/fc7 4096"),
    _action("r3d_18", f"{_V}:r3d_18", _TRAN18, "R3D-18: ResNet-18 of 3D convolutions (torchvision)",
            f"{_V}:WEIGHTS"),
    _action("mc3_18", f"{_V}:mc3_18", _TRAN18,
            "MC3-18: 3D convolutions early, 2D later (torchvision)", f"{_V}:WEIGHTS"),
    _action("r2plus1d_18", f"{_V}:r2plus1d_18", _TRAN18,
            "R(2+1)D-18: 3D convolutions factorised into 2D space + 1D time (torchvision)",
            f"{_V}:WEIGHTS"),
    _action("s3d", f"{_V}:s3d", "Xie et al., ECCV 2018 (S3D)",
            "S3D: separable 3D Inception network (torchvision)", f"{_V}:WEIGHTS"),
    _action("mvit_v2_s", f"{_V}:mvit_v2_s", "Li et al., CVPR 2022 (MViTv2)",
            "MViT v2-S: multiscale vision transformer for video (torchvision)", f"{_V}:WEIGHTS"),
    _action("swin3d_t", f"{_V}:swin3d_t", "Liu et al., CVPR 2022 (Video Swin Transformer)",
            "Video Swin-T: shifted 3D window attention (torchvision)", f"{_V}:WEIGHTS"),
    _action("late_fusion_resnet18", "core.models.frame_fusion:late_fusion_resnet18",
            "Karpathy et al., CVPR 2014", "Single-frame ResNet-18, scores averaged over frames"),
    _action("early_fusion_resnet18", "core.models.frame_fusion:early_fusion_resnet18",
            "Karpathy et al., CVPR 2014", "ResNet-18 on T frames stacked as channels"),
    _action("two_stream_resnet18", "core.models.two_stream:two_stream_resnet18",
            "Simonyan & Zisserman, NeurIPS 2014",
            "Two-stream: RGB frame + 2L stacked flow channels, class scores fused"),
    _action("lrcn_resnet18", "core.models.lrcn:lrcn_resnet18", "Donahue et al., CVPR 2015 (LRCN)",
            "LRCN: per-frame ResNet-18 features into an LSTM"),
    _action("timesformer", "core.models.timesformer:timesformer",
            "Bertasius et al., ICML 2021 (TimeSformer)",
            "TimeSformer, divided space-time attention (small: 8 x 112 x 112, depth 4, dim 192)"),
):
    register(_info)
