"""What the training loops share (imports torch; load it lazily): the options and result
fields every run has (:class:`BaseTrainConfig`, :class:`BaseTrainResult`), losses, optimiser and
schedule construction, the micro-batches of an epoch (gradient accumulation, a batch halved when
it does not fit in memory), checkpoint payloads with their training state written atomically,
resuming from them, and the metrics CSV.

Used by :mod:`core.train.runner` (the epochs of :mod:`core.train.loop` (semantic models),
:mod:`core.train.instances` and :mod:`core.train.actions`) and those modules.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from core.errors import SegStudioError
from core.fsutil import atomic_write_bytes
from core.models.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    _plain,
    is_segstudio_checkpoint,
    safe_torch_load,
)
from core.train.metrics import confusion_matrix, scores_from_confusion

LOSSES = ("ce", "dice", "ce+dice")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "step", "none")
LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "mean_dice", "mean_iou", "lr", "seconds")

ReportFn = Callable[[int, int], None]


class TrainError(SegStudioError):
    """Training cannot start or go on (bad options, a checkpoint that does not fit)."""


def check_config(*extra: tuple[bool, str], optimizer: str, epochs: int, batch_size: int,
                 lr: float, val_fraction: float) -> None:
    """Raise TrainError for the first failed check: the settings every training run shares,
    then ``extra`` (ok, message) pairs of the run's own."""
    checks = ((optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
              (epochs >= 1, "epochs must be >= 1"),
              (batch_size >= 1, "batch size must be >= 1"),
              (lr > 0, "the learning rate must be > 0"),
              (0 <= val_fraction < 1, "the validation fraction must be in [0, 1)"), *extra)
    for ok, message in checks:
        if not ok:
            raise TrainError(f"{message}.")


# -- options and results every run shares ---------------------------------------------------------
@dataclass
class BaseTrainConfig:
    """The options of every training run (the task configs add theirs and their defaults).

    Attributes:
        model: Registered model name.
        out: The best checkpoint's path; the last one is ``<stem>.last.pt`` beside it.
        weights: None (random weights), a checkpoint / state-dict file or a published weights
            name to fine-tune from.
        model_kwargs: Builder options.
        epochs, batch_size, lr, weight_decay, momentum: The usual.
        optimizer: ``"adamw"`` or ``"sgd"``.
        schedule: ``"cosine"`` (to 0 over ``epochs``), ``"step"`` (x ``gamma`` every
            ``step_size`` epochs) or ``"none"``; stepped once per epoch.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        amp: Mixed precision (float16 autocast + GradScaler) on CUDA only.
        accumulate: Batches whose gradients are summed before an optimiser step.
        patience: Stop after this many epochs without a better validation metric (0: never).
        val_fraction, seed: The split and the random draws.
        steps_per_epoch: Batches per epoch (None: one pass over the training split).
        resume: A last / best checkpoint written by training this model: continue from its
            epoch with its optimiser, schedule and history.
        log: Metrics CSV (rewritten every epoch).
        warmup: Optimiser steps at the start of a new run over which the learning rate rises
            linearly from ``lr / 1000`` to ``lr`` (0: none).
        clip_grad: Clip the gradients' global L2 norm to this before each optimiser step
            (None: no clipping).
    """

    model: str
    out: Path
    weights: str | Path | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 20
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    optimizer: str = "adamw"
    schedule: str = "cosine"
    step_size: int = 10
    gamma: float = 0.1
    device: str = "auto"
    amp: bool = True
    accumulate: int = 1
    patience: int = 0
    val_fraction: float = 0.2
    seed: int = 0
    steps_per_epoch: int | None = None
    resume: Path | None = None
    log: Path | None = None
    warmup: int = 0
    clip_grad: float | None = None

    def __post_init__(self) -> None:
        self.out = Path(self.out).expanduser()
        self.resume = None if self.resume is None else Path(self.resume).expanduser()
        self.log = None if self.log is None else Path(self.log).expanduser()
        check_config(
            (self.schedule in SCHEDULES, f"schedule must be one of {SCHEDULES}"),
            (self.accumulate >= 1, "accumulate must be >= 1"),
            (self.patience >= 0, "patience must be >= 0"),
            (self.step_size >= 1, "the schedule's step size must be >= 1"),
            (self.gamma > 0, "the schedule's gamma must be > 0"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1,
             "steps per epoch must be >= 1"),
            (self.warmup >= 0, "warm-up steps must be >= 0"),
            (self.clip_grad is None or self.clip_grad > 0, "the gradient clip must be > 0"),
            *self.task_checks(), optimizer=self.optimizer, epochs=self.epochs,
            batch_size=self.batch_size, lr=self.lr, val_fraction=self.val_fraction)

    def task_checks(self) -> tuple[tuple[bool, str], ...]:
        """(ok, message) checks of the task's own options."""
        return ()

    @property
    def last_path(self) -> Path:
        return last_checkpoint_path(self.out)


@dataclass
class BaseTrainResult:
    """What every run did (the task results add their split sizes).

    Attributes:
        best_epoch: Epoch (1-based) of the best checkpoint (0 if none was written).
        best_metric: Its validation metric (or minus the training loss without validation).
        epochs_run: Epochs finished (including resumed ones).
        stopped: ``"completed"``, ``"early_stopping"`` or ``"cancelled"``.
        best_path, last_path, log_path: Files written.
        history: One dict per epoch (the CSV columns).
        classes: Class names of the model.
        warnings: For the user.
        module: The trained module as it ended (the last epoch's weights), on the CPU, in
            eval mode.
    """

    best_epoch: int
    best_metric: float | None
    epochs_run: int
    stopped: str
    best_path: Path | None
    last_path: Path | None
    history: list[dict[str, Any]]
    classes: list[str]
    log_path: Path | None = field(default=None, kw_only=True)
    warnings: list[str] = field(default_factory=list, kw_only=True)
    module: nn.Module | None = field(default=None, repr=False, kw_only=True)

    def common_json(self) -> dict[str, Any]:
        """The JSON fields every result shares (``to_json`` adds the task's)."""
        return {"best_epoch": self.best_epoch, "best_metric": self.best_metric,
                "epochs_run": self.epochs_run, "stopped": self.stopped,
                "best": _text(self.best_path), "last": _text(self.last_path),
                "log": _text(self.log_path), "classes": self.classes}


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def last_checkpoint_path(out: Path) -> Path:
    """Where the last epoch's checkpoint goes, beside the best one: ``<stem>.last.pt``."""
    return out.with_name(f"{out.stem}.last{out.suffix or '.pt'}")


def is_cancelled(cancel: Any) -> bool:
    """``cancel.is_set()`` (or ``cancel()``); False for None."""
    if cancel is None:
        return False
    return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())


def round6(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


# -- split, optimiser, schedule --------------------------------------------------------------------
def split_items(count: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded shuffle cut into (train, validation) indices; no validation for < 2 items."""
    order = np.random.default_rng(seed).permutation(count).tolist()
    n_val = int(round(count * val_fraction)) if count >= 2 else 0
    n_val = min(n_val, count - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def make_optimizer(name: str, module: nn.Module, lr: float, weight_decay: float,
                   momentum: float) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_scheduler(schedule: str, optimizer: torch.optim.Optimizer, epochs: int,
                   step_size: int, gamma: float) -> Any:
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    return None


def step_schedule(scheduler: Any) -> None:
    """``scheduler.step()`` at the end of an epoch. Under AMP the GradScaler skips the
    optimiser steps whose gradients overflowed (the first ones, while it finds its scale), and
    torch then warns that the schedule stepped "before optimizer.step()": expected, not shown."""
    if scheduler is None:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        scheduler.step()


# -- losses --------------------------------------------------------------------------------------
def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = -1) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in the target or predicted (ignored pixels
    left out)."""
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(dim=1) * valid
    onehot = F.one_hot(target.clamp(min=0), num_classes).permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * intersection + 1.0) / (total + 1.0)
    return 1.0 - dice.mean()


def make_loss(kind: str, weights: torch.Tensor | None = None
              ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = logits.new_zeros((), dtype=torch.float32)
        if kind in ("ce", "ce+dice"):
            total = total + F.cross_entropy(logits.float(), target, weight=weights,
                                            ignore_index=-1)
        if kind in ("dice", "ce+dice"):
            total = total + dice_loss(logits, target)
        return total

    return loss


def as_logits(output: Any) -> torch.Tensor:
    """Logits of a forward's result (a tensor, torchvision's ``{"out": ...}``, or a tuple)."""
    if isinstance(output, dict):
        return output["out"]
    if isinstance(output, list | tuple):
        return output[0]
    return output


# -- the micro-batches of an epoch ------------------------------------------------------------------
def free_memory(device: torch.device) -> None:
    """Give the accelerator's cached blocks back (after an out-of-memory error)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def reduce_batch(batch_size: int, accumulate: int, device: torch.device,
                 warnings: list[str]) -> tuple[int, int]:
    """A batch of ``batch_size`` ran out of memory: free the cache, then (half the batch, twice
    the accumulation), which keeps the effective batch, with a warning. TrainError at 1."""
    free_memory(device)
    if batch_size <= 1:
        raise TrainError(f"One item per batch does not fit in {device.type} memory; use a "
                         f"smaller model or smaller inputs, or train on another device.")
    half, accumulate = batch_size // 2, accumulate * 2
    warnings.append(f"batch size {batch_size} does not fit in {device.type} memory; reduced "
                    f"to {half} (gradient accumulation x{accumulate} keeps the effective batch)")
    return half, accumulate


class MicroBatches:
    """An epoch's ``samples`` positions cut into batches of ``batch_size``, an optimiser step
    every ``accumulate`` batches (and after the last one). :meth:`shrink` (a batch that does
    not fit in memory) halves the batch, doubles the accumulation and starts the accumulation
    window again."""

    def __init__(self, samples: int, batch_size: int, accumulate: int) -> None:
        self.samples, self.batch_size, self.accumulate = samples, batch_size, accumulate
        self.pos = self.window_start = self.in_window = 0

    def more(self) -> bool:
        return self.pos < self.samples

    def left(self) -> int:
        """Batches left in the epoch."""
        return math.ceil((self.samples - self.pos) / self.batch_size)

    def take(self) -> slice:
        """The next batch's positions."""
        batch = slice(self.pos, min(self.pos + self.batch_size, self.samples))
        self.pos, self.in_window = batch.stop, self.in_window + 1
        return batch

    def stepping(self) -> bool:
        """Whether the batch just taken ends an accumulation window (then call :meth:`stepped`)."""
        return self.in_window >= self.accumulate or self.pos >= self.samples

    def stepped(self) -> None:
        self.window_start, self.in_window = self.pos, 0

    def shrink(self, device: torch.device, warnings: list[str]) -> None:
        """After torch.OutOfMemoryError: :func:`reduce_batch`, back to the window's start."""
        self.batch_size, self.accumulate = reduce_batch(self.batch_size, self.accumulate, device,
                                                        warnings)
        self.pos, self.in_window = self.window_start, 0


# -- epochs -----------------------------------------------------------------------------------------
def epoch_order(train_idx: list[int], needed: int, rng: np.random.Generator) -> list[int]:
    order: list[int] = []
    while len(order) < needed:
        order.extend(rng.permutation(train_idx).tolist())
    return order[:needed]


def epochs_since_best(history: list[dict[str, Any]], best_epoch: int) -> int:
    return len(history) - best_epoch if best_epoch else 0


@torch.no_grad()
def validate(module: nn.Module, images: list[np.ndarray], labels: list[np.ndarray],
              val_idx: list[int], loss_fn: Callable, device: torch.device, use_amp: bool,
              classes: list[str]) -> tuple[float | None, Any]:
    """Validation loss and per-class scores of a semantic model on the whole images
    ``val_idx`` (None, None without any)."""
    if not val_idx:
        return None, None
    module.eval()
    matrix = np.zeros((len(classes), len(classes)), np.int64)
    losses = []
    for i in val_idx:
        x = torch.from_numpy(images[i])[None].to(device)
        y = torch.from_numpy(labels[i])[None].to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = as_logits(module(x))
        losses.append(float(loss_fn(logits, y)))
        matrix += confusion_matrix(labels[i], logits.argmax(1)[0].cpu().numpy(), len(classes))
    return float(np.mean(losses)), scores_from_confusion(matrix, classes)


# -- checkpoints with their training state ---------------------------------------------------------
def training_state(epoch: int, optimizer: torch.optim.Optimizer, scheduler: Any,
                   scaler: torch.amp.GradScaler, history: list[dict[str, Any]],
                   best: tuple) -> dict[str, Any]:
    return {"epoch": epoch, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict(), "history": _plain(history),
            "best": {"metric": None if math.isinf(best[0]) else float(best[0]),
                     "epoch": int(best[1]), "scores": _plain(best[2])}}


def restore_training(training: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: Any,
                     scaler: torch.amp.GradScaler) -> tuple[int, list[dict[str, Any]], tuple]:
    try:
        optimizer.load_state_dict(training["optimizer"])
        if scheduler is not None and training.get("scheduler"):
            scheduler.load_state_dict(training["scheduler"])
        if training.get("scaler"):
            scaler.load_state_dict(training["scaler"])
        best = training.get("best") or {}
        metric = best.get("metric")
        return (int(training["epoch"]), [dict(r) for r in training.get("history") or []],
                (-math.inf if metric is None else float(metric), int(best.get("epoch") or 0),
                 best.get("scores")))
    except (KeyError, ValueError, TypeError) as err:
        raise TrainError(f"The checkpoint's training state does not fit this run (another "
                         f"optimiser or schedule?): {err}.") from err


def read_resume(path: Path, model: str) -> dict[str, Any]:
    """The ``"training"`` state of the checkpoint ``path`` of ``model`` (TrainError for a file
    that is not a SegStudio checkpoint, one of another model, or one without that state)."""
    raw = safe_torch_load(Path(path))
    if not is_segstudio_checkpoint(raw):
        raise TrainError(f"{path} is not a SegStudio checkpoint; --resume needs "
                         f"a checkpoint written by training.")
    if raw.get("model") != model:
        raise TrainError(f"{path} is a checkpoint of {raw.get('model')}, not "
                         f"{model}; resume with --model {raw.get('model')}.")
    training = raw.get("training")
    if not isinstance(training, dict):
        raise TrainError(f"{path} holds no training state (a checkpoint not "
                         f"written by training); fine-tune from it with --weights instead.")
    return training


def make_payload(model: str, module: nn.Module, classes: list[str], in_channels: int,
                 mean: Any, std: Any, model_kwargs: dict[str, Any], meta: dict[str, Any],
                 training: dict[str, Any]) -> dict[str, Any]:
    """The dict ``save_checkpoint`` writes (``meta`` after its creation time), plus the
    ``"training"`` state."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": model,
        "model_kwargs": _plain(model_kwargs), "classes": list(classes),
        "in_channels": int(in_channels), "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "state_dict": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "meta": _plain({"created": created, **meta}),
        "training": training,
    }


def write_payload(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` of ``payload``, written atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def write_log(path: Path, history: list[dict[str, Any]],
              columns: tuple[str, ...] = LOG_COLUMNS) -> None:
    """The metrics CSV (``columns``: the semantic loop's :data:`LOG_COLUMNS` by default),
    written atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))
