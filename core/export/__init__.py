"""Export a project as a dataset and import datasets into a project.

Formats register by name: :data:`EXPORT_FORMATS` maps a name to a function
``(project, items, stage, progress, **options) -> (count, skipped)`` that writes into a
:class:`~core.fsutil.StagedDir`, and :data:`IMPORT_FORMATS` maps a name to a function
``(project, path, report, **options) -> ImportResult`` (the class-mask formats describe their
folder as a :class:`~core.export.importing.Dataset` for the shared importer; COCO imports
instances itself, "actions" imports temporal segments). :func:`export_project` and :func:`import_dataset` do the rest: item selection,
progress, cancel, all-or-nothing writing.

Example::

    with Project.open("my_project") as project:
        result = export_project(project, "voc", "out/voc", subset="train")
        print(result.count, result.skipped)
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from core.errors import ExportError, ImportFormatError
from core.export.actions import export_actions, import_actions, items_with_segments
from core.export.base import (
    CancelToken,
    ExportResult,
    ImportResult,
    Progress,
    ReportFn,
    Skipped,
    sample_count,
)
from core.export.coco import export_coco, import_coco
from core.export.frames import export_frames, frame_sample_count
from core.export.importing import Dataset, run_import
from core.export.index_png import export_index, read_index_dataset
from core.export.voc import export_voc, read_voc_dataset
from core.export.volumes import export_dicom_seg_items, export_nifti
from core.export.yolo import export_yolo
from core.fsutil import StagedDir
from core.project.items import Item
from core.project.store import Project

Exporter = Callable[..., tuple[int, list[tuple[str, str]]]]
DatasetReader = Callable[[Path], Dataset]
Importer = Callable[..., ImportResult]


def import_folder(reader: DatasetReader, project: Project, path: Path,
                  report: ReportFn | None = None) -> ImportResult:
    """Import a class-mask dataset folder that ``reader`` describes (voc, index)."""
    if not path.is_dir():
        raise ImportFormatError(f"{path} is not a folder.")
    return run_import(project, reader(path), report)


EXPORT_FORMATS: dict[str, Exporter] = {
    "voc": export_voc,
    "index": export_index,
    "nifti": export_nifti,
    "dicom-seg": export_dicom_seg_items,
    "frames": export_frames,
    "coco": export_coco,
    "yolo": export_yolo,
    "actions": export_actions,
}
# Formats that export video items (labels per frame); the others skip videos with a reason.
VIDEO_FORMATS = frozenset({"frames"})
# Formats that export the temporal segments of videos (one progress step per video).
SEGMENT_FORMATS = frozenset({"actions"})
# Formats that export instances: items with an instance map (and no class map) are exported too.
INSTANCE_FORMATS = frozenset({"coco", "yolo"})
NOT_FOR_VIDEOS = "a video: export its frames with the frames format"
IMPORT_FORMATS: dict[str, Importer] = {
    "voc": functools.partial(import_folder, read_voc_dataset),
    "index": functools.partial(import_folder, read_index_dataset),
    "coco": import_coco,
    "actions": import_actions,
}

__all__ = [
    "EXPORT_FORMATS",
    "IMPORT_FORMATS",
    "INSTANCE_FORMATS",
    "NOT_FOR_VIDEOS",
    "SEGMENT_FORMATS",
    "VIDEO_FORMATS",
    "ExportResult",
    "ImportResult",
    "export_options",
    "export_project",
    "import_dataset",
    "import_options",
    "items_with_instances",
    "items_with_masks",
    "items_with_segments",
]


def items_with_masks(project: Project) -> list[Item]:
    """The items that have a mask (ever painted, imported or predicted), and the videos with an
    annotated frame: the default export."""
    return [item for item in project.items()
            if (project.annotated_frames(item.id) if item.kind == "video"
                else project.has_mask(item.id))]


def items_with_instances(project: Project) -> list[Item]:
    """The images that have an instance map or a mask: the default export of
    :data:`INSTANCE_FORMATS`."""
    return [item for item in project.items() if item.kind != "video"
            and (project.has_mask(item.id) or project.has_instances(item.id))]


def export_options(fmt: str) -> dict[str, Any]:
    """The options ``fmt`` accepts, with their defaults."""
    exporter = _lookup(EXPORT_FORMATS, fmt, ExportError, "export")
    parameters = inspect.signature(exporter).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def export_project(
    project: Project,
    fmt: str,
    out_dir: str | os.PathLike,
    *,
    items: Iterable[Item] | None = None,
    report: ReportFn | None = None,
    cancel: CancelToken | None = None,
    **options: Any,
) -> ExportResult:
    """Export ``items`` of ``project`` in the format ``fmt`` into ``out_dir``.

    Files already in ``out_dir`` are kept unless the export writes a file of the same name.
    Either every file of the export lands in ``out_dir`` or none does.

    Args:
        project: The open project.
        fmt: A name of :data:`EXPORT_FORMATS` ("voc", "index", "nifti", "dicom-seg",
            "frames", "coco", "yolo", "actions"). Video items are exported by "frames" (their
            frame labels) and "actions" (their temporal segments) only: the other formats skip
            them (with the reason :data:`NOT_FOR_VIDEOS`), and these two skip every other item.
            "coco" and "yolo" export instance maps (see :mod:`core.export.coco`).
        out_dir: Dataset folder; created if missing.
        items: Items to export; default: :func:`items_with_masks` (:func:`items_with_instances`
            for :data:`INSTANCE_FORMATS`, :func:`items_with_segments` for "actions").
        report: Called as ``report(done, total)`` with samples (frames) written.
        cancel: Checked between samples; when set, the export stops and leaves nothing behind.
        **options: Options of the format (see :func:`export_options`), e.g. ``subset="train"``
            and ``copy_originals=True`` for "voc".

    Returns:
        ExportResult(out_dir, count, skipped).

    Raises:
        ExportError: unknown format or option, a value the format cannot hold, a full disk,
            ``"export cancelled"``.
    """
    exporter = _lookup(EXPORT_FORMATS, fmt, ExportError, "export")
    unknown = sorted(set(options) - set(export_options(fmt)))
    if unknown:
        known = ", ".join(export_options(fmt)) or "none"
        raise ExportError(f"The {fmt} format has no option {', '.join(unknown)}; its options: "
                          f"{known}.")
    if items is not None:
        chosen = list(items)
    else:
        chosen = (items_with_instances(project) if fmt in INSTANCE_FORMATS
                  else items_with_segments(project) if fmt in SEGMENT_FORMATS
                  else items_with_masks(project))
    videos: Skipped = []
    if fmt in VIDEO_FORMATS:
        total = frame_sample_count(project, chosen, options.get("video_frames", "annotated"))
    elif fmt in SEGMENT_FORMATS:
        total = sum(1 for item in chosen if item.kind == "video")
    else:
        videos = [(item.name, NOT_FOR_VIDEOS) for item in chosen if item.kind == "video"]
        chosen = [item for item in chosen if item.kind != "video"]
        total = sample_count(chosen)
    progress = Progress(total, report, cancel)
    progress.check()
    with StagedDir(out_dir) as stage:
        progress.start()
        count, skipped = exporter(project, chosen, stage, progress, **options)
        progress.check()  # a cancel during the last sample still leaves nothing behind
    return ExportResult(stage.dest, count, videos + skipped)


def import_options(fmt: str) -> dict[str, Any]:
    """The options the import format ``fmt`` accepts, with their defaults."""
    importer = _lookup(IMPORT_FORMATS, fmt, ImportFormatError, "import")
    parameters = inspect.signature(importer).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def import_dataset(project: Project, fmt: str, folder: str | os.PathLike, *,
                   report: ReportFn | None = None, **options: Any) -> ImportResult:
    """Import the masks (and classes, and missing images) of a dataset into ``project``.

    Every mask file (COCO: every entry) is validated before anything is written: a mask whose
    size differs from its item, an unknown colour or a class index clash raises
    ImportFormatError and changes nothing.

    Args:
        project: The open project.
        fmt: A name of :data:`IMPORT_FORMATS` ("voc", "index", "coco", "actions").
        folder: The dataset folder (as written by :func:`export_project` or CVAT/datumaro);
            for "coco" also the annotation JSON itself, for "actions" the CSV or
            ActivityNet-style JSON (see :mod:`core.export.actions`).
        report: Called as ``report(done, total)``.
        **options: Options of the format (see :func:`import_options`): "coco" and "actions"
            take ``skip_bad=True`` to import the good entries and list the bad ones in
            ``skipped`` instead of importing nothing.
    """
    importer = _lookup(IMPORT_FORMATS, fmt, ImportFormatError, "import")
    unknown = sorted(set(options) - set(import_options(fmt)))
    if unknown:
        known = ", ".join(import_options(fmt)) or "none"
        raise ImportFormatError(f"The {fmt} import has no option {', '.join(unknown)}; its "
                                f"options: {known}.")
    return importer(project, Path(folder).absolute(), report, **options)


def _lookup(registry: dict[str, Any], fmt: str, error: type[Exception], verb: str) -> Any:
    try:
        return registry[fmt]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise error(f"Unknown {verb} format {fmt!r}; known formats: {known}.") from None
