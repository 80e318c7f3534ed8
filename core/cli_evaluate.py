"""The model form of ``segstudio-cli evaluate``: ``--model NAME --weights FILE|NAME`` scored on
an exported dataset (``--data DIR --format``) or on a PROJECT, as the registry's task of the model
says (``core.models.registry.model_info(name).task``):

* semantic models: per-class Dice/IoU (:func:`core.train.loop.evaluate_model`) on ``voc``,
  ``index`` or ``nifti`` folders (nnU-Net layout, cut into axial slices), or on a project's
  labels;
* instance models: COCO mask and box AP, AP50, AP75
  (:func:`core.train.instances.evaluate_instance_model`) on a ``coco`` folder, or on a
  project's instance maps; ``--max-side`` scales the images down first;
* action models: top-1 / top-5 accuracy (:func:`core.train.actions.topk_accuracy`) and the mean
  cross-entropy over the clips of an ``actions`` folder, or of a project's labelled video
  segments, cut and prepared as training cuts them (the model's clip spec, ``--clip-frames``
  defaulting to the frames the checkpoint was trained on, the weights' mean and std).

The classes of the data are matched to the model's by name (a dataset's own order, such as a
reordered ``classes.txt``, scores the same); when some names differ but the counts agree they
are matched by index, with a warning. A table by default, one JSON object with ``--json``.

Kept apart from :mod:`core.cli_train`; the shared output helpers are used from :mod:`core.cli`
(imported inside the functions: core.cli imports this module). Torch loads only when a command
runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from core.cli_models import DEVICES

SEMANTIC_FORMATS = ("voc", "index", "nifti")  # core.cli_train.DATA_FORMATS
TASK_FORMATS = {"semantic": SEMANTIC_FORMATS, "instance": ("coco",), "action": ("actions",)}
EVALUATE_FORMATS = tuple(f for formats in TASK_FORMATS.values() for f in formats)
SCORE_THRESHOLD = 0.05  # instance models: detections kept for the AP (as training validates)
CLIP_BATCH = 8  # action models: clips per forward pass
# options that only one task reads: attribute -> (option, task)
TASK_OPTIONS = {"max_side": ("--max-side", "instance"),
                "score_threshold": ("--score-threshold", "instance"),
                "clip_frames": ("--clip-frames", "action"),
                "clip_stride": ("--clip-stride", "action"),
                "batch_size": ("--batch-size", "action")}


def add_model_arguments(evaluate: argparse.ArgumentParser) -> None:
    """The options of ``evaluate --model`` (the model, its data and the task options)."""
    evaluate.add_argument("--model", metavar="NAME",
                          help="score this model (with --weights) instead: semantic models "
                               "per-class Dice/IoU, instance models COCO mask and box AP, "
                               "action models top-1 / top-5 accuracy")
    evaluate.add_argument("--weights", metavar="FILE|NAME", help="with --model: its weights")
    evaluate.add_argument("--data", metavar="DIR",
                          help="with --model: an exported dataset (else the PROJECT's labels)")
    evaluate.add_argument("--format", choices=EVALUATE_FORMATS,
                          help="with --data: the dataset's format (default: voc for semantic "
                               "models, coco for instance models, actions for action models; "
                               "nifti: an nnU-Net / Decathlon folder, imagesTr + labelsTr)")
    evaluate.add_argument("--max-side", type=int, metavar="N",
                          help="instance models: scale images down to this longer side")
    evaluate.add_argument("--score-threshold", type=float, metavar="S",
                          help=f"instance models: the detections kept (default "
                               f"{SCORE_THRESHOLD})")
    evaluate.add_argument("--clip-frames", type=int, metavar="T",
                          help="action models: frames per clip (default: the checkpoint's, "
                               "else the model's)")
    evaluate.add_argument("--clip-stride", type=int, metavar="S",
                          help="action models: frames between a clip's sampled frames "
                               "(default: from the model's frame rate)")
    evaluate.add_argument("--batch-size", type=int, metavar="N",
                          help=f"action models: clips per forward pass (default {CLIP_BATCH})")
    evaluate.add_argument("--device", choices=DEVICES, default="auto")


def cmd_evaluate_model(args: argparse.Namespace) -> int:
    """Score ``--model --weights`` on ``--data`` (or the PROJECT) by the model's task."""
    from core import cli as base
    from core.models.registry import model_info

    if not args.weights:
        raise base.CliError("evaluate --model needs --weights FILE|NAME (the model to score).")
    if args.data is None and args.project is None:
        raise base.CliError("evaluate --model needs --data DIR (or a PROJECT) to score on.")
    if args.data is not None and args.project is not None:
        raise base.CliError("evaluate --model scores --data DIR or a PROJECT, not both.")
    task = model_info(args.model).task
    if task not in TASK_FORMATS:
        raise base.CliError(f"{args.model} is {_a(task)} model; evaluate scores semantic, "
                            "instance and action models.")
    data_format = _data_format(args, task, base)
    _check_options(args, task, base)
    if task == "instance":
        data = _evaluate_instances(args, base)
        printer: Callable[[dict[str, Any]], None] = _print_instance_scores
    elif task == "action":
        data = _evaluate_actions(args, base)
        printer = _print_action_scores
    else:
        data = _evaluate_semantic(args, base, data_format)
        printer = _print_scores
    if args.json:
        base._print_json(data)
    else:
        printer(data)
    return 0


def _data_format(args: argparse.Namespace, task: str, base: Any) -> str | None:
    """The ``--format`` of ``--data`` (the task's first by default); CliError when it does not
    fit the model's task, naming the formats that do."""
    formats = TASK_FORMATS[task]
    if args.format is None:
        return formats[0] if args.data is not None else None
    if args.data is None:
        raise base.CliError(f"--format {args.format} goes with --data DIR; a PROJECT is read as "
                            "it is.")
    if args.format not in formats:
        other = next(t for t, names in TASK_FORMATS.items() if args.format in names)
        fits = formats[0] if len(formats) == 1 else (f"{', '.join(formats[:-1])} or "
                                                     f"{formats[-1]}")
        raise base.CliError(f"--format {args.format} is for {other} models; {args.model} is "
                            f"{_a(task)} model: score it on --format {fits}.")
    return args.format


def _a(task: str) -> str:
    """``task`` with its article: "a semantic", "an action"."""
    return f"{'an' if task[0] in 'aeiou' else 'a'} {task}"


def _check_options(args: argparse.Namespace, task: str, base: Any) -> None:
    """Task options only where the model's task reads them, and in range."""
    for attribute, (option, wanted) in TASK_OPTIONS.items():
        value = getattr(args, attribute, None)
        if value is None:
            continue
        if wanted != task:
            raise base.CliError(f"{option} applies to {wanted} models; {args.model} is "
                                f"{_a(task)} model.")
        if attribute == "score_threshold" and not 0 <= value <= 1:
            raise base.CliError(f"--score-threshold must be in [0, 1]; got {value}.")
        if attribute != "score_threshold" and value < 1:
            raise base.CliError(f"{option} must be at least 1; got {value}.")
    if task == "action" and args.project is not None and args.items != "all":
        raise base.CliError("--items applies to semantic and instance models; an action model "
                            "scores every labelled segment of the project.")


def _warn_skipped(skipped: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    for name, reason in skipped:
        print(f"warning: skipped {name}: {reason}", file=sys.stderr)
    return [{"name": n, "reason": r} for n, r in skipped]


def class_mapping(model_classes: Sequence[str], data_classes: Sequence[str],
                  used: set[int], what: str) -> list[int] | None:
    """The model's class index of each data class index (None: they are the same). Matched by
    name when every used class of the data is one of the model's; else by index when the counts
    agree (a warning); SegStudioError otherwise."""
    from core.errors import SegStudioError

    names = list(model_classes)
    if list(data_classes) == names:
        return None
    wanted = [data_classes[i] for i in sorted(used)]
    if all(name in names for name in wanted):
        mapping = [names.index(n) if n in names else i for i, n in enumerate(data_classes)]
        return None if mapping == list(range(len(data_classes))) else mapping
    if len(names) == len(data_classes):
        print(f"warning: the weights' classes ({', '.join(names)}) are not the data's "
              f"{what} ({', '.join(data_classes)}); they are matched by index", file=sys.stderr)
        return None
    missing = [n for n in wanted if n not in names]
    raise SegStudioError(f"The weights have {len(names)} classes and the data's {what} "
                         f"{', '.join(missing)} are not among them; score weights trained on "
                         "these classes.")


# -- semantic models -------------------------------------------------------------------------------
def _evaluate_semantic(args: argparse.Namespace, base: Any, data_format: str | None
                       ) -> dict[str, Any]:
    """Per-class Dice/IoU (core.train.loop.evaluate_model)."""
    from core.cli_train import load_training_data
    from core.models.loading import load_model
    from core.train.loop import evaluate_model

    if args.data is not None:
        dataset = load_training_data(
            argparse.Namespace(project=None, data=args.data, format=data_format), base)
    else:
        dataset = load_training_data(
            argparse.Namespace(project=args.project, items=args.items), base)
    skipped = _warn_skipped(dataset.skipped)
    loaded = load_model(args.model, weights=args.weights)
    bar = base._ProgressBar(f"evaluate {args.model}")
    try:
        scores = evaluate_model(loaded, dataset, device=args.device, report=bar)
    finally:
        bar.close()
    return {"model": args.model, "weights": loaded.label, "samples": len(dataset),
            **scores.to_json(), "skipped": skipped}


# -- instance models -------------------------------------------------------------------------------
def _evaluate_instances(args: argparse.Namespace, base: Any) -> dict[str, Any]:
    """COCO mask and box AP (core.train.instances.evaluate_instance_model)."""
    from core.models.loading import load_model
    from core.train.instances import (
        evaluate_instance_model,
        instance_dataset_from_coco,
        instance_dataset_from_project,
    )

    if args.data is not None:
        dataset = instance_dataset_from_coco(base._existing_path(args.data), args.max_side)
        where = str(args.data)
    else:
        with base._open_project(args.project, read_only=True) as project:
            dataset = instance_dataset_from_project(project, args.items, args.max_side)
        where = str(args.project)
    skipped = _warn_skipped(dataset.skipped)
    if not dataset.samples:
        raise base.CliError(f"Nothing to evaluate: no image with instances in {where}.")
    loaded = load_model(args.model, weights=args.weights)
    samples = _matched_instances(loaded, dataset)
    threshold = SCORE_THRESHOLD if args.score_threshold is None else args.score_threshold
    bar = base._ProgressBar(f"evaluate {args.model}")
    bar(0, len(samples))
    try:
        result = evaluate_instance_model(loaded, samples, threshold, args.device, report=bar)
    finally:
        bar.close()
    return {"model": args.model, "weights": loaded.label, "samples": len(samples),
            "instances": sum(_instance_count(s) for s in samples), "score_threshold": threshold,
            "mask": result.mask.to_json(), "box": result.box.to_json(), "skipped": skipped}


def _matched_instances(loaded: Any, dataset: Any) -> list[Any]:
    """The samples with their instances' classes as the model's class indices."""
    from dataclasses import replace

    used = {row.class_index for s in dataset.samples for row in s.table.values()}
    mapping = class_mapping(loaded.classes, dataset.class_names, used - {0}, "classes")
    if mapping is None:
        return list(dataset.samples)
    return [replace(s, table={k: replace(row, class_index=mapping[row.class_index])
                              for k, row in s.table.items()})
            for s in dataset.samples]


def _instance_count(sample: Any) -> int:
    """Ground-truth instances of a sample as the COCO evaluation counts them (a row, a class
    other than 0, pixels)."""
    from core.export.coco import iter_instance_masks

    classes = {row.class_index for row in sample.table.values() if row.class_index != 0}
    return sum(1 for _ in iter_instance_masks(sample.instance_map, sample.table, classes))


# -- action models ---------------------------------------------------------------------------------
def _evaluate_actions(args: argparse.Namespace, base: Any) -> dict[str, Any]:
    """Top-1 / top-5 accuracy and the mean cross-entropy over the clips of the data."""
    import torch

    from core.models.loading import load_model
    from core.train.action_data import (
        action_dataset_from_folder,
        action_dataset_from_project,
        model_clip_spec,
    )

    loaded = load_model(args.model, weights=args.weights)
    frames = args.clip_frames or loaded.meta.get("clip_frames")
    spec = model_clip_spec(args.model, int(frames) if frames else None, **loaded.model_kwargs)
    if args.data is not None:
        dataset = action_dataset_from_folder(base._existing_path(args.data), spec,
                                             args.clip_stride)
    else:
        with base._open_project(args.project, read_only=True) as project:
            dataset = action_dataset_from_project(project, spec, args.clip_stride)
    skipped = _warn_skipped(dataset.skipped)
    if not dataset.clips:
        raise base.CliError(f"Nothing to evaluate: no labelled video segment in {args.project}.")
    mapping = class_mapping(loaded.classes, dataset.labels, {c.label for c in dataset.clips},
                            "action labels")
    bar = base._ProgressBar(f"evaluate {args.model}")
    try:
        scores, labels = clip_logits(loaded, spec, dataset.clips, args.batch_size or CLIP_BATCH,
                                     args.device, report=bar)
    finally:
        bar.close()
    target = labels if mapping is None else torch.tensor(mapping)[labels]
    overall = clip_scores(scores, target)
    per_class = [{"label": name, **clip_scores(scores[labels == i], target[labels == i])}
                 for i, name in enumerate(dataset.labels) if bool((labels == i).any())]
    return {"model": args.model, "weights": loaded.label, "samples": len(dataset.clips),
            "segments": dataset.groups, "clip_frames": spec.frames, "stride": args.clip_stride,
            **overall, "per_class": per_class, "skipped": skipped}


def clip_logits(loaded: Any, spec: Any, clips: Sequence[Any], batch_size: int, device: str,
                report: Callable[[int, int], None] | None = None) -> tuple[Any, Any]:
    """(logits (N, C), data label indices (N,)) of ``clips``, prepared by ``ClipLoader`` with
    the weights' mean and std (two-stream batches are tuples: ``module(*x)``)."""
    import torch

    from core.inference.device import select_device
    from core.train.action_data import ClipLoader
    from core.train.runner import forward, to_device

    where = select_device(device)
    module = loaded.module.to(where).eval()
    loader = ClipLoader(spec, loaded.mean, loaded.std)
    logits, labels = [], []
    try:
        with torch.no_grad():
            for start in range(0, len(clips), batch_size):
                x, y = loader.batch(clips[start:start + batch_size])
                logits.append(forward(module, to_device(x, where)).float().cpu())
                labels.append(y)
                if report is not None:
                    report(min(start + batch_size, len(clips)), len(clips))
    finally:
        loader.close()
    return torch.cat(logits), torch.cat(labels)


def clip_scores(logits: Any, target: Any) -> dict[str, Any]:
    """Clips, top-1 / top-5 accuracy and mean cross-entropy of ``logits`` against ``target``
    (the model's class indices)."""
    import torch.nn.functional as F  # noqa: N812

    from core.train.actions import topk_accuracy

    accuracy = topk_accuracy(logits, target, (1, 5))
    return {"clips": len(target), "top1": round(accuracy[1], 6), "top5": round(accuracy[5], 6),
            "loss": round(float(F.cross_entropy(logits, target)), 6)}


# -- tables ----------------------------------------------------------------------------------------
def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """The first column left-aligned, the others right-aligned."""
    widths = [max(len(header[c]), *(len(r[c]) for r in rows)) for c in range(len(header))]
    for row in (header, *rows):
        print("  ".join([row[0].ljust(widths[0])]
                        + [v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)]))


def _print_scores(data: dict[str, Any]) -> None:
    """Semantic models: Dice, IoU and pixels of each class, then the means."""
    rows = [(row["class"], _fmt(row["dice"]), _fmt(row["iou"]), str(row["pixels"]))
            for row in data["per_class"]]
    rows.append(("(mean)", _fmt(data["mean_dice"]), _fmt(data["mean_iou"]), ""))
    _print_table(("class", "Dice", "IoU", "pixels"), rows)


def _print_instance_scores(data: dict[str, Any]) -> None:
    """Instance models: mask and box AP, AP50, AP75."""
    rows = [(kind, *(_fmt(data[kind][key]) for key in ("ap", "ap50", "ap75")))
            for kind in ("mask", "box")]
    _print_table(("scores", "AP", "AP50", "AP75"), rows)
    images = "image" if data["samples"] == 1 else "images"
    print(f"{data['samples']} {images}, {data['instances']} instances, score threshold "
          f"{data['score_threshold']}")


def _print_action_scores(data: dict[str, Any]) -> None:
    """Action models: clips, top-1, top-5 and loss of each label, then of all clips."""
    rows = [(row["label"], str(row["clips"]), _fmt(row["top1"]), _fmt(row["top5"]),
             _fmt(row["loss"])) for row in data["per_class"]]
    rows.append(("(all)", str(data["clips"]), _fmt(data["top1"]), _fmt(data["top5"]),
                 _fmt(data["loss"])))
    _print_table(("label", "clips", "top-1", "top-5", "loss"), rows)
