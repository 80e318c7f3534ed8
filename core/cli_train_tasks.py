"""``segstudio-cli train`` for instance models (Mask R-CNN fine-tuning, :mod:`core.train.instances`)
and action models (clip classifiers, :mod:`core.train.actions`).

:func:`core.cli_train.cmd_train` hands the command here when the registry's task of ``--model``
is ``"instance"`` or ``"action"`` (:func:`train_by_task`); semantic models stay there. The
run options they share with semantic training (``--schedule``, ``--patience``, ``--accumulate``,
``--log``, ``--resume``, ``--nproc``: DistributedDataParallel, rank 0 reports) pass through.
Torch loads only when a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

TASKS = ("instance", "action")


def add_task_arguments(train: argparse.ArgumentParser) -> None:
    """The options only instance / action training reads."""
    train.add_argument("--max-side", type=int, metavar="N",
                       help="instance models: scale images down to this longer side")
    train.add_argument("--min-size", type=int, metavar="N",
                       help="instance models: the detector's own resize of the shorter side "
                            "(torchvision's min_size, default 800; max_size follows)")
    train.add_argument("--clip-frames", type=int, metavar="T",
                       help="action models: frames per clip (models that do not fix it)")
    train.add_argument("--clip-stride", type=int, metavar="S",
                       help="action models: frames between a clip's sampled frames (default: "
                            "from the model's frame rate)")
    train.add_argument("--no-eval", action="store_true",
                       help="instance models: skip the validation mask AP")
    train.add_argument("--warmup", type=int, metavar="STEPS",
                       help="instance / action models: raise the learning rate linearly over "
                            "the first STEPS optimiser steps of the first epoch (instance "
                            "default 100, action 0)")
    train.add_argument("--clip-grad", type=float, metavar="NORM",
                       help="instance / action models: clip the gradients' norm (instance "
                            "default 10; 0: no clipping)")


def model_task(name: str) -> str | None:
    """The registry task of ``name`` (None for an unknown name: the semantic path reports it)."""
    from core.models.registry import model_info

    try:
        return model_info(name).task
    except Exception:  # UnknownModelError: left to the semantic path's message
        return None


def train_by_task(args: argparse.Namespace) -> int | None:
    """Run ``train`` for an instance or action ``--model``; None for any other model (the
    semantic path), which may not use ``--format coco``."""
    from core import cli as base

    task = model_task(args.model)
    if task not in TASKS:
        if getattr(args, "format", None) == "coco" and getattr(args, "data", None):
            raise base.CliError("--format coco trains instance models (e.g. "
                                "maskrcnn_resnet50_fpn); semantic models read voc, index or nifti.")
        return None
    if getattr(args, "nproc", 1) not in (None, 1):  # the same command in N processes
        from core.cli_train import _launch

        return _launch(args, base)
    from core.train.loop import TrainError

    try:
        return _instances(args, base) if task == "instance" else _actions(args, base)
    except TrainError as err:
        raise base.CliError(str(err)) from err


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The config options every task reads from the command line."""
    from core.cli_train import given_options

    return {"model": args.model, "out": Path(args.out), "weights": args.weights,
            **given_options(args), "schedule": args.schedule, "device": args.device,
            "accumulate": args.accumulate, "patience": args.patience,
            "val_fraction": args.val_fraction, "seed": args.seed,
            "steps_per_epoch": args.steps_per_epoch,
            "resume": Path(args.resume) if args.resume else None,
            "log": Path(args.log) if args.log else None,
            **({} if args.warmup is None else {"warmup": args.warmup}),
            **({} if args.clip_grad is None else {"clip_grad": args.clip_grad or None})}


def _quiet() -> bool:
    """Whether this process is a torchrun rank other than 0 (rank 0 reports)."""
    return os.environ.get("WORLD_SIZE", "1") != "1" and os.environ.get("RANK", "0") != "0"


def _progress(base: Any, title: str, columns: tuple[str, ...]) -> tuple[Any, Any]:
    """The progress bar and the epoch line (None for both on a quiet rank)."""
    if _quiet():
        return None, None
    bar = base._ProgressBar(title)

    def epoch_line(row: dict[str, Any]) -> None:
        bar.close()
        bar._drawn = False
        parts = [f"{key} {row[key]:.4f}" for key in columns if row.get(key) is not None]
        print(f"epoch {row['epoch']}: {', '.join(parts)}, {row['seconds']:.1f} s",
              file=sys.stderr)

    return bar, epoch_line


def _report(base: Any, model: str, result: Any, skipped: list[tuple[str, str]]) -> int:
    if _quiet():
        return 0
    for name, reason in skipped:
        print(f"warning: skipped {name}: {reason}", file=sys.stderr)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    base._print_json({"model": model, **result.to_json(),
                      "skipped": [{"name": n, "reason": r} for n, r in skipped]})
    return 0


def _instances(args: argparse.Namespace, base: Any) -> int:
    from core.train.instances import (
        InstanceTrainConfig,
        instance_dataset_from_coco,
        instance_dataset_from_project,
        train_instances,
    )

    if args.project:
        with base._open_project(args.project, read_only=True) as project:
            dataset = instance_dataset_from_project(project, args.items, args.max_side)
    elif args.format == "coco":
        dataset = instance_dataset_from_coco(base._existing_path(args.data), args.max_side)
    else:
        raise base.CliError(f"{args.model} trains on a project's instances or --format coco, "
                            f"not {args.format}.")
    kwargs: dict[str, Any] = {}
    if args.min_size:
        kwargs = {"min_size": args.min_size, "max_size": max(args.min_size, 1333 *
                                                             args.min_size // 800)}
    config = InstanceTrainConfig(**_run_options(args), model_kwargs=kwargs,
                                 evaluate=not args.no_eval, augment=not args.no_augment)
    return _train(base, args.model, train_instances, config, dataset,
                  ("loss", "loss_mask", "mask_ap", "box_ap"))


def _actions(args: argparse.Namespace, base: Any) -> int:
    from core.train.actions import ActionTrainConfig, action_dataset_from_project, train_actions

    from_folder = bool(args.data) and args.format == "actions"
    if not args.project and not from_folder:
        raise base.CliError(f"{args.model} trains on a project's labelled video segments "
                            f"(--project DIR) or an action dataset (--data DIR --format "
                            f"actions), not {args.format}.")
    config = ActionTrainConfig(**_run_options(args), frames=args.clip_frames,
                               stride=args.clip_stride, augment=not args.no_augment)
    if from_folder:
        from core.train.action_data import action_dataset_from_folder

        dataset = action_dataset_from_folder(base._existing_path(args.data), config.spec(),
                                             config.stride)
    else:
        with base._open_project(args.project, read_only=True) as project:
            dataset = action_dataset_from_project(project, config.spec(), config.stride)
    return _train(base, args.model, train_actions, config, dataset,
                  ("train_loss", "val_loss", "top1", "top5"))


def _train(base: Any, model: str, run: Any, config: Any, dataset: Any,
           columns: tuple[str, ...]) -> int:
    """``run(config, dataset)`` with a progress bar and a line per epoch (``columns``), then
    the summary."""
    bar, epoch_line = _progress(base, f"train {model}", columns)
    try:
        result = run(config, dataset, report=bar, on_epoch=epoch_line)
    finally:
        if bar is not None:
            bar.close()
    return _report(base, model, result, dataset.skipped)
