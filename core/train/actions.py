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
``"frames"`` (B, T, 3, H, W); a tuple of inputs, taken as ``module(*inputs)``, for two-stream
models). Training clips are flipped horizontally at random.

The loss is the cross-entropy; the validation split (whole segments, seeded) is scored with
top-1 / top-5 accuracy (:func:`topk_accuracy`). The epochs are
:func:`core.train.runner.run_epochs`'s (schedule, mixed precision on CUDA, gradient
accumulation, early stopping, resume, the metrics CSV of :data:`LOG_COLUMNS`): every epoch
writes the "last" checkpoint and, when the validation top-1 (else the training loss) improved,
the "best" one, in SegStudio's checkpoint format (``load_model`` and ``classify_video`` read
them) with the training state that ``resume`` continues from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    BaseTrainConfig,
    BaseTrainResult,
    ReportFn,
    TrainError,
    read_resume,
    split_items,
)

LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "top1", "top5", "lr", "seconds")


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
class ActionTrainConfig(BaseTrainConfig):
    """How to train an action model (the fields of :class:`core.train.common.BaseTrainConfig`,
    with these defaults, and its own).

    Attributes:
        model: A registered model of task ``"action"``.
        weights: None (random weights) or a checkpoint / published weights name whose classes
            are the project's action labels (same count).
        frames: Frames per clip (models that do not fix T; default the spec's).
        stride: Frames between a clip's sampled frames (default from the spec's frame rate).
        val_fraction, seed: The split keeps the clips of a segment together.
        patience: Epochs without a better validation top-1 before stopping (0: never).
        augment: Random horizontal flips.
    """

    epochs: int = 10
    lr: float = 1e-4
    frames: int | None = None
    stride: int | None = None
    augment: bool = True

    def task_checks(self) -> tuple[tuple[bool, str], ...]:
        return ((self.frames is None or self.frames >= 1, "frames per clip must be >= 1"),
                (self.stride is None or self.stride >= 1, "the clip stride must be >= 1"))

    def spec(self) -> Any:
        """The model's ClipSpec for these options (a ``frames`` builder option, for models
        that fix T, counts as ``frames``)."""
        kwargs = dict(self.model_kwargs)
        if "frames" not in kwargs:
            return model_clip_spec(self.model, self.frames, **kwargs)
        from core.models.action_specs import clip_spec

        spec = clip_spec(self.model, **kwargs)
        if self.frames is not None and self.frames != spec.frames:
            raise TrainError(f"frames ({self.frames}) and the builder option frames "
                             f"({spec.frames}) differ.")
        return spec


@dataclass
class ActionTrainResult(BaseTrainResult):
    """What a run did (``history``: :data:`LOG_COLUMNS` per epoch)."""

    train_clips: int
    val_clips: int

    def to_json(self) -> dict[str, Any]:
        return {**self.common_json(), "train_clips": self.train_clips,
                "val_clips": self.val_clips, "history": self.history,
                "warnings": self.warnings}


def action_step(module: nn.Module, optimizer: torch.optim.Optimizer, x: Any,
                y: torch.Tensor) -> float:
    """One cross-entropy step (``x``: a tensor, or a tuple for two-stream models); the loss."""
    from core.train.runner import forward

    module.train()
    loss = F.cross_entropy(forward(module, x), y)
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
    from core.train.runner import forward, to_device

    module.eval()
    logits, targets = [], []
    for start in range(0, len(clips), batch_size):
        x, y = loader.batch(clips[start:start + batch_size])
        logits.append(forward(module, to_device(x, device)).float().cpu())
        targets.append(y)
    scores, target = torch.cat(logits), torch.cat(targets)
    accuracy = topk_accuracy(scores, target, (1, 5))
    return {"val_loss": float(F.cross_entropy(scores, target)), "top1": accuracy[1],
            "top5": accuracy[5]}


def _build(config: ActionTrainConfig, dataset: ActionDataset
           ) -> tuple[Any, list[float], list[float], dict[str, Any] | None]:
    """The loaded model (new, fine-tuned or resumed), its input statistics and the training
    state to resume (None: a new run)."""
    from core.models.loading import load_model

    info = model_info(config.model)
    if info.task != "action":
        raise TrainError(f"{config.model} is a {info.task} model, not an action model.")
    if not dataset.clips:
        raise TrainError("No labelled video segment to train on.")
    training = None
    if config.resume is not None:
        training = read_resume(config.resume, config.model)
    source = config.resume if config.resume is not None else config.weights
    if source is None:
        loaded = load_model(config.model, num_classes=len(dataset.labels),
                            **config.model_kwargs)
        return loaded, list(dataset.spec.mean), list(dataset.spec.std), training
    loaded = load_model(config.model, weights=source, **config.model_kwargs)
    if len(loaded.classes) != len(dataset.labels):
        raise TrainError(f"The weights have {len(loaded.classes)} classes but the project "
                         f"{len(dataset.labels)} action labels.")
    return loaded, list(loaded.mean), list(loaded.std), training


def train_actions(config: ActionTrainConfig, dataset: ActionDataset,
                  report: ReportFn | None = None, cancel: Any = None,
                  on_epoch: Callable[[dict[str, Any]], None] | None = None,
                  ) -> ActionTrainResult:
    """Train ``config.model`` on the clips of ``dataset`` (or continue the run of
    ``config.resume``); see the module docstring. ``report(done, total)`` counts batches;
    ``cancel`` (``is_set()`` or a callable) is checked between them; ``on_epoch(row)`` follows
    each epoch's files."""
    from core.train.runner import Task, forward, run_epochs, to_device

    loaded, mean, std, training = _build(config, dataset)
    classes = list(dataset.labels)
    groups = sorted({c.group for c in dataset.clips})
    _, val_g = split_items(len(groups), config.val_fraction, config.seed)
    val_groups = {groups[i] for i in val_g}
    train_clips = [c for c in dataset.clips if c.group not in val_groups]
    val_clips = [c for c in dataset.clips if c.group in val_groups]
    warnings = [] if val_clips else [
        "no validation split (too few segments); the best checkpoint is the one with the "
        "lowest training loss"]
    loader = ClipLoader(dataset.spec, mean, std)

    def loss(module: nn.Module, batch: list[int], rng: np.random.Generator,
             device: torch.device) -> tuple[torch.Tensor, dict[str, float]]:
        x, y = loader.batch([train_clips[i] for i in batch], rng if config.augment else None)
        logits = forward(module, to_device(x, device))
        return F.cross_entropy(logits.float(), y.to(device)), {}

    def validate(module: nn.Module, device: torch.device,
                 batch_size: int) -> tuple[dict[str, Any], float | None]:
        if not val_clips:
            return {"val_loss": None, "top1": None, "top5": None}, None
        scores = evaluate_clips(module, loader, val_clips, batch_size, device)
        return scores, scores["top1"]

    task = Task(loaded.module, classes, loaded.in_channels, mean, std, dict(loaded.model_kwargs),
                {"data": dataset.source, "task": "action", "clip_frames": dataset.spec.frames},
                list(range(len(train_clips))), loss, validate, LOG_COLUMNS,
                loss_key="train_loss", warnings=warnings, training=training)
    try:
        fields = run_epochs(config, task, report, cancel, on_epoch)
    finally:
        loader.close()
    return ActionTrainResult(**fields, train_clips=len(train_clips),
                             val_clips=len(val_clips))
