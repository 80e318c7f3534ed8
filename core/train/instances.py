"""Fine-tuning instance segmentation models (Mask R-CNN) on a project's instance maps or a COCO
dataset (imports torch; load it lazily).

Data: :func:`instance_dataset_from_project` (each image item with an instance map: the uint32
map of ``Project.load_mask(item, layer="instances")`` and the class of each instance from
``Project.instances``) or :func:`instance_dataset_from_coco` (an exported COCO folder or
annotation file). The model's labels are the project's class indices (index 0 the background;
a class index with no class, a gap left by a deleted class, is a placeholder name), so its
predictions compare directly with the ground truth in ``core.metrics.evaluate_instances``.

Targets are what torchvision's detection models take in train mode: ``boxes`` (N, 4) float
x0, y0, x1, y1 (pixel edges: a one-pixel instance at column x spans x..x + 1), ``labels`` (N,)
int64, ``masks`` (N, H, W) uint8. The model returns the multi-task loss dict in train mode
(``loss_classifier``, ``loss_box_reg``, ``loss_mask``, ``loss_objectness``, ``loss_rpn_box_reg``:
L = L_cls + L_box + L_mask plus the RPN's two terms); their sum is minimised with SGD or AdamW.

The epochs are :func:`core.train.runner.run_epochs`'s (schedule, mixed precision on CUDA,
gradient accumulation, early stopping, resume, the metrics CSV of :data:`LOG_COLUMNS`): every
epoch writes the "last" checkpoint and, when the validation mask AP (or, without a validation
split, the training loss) improved, the "best" one, in SegStudio's checkpoint format (atomic,
read by ``load_model``) with the training state that ``resume`` continues from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.errors import SegStudioError
from core.models.registry import model_info
from core.project.items import Instance
from core.train.common import (
    BaseTrainConfig,
    BaseTrainResult,
    ReportFn,
    TrainError,
    read_resume,
    split_items,
)

LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness",
             "loss_rpn_box_reg")
LOG_COLUMNS = ("epoch", "loss", *LOSS_KEYS, "mask_ap", "box_ap", "lr", "seconds")


# -- data ------------------------------------------------------------------------------------------
@dataclass
class InstanceSample:
    """One image with its instances.

    Attributes:
        name: Item or file name.
        image: (H, W) or (H, W, C) pixels as loaded.
        instance_map: (H, W) uint32 instance ids (0: none).
        table: Instance rows by id (their ``class_index`` is the label).
    """

    name: str
    image: np.ndarray
    instance_map: np.ndarray
    table: dict[int, Instance]


@dataclass
class InstanceDataset:
    """Samples and class names (index = label; 0 is the background)."""

    class_names: list[str]
    samples: list[InstanceSample]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.samples)


def _class_names(indexed: Mapping[int, str]) -> list[str]:
    top = max([0, *indexed])
    return [indexed.get(i, "background" if i == 0 else f"class {i}") for i in range(top + 1)]


def _resized(sample: InstanceSample, max_side: int | None) -> InstanceSample:
    """The sample scaled down so that its longer side is at most ``max_side`` (nearest
    neighbour for the instance map)."""
    height, width = sample.instance_map.shape
    if not max_side or max(height, width) <= max_side:
        return sample
    import cv2

    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = cv2.resize(np.ascontiguousarray(sample.image), size, interpolation=cv2.INTER_AREA)
    labels = cv2.resize(sample.instance_map.astype(np.float32), size,
                        interpolation=cv2.INTER_NEAREST).astype(np.uint32)
    return InstanceSample(sample.name, image, labels, sample.table)


def instance_dataset_from_project(project: Any, items: str = "all",
                                  max_side: int | None = None) -> InstanceDataset:
    """The image items of ``project`` (an open Project or its folder) with an instance map.

    Args:
        items: ``"all"`` (every item with an instance map) or ``"done"`` (those marked done).
        max_side: Scale images down to this longer side (None: as they are).
    """
    from core.io import load_image
    from core.project.store import Project

    if not isinstance(project, Project):
        with Project.open(project, read_only=True) as opened:
            return instance_dataset_from_project(opened, items, max_side)
    names = {c.index: c.name for c in project.classes()}
    names.setdefault(0, "background")
    samples, skipped = [], []
    for item in project.items():
        if item.kind != "image" or not project.has_instances(item.id):
            continue
        if items == "done" and item.state != "done":
            continue
        if item.source is None:
            skipped.append((item.name, "its image is missing"))
            continue
        try:
            data = load_image(item.source)
        except SegStudioError as err:
            skipped.append((item.name, str(err)))
            continue
        if data.is_stack:
            skipped.append((item.name, "a stack (2-D images only)"))
            continue
        instance_map = np.asarray(project.load_mask(item, layer="instances"), np.uint32)
        sample = InstanceSample(item.name, data.array, instance_map, project.instances(item.id))
        samples.append(_resized(sample, max_side))
    return InstanceDataset(_class_names(names), samples, skipped, str(project.folder))


def instance_dataset_from_coco(path: str | Path, max_side: int | None = None) -> InstanceDataset:
    """A COCO dataset (a folder as ``segstudio-cli export --format coco`` writes it, or the
    annotation file): category ids are the labels; crowd annotations are left out."""
    from core.export.coco import (
        IMAGE_DIR,
        coco_categories,
        decode_segmentation,
        find_coco_json,
        read_coco_json,
    )
    from core.io import load_image

    source = find_coco_json(Path(path).expanduser())
    data = read_coco_json(source)
    root = source.parent.parent if source.parent.name == "annotations" else source.parent
    names = {c.index: c.name for c in coco_categories(data["categories"], source)}
    by_image: dict[Any, list[dict]] = {}
    for entry in data["annotations"]:
        if isinstance(entry, dict) and not entry.get("iscrowd"):
            by_image.setdefault(entry.get("image_id"), []).append(entry)
    samples, skipped = [], []
    for image in data["images"]:
        file_name = str(image.get("file_name", ""))
        candidates = [root / file_name, root / IMAGE_DIR / Path(file_name).name,
                      source.parent / Path(file_name).name]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            skipped.append((file_name, "image file not found"))
            continue
        try:
            pixels = load_image(found).array
            height, width = pixels.shape[:2]
            instance_map = np.zeros((height, width), np.uint32)
            table: dict[int, Instance] = {}
            for number, entry in enumerate(by_image.get(image.get("id"), []), 1):
                mask = decode_segmentation(entry["segmentation"], height, width)
                instance_map[mask & (instance_map == 0)] = number
                table[number] = Instance(number, int(entry["category_id"]))
        except (SegStudioError, ValueError, KeyError, TypeError) as err:
            skipped.append((file_name, str(err)))
            continue
        sample = InstanceSample(Path(file_name).stem, pixels, instance_map, table)
        samples.append(_resized(sample, max_side))
    return InstanceDataset(_class_names(names), samples, skipped, str(source))


def instance_targets(instance_map: np.ndarray, table: Mapping[int, Instance],
                     num_classes: int) -> dict[str, torch.Tensor]:
    """torchvision's detection target of one image: the instances with pixels, a row and a
    class in 1..num_classes - 1."""
    from core.export.coco import iter_instance_masks

    boxes, labels, masks = [], [], []
    for entry in iter_instance_masks(instance_map, table, set(range(1, num_classes))):
        x, y, w, h = entry.bbox
        boxes.append([x, y, x + w, y + h])
        labels.append(entry.instance.class_index)
        masks.append(entry.mask)
    height, width = instance_map.shape
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": (torch.from_numpy(np.stack(masks)).to(torch.uint8) if masks
                  else torch.zeros((0, height, width), dtype=torch.uint8)),
    }


def hflip(image: torch.Tensor, target: dict[str, torch.Tensor]
          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """An image (C, H, W) and its detection target mirrored left-right together (box edges:
    x0, x1 -> W - x1, W - x0)."""
    width = image.shape[-1]
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    return image.flip(-1), {**target, "boxes": boxes, "masks": target["masks"].flip(-1)}


def image_tensor(image: np.ndarray, in_channels: int = 3) -> torch.Tensor:
    """(C, H, W) float in [0, 1], as the detection models take it (they normalise inside)."""
    from core.inference.preprocess import prepare_input

    return prepare_input(image, in_channels, None, None)[0]


# -- configuration and result ---------------------------------------------------------------------
@dataclass
class InstanceTrainConfig(BaseTrainConfig):
    """How to fine-tune an instance model (the fields of
    :class:`core.train.common.BaseTrainConfig`, with these defaults, and its own).

    Attributes:
        model: A registered model of task ``"instance"``.
        weights: None (random weights, no download), a checkpoint or a published weights name
            (its head is kept when its classes are the data's; else the data's class count
            needs a new head: start from random weights then).
        model_kwargs: Builder options (``min_size``, ``max_size``, ``trainable_backbone_layers``).
        val_fraction, seed: Split by image (a seeded shuffle).
        patience: Epochs without a better validation mask AP before stopping (0: never).
        steps_per_epoch: Batches per epoch (None: one pass over the training split).
        evaluate: Score the validation split with COCO mask AP every epoch.
        score_threshold: Detections kept for the AP.
        augment: Flip each training image left-right at random, its masks and boxes with it
            (torchvision's detection recipe; no vertical flip: most scenes have an up).
    """

    epochs: int = 10
    batch_size: int = 2
    lr: float = 0.005
    optimizer: str = "sgd"
    warmup: int = 100  # as torchvision's detection recipes; from random weights it must
    clip_grad: float | None = 10.0  # rise slowly and stay bounded, or the losses diverge
    evaluate: bool = True
    score_threshold: float = 0.05
    augment: bool = True

    def task_checks(self) -> tuple[tuple[bool, str], ...]:
        return ((0 <= self.score_threshold <= 1, "the score threshold must be in [0, 1]"),)


@dataclass
class InstanceTrainResult(BaseTrainResult):
    """What a run did (``history``: one row per epoch with the mean of each loss term, the
    validation mask and box AP, the lr and the time: :data:`LOG_COLUMNS`)."""

    train_items: list[str]
    val_items: list[str]

    def to_json(self) -> dict[str, Any]:
        return {**self.common_json(), "train_items": len(self.train_items),
                "val_items": len(self.val_items), "history": self.history,
                "warnings": self.warnings}


# -- training --------------------------------------------------------------------------------------
def _build(config: InstanceTrainConfig, dataset: InstanceDataset
           ) -> tuple[Any, list[str], dict[str, Any] | None]:
    """The loaded model (new, fine-tuned or resumed), its classes and the training state to
    resume (None: a new run)."""
    from core.models.loading import load_model

    info = model_info(config.model)
    if info.task != "instance":
        raise TrainError(f"{config.model} is a {info.task} model, not an instance model.")
    training = None
    if config.resume is not None:
        training = read_resume(config.resume, config.model)
    source = config.resume if config.resume is not None else config.weights
    if source is None:
        return load_model(config.model, num_classes=len(dataset.class_names),
                          **config.model_kwargs), list(dataset.class_names), training
    loaded = load_model(config.model, weights=source, **config.model_kwargs)
    if len(loaded.classes) != len(dataset.class_names):
        raise TrainError(f"The weights have {len(loaded.classes)} classes (background included) "
                         f"but the data {len(dataset.class_names)}; train from random weights "
                         f"or from a checkpoint with the data's classes.")
    return loaded, list(dataset.class_names), training


def instance_loss(module: nn.Module, images: list[torch.Tensor],
                  targets: list[dict[str, torch.Tensor]]) -> tuple[torch.Tensor, dict[str, float]]:
    """The summed multi-task loss of a batch (train mode) and each term's value."""
    losses = module(images, targets)
    total = sum(losses.values())
    return total, {k: float(v.detach()) for k, v in losses.items()}


def evaluate_instance_model(loaded: Any, samples: list[InstanceSample],
                            score_threshold: float = 0.05, device: str = "auto",
                            report: ReportFn | None = None) -> Any:
    """COCO mask and box AP (``core.metrics.EvalResult``) of a loaded model on ``samples``;
    ``report(done, total)`` after each image."""
    from core.inference.instances import InstanceSettings, predict_instances, to_coco_results
    from core.metrics import evaluate_instances

    settings = InstanceSettings(score_threshold=score_threshold, device=device)
    gt, predictions = {}, {}
    for number, sample in enumerate(samples, 1):
        prediction = predict_instances(loaded, sample.image, settings)
        gt[sample.name] = (sample.instance_map, sample.table)
        predictions[sample.name] = to_coco_results(prediction, number)
        if report is not None:
            report(number, len(samples))
    return evaluate_instances(gt, predictions, per_image=False)


def train_instances(config: InstanceTrainConfig, dataset: InstanceDataset,
                    report: ReportFn | None = None, cancel: Any = None,
                    on_epoch: Callable[[dict[str, Any]], None] | None = None,
                    ) -> InstanceTrainResult:
    """Fine-tune ``config.model`` on ``dataset`` (or continue the run of ``config.resume``);
    see the module docstring. ``report(done, total)`` counts batches; ``cancel`` (``is_set()``
    or a callable) is checked between them; ``on_epoch(row)`` follows each epoch's files."""
    from core.train.runner import Task, run_epochs

    if not dataset.samples:
        raise TrainError("No image with instances to train on.")
    loaded, classes, training = _build(config, dataset)
    num_classes = len(classes)
    warnings: list[str] = []
    inputs = [image_tensor(s.image, loaded.in_channels) for s in dataset.samples]
    targets = [instance_targets(s.instance_map, s.table, num_classes) for s in dataset.samples]
    if not any(len(t["labels"]) for t in targets):
        raise TrainError("No instance of a known class in the data.")
    train_idx, val_idx = split_items(len(dataset.samples), config.val_fraction, config.seed)
    if not val_idx:
        warnings.append("no validation split (too few images); the best checkpoint is the one "
                        "with the lowest training loss")

    def loss(module: nn.Module, batch: list[int], rng: np.random.Generator,
             device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        pairs = [(inputs[i], targets[i]) for i in batch]
        if config.augment:
            pairs = [hflip(*pair) if rng.random() < 0.5 else pair for pair in pairs]
        images = [image.to(device) for image, _ in pairs]
        batch_targets = [{k: v.to(device) for k, v in target.items()} for _, target in pairs]
        return instance_loss(module, images, batch_targets)

    def validate(module: nn.Module, device: torch.device,
                 batch_size: int) -> tuple[dict[str, Any], float | None]:
        if not (val_idx and config.evaluate):
            return {"mask_ap": None, "box_ap": None}, None
        module.eval()
        result = evaluate_instance_model(loaded, [dataset.samples[i] for i in val_idx],
                                         config.score_threshold, config.device)
        mask_ap, box_ap = result.mask.ap, result.box.ap
        return {"mask_ap": mask_ap, "box_ap": box_ap}, -1.0 if mask_ap is None else mask_ap

    task = Task(loaded.module, classes, loaded.in_channels, list(loaded.mean), list(loaded.std),
                dict(loaded.model_kwargs), {"data": dataset.source, "task": "instance"},
                train_idx, loss, validate, LOG_COLUMNS, loss_key="loss", warnings=warnings,
                training=training)
    fields = run_epochs(config, task, report, cancel, on_epoch)
    return InstanceTrainResult(
        **fields, train_items=[dataset.samples[i].name for i in train_idx],
        val_items=[dataset.samples[i].name for i in val_idx])
