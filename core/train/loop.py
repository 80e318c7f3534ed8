"""Training semantic models (imports torch; load it lazily).

:func:`train` builds a registered semantic model (random weights for the dataset's classes, or
fine-tuned from a checkpoint / published weights) and runs the epochs of
:func:`core.train.runner.run_epochs` on its :func:`semantic_task`: random patches of the
training split, the cross-entropy / Dice loss, and every epoch the validation split's loss and
per-class Dice/IoU (whole images). Each epoch writes the "last" checkpoint and, when the
validation mean Dice improved, the "best" one, both in SegStudio's checkpoint format
(:mod:`core.models.checkpoint`) so ``load_model`` / ``predict`` read them. The files are
written atomically: a cancelled or killed run leaves the previous ones valid.

Training state (epoch, optimiser, schedule, scaler, history, the best epoch with its scores)
is kept in the extra key ``"training"`` of the checkpoint dict (plain data and tensors: still
``weights_only``), which :func:`train` reads back to resume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from core.models.registry import model_info
from core.train.common import (  # noqa: F401  (LOG_COLUMNS... dice_loss, write_log: re-exported)
    LOG_COLUMNS,
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    BaseTrainConfig,
    BaseTrainResult,
    ReportFn,
    TrainError,
    as_logits,
    dice_loss,
    make_loss,
    read_resume,
    round6,
    validate,
    write_log,
)
from core.train.data import (
    Augmentation,
    TrainDataset,
    check_dataset,
    class_weights,
    remap_labels,
    split_dataset,
)
from core.train.metrics import confusion_matrix, scores_from_confusion
from core.train.runner import Task, run_epochs


@dataclass
class TrainConfig(BaseTrainConfig):
    """How to train (the fields of :class:`core.train.common.BaseTrainConfig` and these).

    Attributes:
        model: Registered semantic model name.
        weights: None (random), a checkpoint / state-dict file or a published weights name to
            fine-tune from (the data's classes must be the model's).
        model_kwargs: Builder options (``base_channels``, ``depth``...).
        in_channels: Input channels of a new model; None: 3 if any image is RGB, else 1.
        loss: ``"ce"``, ``"dice"`` or ``"ce+dice"``.
        patience: Stop after this many epochs without a better validation Dice (0: never).
        patch: Side of the square training patches.
        augment: Flips, 90° rotations, rescale 0.75-1.25 and intensity jitter (else plain
            random crops).
        val_fraction, seed: The split (by item, stratified by dominant class).
        weighted: Cross-entropy weighted by inverse class frequency.
        steps_per_epoch: Optimiser steps per epoch x accumulate (None: one pass of the
            training split).
    """

    in_channels: int | None = None
    loss: str = "ce+dice"
    patch: int = 256
    augment: bool = True
    weighted: bool = False

    def task_checks(self) -> tuple[tuple[bool, str], ...]:
        return ((self.loss in LOSSES, f"loss must be one of {LOSSES}"),
                (self.patch >= 16, "the patch must be >= 16 pixels"))


@dataclass
class TrainResult(BaseTrainResult):
    """What a run did (the fields of :class:`core.train.common.BaseTrainResult` and these;
    ``best_metric``: the validation mean Dice, or minus the training loss without validation).

    Attributes:
        val_scores: Per-class Dice/IoU of the best epoch (JSON of SegmentationScores).
        train_items, val_items: Sample names of each split.
        skipped: Samples left out of the data, with the reason.
    """

    val_scores: dict[str, Any] | None
    train_items: list[str]
    val_items: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.common_json(),
                "train_items": len(self.train_items), "val_items": len(self.val_items),
                "validation": self.val_scores, "history": self.history,
                "warnings": self.warnings,
                "skipped": [{"name": n, "reason": r} for n, r in self.skipped]}


# -- the model -----------------------------------------------------------------------------------
@dataclass
class _Model:
    loaded: Any  # core.models.loading's LoadedModel: module, in_channels, mean, std...
    classes: list[str]
    by_index: bool  # a plain state dict: classes are matched by index, not name
    training: dict[str, Any] | None = None


def build_model(config: TrainConfig, dataset: TrainDataset) -> _Model:
    """The model to train: resumed, fine-tuned or new (random weights)."""
    from core.models.loading import load_model

    info = model_info(config.model)
    if info.task != "semantic" or not info.fully_convolutional:
        raise TrainError(f"{config.model} is a {info.task} model; training covers the fully "
                         f"convolutional semantic models only.")
    source = config.resume if config.resume is not None else config.weights
    training = None
    if config.resume is not None:
        training = read_resume(config.resume, config.model)
    if source is None:
        channels = config.in_channels or (
            3 if any(s.image.ndim == 3 and s.image.shape[2] >= 3 for s in dataset.samples)
            else 1)
        loaded = load_model(config.model, num_classes=dataset.num_classes,
                            in_channels=channels, **config.model_kwargs)
        classes = dataset.class_names
        by_index = False
    else:
        loaded = load_model(config.model, weights=source, **config.model_kwargs)
        classes = list(loaded.classes)
        by_index = loaded.weights_source == "state_dict"
    return _Model(loaded, list(classes), by_index, training)


# -- data to tensors -----------------------------------------------------------------------------
def _prepare(dataset: TrainDataset, model: _Model) -> tuple[list[np.ndarray], list[np.ndarray],
                                                            list[str]]:
    """Normalised (C, H, W) float32 images (as inference prepares them) and model-channel labels."""
    from core.inference.preprocess import prepare_input

    names = None if model.by_index else model.classes
    mapping, warnings = check_dataset(dataset, names)
    if model.by_index:
        too_big = [v for v in mapping if v >= len(model.classes)]
        present = set().union(*(np.unique(s.labels).tolist() for s in dataset.samples))
        if any(v in present for v in too_big):
            raise TrainError(f"The data has {dataset.num_classes} classes but the model "
                             f"{len(model.classes)} outputs.")
        mapping = {v: v for v in mapping if v < len(model.classes)}
    images, labels = [], []
    for sample in dataset.samples:
        tensor = prepare_input(sample.image, model.loaded.in_channels, model.loaded.mean,
                               model.loaded.std)
        images.append(tensor[0].numpy())
        labels.append(remap_labels(sample.labels, mapping))
    return images, labels, warnings


def _batch(images: list[np.ndarray], labels: list[np.ndarray], indices: list[int],
           augment: Augmentation, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [augment(images[i], labels[i], rng) for i in indices]
    x = torch.from_numpy(np.stack([p[0] for p in pairs]))
    y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
    return x, y


# -- the run -------------------------------------------------------------------------------------
def train(config: TrainConfig, dataset: TrainDataset, report: ReportFn | None = None,
          cancel: Any = None, on_epoch: Callable[[dict[str, Any]], None] | None = None,
          ) -> TrainResult:
    """Train ``config.model`` on ``dataset``: the epochs are
    :func:`core.train.runner.run_epochs`'s (under torchrun, one rank of DDP training).

    Args:
        config: The options.
        dataset: Samples and classes (:mod:`core.train.data`).
        report: ``report(done, total)`` in training steps over the whole run.
        cancel: An object with ``is_set()`` (or a callable) checked between steps; when set,
            the run stops and the checkpoints written so far stay as they are.
        on_epoch: Called with each epoch's row (the CSV columns) after its checkpoints.

    Returns:
        The :class:`TrainResult`.

    Raises:
        TrainDataError: empty data, classes the model lacks. TrainError: bad options or a
        resume file that does not fit. The errors of ``load_model`` for weights.
    """
    task, train_idx, val_idx = semantic_task(config, dataset)
    fields = run_epochs(config, task, report, cancel, on_epoch)
    names = [s.name for s in dataset.samples]
    return TrainResult(**fields, val_scores=task.best_details,
                       train_items=[names[i] for i in train_idx],
                       val_items=[names[i] for i in val_idx], skipped=list(dataset.skipped))


def semantic_task(config: TrainConfig, dataset: TrainDataset
                  ) -> tuple[Task, list[int], list[int]]:
    """The :class:`core.train.runner.Task` of ``config`` on ``dataset`` (model, normalised
    data, random patches, cross-entropy / Dice loss, validation on whole images scored by
    per-class Dice/IoU), with the (train, validation) indices of the split."""
    model = build_model(config, dataset)
    images, labels, warnings = _prepare(dataset, model)
    train_idx, val_idx = split_dataset(dataset, config.val_fraction, config.seed)
    if not val_idx:
        warnings.append("no validation split (too few items); the best checkpoint is the one "
                        "with the lowest training loss")
    augment = Augmentation(config.patch) if config.augment else Augmentation(
        config.patch, flips=False, rotate90=False, scale=(1.0, 1.0), brightness=0.0,
        contrast=0.0)
    weights = None
    if config.weighted:
        weights = torch.from_numpy(class_weights([labels[i] for i in train_idx],
                                                 len(model.classes)))
    losses: dict[torch.device, Callable] = {}  # the loss with its weights on each device

    def loss_on(device: torch.device) -> Callable:
        if device not in losses:
            losses[device] = make_loss(config.loss,
                                       None if weights is None else weights.to(device))
        return losses[device]

    def loss(module: nn.Module, indices: list[int], rng: np.random.Generator,
             device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = _batch(images, labels, indices, augment, rng)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return loss_on(device)(as_logits(module(x)), y), {}

    def scores(module: nn.Module, device: torch.device,
               batch_size: int) -> tuple[dict[str, Any], float | None, Any]:
        use_amp = config.amp and device.type == "cuda"
        val_loss, result = validate(module, images, labels, val_idx, loss_on(device), device,
                                    use_amp, model.classes)
        if result is None:
            return {"val_loss": None, "mean_dice": None, "mean_iou": None}, None, None
        return ({"val_loss": round(val_loss, 6), "mean_dice": round6(result.mean_dice),
                 "mean_iou": round6(result.mean_iou)}, result.mean_dice, result.to_json())

    loaded = model.loaded
    task = Task(loaded.module, model.classes, loaded.in_channels, list(loaded.mean),
                list(loaded.std), dict(loaded.model_kwargs),
                {"data": dataset.source, "loss": config.loss, "patch": config.patch},
                train_idx, loss, scores, LOG_COLUMNS, warnings=warnings,
                training=model.training, passes=config.accumulate)
    return task, train_idx, val_idx


# -- evaluation of a trained model -----------------------------------------------------------------
def evaluate_model(loaded: Any, dataset: TrainDataset, device: str = "auto",
                   report: ReportFn | None = None) -> Any:
    """Per-class Dice/IoU of a loaded model (``load_model``) on every sample of ``dataset``
    (whole images, as inference runs them). Returns SegmentationScores."""
    from core.inference.engine import InferenceEngine, InferenceSettings

    names = None if loaded.weights_source == "state_dict" else list(loaded.classes)
    mapping, _ = check_dataset(dataset, names)
    engine = InferenceEngine(InferenceSettings(device=device))
    classes = list(loaded.classes)
    matrix = np.zeros((len(classes), len(classes)), np.int64)
    for number, sample in enumerate(dataset.samples, 1):
        prediction = engine.predict(loaded, sample.image)
        truth = remap_labels(sample.labels, mapping)
        matrix += confusion_matrix(truth, prediction.labels, len(classes))
        if report is not None:
            report(number, len(dataset.samples))
    return scores_from_confusion(matrix, classes)
