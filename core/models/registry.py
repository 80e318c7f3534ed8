"""The model registry: every model SegStudio can build, by name, without importing torch.

Each entry points at a builder ``"module:function"`` in its family file (one file per family,
as torchvision does); the module is imported only when the model is built, so listing models
(menus, ``segstudio-cli models``) stays fast and torch-free.

Builders of semantic models take ``num_classes`` and ``in_channels`` (plus family options) and
return an ``nn.Module`` mapping a float tensor (N, in_channels, H, W) to logits
(N, num_classes, H, W) for any H, W. Instance models (task ``"instance"``) take the same two
arguments (``num_classes`` counts the background) and return torchvision's detection modules
(a list of images -> a list of dicts of boxes, labels, scores and masks); see
:mod:`core.inference.instances`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from core.errors import SegStudioError
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
        input_kind: ``"image"`` (N, C, H, W), ``"image-pair"`` or ``"clip"``.
        builder: ``"module:function"`` that builds the ``nn.Module``.
        paper: The paper it comes from (author, venue, year).
        description: One line for menus and ``segstudio-cli models``.
        defaults: Keyword arguments passed to the builder unless given.
        weights_attr: ``"module:NAME"`` of a dict ``{weights name: Weights}`` of the family, or
            None when no published weights exist (train it, or load a checkpoint).
        fully_convolutional: Output at any input size (tiling-safe); False for models that
            must see whole patches (the sliding-window classifier).
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
