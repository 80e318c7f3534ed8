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
from core.cli_data import (  # noqa: F401 (re-exported: core.cli.FORMATS, ...)
    FORMATS,
    IMPORT_FORMATS,
    INSTANCE_FORMATS,
    SEGMENT_FORMATS,
    VOLUME_IMPORT_FORMATS,
    add_data_parsers,
    cmd_evaluate,
    cmd_export,
    cmd_import,
)
from core.cli_models import add_model_parsers
from core.cli_train import add_train_parser
from core.cli_video import add_video_parsers, quiet_decoder_logs
from core.errors import SegStudioError

PROG = "segstudio-cli"
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

    add_data_parsers(commands)

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
