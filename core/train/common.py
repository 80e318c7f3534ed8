"""What the training loops share (imports torch; load it lazily): options checks, losses,
optimiser and schedule construction, the epoch bookkeeping of the best / last checkpoints,
checkpoint payloads written atomically and the metrics CSV.

Used by :mod:`core.train.loop` (semantic models), :mod:`core.train.instances` and
:mod:`core.train.actions`.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from core.errors import SegStudioError
from core.fsutil import atomic_write_bytes
from core.models.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, _plain, save_checkpoint
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


def next_batch(order: list[int], pool: Any, batch_size: int, rng: np.random.Generator
               ) -> tuple[list[int], list[int]]:
    """The next ``batch_size`` indices of ``order`` (refilled with permutations of ``pool``)
    and what is left of it."""
    while len(order) < batch_size:
        order.extend(rng.permutation(pool).tolist())
    return order[:batch_size], order[batch_size:]


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


# -- epochs of the instance and action loops -------------------------------------------------------
class EpochRecorder:
    """Per-epoch bookkeeping: the history, the "last" checkpoint every epoch, the "best" one
    when the metric improved, then ``on_epoch(row)``."""

    def __init__(self, out: Path, last_path: Path, save: Callable[[Path, dict[str, Any]], Path],
                 on_epoch: Callable[[dict[str, Any]], None] | None) -> None:
        self.out, self.last_path, self.save, self.on_epoch = out, last_path, save, on_epoch
        self.best: tuple[float, int] = (-math.inf, 0)
        self.best_path: Path | None = None
        self.history: list[dict[str, Any]] = []

    def record(self, row: dict[str, Any], metric: float, started: float) -> None:
        """Time ``row`` (``started``: its ``perf_counter``), keep it and write the checkpoints."""
        row["seconds"] = round(time.perf_counter() - started, 3)
        self.history.append(row)
        self.save(self.last_path, row)
        if metric > self.best[0]:
            self.best = (metric, row["epoch"])
            self.best_path = self.save(self.out, row)
        if self.on_epoch is not None:
            self.on_epoch(row)

    def result_fields(self, stopped: str) -> dict[str, Any]:
        """The fields every training result shares."""
        return {"best_epoch": self.best[1],
                "best_metric": None if self.best[1] == 0 else float(self.best[0]),
                "epochs_run": len(self.history), "stopped": stopped,
                "best_path": self.best_path,
                "last_path": self.last_path if self.history else None, "history": self.history}


def checkpoint_saver(model: str, module: nn.Module, classes: list[str], in_channels: int,
                     mean: Any, std: Any, model_kwargs: dict[str, Any],
                     meta: dict[str, Any]) -> Callable[[Path, dict[str, Any]], Path]:
    """``save(path, row)``: ``save_checkpoint`` of ``module`` with ``meta`` plus the row's
    epoch and metrics."""
    def save(path: Path, row: dict[str, Any]) -> Path:
        return save_checkpoint(path, model, module, classes, in_channels, list(mean), list(std),
                               model_kwargs=model_kwargs,
                               meta={**meta, "epoch": row["epoch"], "metrics": row})

    return save


def result_json(result: Any, **counts: Any) -> dict[str, Any]:
    """``to_json`` of an instance / action training result; ``counts``: its split sizes."""
    return {"best_epoch": result.best_epoch, "best_metric": result.best_metric,
            "epochs_run": result.epochs_run, "stopped": result.stopped,
            "best": None if result.best_path is None else str(result.best_path),
            "last": None if result.last_path is None else str(result.last_path),
            "classes": result.classes, **counts, "history": result.history,
            "warnings": result.warnings}


# -- epochs of the semantic loop --------------------------------------------------------------------
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
              classes: list[str], ctx: Any = None) -> tuple[float | None, Any]:
    """Validation loss and scores; under DDP each rank scores its share of ``val_idx`` and
    the sums are all-reduced (every rank gets the same numbers)."""
    if not val_idx:
        return None, None
    module.eval()
    matrix = np.zeros((len(classes), len(classes)), np.int64)
    losses = []
    for i in (val_idx if ctx is None else val_idx[ctx.rank::ctx.world]):
        x = torch.from_numpy(images[i])[None].to(device)
        y = torch.from_numpy(labels[i])[None].to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = as_logits(module(x))
        losses.append(float(loss_fn(logits, y)))
        matrix += confusion_matrix(labels[i], logits.argmax(1)[0].cpu().numpy(), len(classes))
    if ctx is not None:
        summed = ctx.sum([sum(losses), len(losses), *matrix.ravel().tolist()])
        matrix = np.rint(summed[2:]).astype(np.int64).reshape(matrix.shape)
        return float(summed[0] / summed[1]), scores_from_confusion(matrix, classes)
    return float(np.mean(losses)), scores_from_confusion(matrix, classes)


# -- checkpoints of the semantic loop ------------------------------------------------------------
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


def checkpoint_payload(config: Any, model: Any, module: nn.Module, training: dict[str, Any],
             row: dict[str, Any], source: str) -> dict[str, Any]:
    """The dict ``save_checkpoint`` writes, plus the ``"training"`` state."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model": config.model,
        "model_kwargs": _plain(model.model_kwargs), "classes": list(model.classes),
        "in_channels": int(model.in_channels), "mean": [float(v) for v in model.mean],
        "std": [float(v) for v in model.std],
        "state_dict": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
        "meta": _plain({"created": created, "epoch": row["epoch"], "metrics": row,
                        "data": source, "loss": config.loss, "patch": config.patch}),
        "training": training,
    }


def write_payload(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` of ``payload``, written atomically."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def write_log(path: Path, history: list[dict[str, Any]]) -> None:
    """The metrics CSV (:data:`LOG_COLUMNS`), written atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, LOG_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in LOG_COLUMNS})
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))
