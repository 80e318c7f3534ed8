"""COCO import: reading a COCO dataset's annotation file into a project.

Part of :mod:`core.export.coco` (which re-exports every public name here); the format is
described there.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from core.annotation.classes import LabelClass, default_color
from core.annotation.instances import INSTANCE_DTYPE
from core.errors import ImportFormatError, SegStudioError
from core.export.base import ImportResult, Progress, ReportFn, Skipped
from core.export.coco_masks import (
    ANNOTATIONS,
    IMAGE_DIR,
    NOT_AN_IMAGE,
    PREDICTIONS,
    _is_int,
    _is_number,
    decode_segmentation,
)
from core.export.importing import check_dataset_classes, merge_classes
from core.project.items import Instance, Item
from core.project.store import Project


# -- import ------------------------------------------------------------------------------------
class BadEntryError(ImportFormatError):
    """One entry of a COCO file cannot be imported (and ``skip_bad`` was not given).

    Attributes:
        entry: The entry, e.g. ``"annotation 12"`` or ``"image 3 (a.jpg)"``.
        reason: What is wrong with it.
    """

    def __init__(self, message: str, entry: str, reason: str) -> None:
        super().__init__(message)
        self.entry = entry
        self.reason = reason


@dataclass
class _Image:
    id: int
    name: str  # "image 3 (a.jpg)"
    file_name: str
    width: int
    height: int
    item: Item | None = None
    new_image: Path | None = None
    annotations: list[_Annotation] = field(default_factory=list)


@dataclass
class _Annotation:
    id: int | None
    name: str  # "annotation 12"
    category: int  # the project class index
    segmentation: Any
    attributes: dict[str, Any]


class Problems:
    """Collects bad entries (skip_bad) or raises on the first."""

    def __init__(self, source: Path, skip_bad: bool) -> None:
        self.source = source
        self.skip_bad = skip_bad
        self.skipped: Skipped = []

    def bad(self, entry: str, reason: str) -> None:
        if not self.skip_bad:
            raise BadEntryError(f"{self.source}: {entry}: {reason}; nothing was imported.",
                                entry, reason)
        self.skipped.append((entry, reason))


def find_coco_json(path: Path) -> Path:
    """The annotation file of ``path``: the file itself, or in a folder
    ``annotations/instances.json``, ``instances.json``, or the only .json in ``annotations/``
    (or in the folder)."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ImportFormatError(f"{path} does not exist.")
    for candidate in (path / ANNOTATIONS, path / "instances.json"):
        if candidate.is_file():
            return candidate
    for folder in (path / "annotations", path):
        found = sorted(p for p in folder.glob("*.json") if p.is_file()
                       and p.name != PurePosixPath(PREDICTIONS).name) if folder.is_dir() else []
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ImportFormatError(f"{folder} holds {len(found)} JSON files; give the COCO "
                                    "annotation file itself.")
    raise ImportFormatError(f"{path} is not a COCO dataset: it has no {ANNOTATIONS} (give the "
                            "annotation file itself).")


def read_coco_json(path: Path) -> dict[str, Any]:
    """The parsed annotation file, with its top-level lists checked."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError) as err:
        raise ImportFormatError(f"Cannot read {path}: {err}.") from err
    except json.JSONDecodeError as err:
        raise ImportFormatError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, "
                                f"column {err.colno}.") from err
    if not isinstance(data, dict):
        raise ImportFormatError(f"{path} is not a COCO annotation file: its top level must be "
                                "an object with \"images\", \"annotations\" and \"categories\".")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ImportFormatError(f"{path} is not a COCO annotation file: it needs a list "
                                    f"\"{key}\".")
    return data


def coco_categories(entries: list[Any], source: Path) -> list[LabelClass]:
    """The categories as classes (index = category id); ImportFormatError for a bad one."""
    classes = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")):
            raise ImportFormatError(f"{source}: category {number} needs an integer \"id\".")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ImportFormatError(f"{source}: category {entry['id']} needs a non-empty "
                                    "\"name\".")
        color = entry.get("color")
        if not (isinstance(color, list) and len(color) == 3
                and all(_is_int(v) and 0 <= v <= 255 for v in color)):
            color = default_color(entry["id"]) if 0 <= entry["id"] <= 65535 else (0, 0, 0)
        classes.append(LabelClass(entry["id"], name.strip(), tuple(color)))  # type: ignore[arg-type]
    check_dataset_classes(classes, source)
    return classes


def import_coco(project: Project, path: str | Path, report: ReportFn | None = None, *,
                skip_bad: bool = False) -> ImportResult:
    """Import a COCO instances file (or a folder holding one) into ``project``'s instance maps.

    Args:
        project: The open project.
        path: The annotation JSON, or a folder with ``annotations/instances.json``.
        report: Called as ``report(done, total)``.
        skip_bad: Leave bad entries out (listed in ``skipped``) instead of importing nothing.

    Returns:
        ImportResult: ``imported`` = images whose instances were written.

    Raises:
        BadEntryError: the first bad entry (without ``skip_bad``); nothing was written.
        ImportFormatError: the file is not a COCO file, a category clashes with a class.
    """
    source = find_coco_json(Path(path).absolute())
    root = Path(path).absolute() if Path(path).is_dir() else _dataset_root(source)
    data = read_coco_json(source)
    dataset_classes = coco_categories(data["categories"], source)
    merged, remap, new_names = merge_classes(project.classes(), dataset_classes)
    class_of = {c.index: remap.get(c.index, c.index) for c in dataset_classes}
    problems = Problems(source, skip_bad)
    images = _read_images(data["images"], problems)
    crowds = _read_annotations(data["annotations"], images, class_of, problems)
    targets = _match_images(project, [i for i in images.values() if i.annotations], root,
                            source, problems)
    progress = Progress(2 * len(targets), report, what="import")
    progress.start()
    ready = []
    for image in targets:  # decode everything before writing anything
        if _build(image, problems) is not None:
            ready.append(image)
        progress.advance()

    with project.transaction():  # all or nothing, even if the process dies half-way
        if new_names:
            project.set_classes(merged)
        added = _add_images(project, [i for i in ready if i.new_image is not None])
        for image in ready:
            assert image.item is not None
            built = _build(image, None)
            assert built is not None
            instance_map, rows = built
            project.save_mask(image.item.id, instance_map, layer="instances")
            project.delete_instances(image.item.id)
            project.set_instances(image.item.id, rows)
            if project.item(image.item.id).state == "new":
                project.set_state(image.item.id, "in_progress")
            progress.advance()
    return ImportResult(root, len(ready), added, new_names, problems.skipped + crowds)


def _dataset_root(source: Path) -> Path:
    return source.parent.parent if source.parent.name == "annotations" else source.parent


def _read_images(entries: list[Any], problems: Problems) -> dict[int, _Image]:
    images: dict[int, _Image] = {}
    for number, entry in enumerate(entries, 1):
        ident = entry.get("id") if isinstance(entry, dict) else None
        name = f"image {ident}" if _is_int(ident) else f"image #{number}"
        if not isinstance(entry, dict) or not _is_int(ident):
            problems.bad(name, "an image needs an integer \"id\"")
            continue
        file_name = entry.get("file_name")
        if isinstance(file_name, str) and file_name.strip():
            name += f" ({file_name})"
        else:
            problems.bad(name, "an image needs a \"file_name\"")
            continue
        width, height = entry.get("width"), entry.get("height")
        if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
            problems.bad(name, "an image needs a positive integer \"width\" and \"height\"")
            continue
        if ident in images:
            problems.bad(name, f"the image id {ident} is used twice")
            continue
        images[ident] = _Image(ident, name, file_name, width, height)
    return images


def _read_annotations(entries: list[Any], images: dict[int, _Image], class_of: dict[int, int],
                      problems: Problems) -> Skipped:
    """Attach every valid annotation to its image; returns the crowd regions left out."""
    seen: set[int] = set()
    crowds: Skipped = []
    for number, entry in enumerate(entries, 1):
        ident = entry.get("id") if isinstance(entry, dict) else None
        name = f"annotation {ident}" if _is_int(ident) else f"annotation #{number}"
        if not isinstance(entry, dict) or not _is_int(ident):
            problems.bad(name, "an annotation needs an integer \"id\"")
            continue
        if ident in seen:
            problems.bad(name, f"the annotation id {ident} is used twice (entry {number})")
            continue
        seen.add(ident)
        image_id = entry.get("image_id")
        image = images.get(image_id) if _is_int(image_id) else None
        if image is None:
            problems.bad(name, f"its image_id {image_id!r} is not among the images")
            continue
        category = entry.get("category_id")
        if not _is_int(category) or category not in class_of:
            problems.bad(name, f"its category_id {category!r} is not among the categories")
            continue
        if entry.get("iscrowd", 0):
            crowds.append((name, "a crowd region (iscrowd 1), not an instance: left out"))
            continue
        if class_of[category] == 0:
            problems.bad(name, f"its category {category} is the project's background class")
            continue
        attributes = entry.get("attributes")
        image.annotations.append(_Annotation(
            ident, name, class_of[category], entry.get("segmentation"),
            attributes if isinstance(attributes, dict) else {}))
    return crowds


def _match_images(project: Project, images: list[_Image], root: Path, source: Path,
                  problems: Problems) -> list[_Image]:
    """Point every image at a project item, or at an image file to add; drop the bad ones."""
    from core.io import read_image_info

    items = {item.name: item for item in project.items()}
    claimed: dict[object, str] = {}
    targets = []
    for image in images:
        stem = PurePosixPath(image.file_name.replace("\\", "/")).stem
        item = items.get(stem)
        if item is not None:
            if item.kind != "image" or item.frames > 1:
                problems.bad(image.name, f"the item {item.name!r} is not a 2-D image; "
                                         f"{NOT_AN_IMAGE}")
                continue
            if (item.width, item.height) != (image.width, image.height):
                problems.bad(image.name, f"it is {image.width}x{image.height} but the item "
                                         f"{item.name!r} is {item.width}x{item.height}")
                continue
            image.item = item
            key: object = item.id
        else:
            found = _find_image_file(image.file_name, root, source.parent)
            if found is None:
                problems.bad(image.name, f"no item named {stem!r} in the project and no image "
                                         f"file for it beside {source.name} or in "
                                         f"{root / IMAGE_DIR}")
                continue
            try:
                info = read_image_info(found)
            except SegStudioError as err:
                problems.bad(image.name, f"the image {found} is unusable: {err}")
                continue
            if info.frames > 1 or (info.width, info.height) != (image.width, image.height):
                size = f"{info.width}x{info.height}" + (f" x {info.frames} frames"
                                                        if info.frames > 1 else "")
                problems.bad(image.name, f"it is {image.width}x{image.height} but the file "
                                         f"{found} is {size}")
                continue
            image.new_image = found
            key = found
        if key in claimed:
            problems.bad(image.name, f"{claimed[key]} is already imported into the same item")
            continue
        claimed[key] = image.name
        targets.append(image)
    return targets


def _find_image_file(file_name: str, root: Path, json_dir: Path) -> Path | None:
    from core.io import is_image_path

    relative = PurePosixPath(file_name.replace("\\", "/"))
    names = [PurePosixPath(relative.name)]
    if not relative.is_absolute() and ".." not in relative.parts:
        names.insert(0, relative)
    for folder in (root, root / IMAGE_DIR, json_dir):
        for name in names:
            candidate = folder.joinpath(*name.parts)
            if candidate.is_file() and is_image_path(candidate):
                return candidate
    return None


def _build(image: _Image, problems: Problems | None
           ) -> tuple[np.ndarray, list[Instance]] | None:
    """The instance map and rows of an image (ids in file order; where annotations overlap the
    smaller one is on top). With ``problems``, bad annotations are reported (and dropped, so the
    second call, without ``problems``, builds from the good ones only); None when none is left.
    """
    shape = (image.height, image.width)
    decoded: list[tuple[_Annotation, np.ndarray]] = []
    for annotation in list(image.annotations):
        try:
            mask = decode_segmentation(annotation.segmentation, *shape)
        except ValueError as err:
            assert problems is not None  # the second pass sees only good annotations
            problems.bad(annotation.name, str(err))
            image.annotations.remove(annotation)
            continue
        if not mask.any():
            assert problems is not None
            problems.bad(annotation.name, "its mask has no pixel inside the image")
            image.annotations.remove(annotation)
            continue
        decoded.append((annotation, mask))
    areas = [int(mask.sum()) for _, mask in decoded]
    instance_map = np.zeros(shape, INSTANCE_DTYPE)
    for position in sorted(range(len(decoded)), key=lambda p: (-areas[p], p)):
        instance_map[decoded[position][1]] = position + 1
    present = set(np.unique(instance_map).tolist())
    hidden = [p for p in range(len(decoded)) if p + 1 not in present]
    if hidden:
        assert problems is not None
        for position in hidden:
            annotation = decoded[position][0]
            problems.bad(annotation.name, "it is entirely covered by smaller annotations of the "
                                          "same image (an instance map holds one instance per "
                                          "pixel)")
            image.annotations.remove(annotation)
        return _build(image, problems)
    if not decoded:
        return None
    rows = [_instance_row(position + 1, annotation) for position, (annotation, _) in
            enumerate(decoded)]
    return instance_map, rows


def _instance_row(ident: int, annotation: _Annotation) -> Instance:
    attributes = annotation.attributes
    score = attributes.get("score")
    source = attributes.get("source")
    return Instance(
        ident, annotation.category,
        score=float(score) if _is_number(score) and math.isfinite(score) else None,
        source=source if source in ("person", "model") else "person",
        reviewed=attributes.get("reviewed") is True,
    )


def _add_images(project: Project, images: list[_Image]) -> int:
    if not images:
        return 0
    paths = list(dict.fromkeys(i.new_image for i in images if i.new_image is not None))
    report = project.add_items(paths, recursive=False)
    by_path = {_normalized(Path(item.abs_path)): item for item in project.items()}
    for image in images:
        assert image.new_image is not None
        image.item = by_path.get(_normalized(image.new_image))
        if image.item is None:
            reason = dict(report.skipped).get(str(image.new_image), "the project refused it")
            raise ImportFormatError(f"Could not add {image.new_image}: {reason}")
    return len(report.added_ids)


def _normalized(path: Path) -> Path:
    return Path(os.path.normpath(path.absolute()))
