"""``segstudio-cli``: inspect files, manage projects, export and import datasets from scripts.

Machine-readable results go to stdout (one JSON object, or JSON lines for lists); warnings,
progress and errors go to stderr. Exit codes: 0 success, 1 a runtime error the user can fix
(missing path, project open elsewhere, disk full, skipped files), 2 a usage error (argparse), 3 a
bug (reported in one line with a hint to report it). No traceback is ever printed.

Usage::

    segstudio-cli info PATH
    segstudio-cli project create DIR [--classes FILE.json]
    segstudio-cli project add DIR PATH... [--no-recursive] [--series UID] [--volume N] [--video]
    segstudio-cli project list DIR
    segstudio-cli export PROJECT --format voc|index|nifti|dicom-seg|frames|coco|yolo|actions --out DIR
                         [--subset NAME] [--copy-originals] [--items done|all]
                         [--video-frames annotated|all] [--polygons] [--from-classes]
    segstudio-cli import PROJECT --format voc|index DIR
    segstudio-cli import PROJECT --format coco DIR|FILE.json [--skip-bad]
    segstudio-cli import PROJECT --format actions FILE.csv|FILE.json|DIR [--skip-bad]
    segstudio-cli import PROJECT --format nifti FILE.nii[.gz] --item NAME
    segstudio-cli models [--task TASK] [--params] [--json]
    segstudio-cli predict --model NAME [--weights FILE|NAME] [--device auto|cpu|cuda|mps]
                          [--tile N --overlap F] INPUT... (--out DIR | --project DIR)
    segstudio-cli flow VIDEO --method farneback|dis|lk|raft [--raft-model small|large] [--frames A:B]
                       [--step K] --out FILE.npz [--viz DIR] [--weights FILE] [--device auto|cpu|cuda|mps]
    segstudio-cli classify VIDEO --model NAME [--weights FILE|NAME] [--device auto|cpu|cuda|mps]
                           [--stride N] [--step N] [--batch-size N] [--top-k K]
                           [--flow-method dis|farneback|raft_small|raft_large] --out FILE.json
    segstudio-cli evaluate PROJECT [--items all|done] [--json]
    segstudio-cli evaluate --model NAME --weights FILE|NAME (--data DIR [--format voc|index] | PROJECT)
                           [--device auto|cpu|cuda|mps] [--json]
    segstudio-cli train (--project DIR [--items done|all] | --data DIR --format voc|index)
                        --model NAME [--weights FILE|NAME] [--epochs N] [--batch-size B] [--lr LR]
                        [--device auto|cpu|cuda|mps] [--patch N] [--loss ce|dice|ce+dice]
                        [--val-fraction F] [--resume FILE] --out CHECKPOINT.pt [--log FILE.csv]
    segstudio-cli install-desktop
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from core.cli_actions import add_action_parsers
from core.cli_models import add_model_parsers
from core.cli_train import add_train_parser, cmd_evaluate_model
from core.cli_video import add_video_parsers, quiet_decoder_logs
from core.errors import SegStudioError

PROG = "segstudio-cli"
# Kept literal so --help stays fast; checked against the registries.
FORMATS = ("voc", "index", "nifti", "dicom-seg", "frames", "coco", "yolo", "actions")  # export
INSTANCE_FORMATS = ("coco", "yolo")  # export instance maps (core.export.INSTANCE_FORMATS)
IMPORT_FORMATS = ("voc", "index", "coco", "actions")  # datasets (core.export.IMPORT_FORMATS)
SEGMENT_FORMATS = ("actions",)  # temporal segments of videos (core.export.SEGMENT_FORMATS)
VOLUME_IMPORT_FORMATS = ("nifti",)  # one label file into one volume item (--item)
REPORT_HINT = "please report this with the command you ran"


class CliError(SegStudioError):
    """A user error found by the CLI itself (a bad classes file, a missing path)."""


# -- output helpers ----------------------------------------------------------------------------
def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, default=str))


def _error_line(message: str) -> None:
    text = " ".join(str(message).split())  # one line, whatever the message holds
    print(f"{PROG}: error: {text}", file=sys.stderr)


class _ProgressBar:
    """A one-line text bar on a terminal's stderr; silent when stderr is not a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = self.stream.isatty()
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        filled = self.width * done // total if total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total}")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def _existing_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise CliError(f"{path} does not exist.")
    return path


def _open_project(text: str, read_only: bool = False):  # returns a Project, imported lazily
    from core.project.store import Project, is_project

    path = _existing_path(text)
    if not is_project(path):
        raise CliError(f"{path} is not a SegStudio project folder.")
    return Project.open(path, read_only=read_only)


# -- info --------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from core.project.store import is_project

    path = _existing_path(args.path)
    if is_project(path):
        with _open_project(args.path, read_only=True) as project:  # works while the GUI has it
            _print_json(project_summary(project))
        return 0
    from core.io.video import describe_video, is_video_path

    if path.is_file() and is_video_path(path):  # frames, fps, size, duration, codec
        _print_json({"path": str(path), **describe_video(path)})
        return 0
    from core.io import describe

    _print_json(describe(path))
    return 0


def project_summary(project: Any) -> dict[str, Any]:
    """Classes, item counts by state and missing sources of an open project."""
    items = project.items()
    return {
        "path": str(project.folder),
        "kind": "project",
        "classes": [c.to_json() for c in project.classes()],
        "items": len(items),
        "states": dict(Counter(item.state for item in items)),
        "with_mask": sum(1 for item in items if has_labels(project, item)),
        "missing": sum(1 for item in items if item.missing),
    }


def has_labels(project: Any, item: Any) -> bool:
    """Whether the item has a mask, or (a video) any annotated frame."""
    if item.kind == "video":
        return bool(project.annotated_frames(item.id))
    return project.has_mask(item.id)


# -- project -----------------------------------------------------------------------------------
def cmd_project_create(args: argparse.Namespace) -> int:
    from core.project.store import Project

    classes = load_classes_file(Path(args.classes)) if args.classes else None
    with Project.create(Path(args.dir).expanduser(), classes) as project:
        _print_json({"project": str(project.folder), "classes": len(project.classes())})
    return 0


def load_classes_file(path: Path) -> list:
    """Classes from a JSON list of {"id", "name", "color"} (or {"classes": [...]}), validated."""
    from core.annotation.classes import LabelClass

    try:
        data = json.loads(_existing_path(str(path)).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CliError(f"Cannot read the classes file {path}: {err}.") from err
    entries = data.get("classes") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise CliError(f"{path} must hold a non-empty list of classes, or {{\"classes\": [...]}}.")
    classes = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or "id" not in entry or "name" not in entry:
            raise CliError(f"{path}: class {number} needs an \"id\" and a \"name\".")
        if not isinstance(entry["id"], int) or not 0 <= entry["id"] <= 65535:
            raise CliError(f"{path}: class {number}: \"id\" must be an integer 0-65535.")
        if not isinstance(entry["name"], str) or not entry["name"].strip():
            raise CliError(f"{path}: class {number}: \"name\" must be a non-empty text.")
        try:
            classes.append(LabelClass.from_json(entry))
        except (TypeError, ValueError) as err:
            raise CliError(f"{path}: class {number}: {err}.") from err
    _check_unique(classes, path)
    return classes


def _check_unique(classes: list, path: Path) -> None:
    for attribute in ("index", "name"):
        values = [getattr(c, attribute) for c in classes]
        repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
        if repeated:
            label = "id" if attribute == "index" else "name"
            raise CliError(f"{path}: the {label} {repeated[0]!r} is used by two classes.")


def cmd_project_add(args: argparse.Namespace) -> int:
    from core.io.dicom import is_dicom_path
    from core.io.nifti import is_nifti_path
    from core.io.video import is_video_path

    volumes = [p for p in args.paths
               if (is_nifti_path(p) and Path(p).is_file()) or is_dicom_path(p)]
    videos = [p for p in args.paths if p not in volumes
              and (is_video_path(p) or (args.video and Path(p).is_dir()))]
    images = [p for p in args.paths if p not in volumes and p not in videos]
    videos += _videos_in_folders(images, recursive=not args.no_recursive)
    video_skipped: list[tuple[str, str]] = []
    with _open_project(args.dir) as project:
        volume_ids = []
        for path in volumes:
            known = {i.id for i in project.items()}
            item = project.add_volume(path, series_uid=args.series, volume_index=args.volume)
            if item.id not in known:
                volume_ids.append(item.id)
        for path in videos:
            known = {i.id for i in project.items()}
            try:
                item = project.add_video(path)
            except SegStudioError as err:  # one bad clip does not stop a batch
                video_skipped.append((str(path), str(err)))
                continue
            if item.id not in known:  # adding a video again returns the existing item
                volume_ids.append(item.id)
        report = project.add_items(images, recursive=not args.no_recursive) if images else None
    if report is None:
        from core.project.items import AddReport

        report = AddReport()
    report.added_ids[:0] = volume_ids
    report.skipped[:0] = video_skipped
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    _print_json({"added": len(report.added_ids), "skipped": len(report.skipped)})
    return 1 if report.skipped else 0


def _videos_in_folders(paths: list[str], recursive: bool) -> list[Path]:
    """The video files inside the folders among ``paths`` (their images are added as images)."""
    from core.io.video import is_video_path

    found: list[Path] = []
    for text in paths:
        folder = Path(text)
        if not folder.is_dir():
            continue
        try:
            entries = folder.glob("**/*" if recursive else "*")
            found.extend(sorted(p for p in entries if is_video_path(p) and p.is_file()
                                and ".segstudio" not in p.parts))
        except OSError:
            continue  # add_items reports the unreadable folder
    return found


def cmd_project_list(args: argparse.Namespace) -> int:
    with _open_project(args.dir, read_only=True) as project:
        for item in project.items():
            _print_json({
                "id": item.id,
                "name": item.name,
                "state": item.state,
                "missing": item.missing,
                "path": str(item.source or item.abs_path),
                "width": item.width,
                "height": item.height,
                "frames": item.frames,
            })
    return 0


# -- export / import -----------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from core.export import export_options, export_project

    options: dict[str, Any] = {}
    if "copy_originals" in export_options(args.format):
        options["copy_originals"] = args.copy_originals
    elif args.copy_originals:
        raise CliError(f"--copy-originals does not apply to the {args.format} format.")
    if args.subset is not None:
        if args.format != "voc":
            raise CliError("--subset applies to the voc format only.")
        options["subset"] = args.subset
    if "video_frames" in export_options(args.format):
        options["video_frames"] = args.video_frames or "annotated"
    elif args.video_frames is not None:
        raise CliError(f"--video-frames applies to the frames format only, not {args.format}.")
    for flag, option in (("--polygons", "polygons"), ("--from-classes", "from_classes")):
        if option in export_options(args.format):
            options[option] = getattr(args, option)
        elif getattr(args, option):
            formats = [f for f in FORMATS if option in export_options(f)]
            raise CliError(f"{flag} applies to the {' and '.join(formats)} format"
                           f"{'s' if len(formats) > 1 else ''} only, not {args.format}.")
    instances = args.format in INSTANCE_FORMATS
    segments = args.format in SEGMENT_FORMATS
    bar = _ProgressBar(f"export {args.format}")
    with _open_project(args.project, read_only=True) as project:  # reads only
        if segments:  # the videos (done, or with segments)
            items = [item for item in project.items() if item.kind == "video" and (
                item.state == "done" or (args.items == "all"
                                         and project.load_segments(item.id)))]
        else:
            items = [item for item in project.items() if item.state == "done"
                     or (args.items == "all" and (has_labels(project, item) or (
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
    _print_json({
        "out": str(result.out_dir),
        "format": args.format,
        "count": result.count,
        "skipped": [{"name": n, "reason": r} for n, r in result.skipped],
    })
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    if args.format in VOLUME_IMPORT_FORMATS:
        return _import_label_volume(args)
    if args.item is not None:
        raise CliError(f"--item applies to the {', '.join(VOLUME_IMPORT_FORMATS)} format only; "
                       f"{args.format} imports a dataset folder.")
    from core.export import import_dataset, import_options
    from core.export.coco import BadEntryError

    options: dict[str, Any] = {}
    if "skip_bad" in import_options(args.format):
        options["skip_bad"] = args.skip_bad
    elif args.skip_bad:
        raise CliError(f"--skip-bad applies to the coco format only (and to actions); "
                       f"{args.format} imports all masks or none.")
    folder = _existing_path(args.dir)
    bar = _ProgressBar(f"import {args.format}")
    with _open_project(args.project) as project:
        try:
            result = import_dataset(project, args.format, folder, report=bar, **options)
        except BadEntryError as err:  # one bad entry of a COCO or actions file
            raise CliError(f"{err} (--skip-bad imports the other entries)") from err
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
    _print_json(summary)
    return 0


def _import_label_volume(args: argparse.Namespace) -> int:
    from core.export.volume_import import import_label_volume

    if args.item is None:
        raise CliError(f"--format {args.format} needs --item NAME: the volume item to import into.")
    path = _existing_path(args.dir)
    if not path.is_file():
        raise CliError(f"{path} is not a file; --format {args.format} imports one label file.")
    with _open_project(args.project) as project:
        matches = [item for item in project.items() if item.name == args.item]
        if not matches:
            raise CliError(f"The project has no item named {args.item!r}.")
        if len(matches) > 1:
            raise CliError(f"{len(matches)} items are named {args.item!r}; rename one first.")
        voxels = import_label_volume(project, matches[0], path)
    _print_json({"file": str(path), "format": args.format, "item": args.item,
                 "labelled_voxels": voxels})
    return 0


# -- evaluate --------------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    """COCO AP of each item's kept model predictions against its current instance map; with
    --model, per-class Dice/IoU of that model on --data (or the project)."""
    if args.model is not None:
        return cmd_evaluate_model(args)
    if args.weights is not None or args.data is not None:
        raise CliError("--weights and --data need --model NAME (the model to score).")
    if args.project is None:
        raise CliError("evaluate needs a PROJECT (instance AP of its kept predictions) or "
                       "--model NAME --weights FILE --data DIR (Dice/IoU of a model).")
    from core.metrics import evaluate_instances

    gt: dict[str, Any] = {}
    predictions: dict[str, list] = {}
    models: dict[str, str] = {}
    skipped: list[tuple[str, str]] = []
    with _open_project(args.project, read_only=True) as project:
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
        raise CliError(f"Nothing to evaluate: no item {which}has kept model predictions.")
    result = evaluate_instances(gt, predictions)
    for name, reason in skipped:
        print(f"warning: {name}: {reason}", file=sys.stderr)
    data = result.to_json()
    for row in data["per_image"]:
        row["model"] = models[row["image"]]
    data["skipped"] = [{"name": n, "reason": r} for n, r in skipped]
    if args.json:
        _print_json(data)
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


def cmd_install_desktop(args: argparse.Namespace) -> int:
    from core.desktop import install_desktop_entry

    for path in install_desktop_entry().values():
        print(path)
    return 0


# -- parser and entry point ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SegStudio from the command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="describe an image, a volume, a video, a folder or "
                                            "a project (JSON)")
    info.add_argument("path", metavar="PATH")
    info.set_defaults(handler=cmd_info)

    _add_project_parser(commands)

    export = commands.add_parser("export", help="export a project as a dataset")
    export.add_argument("project", metavar="PROJECT")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument("--out", required=True, metavar="DIR", help="dataset folder to write")
    export.add_argument("--subset", metavar="NAME", help="voc: image set name (default: default)")
    export.add_argument("--copy-originals", action="store_true",
                        help="copy the original image files instead of converting them "
                             "(frames: also write the video frames as PNG)")
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

    evaluate = commands.add_parser("evaluate", help="COCO mask and box AP of the kept model "
                                                    "predictions against the corrected instances; "
                                                    "with --model: per-class Dice/IoU of a model")
    evaluate.add_argument("project", metavar="PROJECT", nargs="?")
    evaluate.add_argument("--items", choices=("all", "done"), default="all",
                          help="all: every item with kept predictions (default); done: those "
                               "marked done")
    evaluate.add_argument("--json", action="store_true", help="one JSON object instead of a "
                                                               "table")
    evaluate.add_argument("--model", metavar="NAME", help="score this semantic model (with "
                                                          "--weights) instead")
    evaluate.add_argument("--weights", metavar="FILE|NAME", help="with --model: its weights")
    evaluate.add_argument("--data", metavar="DIR", help="with --model: an exported dataset")
    evaluate.add_argument("--format", choices=("voc", "index"), default="voc",
                          help="with --data: the dataset's format (default voc)")
    evaluate.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    evaluate.set_defaults(handler=cmd_evaluate)

    add_train_parser(commands)

    add_model_parsers(commands)
    add_video_parsers(commands)
    add_action_parsers(commands)

    desktop = commands.add_parser("install-desktop", help="add SegStudio to the desktop menu")
    desktop.set_defaults(handler=cmd_install_desktop)
    return parser


def _add_project_parser(commands: argparse._SubParsersAction) -> None:
    project = commands.add_parser("project", help="create, fill and list projects")
    actions = project.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="create a project folder")
    create.add_argument("dir", metavar="DIR")
    create.add_argument("--classes", metavar="FILE.json",
                        help='a JSON list of {"id", "name", "color"}')
    create.set_defaults(handler=cmd_project_create)

    add = actions.add_parser("add", help="add images (folders are searched), volumes "
                                         "(a DICOM folder/file/DICOMDIR, a .nii/.nii.gz) or "
                                         "videos (.mp4 .avi .mov .mkv .webm .m4v)")
    add.add_argument("dir", metavar="DIR")
    add.add_argument("paths", metavar="PATH", nargs="+")
    add.add_argument("--no-recursive", action="store_true", help="do not search sub-folders")
    add.add_argument("--series", metavar="UID",
                     help="DICOM: the SeriesInstanceUID to add when a path holds several")
    add.add_argument("--volume", metavar="N", type=int,
                     help="NIfTI: which volume of a 4D file to add")
    add.add_argument("--video", action="store_true",
                     help="add each folder given as one video whose frames are its images "
                          "(ordered by name) instead of adding the images")
    add.set_defaults(handler=cmd_project_add)

    listing = actions.add_parser("list", help="list the items as JSON lines")
    listing.add_argument("dir", metavar="DIR")
    listing.set_defaults(handler=cmd_project_list)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (see the module docstring)."""
    parser = build_parser()
    quiet_decoder_logs()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2), already printed
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        return args.handler(args)
    except SegStudioError as err:
        _error_line(str(err))
    except BrokenPipeError:
        _silence_broken_pipe()
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        _error_line(f"{where}{err.strerror or err}")
    except KeyboardInterrupt:
        _error_line("interrupted")
        return 130
    except Exception as err:
        _error_line(f"unexpected {type(err).__name__}: {err} ({REPORT_HINT})")
        return 3
    return 1


def _silence_broken_pipe() -> None:
    """After ``segstudio-cli ... | head`` closed stdout, exit without a second error."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    raise SystemExit(main())
