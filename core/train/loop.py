"""The training loop of semantic models (imports torch; load it lazily).

:func:`train` builds a registered semantic model (random weights for the dataset's classes, or
fine-tuned from a checkpoint / published weights), trains it on random patches of the training
split and scores the validation split (whole images) every epoch. Each epoch writes the "last"
checkpoint and, when the validation mean Dice improved, the "best" one, both in SegStudio's
checkpoint format (:mod:`core.models.checkpoint`) so ``load_model`` / ``predict`` read them.
The files are written atomically: a cancelled or killed run leaves the previous ones valid.

Training state (epoch, optimiser, schedule, scaler, history) is kept in the extra key
``"training"`` of the checkpoint dict (plain data and tensors: still ``weights_only``), which
:func:`train` reads back to resume.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from core.models.registry import model_info
from core.train.common import (
    LOSSES,
    BaseTrainConfig,
    BaseTrainResult,
    MicroBatches,
    ReportFn,
    TrainError,
    as_logits,
    checkpoint_payload,
    epoch_order,
    epochs_since_best,
    is_cancelled,
    make_loss,
    make_optimizer,
    make_scheduler,
    read_resume,
    restore_training,
    round6,
    step_schedule,
    training_state,
    validate,
    write_log,
    write_payload,
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
    module: nn.Module
    classes: list[str]
    in_channels: int
    mean: list[float]
    std: list[float]
    model_kwargs: dict[str, Any]
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
    return _Model(loaded.module, classes, loaded.in_channels, list(loaded.mean),
                  list(loaded.std), dict(loaded.model_kwargs), by_index, training)


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
        tensor = prepare_input(sample.image, model.in_channels, model.mean, model.std)
        images.append(tensor[0].numpy())
        labels.append(remap_labels(sample.labels, mapping))
    return images, labels, warnings


def _batch(images: list[np.ndarray], labels: list[np.ndarray], indices: list[int],
           augment: Augmentation, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [augment(images[i], labels[i], rng) for i in indices]
    x = torch.from_numpy(np.stack([p[0] for p in pairs]))
    y = torch.from_numpy(np.stack([p[1] for p in pairs]).astype(np.int64))
    return x, y


# -- the loop ------------------------------------------------------------------------------------
def train(config: TrainConfig, dataset: TrainDataset, report: ReportFn | None = None,
          cancel: Any = None, on_epoch: Callable[[dict[str, Any]], None] | None = None,
          ) -> TrainResult:
    """Train ``config.model`` on ``dataset``.

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
    from core.train import distributed

    return distributed.run(config.device, lambda device, ctx: _train(
        config, dataset, report, cancel, on_epoch, device, ctx))


def _train(config: TrainConfig, dataset: TrainDataset, report: ReportFn | None, cancel: Any,
           on_epoch: Callable[[dict[str, Any]], None] | None, device: torch.device,
           ctx: Any) -> TrainResult:
    """:func:`train` in this process; ``ctx``: a :class:`core.train.distributed.Context` under
    torchrun (None: a single process)."""
    from core.train import distributed

    main = ctx is None or ctx.main
    if ctx is not None:
        device = ctx.device
    model = build_model(config, dataset)
    images, labels, warnings = _prepare(dataset, model)
    train_idx, val_idx = split_dataset(dataset, config.val_fraction, config.seed)
    if not val_idx:
        warnings.append("no validation split (too few items); the best checkpoint is the one "
                        "with the lowest training loss")
    module = model.module.to(device)
    net = module if ctx is None else ctx.wrap(module)
    world = 1 if ctx is None else ctx.world
    use_amp = config.amp and device.type == "cuda"
    num_classes = len(model.classes)
    weights = None
    if config.weighted:
        weights = torch.from_numpy(class_weights([labels[i] for i in train_idx],
                                                 num_classes)).to(device)
    loss_fn = make_loss(config.loss, weights)
    optimizer = make_optimizer(config.optimizer, module, config.lr, config.weight_decay,
                               config.momentum)
    scheduler = make_scheduler(config.schedule, optimizer, config.epochs, config.step_size,
                               config.gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    augment = Augmentation(config.patch) if config.augment else Augmentation(
        config.patch, flips=False, rotate90=False, scale=(1.0, 1.0), brightness=0.0,
        contrast=0.0)
    steps = config.steps_per_epoch or max(1, math.ceil(len(train_idx)
                                                      / (config.batch_size * world)))
    steps *= config.accumulate if config.steps_per_epoch is None else 1

    start, history, best = 0, [], (-math.inf, 0, None)
    if model.training is not None:
        start, history, best = restore_training(model.training, optimizer, scheduler, scaler)
    result_paths = {"best": config.out if best[1] and config.out.is_file() else None,
                    "last": None}
    stopped, since_best = "completed", epochs_since_best(history, best[1])
    batch_size, accumulate = config.batch_size, config.accumulate  # halved on out of memory
    done = 0
    for epoch in range(start, config.epochs):
        began = time.perf_counter()
        module.train()
        optimizer.zero_grad(set_to_none=True)
        if ctx is None:
            rng = np.random.default_rng([config.seed, epoch])
            order = epoch_order(train_idx, steps * config.batch_size, rng)
        else:  # this rank's shard; its own augmentations
            rng = np.random.default_rng([config.seed, epoch, ctx.rank])
            order = distributed.shard_order(train_idx, steps * config.batch_size, epoch,
                                            config.seed, ctx)
        batches = MicroBatches(len(order), batch_size, accumulate)
        running, count = 0.0, 0
        kept = (running, count)  # at the last optimiser step
        while batches.more():
            flag = is_cancelled(cancel)
            if flag if ctx is None else ctx.any(flag):
                stopped = "cancelled"
                break
            x, y = _batch(images, labels, order[batches.take()], augment, rng)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            stepping = batches.stepping()
            out_of_memory = False
            try:
                with distributed.no_sync(net, not stepping):
                    with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                        loss = loss_fn(as_logits(net(x)), y)
                    scaler.scale(loss / batches.accumulate).backward()
                if stepping:
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
            except torch.OutOfMemoryError:
                if ctx is not None:  # the ranks would part ways
                    raise
                out_of_memory = True
            if out_of_memory:  # outside the except block: its frames (and tensors) are freed
                x = y = loss = None
                optimizer.zero_grad(set_to_none=True)
                batches.shrink(device, warnings)
                batch_size, accumulate = batches.batch_size, batches.accumulate
                running, count = kept
                continue
            running += float(loss.detach())
            count += 1
            if stepping:
                batches.stepped()
                kept = (running, count)
            done += 1
            if report is not None:
                per_epoch = math.ceil(len(order) / batch_size)
                report(done, done + batches.left() + per_epoch * (config.epochs - epoch - 1))
        if stopped == "cancelled":
            break
        lr = optimizer.param_groups[0]["lr"]
        step_schedule(scheduler)
        if ctx is not None:  # the mean over the ranks; the same buffers on every rank
            running, count = (float(v) for v in ctx.sum([running, count]))
            ctx.sync_buffers(module)
        train_loss = running / max(count, 1)
        val_loss, scores = validate(module, images, labels, val_idx, loss_fn, device, use_amp,
                                     model.classes, ctx)
        metric = scores.mean_dice if scores is not None else -train_loss
        metric = -math.inf if math.isnan(metric) else metric
        row = {"epoch": epoch + 1, "train_loss": round(train_loss, 6),
               "val_loss": None if val_loss is None else round(val_loss, 6),
               "mean_dice": round6(scores.mean_dice if scores else None),
               "mean_iou": round6(scores.mean_iou if scores else None),
               "lr": lr, "seconds": round(time.perf_counter() - began, 3)}
        history.append(row)
        improved = metric > best[0] or best[1] == 0
        if improved:
            best = (metric, epoch + 1, scores.to_json() if scores else None)
            since_best = 0
        else:
            since_best += 1
        state = payload = None
        if main:
            state = training_state(epoch + 1, optimizer, scheduler, scaler, history, best)
            payload = checkpoint_payload(config, model, module, state, row, dataset.source)
        if improved and main:
            write_payload(config.out, payload)
            result_paths["best"] = config.out
        if main:
            write_payload(config.last_path, payload)
            result_paths["last"] = config.last_path
        if config.log is not None and main:
            write_log(config.log, history)
        if on_epoch is not None and main:
            on_epoch(row)
        if config.patience and since_best >= config.patience:
            stopped = "early_stopping"
            break
    if ctx is not None:
        distributed.dump(ctx, module, {**result_paths, "log": config.log if main else None})
    module.to("cpu").eval()
    names = [s.name for s in dataset.samples]
    if not main:  # rank 0 reports the files
        result_paths = {"best": None, "last": None}
    return TrainResult(
        best_epoch=best[1], best_metric=None if best[1] == 0 else round6(best[0]),
        epochs_run=len(history), stopped=stopped, best_path=result_paths["best"],
        last_path=result_paths["last"] or (config.last_path if main
                                           and config.last_path.is_file() else None),
        log_path=config.log if config.log is not None and history and main else None,
        history=history, val_scores=best[2], classes=list(model.classes),
        train_items=[names[i] for i in train_idx], val_items=[names[i] for i in val_idx],
        warnings=warnings, skipped=list(dataset.skipped), module=module)


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
