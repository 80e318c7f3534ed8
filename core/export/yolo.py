"""YOLO segmentation labels in the Ultralytics layout.

::

    OUT/images/<name>.jpg     8-bit RGB JPEG (or the original file, copy_originals=True)
    OUT/labels/<name>.txt     one line per instance: "<class> x1 y1 x2 y2 ..." (see below)
    OUT/data.yaml             train/val: images, names: {0: ..., 1: ...}

A line's class is the instance's class among the project's non-background classes, counted from
0 in index order (the names in ``data.yaml``). Its points trace the largest external contour of
the instance's pixels (pixel indices x, y as OpenCV finds them, which ``cv2.fillPoly`` fills back
to the same pixels), divided by the image's width and height, so every value lies in [0, 1].
``data.yaml`` has no ``path``: Ultralytics then reads the folders next to it.

Items without an instance map are skipped with a reason, unless ``from_classes=True`` (their class
map is split into connected components, as for COCO). YOLO import is not provided;
:func:`read_yolo_labels` reads a label file back (and refuses out-of-range coordinates).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.errors import ExportError, ImportFormatError, SegStudioError
from core.export.base import Progress, Sample, Skipped, SourceCache, encode_jpeg
from core.export.coco_masks import iter_instance_masks, sized_instances
from core.fsutil import StagedDir
from core.project.items import Item
from core.project.store import Project

IMAGE_DIR = "images"
LABEL_DIR = "labels"
DATA_YAML = "data.yaml"
JPEG_QUALITY = 95
DECIMALS = 6


def export_yolo(project: Project, items: list[Item], stage: StagedDir, progress: Progress, *,
                copy_originals: bool = False, from_classes: bool = False) -> tuple[int, Skipped]:
    """Write ``items`` as Ultralytics YOLO segmentation labels into ``stage``; returns (label
    files written, skipped)."""
    classes = [c for c in project.classes() if c.index != 0]
    yolo_id = {c.index: number for number, c in enumerate(classes)}
    names = [c.name for c in classes]
    sources = SourceCache()
    skipped: Skipped = []
    count = 0
    for item in items:
        progress.check()
        found = sized_instances(project, item, from_classes, skipped, progress)
        if found is None:
            continue
        instance_map, table = found
        reason = _write_image(stage, item, instance_map, sources, copy_originals)
        if reason is not None:
            skipped.append((item.name, f"{reason}; not exported (YOLO labels need their image)"))
            progress.advance()
            continue
        problems: list[str] = []
        lines = []
        for entry in iter_instance_masks(instance_map, table, set(yolo_id), problems):
            points = largest_contour(entry.mask)
            lines.append(label_line(yolo_id[entry.instance.class_index], points, item.width,
                                    item.height))
        skipped += [(item.name, problem) for problem in problems]
        text = "".join(f"{line}\n" for line in lines)
        check_label_text(text, item.width, item.height, len(names), f"{LABEL_DIR}/{item.name}.txt")
        stage.write_bytes(f"{LABEL_DIR}/{item.name}.txt", text.encode("ascii"))
        count += 1
        progress.advance()
    stage.write_bytes(DATA_YAML, data_yaml(names).encode("utf-8"), last=True)
    return count, skipped


def data_yaml(names: list[str]) -> str:
    """``data.yaml`` for the class ``names`` (JSON strings are valid YAML scalars)."""
    lines = [
        "# Ultralytics YOLO segmentation dataset written by SegStudio.",
        "# No 'path': the folders are read next to this file.",
        "train: images",
        "val: images",
        "names:",
    ]
    lines += [f"  {number}: {json.dumps(name, ensure_ascii=False)}"
              for number, name in enumerate(names)]
    return "\n".join(lines) + "\n"


def largest_contour(mask: np.ndarray) -> np.ndarray:
    """(N >= 3, 2) pixel indices (x, y) of the largest external contour of ``mask``.

    A part too thin to enclose an area (a line of pixels) gives its pixels back and forth; one or
    two pixels repeat a point so the polygon still has three.
    """
    import cv2

    mask = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("the mask is empty")
    y0, x0 = int(rows[0]), int(cols[0])
    crop = np.pad(mask[y0:rows[-1] + 1, x0:cols[-1] + 1].astype(np.uint8), 1)
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    if len(contour) < 3:
        contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        contour = max(contours, key=lambda c: (cv2.contourArea(c), len(c)))
    points = contour.reshape(-1, 2).astype(np.int64) - 1 + (x0, y0)
    while len(points) < 3:
        points = np.concatenate([points, points[-1:]])
    return points


def label_line(class_id: int, points: np.ndarray, width: int, height: int) -> str:
    """One label line: the class and the points divided by the image size."""
    normalised = np.asarray(points, dtype=np.float64) / (width, height)
    values = " ".join(f"{v:.{DECIMALS}f}" for v in normalised.reshape(-1))
    return f"{class_id} {values}"


def check_label_text(text: str, width: int, height: int, classes: int, name: str) -> None:
    """ExportError when the lines about to be written would not read back (a bug guard)."""
    try:
        parsed = parse_yolo_labels(text, width, height, name)
    except ImportFormatError as err:
        raise ExportError(f"Internal error: {err}") from err
    for class_id, _points in parsed:
        if class_id >= classes:
            raise ExportError(f"Internal error: {name} uses class {class_id} of {classes}.")


def read_yolo_labels(path: str | Path, width: int, height: int) -> list[tuple[int, np.ndarray]]:
    """The instances of a YOLO segmentation label file: (class id, (N, 2) float pixel
    coordinates x, y), one per line.

    Raises:
        ImportFormatError: the file cannot be read, or a line is malformed: not numbers, a class
            that is not a whole number >= 0, an odd number of coordinates, fewer than 3 points,
            or a coordinate outside [0, 1].
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ImportFormatError(f"Cannot read {path}: {err}.") from err
    return parse_yolo_labels(text, width, height, str(path))


def parse_yolo_labels(text: str, width: int, height: int,
                      name: str = "labels") -> list[tuple[int, np.ndarray]]:
    """:func:`read_yolo_labels` on the text of a label file (``name`` is used in messages)."""
    instances = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{name}, line {number}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise ImportFormatError(f"{where}: not a list of numbers.") from None
        class_value, coordinates = values[0], np.asarray(values[1:], dtype=np.float64)
        if not class_value.is_integer() or class_value < 0:
            raise ImportFormatError(f"{where}: the class {fields[0]!r} is not a whole number "
                                    ">= 0.")
        if coordinates.size % 2:
            raise ImportFormatError(f"{where}: {coordinates.size} coordinates; x and y come in "
                                    "pairs.")
        if coordinates.size < 6:
            raise ImportFormatError(f"{where}: {coordinates.size // 2} point(s); a polygon needs "
                                    "at least 3.")
        outside = ~np.isfinite(coordinates) | (coordinates < 0) | (coordinates > 1)
        if outside.any():
            position = int(np.flatnonzero(outside)[0])
            raise ImportFormatError(
                f"{where}: the coordinate {fields[1 + position]} ({'xy'[position % 2]} of point "
                f"{position // 2 + 1}) is outside [0, 1]; YOLO coordinates are divided by the "
                "image size.")
        instances.append((int(class_value), coordinates.reshape(-1, 2) * (width, height)))
    return instances


def _write_image(stage: StagedDir, item: Item, labels: np.ndarray, sources: SourceCache,
                 copy_originals: bool) -> str | None:
    """Stage the item's image; return why it could not be, or None."""
    if item.source is None:
        return "source image missing"
    if copy_originals:
        stage.copy_file(f"{IMAGE_DIR}/{item.name}{item.source.suffix.lower()}", item.source)
        return None
    try:
        rgb = sources.rgb8(Sample(item.name, item, None, labels))
    except SegStudioError as err:
        return f"source image unreadable ({err})"
    stage.write_bytes(f"{IMAGE_DIR}/{item.name}.jpg", encode_jpeg(rgb, JPEG_QUALITY))
    return None
