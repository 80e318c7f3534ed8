"""Training action recognition models on a project's labelled video segments (imports torch;
load it lazily).

Data (:func:`action_dataset_from_project`): every video item's segments
(``Project.load_segments``); the target of a segment is the index of its label in
``Project.action_labels()``. Each segment is cut into clips as inference cuts videos
(:func:`core.inference.clips.clip_windows` over the segment's frames: ``T`` frames ``stride``
apart, windows side by side, the last one ending on the segment's last frame; a segment shorter
than a clip repeats its last frame). The stride defaults to the model's sampling rate
(``round(video fps / spec.fps)``), as in :func:`core.inference.clips.classify_video`.

Frames are decoded with :func:`core.io.video.open_video`, resized and centre-cropped with
:func:`core.inference.clips.preprocess_frame` (the model's :class:`ClipSpec`), scaled to [0, 1]
and normalised (the spec's statistics for random weights, the weights' own otherwise: the rule
of ``classify_video``), laid out as the spec's ``input`` says (``"clip"`` (B, 3, T, H, W),
``"frames"`` (B, T, 3, H, W); two-stream models are not trained here). Training clips are
flipped horizontally at random.

The loss is the cross-entropy; the validation split (whole segments, seeded) is scored with
top-1 / top-5 accuracy (:func:`topk_accuracy`). Every epoch writes the "last" checkpoint and,
when the validation top-1 (else the training loss) improved, the "best" one, in SegStudio's
checkpoint format so ``load_model`` and ``classify_video`` read them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from core.models.registry import model_info
from core.train.action_data import (  # noqa: F401  (re-exported)
    ActionDataset,
    ClipLoader,
    ClipSample,
    action_dataset_from_project,
    model_clip_spec,
)
from core.train.common import (
    EpochRecorder,
    ReportFn,
    TrainError,
    check_config,
    checkpoint_saver,
    is_cancelled,
    last_checkpoint_path,
    make_optimizer,
    next_batch,
    result_json,
    split_items,
)


# -- metrics ---------------------------------------------------------------------------------------
def topk_accuracy(logits: torch.Tensor | np.ndarray, targets: torch.Tensor | np.ndarray,
                  ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose target is among the ``k`` highest logits, for each ``k`` (a ``k``
    beyond the class count counts every row right). Ties are broken by lower class index."""
    scores = torch.as_tensor(logits, dtype=torch.float32)
    target = torch.as_tensor(targets, dtype=torch.int64).reshape(-1)
    if scores.ndim != 2 or scores.shape[0] != target.shape[0]:
        raise ValueError(f"logits (N, C) and targets (N,), not {tuple(scores.shape)} and "
                         f"{tuple(target.shape)}")
    if target.numel() == 0:
        return {int(k): 0.0 for k in ks}
    # stable order: a higher score first, the lower index first among equals
    order = torch.from_numpy(np.argsort(-scores.numpy(), axis=1, kind="stable"))
    rank = (order == target[:, None]).float().argmax(dim=1)
    return {int(k): float((rank < k).float().mean()) for k in ks}


# -- configuration ---------------------------------------------------------------------------------
@dataclass
class ActionTrainConfig:
    """How to train an action model.

    Attributes:
        model: A registered model of task ``"action"`` (not two-stream).
        out: Best checkpoint; the last one is ``<stem>.last.pt`` beside it.
        weights: None (random weights) or a checkpoint / published weights name whose classes
            are the project's action labels (same count).
        model_kwargs: Builder options.
        frames: Frames per clip (models that do not fix T; default the spec's).
        stride: Frames between a clip's sampled frames (default from the spec's frame rate).
        epochs, batch_size, lr, weight_decay, momentum, optimizer, device, val_fraction, seed,
        steps_per_epoch: The usual (the split keeps the clips of a segment together).
        augment: Random horizontal flips.
    """

    model: str
    out: Path
    weights: str | Path | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    frames: int | None = None
    stride: int | None = None
    epochs: int = 10
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    optimizer: str = "adamw"
    device: str = "auto"
    val_fraction: float = 0.2
    seed: int = 0
    steps_per_epoch: int | None = None
    augment: bool = True

    def __post_init__(self) -> None:
        self.out = Path(self.out).expanduser()
        check_config(optimizer=self.optimizer, epochs=self.epochs, batch_size=self.batch_size,
                     lr=self.lr, val_fraction=self.val_fraction)

    @property
    def last_path(self) -> Path:
        return last_checkpoint_path(self.out)

    def spec(self) -> Any:
        return model_clip_spec(self.model, self.frames, **self.model_kwargs)


@dataclass
class ActionTrainResult:
    """What a run did (``history``: loss, top-1 and top-5 per epoch)."""

    best_epoch: int
    best_metric: float | None
    epochs_run: int
    stopped: str
    best_path: Path | None
    last_path: Path | None
    history: list[dict[str, Any]]
    classes: list[str]
    train_clips: int
    val_clips: int
    warnings: list[str] = field(default_factory=list)
    module: nn.Module | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return result_json(self, train_clips=self.train_clips, val_clips=self.val_clips)


def action_step(module: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor) -> float:
    """One cross-entropy step; the loss."""
    module.train()
    loss = F.cross_entropy(module(x), y)
    if not torch.isfinite(loss):
        raise TrainError("The loss is not finite; lower the learning rate.")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


@torch.no_grad()
def evaluate_clips(module: nn.Module, loader: ClipLoader, clips: Sequence[ClipSample],
                   batch_size: int, device: Any) -> dict[str, float]:
    """Mean loss and top-1 / top-5 accuracy of ``module`` on ``clips``."""
    module.eval()
    logits, targets = [], []
    for start in range(0, len(clips), batch_size):
        x, y = loader.batch(clips[start:start + batch_size])
        logits.append(module(x.to(device)).float().cpu())
        targets.append(y)
    scores, target = torch.cat(logits), torch.cat(targets)
    accuracy = topk_accuracy(scores, target, (1, 5))
    return {"val_loss": float(F.cross_entropy(scores, target)), "top1": accuracy[1],
            "top5": accuracy[5]}


def train_actions(config: ActionTrainConfig, dataset: ActionDataset,
                  report: ReportFn | None = None, cancel: Any = None,
                  on_epoch: Callable[[dict[str, Any]], None] | None = None,
                  ) -> ActionTrainResult:
    """Train ``config.model`` on the clips of ``dataset``; see the module docstring."""
    from core.inference.device import select_device
    from core.models.loading import load_model

    info = model_info(config.model)
    if info.task != "action":
        raise TrainError(f"{config.model} is a {info.task} model, not an action model.")
    if not dataset.clips:
        raise TrainError("No labelled video segment to train on.")
    classes = list(dataset.labels)
    if config.weights is None:
        loaded = load_model(config.model, num_classes=len(classes), **config.model_kwargs)
        mean, std = dataset.spec.mean, dataset.spec.std
    else:
        loaded = load_model(config.model, weights=config.weights, **config.model_kwargs)
        if len(loaded.classes) != len(classes):
            raise TrainError(f"The weights have {len(loaded.classes)} classes but the project "
                             f"{len(classes)} action labels.")
        mean, std = loaded.mean, loaded.std
    groups = sorted({c.group for c in dataset.clips})
    _, val_g = split_items(len(groups), config.val_fraction, config.seed)
    val_groups = {groups[i] for i in val_g}
    train_clips = [c for c in dataset.clips if c.group not in val_groups]
    val_clips = [c for c in dataset.clips if c.group in val_groups]
    warnings = [] if val_clips else [
        "no validation split (too few segments); the best checkpoint is the one with the "
        "lowest training loss"]
    device = select_device(config.device)
    module = loaded.module.to(device)
    optimizer = make_optimizer(config.optimizer, module, config.lr, config.weight_decay,
                               config.momentum)
    loader = ClipLoader(dataset.spec, mean, std)
    rng = np.random.default_rng(config.seed)
    per_epoch = config.steps_per_epoch or math.ceil(len(train_clips) / config.batch_size)
    total, done = per_epoch * config.epochs, 0
    stopped = "completed"
    save = checkpoint_saver(config.model, module, classes, loaded.in_channels, mean, std,
                            dict(loaded.model_kwargs),
                            {"data": dataset.source, "task": "action",
                             "clip_frames": dataset.spec.frames})
    epochs = EpochRecorder(config.out, config.last_path, save, on_epoch)

    try:
        order: list[int] = []
        for epoch in range(1, config.epochs + 1):
            started = time.perf_counter()
            losses = []
            for _ in range(per_epoch):
                if is_cancelled(cancel):
                    stopped = "cancelled"
                    break
                batch, order = next_batch(order, len(train_clips), config.batch_size, rng)
                x, y = loader.batch([train_clips[i] for i in batch],
                                    rng if config.augment else None)
                losses.append(action_step(module, optimizer, x.to(device), y.to(device)))
                done += 1
                if report is not None:
                    report(done, total)
            if not losses:
                break
            row: dict[str, Any] = {"epoch": epoch, "train_loss": round(float(np.mean(losses)), 6),
                                   "val_loss": None, "top1": None, "top5": None}
            if val_clips:
                row.update(evaluate_clips(module, loader, val_clips, config.batch_size, device))
                metric = row["top1"]
            else:
                metric = -row["train_loss"]
            epochs.record(row, metric, started)
            if stopped == "cancelled":
                break
    finally:
        loader.close()
    module.to("cpu").eval()
    return ActionTrainResult(
        **epochs.result_fields(stopped), classes=classes,
        train_clips=len(train_clips), val_clips=len(val_clips), warnings=warnings,
        module=module)
