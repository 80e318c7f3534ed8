"""The dataset commands of ``segstudio-cli``: ``export`` (a project as a dataset), ``import``
(a dataset's masks, a label volume or action segments into a project) and ``evaluate`` (COCO AP
of kept predictions, or with --model the scores of a model: :mod:`core.cli_evaluate`).

Kept apart from :mod:`core.cli` so that file stays about files and projects; the shared output
helpers are used from there (imported inside the functions: core.cli imports this module).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from core.cli_train import cmd_evaluate_model

# Kept literal so --help stays fast; checked against the registries.
FORMATS = ("voc", "index", "nifti", "dicom-seg", "frames", "coco", "yolo", "actions")  # export
INSTANCE_FORMATS = ("coco", "yolo")  # export instance maps (core.export.INSTANCE_FORMATS)
IMPORT_FORMATS = ("voc", "index", "coco", "actions")  # datasets (core.export.IMPORT_FORMATS)
SEGMENT_FORMATS = ("actions",)  # temporal segments of videos (core.export.SEGMENT_FORMATS)
VOLUME_IMPORT_FORMATS = ("nifti",)  # one label file into one volume item (--item)


def add_data_parsers(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export a project as a dataset")
    export.add_argument("project", metavar="PROJECT")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write")
    export.add_argument("--subset", metavar="NAME", help="voc: image set name (default: default)")
    export.add_argument("--copy-originals", action="store_true",
                        help="copy the original image files instead of converting them "
                             "(frames: also write the video frames as PNG; nifti: also write "
                             "the volumes, nnU-Net layout imagesTr + labelsTr)")
    export.add_argument("--items", choices=("done", "all"), default="all",
                        help="done: items marked done; all: those and every item with a mask "
                             "or an annotated video frame (default); actions: the videos "
                             "marked done, or also those with segments")
    export.add_argument("--video-frames", choices=("annotated", "all"),
                        help="frames: write the annotated frames of each video (default), or "
                             "all of them (frames without labels as zeros)")
    export.add_argument("--polygons", action="store_true",
                        help="coco: segmentations as polygons instead of RLE (holes are filled)")
    export.add_argument("--from-classes", action="store_true",
                        help="coco, yolo: split the class map of items without an instance map "
                             "into instances (connected components)")
    export.set_defaults(handler=cmd_export)

    imp = commands.add_parser("import", help="import a dataset's masks (or a video's action "
                                             "segments) into a project")
    imp.add_argument("project", metavar="PROJECT")
    imp.add_argument("--format", required=True, choices=IMPORT_FORMATS + VOLUME_IMPORT_FORMATS)
    imp.add_argument("dir", metavar="DIR",
                     help="dataset folder (voc, index), COCO folder or annotation .json (coco), "
                          "label file (nifti: .nii/.nii.gz), or actions .csv / ActivityNet "
                          ".json (actions)")
    imp.add_argument("--item", metavar="NAME",
                     help="nifti: the volume item (its name) the labels belong to")
    imp.add_argument("--skip-bad", action="store_true",
                     help="coco, actions: import the good entries and list the bad ones "
                          "(default: a bad entry imports nothing)")
    imp.set_defaults(handler=cmd_import)

    from core.cli_evaluate import add_model_arguments

    evaluate = commands.add_parser("evaluate", help="COCO mask and box AP of the kept model "
                                                    "predictions against the corrected instances; "
                                                    "with --model: the scores of a model (by its "
                                                    "task)")
    evaluate.add_argument("project", metavar="PROJECT", nargs="?")
    evaluate.add_argument("--items", choices=("all", "done"), default="all",
                          help="all: every item with kept predictions (with --model: with "
                               "labels) (default); done: those marked done")
    evaluate.add_argument("--json", action="store_true", help="one JSON object instead of a "
                                                               "table")
    add_model_arguments(evaluate)  # --model, --weights, --data, --format, task options
    evaluate.set_defaults(handler=cmd_evaluate)


# -- export / import -----------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from core import cli as base
    from core.export import export_options, export_project

    options: dict[str, Any] = {}
    if "copy_originals" in export_options(args.format):
        options["copy_originals"] = args.copy_originals
    elif args.copy_originals:
        raise base.CliError(f"--copy-originals does not apply to the {args.format} format.")
    if args.subset is not None:
        if args.format != "voc":
            raise base.CliError("--subset applies to the voc format only.")
        options["subset"] = args.subset
    if "video_frames" in export_options(args.format):
        options["video_frames"] = args.video_frames or "annotated"
    elif args.video_frames is not None:
        raise base.CliError(f"--video-frames applies to the frames format only, not {args.format}.")
    for flag, option in (("--polygons", "polygons"), ("--from-classes", "from_classes")):
        if option in export_options(args.format):
            options[option] = getattr(args, option)
        elif getattr(args, option):
            formats = [f for f in FORMATS if option in export_options(f)]
            raise base.CliError(f"{flag} applies to the {' and '.join(formats)} format"
                           f"{'s' if len(formats) > 1 else ''} only, not {args.format}.")
    instances = args.format in INSTANCE_FORMATS
    segments = args.format in SEGMENT_FORMATS
    bar = base._ProgressBar(f"export {args.format}")
    with base._open_project(args.project, read_only=True) as project:  # reads only
        if segments:  # the videos (done, or with segments)
            items = [item for item in project.items() if item.kind == "video" and (
                item.state == "done" or (args.items == "all"
                                         and project.load_segments(item.id)))]
        else:
            items = [item for item in project.items() if item.state == "done"
                     or (args.items == "all" and (base.has_labels(project, item) or (
                         instances and project.has_instances(item.id))))]
        try:
            result = export_project(project, args.format, Path(args.out).expanduser(),
                                    items=items, report=bar, **options)
        finally:
            bar.close()
    if result.count == 0 and result.skipped:
        print("warning: nothing exported: every item was skipped (reasons below)",
              file=sys.stderr)
    elif result.count == 0:
        what = "no video has action segments" if segments else "no item has a mask or is marked done"
        print(f"warning: nothing to export: {what}", file=sys.stderr)
    for name, reason in result.skipped:
        print(f"warning: {name}: {reason}", file=sys.stderr)
    base._print_json({
        "out": str(result.out_dir),
        "format": args.format,
        "count": result.count,
        "skipped": [{"name": n, "reason": r} for n, r in result.skipped],
    })
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from core import cli as base

    if args.format in VOLUME_IMPORT_FORMATS:
        return _import_label_volume(args)
    if args.item is not None:
        raise base.CliError(f"--item applies to the {', '.join(VOLUME_IMPORT_FORMATS)} format only; "
                       f"{args.format} imports a dataset folder.")
    from core.export import import_dataset, import_options
    from core.export.coco import BadEntryError

    options: dict[str, Any] = {}
    if "skip_bad" in import_options(args.format):
        options["skip_bad"] = args.skip_bad
    elif args.skip_bad:
        raise base.CliError(f"--skip-bad applies to the coco format only (and to actions); "
                       f"{args.format} imports all masks or none.")
    folder = base._existing_path(args.dir)
    bar = base._ProgressBar(f"import {args.format}")
    with base._open_project(args.project) as project:
        try:
            result = import_dataset(project, args.format, folder, report=bar, **options)
        except BadEntryError as err:  # one bad entry of a COCO or actions file
            raise base.CliError(f"{err} (--skip-bad imports the other entries)") from err
        finally:
            bar.close()
    for name, reason in result.skipped:
        print(f"warning: {name}: {reason}", file=sys.stderr)
    notes = list(getattr(result, "notes", []))  # the actions import's remarks
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    summary = {
        "folder": str(result.folder),
        "format": args.format,
        "imported": result.imported,
        "added_items": result.added_items,
        "new_classes": result.new_classes,
        "skipped": [{"name": n, "reason": r} for n, r in result.skipped],
    }
    if args.format in SEGMENT_FORMATS:
        summary.update(segments=getattr(result, "segments", 0), notes=notes)
    base._print_json(summary)
    return 0


def _import_label_volume(args: argparse.Namespace) -> int:
    from core import cli as base
    from core.export.volume_import import import_label_volume

    if args.item is None:
        raise base.CliError(f"--format {args.format} needs --item NAME: the volume item to import into.")
    path = base._existing_path(args.dir)
    if not path.is_file():
        raise base.CliError(f"{path} is not a file; --format {args.format} imports one label file.")
    with base._open_project(args.project) as project:
        matches = [item for item in project.items() if item.name == args.item]
        if not matches:
            raise base.CliError(f"The project has no item named {args.item!r}.")
        if len(matches) > 1:
            raise base.CliError(f"{len(matches)} items are named {args.item!r}; rename one first.")
        voxels = import_label_volume(project, matches[0], path)
    base._print_json({"file": str(path), "format": args.format, "item": args.item,
                 "labelled_voxels": voxels})
    return 0


# -- evaluate --------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    """COCO AP of each item's kept model predictions against its current instance map; with
    --model, the scores of that model on --data (or the project): core.cli_evaluate."""
    from core import cli as base

    if args.model is not None:
        return cmd_evaluate_model(args)
    if args.weights is not None or args.data is not None:
        raise base.CliError("--weights and --data need --model NAME (the model to score).")
    if args.project is None:
        raise base.CliError("evaluate needs a PROJECT (instance AP of its kept predictions) or "
                       "--model NAME --weights FILE --data DIR (the scores of a model).")
    from core.metrics import evaluate_instances

    gt: dict[str, Any] = {}
    predictions: dict[str, list] = {}
    models: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []
    with base._open_project(args.project, read_only=True) as project:
        for item in project.items():
            if args.items == "done" and item.state != "done":
                continue
            kept = project.load_predictions(item.id)
            if kept is None:
                continue
            if item.kind != "image" or item.frames > 1:
                skipped.append((item.name, "instances are per 2-D image"))
                continue
            models[item.name], predictions[item.name] = kept
            gt[item.name] = (project.load_mask(item, layer="instances"),
                             project.instances(item.id))
    if not gt:
        which = "marked done " if args.items == "done" else ""
        raise base.CliError(f"Nothing to evaluate: no item {which}has kept model predictions.")
    result = evaluate_instances(gt, predictions)
    for name, reason in skipped:
        print(f"warning: {name}: {reason}", file=sys.stderr)
    data = result.to_json()
    for row in data["per_image"]:
        row["model"] = models[row["image"]]
    data["skipped"] = [{"name": n, "reason": r} for n, r in skipped]
    if args.json:
        base._print_json(data)
    else:
        _print_evaluation_table(data)
    return 0


def _print_evaluation_table(data: dict[str, Any]) -> None:
    def ap(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = [(row["image"], str(row["ground_truth"]), str(row["predictions"]),
             *(ap(row[kind][key]) for kind in ("mask", "box") for key in ("ap", "ap50", "ap75")))
            for row in data["per_image"]]
    rows.append(("(all)", str(data["ground_truth"]), str(data["predictions"]),
                 *(ap(data[kind][key]) for kind in ("mask", "box") for key in ("ap", "ap50",
                                                                               "ap75"))))
    header = ("item", "gt", "pred", "mask AP", "AP50", "AP75", "box AP", "AP50", "AP75")
    widths = [max(len(header[c]), *(len(r[c]) for r in rows)) for c in range(len(header))]
    for row in (header, *rows):
        cells = [row[0].ljust(widths[0])] + [v.rjust(w) for v, w in zip(row[1:], widths[1:],
                                                                        strict=True)]
        print("  ".join(cells))
