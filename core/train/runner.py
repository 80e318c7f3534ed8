"""The epochs of semantic, instance and action training (imports torch; load it lazily).

:func:`run_epochs` trains a :class:`Task` (what differs between the tasks: the model with its
checkpoint description, a batch's loss, the validation row, metric and details) with what every
run of :class:`core.train.common.BaseTrainConfig` gets:

* the optimiser (AdamW or SGD) and the schedule (cosine, step or none; stepped per epoch);
* mixed precision on CUDA only (float16 autocast and a GradScaler; off on the CPU and MPS);
* a linear learning-rate warm-up over the first ``warmup`` optimiser steps of a new run and
  clipping of the gradients' norm (``clip_grad``), which Mask R-CNN from random weights needs;
* gradient accumulation; a batch that does not fit in memory (``torch.OutOfMemoryError``) is
  halved with the accumulation doubled (the effective batch stays), with a warning;
* cancel between batches (the files already written stay valid: they are written atomically);
* under torchrun (``segstudio-cli train --nproc N``), DistributedDataParallel over the ranks
  (:mod:`core.train.distributed`; only rank 0 writes files);
* early stopping after ``patience`` epochs without a better validation metric;
* every epoch the "last" checkpoint and, when the metric improved, the "best" one, in
  SegStudio's format with the ``"training"`` state (epoch, optimiser, schedule, scaler,
  history, best), which ``resume`` reads back to continue at the saved epoch;
* the metrics CSV with the task's columns, rewritten every epoch.

A batch's inputs may be a tensor or a tuple of tensors (two-stream models take
``module(rgb, flow)``): :func:`to_device` and :func:`forward` handle both.
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

from core.train.common import (
    BaseTrainConfig,
    MicroBatches,
    ReportFn,
    TrainError,
    epoch_order,
    epochs_since_best,
    is_cancelled,
    make_optimizer,
    make_payload,
    make_scheduler,
    restore_training,
    round6,
    step_schedule,
    training_state,
    write_log,
    write_payload,
)

LossFn = Callable[[nn.Module, list[int], np.random.Generator, torch.device],
                  tuple[torch.Tensor, dict[str, float]]]
ValidateFn = Callable[[nn.Module, torch.device, int],
                      tuple[dict[str, Any], float | None]
                      | tuple[dict[str, Any], float | None, Any]]


@dataclass
class Task:
    """What a task gives :func:`run_epochs`.

    Attributes:
        module: The model to train (random, fine-tuned or resumed weights).
        classes, in_channels, mean, std, model_kwargs: Its checkpoint description.
        meta: Checkpoint meta besides the epoch and its metrics (``data``, ``task``...).
        train_items: Indices of the training items (what ``loss`` receives batches of).
        loss: ``loss(module, indices, rng, device)``: a batch's loss (a scalar tensor) and
            named terms (floats) averaged into the epoch's row; run under autocast.
        validate: ``validate(module, device, batch_size)``: the row's validation columns and
            the metric to maximise (None: no validation, minus the training loss then),
            optionally followed by details (plain data: per-class scores...) that the run keeps
            for the best epoch in ``best_details`` and the training state.
        columns: The CSV columns (``epoch`` first; ``lr`` and ``seconds`` are filled here).
        loss_key: The column of the epoch's mean training loss.
        warnings: For the user; the run adds its own.
        training: The ``"training"`` state of the checkpoint to resume (None: a new run).
        passes: Passes over the training split in an epoch without ``steps_per_epoch`` (the
            semantic loop's ``accumulate``: as many optimiser steps as batches in one pass).
        best_details: Set by the run: the best epoch's validation details (None without).
    """

    module: nn.Module
    classes: list[str]
    in_channels: int
    mean: list[float]
    std: list[float]
    model_kwargs: dict[str, Any]
    meta: dict[str, Any]
    train_items: list[int]
    loss: LossFn
    validate: ValidateFn
    columns: tuple[str, ...]
    loss_key: str = "train_loss"
    warnings: list[str] = field(default_factory=list)
    training: dict[str, Any] | None = None
    passes: int = 1
    best_details: Any = None


def to_device(x: Any, device: torch.device) -> Any:
    """A tensor, or each tensor of a tuple, on ``device``."""
    if isinstance(x, tuple | list):
        return tuple(t.to(device, non_blocking=True) for t in x)
    return x.to(device, non_blocking=True)


def forward(module: nn.Module, x: Any) -> Any:
    """``module(*x)`` for a tuple of inputs (two-stream models), else ``module(x)``."""
    return module(*x) if isinstance(x, tuple | list) else module(x)


def run_epochs(config: BaseTrainConfig, task: Task, report: ReportFn | None = None,
               cancel: Any = None, on_epoch: Callable[[dict[str, Any]], None] | None = None,
               ) -> dict[str, Any]:
    """Train ``task`` as ``config`` says (see the module docstring), in this process or, under
    torchrun, as one rank of DistributedDataParallel training (see :func:`_run`).

    Args:
        report: ``report(done, total)`` in batches over the whole run.
        cancel: An object with ``is_set()`` (or a callable) checked between batches; when set,
            the run stops (the epoch under way is dropped) and the files stay as they are.
        on_epoch: Called with each epoch's row after its checkpoints and log.

    Returns:
        The :class:`core.train.common.BaseTrainResult` fields (``best_epoch``... ``module``,
        on the CPU in eval mode); ``task.best_details`` holds the best epoch's details.
    """
    from core.train import distributed

    return distributed.run(config.device, lambda device, ctx: _run(
        config, task, report, cancel, on_epoch, device, ctx))


def _run(config: BaseTrainConfig, task: Task, report: ReportFn | None, cancel: Any,
         on_epoch: Callable[[dict[str, Any]], None] | None, device: torch.device,
         ctx: Any) -> dict[str, Any]:
    """:func:`run_epochs` in this process; ``ctx``: a :class:`core.train.distributed.Context`
    under torchrun (None: a single process).

    Under torchrun the model is wrapped in DDP and each rank trains on its shard of the
    epoch's order with its own random augmentations (an epoch takes one pass over the training
    split by all the ranks together, ``--batch-size`` per rank); the accumulation's micro-steps
    skip DDP's gradient all-reduce, cancel is combined over the ranks, the loss terms are
    averaged over them and the BatchNorm statistics synced at the end of an epoch. Rank 0
    scores the validation split and broadcasts the row and metric (every rank takes the same
    best / early-stopping decision) and alone writes the checkpoints and the log and calls
    ``on_epoch``. Running out of memory stops the run (a batch is halved in one process only).
    """
    from core.train import distributed

    main = ctx is None or ctx.main
    world = 1 if ctx is None else ctx.world
    module = task.module.to(device)
    net = module if ctx is None else ctx.wrap(module)
    use_amp = config.amp and device.type == "cuda"
    optimizer = make_optimizer(config.optimizer, module, config.lr, config.weight_decay,
                               config.momentum)
    scheduler = make_scheduler(config.schedule, optimizer, config.epochs, config.step_size,
                               config.gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    warnings = list(task.warnings)
    batch_size, accumulate = config.batch_size, config.accumulate
    samples = (config.steps_per_epoch or task.passes * math.ceil(
        len(task.train_items) / (batch_size * world))) * batch_size
    start, history, best = 0, [], (-math.inf, 0, None)
    if task.training is not None:
        start, history, best = restore_training(task.training, optimizer, scheduler, scaler)
    warmup = _WarmUp(optimizer, config.warmup if start == 0 else 0)
    paths = {"best": config.out if main and best[1] and config.out.is_file() else None,
             "last": config.last_path if main and history and config.last_path.is_file()
             else None}
    stopped, since_best, done = "completed", epochs_since_best(history, best[1]), 0
    for epoch in range(start, config.epochs):
        began = time.perf_counter()
        if ctx is None:
            rng = np.random.default_rng([config.seed, epoch])
            order = epoch_order(task.train_items, samples, rng)
        else:  # this rank's shard; its own augmentations
            rng = np.random.default_rng([config.seed, epoch, ctx.rank])
            order = distributed.shard_order(task.train_items, samples, epoch, config.seed, ctx)
        batches = MicroBatches(samples, batch_size, accumulate)
        net.train()
        optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        kept: dict[str, float] = {}  # the sums at the last optimiser step
        while batches.more():
            flag = is_cancelled(cancel)
            if flag if ctx is None else ctx.any(flag):
                stopped = "cancelled"
                break
            out_of_memory = False
            try:
                terms = _step(net, task, order[batches.take()], rng, device, use_amp,
                              scaler, optimizer, batches, epoch + 1, config.clip_grad, warmup)
            except torch.OutOfMemoryError:
                if ctx is not None:  # the ranks would part ways
                    raise
                out_of_memory = True
            if out_of_memory:  # outside the except block: its frames (and tensors) are freed
                optimizer.zero_grad(set_to_none=True)
                batches.shrink(device, warnings)
                batch_size, accumulate = batches.batch_size, batches.accumulate
                sums = dict(kept)
                continue
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
            if batches.in_window == 0:
                kept = dict(sums)
            done += 1
            if report is not None:
                per_epoch = math.ceil(samples / batch_size)
                report(done, done + batches.left() + per_epoch * (config.epochs - epoch - 1))
        if stopped == "cancelled":
            break
        lr = optimizer.param_groups[0]["lr"]
        warmup.finish()  # the schedule goes on from the base rate
        step_schedule(scheduler)
        if ctx is not None:  # the sums over the ranks; the same buffers on every rank
            keys = sorted(sums)
            sums = dict(zip(keys, ctx.sum([sums[k] for k in keys]).tolist(), strict=True))
            ctx.sync_buffers(module)
        count = max(1, round(sums.pop("__batches__", 1.0)))
        means = {k: round(v / count, 6) for k, v in sums.items()}
        if ctx is None:
            scored = task.validate(module, device, batch_size)
        else:  # scored once (COCO AP needs every image), the same numbers on every rank
            scored = ctx.broadcast(task.validate(module, device, batch_size) if main else None)
        validation, metric, details = (*scored, None)[:3]
        if metric is None:
            metric = -sums[task.loss_key] / count  # not rounded, as the best metric is kept
        metric = -math.inf if math.isnan(metric) else metric
        row = _row(task.columns, {"epoch": epoch + 1, **means, **validation, "lr": lr,
                                  "seconds": round(time.perf_counter() - began, 3)})
        history.append(row)
        improved = metric > best[0] or best[1] == 0
        if improved:
            best, since_best = (metric, epoch + 1, details), 0
        else:
            since_best += 1
        if main:
            _write_epoch(config, task, module, optimizer, scheduler, scaler, history, best,
                         row, improved, paths)
            if on_epoch is not None:
                on_epoch(row)
        if config.patience and since_best >= config.patience:
            stopped = "early_stopping"
            break
    if ctx is not None:
        distributed.dump(ctx, module, {**paths, "log": config.log if main else None})
    module.to("cpu").eval()
    task.best_details = best[2]
    return {"best_epoch": best[1], "best_metric": None if best[1] == 0 else round6(best[0]),
            "epochs_run": len(history), "stopped": stopped, "best_path": paths["best"],
            "last_path": paths["last"],
            "log_path": config.log if main and config.log is not None and history else None,
            "history": history, "classes": list(task.classes), "warnings": warnings,
            "module": module}


def _write_epoch(config: BaseTrainConfig, task: Task, module: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
                 history: list[dict[str, Any]], best: tuple[float, int, Any],
                 row: dict[str, Any], improved: bool, paths: dict[str, Any]) -> None:
    """An epoch's files: the "last" checkpoint, the "best" one when ``improved``, the log
    (``paths`` gets the checkpoints written)."""
    state = training_state(row["epoch"], optimizer, scheduler, scaler, history, best)
    payload = make_payload(config.model, module, task.classes, task.in_channels, task.mean,
                           task.std, task.model_kwargs,
                           {**task.meta, "epoch": row["epoch"], "metrics": row}, state)
    if improved:
        write_payload(config.out, payload)
        paths["best"] = config.out
    write_payload(config.last_path, payload)
    paths["last"] = config.last_path
    if config.log is not None:
        write_log(config.log, history, task.columns)


class _WarmUp:
    """Scales the learning rates linearly from 1/1000 to 1 over the first ``steps`` optimiser
    steps (the base rates are kept and put back exactly, so the epoch schedule is unchanged)."""

    def __init__(self, optimizer: torch.optim.Optimizer, steps: int) -> None:
        self.optimizer, self.steps, self.done = optimizer, steps, 0
        self.base = [group["lr"] for group in optimizer.param_groups]

    def before_step(self) -> None:
        if self.done < self.steps:
            factor = 0.001 + 0.999 * self.done / self.steps
            for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
                group["lr"] = base * factor
            self.done += 1
        elif self.done == self.steps:
            self.finish()

    def finish(self) -> None:
        if 0 < self.steps and self.done <= self.steps:
            for group, base in zip(self.optimizer.param_groups, self.base, strict=True):
                group["lr"] = base
            self.done = self.steps + 1


def _step(net: nn.Module, task: Task, indices: list[int], rng: np.random.Generator,
          device: torch.device, use_amp: bool, scaler: torch.amp.GradScaler,
          optimizer: torch.optim.Optimizer, batches: MicroBatches,
          epoch: int, clip_grad: float | None = None, warmup: _WarmUp | None = None,
          ) -> dict[str, float]:
    """One batch: forward under autocast, backward (scaled, / accumulate; under DDP the
    gradients are all-reduced on the window's last batch only), and the optimiser step when
    the accumulation window ends (warm-up rate, clipped gradients). Returns the loss and its
    terms. ``net``: the module, or its DDP wrapper."""
    from core.train.distributed import no_sync

    stepping = batches.stepping()
    with no_sync(net, not stepping):
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            loss, terms = task.loss(net, indices, rng, device)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise TrainError(f"The loss is not finite at epoch {epoch} ({terms}); lower the "
                             f"learning rate.")
        scaler.scale(loss / batches.accumulate).backward()
    if stepping:
        if clip_grad is not None:
            scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, clip_grad)
        if warmup is not None:
            warmup.before_step()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        batches.stepped()
    return {task.loss_key: value, **terms, "__batches__": 1.0}


def _row(columns: tuple[str, ...], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` in the order of ``columns`` (missing ones None), then any others."""
    row = {key: values.get(key) for key in columns}
    row.update({k: v for k, v in values.items() if k not in row})
    return row
