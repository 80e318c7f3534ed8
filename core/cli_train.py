"""The training command of ``segstudio-cli``: ``train`` (a semantic model on a project's
corrected labels or an exported dataset; instance and action models in
:mod:`core.cli_train_tasks`). The model form of ``evaluate`` is :mod:`core.cli_evaluate`'s
(:func:`cmd_evaluate_model` is imported from here too).

Kept apart from :mod:`core.cli`; the shared output helpers are used from there (imported inside
the functions: core.cli imports this module). Torch loads only when a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from core.cli_evaluate import cmd_evaluate_model  # noqa: F401  (core.cli_data imports it)
from core.cli_models import DEVICES

DATA_FORMATS = ("voc", "index", "nifti")  # core.train.data.DATA_FORMATS
TASK_FORMATS = ("coco", "actions")  # instance / action models (core.cli_train_tasks)
LOSSES = ("ce", "dice", "ce+dice")  # core.train.loop.LOSSES


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    from core.cli_train_tasks import add_task_arguments

    train = commands.add_parser(
        "train", help="train a semantic model on a project's labels or an exported dataset")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--project", metavar="DIR",
                        help="a project: its items marked done (see --items)")
    source.add_argument("--data", metavar="DIR", help="an exported dataset folder (--format)")
    train.add_argument("--format", choices=(*DATA_FORMATS, *TASK_FORMATS), default="voc",
                       help="with --data: the dataset's format (default voc; nifti: an nnU-Net "
                            "/ Decathlon folder, imagesTr + labelsTr, cut into axial slices; "
                            "coco: instance models; actions: action models)")
    train.add_argument("--items", choices=("done", "all"), default="done",
                       help="with --project: items marked done (default), or also every item "
                            "with a mask (videos: every labelled frame, propagated ones too)")
    train.add_argument("--model", required=True, metavar="NAME",
                       help="a semantic model (see segstudio-cli models --task semantic)")
    train.add_argument("--weights", metavar="FILE|NAME",
                       help="fine-tune from a checkpoint, state dict or published weights "
                            "(default: random weights for the data's classes)")
    train.add_argument("--base-channels", type=int, metavar="N",
                       help="U-Net variants: width of the first level (smaller: faster)")
    defaults = ("(default: the model's task's; semantic {}, instance {}, action {})").format
    train.add_argument("--epochs", type=int, metavar="N", help=defaults(20, 10, 10))
    train.add_argument("--batch-size", type=int, metavar="B", help=defaults(4, 2, 4))
    train.add_argument("--lr", type=float, metavar="LR", help=defaults("1e-3", "0.005", "1e-4"))
    train.add_argument("--optimizer", choices=("adamw", "sgd"),
                       help=defaults("adamw", "sgd", "adamw"))
    train.add_argument("--schedule", choices=("cosine", "step", "none"), default="cosine")
    train.add_argument("--device", choices=DEVICES, default="auto")
    train.add_argument("--patch", type=int, default=256, metavar="N",
                       help="side of the square training patches")
    train.add_argument("--loss", choices=LOSSES, default="ce+dice")
    train.add_argument("--val-fraction", type=float, default=0.2, metavar="F")
    train.add_argument("--accumulate", type=int, default=1, metavar="N",
                       help="gradient accumulation steps")
    train.add_argument("--patience", type=int, default=0, metavar="N",
                       help="stop after N epochs without a better validation metric (Dice, "
                            "mask AP, top-1; 0: never)")
    train.add_argument("--steps-per-epoch", type=int, metavar="N",
                       help="training steps per epoch (default: one pass over the train split)")
    train.add_argument("--class-weights", action="store_true",
                       help="weight the cross-entropy by inverse class frequency")
    train.add_argument("--no-augment", action="store_true",
                       help="no augmentation (semantic: plain random crops, no flips, "
                            "rotations, rescale, jitter; instance and action: no flips)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", metavar="FILE", help="continue a run from its checkpoint")
    train.add_argument("--out", required=True, metavar="CHECKPOINT.pt",
                       help="best checkpoint (the last one is written beside it as "
                            "NAME.last.pt)")
    train.add_argument("--log", metavar="FILE.csv", help="metrics per epoch")
    train.add_argument("--nproc", type=int, default=1, metavar="N",
                       help="train in N local processes (DistributedDataParallel through "
                            "torchrun; --batch-size is per process)")
    add_task_arguments(train)  # instance / action models (core.cli_train_tasks)
    train.set_defaults(handler=cmd_train)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """--epochs, --batch-size, --lr and --optimizer where given (else the task's defaults)."""
    return {key: getattr(args, key) for key in ("epochs", "batch_size", "lr", "optimizer")
            if getattr(args, key) is not None}


def load_training_data(args: argparse.Namespace, base: Any) -> Any:
    """The TrainDataset named by --project / --data (and --format)."""
    from core.train.data import dataset_from_folder, dataset_from_project

    if getattr(args, "project", None):
        with base._open_project(args.project, read_only=True) as project:
            return dataset_from_project(project, args.items)
    if args.format not in DATA_FORMATS:
        kind = {"coco": "instance", "actions": "action"}.get(args.format, args.format)
        raise base.CliError(f"--format {args.format} is for {kind} models; a semantic model "
                            f"trains on --format {', '.join(DATA_FORMATS[:-1])} or "
                            f"{DATA_FORMATS[-1]}.")
    folder = base._existing_path(args.data)
    return dataset_from_folder(folder, args.format)


def cmd_train(args: argparse.Namespace) -> int:
    from core import cli as base
    from core.cli_train_tasks import train_by_task
    from core.train.loop import TrainConfig, TrainError, train

    handled = train_by_task(args)  # instance and action models
    if handled is not None:
        return handled
    if args.nproc != 1:
        return _launch(args, base)
    quiet = os.environ.get("WORLD_SIZE", "1") != "1" and os.environ.get("RANK", "0") != "0"
    dataset = load_training_data(args, base)
    kwargs = {} if args.base_channels is None else {"base_channels": args.base_channels}
    try:
        config = TrainConfig(
            model=args.model, out=Path(args.out), weights=args.weights, model_kwargs=kwargs,
            **given_options(args), schedule=args.schedule, loss=args.loss,
            device=args.device, accumulate=args.accumulate, patience=args.patience,
            patch=args.patch, augment=not args.no_augment, val_fraction=args.val_fraction,
            seed=args.seed, weighted=args.class_weights, steps_per_epoch=args.steps_per_epoch,
            resume=Path(args.resume) if args.resume else None,
            log=Path(args.log) if args.log else None)
    except TrainError as err:
        raise base.CliError(str(err)) from err
    for name, reason in [] if quiet else dataset.skipped:
        print(f"warning: skipped {name}: {reason}", file=sys.stderr)
    bar = base._ProgressBar(f"train {args.model}")

    def epoch_line(row: dict[str, Any]) -> None:
        bar.close()
        bar._drawn = False
        dice = "-" if row["mean_dice"] is None else f"{row['mean_dice']:.4f}"
        print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, val Dice {dice}, "
              f"{row['seconds']:.1f} s", file=sys.stderr)

    try:
        result = train(config, dataset, report=None if quiet else bar,
                       on_epoch=None if quiet else epoch_line)
    finally:
        bar.close()
    if quiet:  # a torchrun rank other than 0: rank 0 reports
        return 0
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    base._print_json({"model": args.model, **result.to_json()})
    return 0


def _launch(args: argparse.Namespace, base: Any) -> int:
    """``train --nproc N``: the same command in N processes under torch.distributed.run."""
    from core.train.distributed import launch, strip_nproc

    if args.nproc < 1:
        raise base.CliError("--nproc must be >= 1.")
    argv = sys.argv[1:]
    if "train" not in argv:
        raise base.CliError("train --nproc runs from the command line only.")
    code, stdout, error = launch(args.nproc, strip_nproc(argv))
    if code != 0:
        raise base.CliError(error or f"a training process failed (exit code {code}).")
    sys.stdout.write(stdout)
    return 0
