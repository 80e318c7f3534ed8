"""What a set of model weights is: where the file comes from, how to check it, what it expects.

Plain data, no torch: the GUI lists weights without importing torch. Loading lives in
:mod:`core.models.loading`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlparse

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Weights:
    """One set of weights for one registered model.

    Attributes:
        name: Unique id, ``"<model>.<variant>"`` (e.g. ``"fcn_resnet50.coco_voc"``).
        model: Registered model name the weights fit.
        source: ``"torchvision"`` (an official torchvision file), ``"file"`` (a user's file)
            or ``"trained"`` (a SegStudio checkpoint trained in a project).
        file_name: Name of the file in the torch hub cache (``$TORCH_HOME/hub/checkpoints``).
        url: Where the file can be downloaded (only when the user allows the network).
        sha256: Expected digest: the full hex digest, or the hex prefix torchvision puts in its
            file names (``...-1167a1af.pth``); None when unknown.
        classes: Class names in output-channel order (index 0 first).
        in_channels: Channels the model expects.
        mean, std: Normalisation applied after scaling pixels to [0, 1].
        metrics: Published numbers (e.g. ``{"VOC mIoU": 63.7}``), for display only.
        description: One line for menus.
    """

    name: str
    model: str
    source: str
    file_name: str
    url: str | None = None
    sha256: str | None = None
    classes: tuple[str, ...] = ()
    in_channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    metrics: dict[str, float] = field(default_factory=dict)
    description: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def torchvision_weights(member: Any, name: str, model: str, *, description: str = "",
                        mean: tuple[float, ...] | None = None,
                        std: tuple[float, ...] | None = None,
                        classes: tuple[str, ...] | None = None) -> Weights:
    """Describe one torchvision weights enum member as :class:`Weights` (no download).

    The file name and its hash prefix come from the URL, the metrics from ``meta["_metrics"]``,
    the classes from ``meta["categories"]`` and mean / std from the member's preprocessing
    preset (``member.transforms()``: an object, no file, no network), unless given.

    Args:
        member: e.g. ``FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1``.
        name: The weights name (``"<model>.<variant>"``).
        model: Registered model name.
    """
    file_name = PurePosixPath(urlparse(member.url).path).name
    stem = file_name.rsplit(".", 1)[0]
    digest = stem.rsplit("-", 1)[1] if "-" in stem else None
    metrics = {f"{dataset} {metric}": float(value)
               for dataset, values in member.meta.get("_metrics", {}).items()
               for metric, value in values.items()}
    if mean is None or std is None:
        preset = member.transforms()
        mean = tuple(float(v) for v in preset.mean) if mean is None else mean
        std = tuple(float(v) for v in preset.std) if std is None else std
    return Weights(
        name=name, model=model, source="torchvision", file_name=file_name, url=member.url,
        sha256=digest, in_channels=3, mean=mean, std=std, metrics=metrics,
        classes=tuple(member.meta["categories"]) if classes is None else classes,
        description=description)
