"""COCO instance segmentation: export, import, and the mask codecs both share.

::

    OUT/annotations/instances.json     {"info", "licenses", "images", "annotations", "categories"}
    OUT/annotations/predictions.json   COCO results (with scores) of the models' kept
                                       predictions, when exported items have some
    OUT/images/<name><ext>             copies of the original images (copy_originals=True)

``images``: ``id`` (1, 2, ... in export order), ``file_name`` (``<item name><original suffix>``),
``width``, ``height``. ``categories``: the project's classes but the background (``id`` = class
index, ``name``, ``supercategory`` "", and a non-standard ``color`` [r, g, b] read back by the
import). ``annotations``: one per instance that has pixels, ``id`` 1, 2, ..., ``image_id``,
``category_id`` (its class), ``segmentation``, ``area`` (its pixel count), ``bbox`` [x, y, w, h]
of its pixels, ``iscrowd`` 0 and ``attributes`` {"source", "reviewed"[, "score"]} from the
instance table.

``segmentation`` is a compressed RLE (``{"size": [h, w], "counts": str}``, pycocotools' column-major
encoding) that decodes to exactly the instance's pixels; with ``polygons=True`` it is a list of
polygons instead, one per connected part, tracing the pixels' outer edges (pycocotools decodes
them to the same pixels, except that a polygon cannot have holes: holes are filled; ``area``
stays the pixel count).

Items without an instance map are skipped with a reason, unless ``from_classes=True``: then their
class map is split into one instance per connected component of each class. Instance rows without
pixels are not exported; pixels whose id has no row, or whose row has a class the project no
longer has, are left out with a reason.

The import (:func:`import_coco`) reads such a file (or any COCO instances file: RLE, compressed or
not, and polygons), matches its images to the project's items by file name (stem = item name),
adds the images it finds beside the JSON (or in ``images/``) when the project lacks them, adds
the categories the project lacks as classes, and writes every image's instance map and instance
table in one transaction. Every entry is checked first; a bad entry (malformed, a missing image,
a mask of the wrong size, a polygon of fewer than 3 points, a repeated annotation id, an unknown
category) aborts the import with a message that names it, unless ``skip_bad=True``: then bad
entries are left out and listed in :attr:`ImportResult.skipped`. Crowd regions (``iscrowd`` 1)
are always left out (listed). Where annotations overlap, the smaller one keeps the shared pixels
(an instance map holds one instance per pixel); one left with no pixel at all is a bad entry.
An image's instance map and table are replaced as a whole; images without annotations are left
alone (and not added).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from core.annotation.classes import LabelClass, default_color
from core.annotation.instances import INSTANCE_DTYPE, instance_stats, split_components
from core.errors import ImportFormatError, SegStudioError
from core.export.base import ImportResult, Progress, ReportFn, Skipped
from core.export.importing import check_dataset_classes, merge_classes
from core.fsutil import StagedDir
from core.project.items import Instance, Item
from core.project.store import Project

ANNOTATIONS = "annotations/instances.json"
PREDICTIONS = "annotations/predictions.json"
IMAGE_DIR = "images"
NOT_AN_IMAGE = "instances are per 2-D image; a stack, volume or video has none"
NO_INSTANCES = ("no instance map (the from_classes option, --from-classes, splits its class map "
                "into connected components)")
# A polygon point may lie this far outside the image (rounding in other tools); it is clipped.
POLYGON_MARGIN = 1.0


# -- masks <-> COCO segmentations ----------------------------------------------------------------
def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Compressed RLE of a 2-D boolean mask: ``{"size": [h, w], "counts": str}``."""
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])],
            "counts": rle["counts"].decode("ascii")}


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """Polygons ``[x0, y0, x1, y1, ...]`` tracing the outer pixel edges of each 8-connected part
    of ``mask`` (a pixel (x, y) spans [x, x+1) x [y, y+1)); holes are not traced.

    pycocotools decodes them to exactly ``mask`` when it has no holes: the contours are found on
    the mask upscaled twice, whose boundary pixels 2x and 2x+1 map to the edges x and x+1.
    """
    import cv2

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, x0 = int(rows[0]), int(cols[0])
    crop = mask[y0:rows[-1] + 1, x0:cols[-1] + 1].astype(np.uint8)
    # 1 pixel of padding: contours of parts touching the crop's border are traced the same way
    upscaled = np.pad(np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1), 1)
    contours, _ = cv2.findContours(upscaled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons = []
    for contour in contours:
        # padded index 2x+1 (first half of pixel x) -> edge x, 2x+2 (second half) -> edge x+1
        points = contour.reshape(-1, 2).astype(np.int64) // 2
        keep = np.ones(len(points), bool)
        keep[1:] = np.any(points[1:] != points[:-1], axis=1)
        points = points[keep]
        if len(points) > 1 and (points[0] == points[-1]).all():
            points = points[:-1]
        if len(points) < 3:  # cannot happen with edges (a pixel has 4), kept as a guard
            continue
        points = points + (x0, y0)
        polygons.append([float(v) for v in points.reshape(-1)])
    return polygons


def mask_bbox(mask: np.ndarray) -> list[float]:
    """[x, y, w, h] of the pixels of ``mask`` (pixel edges: w = last - first + 1)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1)]


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """The (height, width) boolean mask of a COCO ``segmentation``: an RLE with ``counts`` a str
    (compressed) or a list of run lengths (uncompressed), or a list of polygons.

    Raises:
        ValueError: with a sentence saying what is wrong (the caller names the entry).
    """
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, dict):
        size = segmentation.get("size")
        counts = segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2
                and all(_is_int(v) and v >= 0 for v in size)):
            raise ValueError("its RLE needs a \"size\" [height, width]")
        if (size[0], size[1]) != (height, width):
            raise ValueError(f"its mask is {size[1]}x{size[0]} but the image is "
                             f"{width}x{height} (width x height)")
        if isinstance(counts, bytes):
            counts = counts.decode("ascii", errors="replace")
        if isinstance(counts, str):
            total = compressed_rle_total(counts)
            if total is None:
                raise ValueError("its RLE \"counts\" is not a valid compressed RLE string")
            if total != height * width:
                raise ValueError(f"its RLE covers {total} pixels, not {height * width} "
                                 f"({width}x{height})")
            rle = {"size": [height, width], "counts": counts.encode("ascii")}
        elif isinstance(counts, list):
            if not all(_is_int(v) and 0 <= v < 2**32 for v in counts):
                raise ValueError("its RLE \"counts\" must be non-negative integers")
            if sum(counts) != height * width:
                raise ValueError(f"its RLE covers {sum(counts)} pixels, not {height * width} "
                                 f"({width}x{height})")
            rle = coco_mask.frPyObjects({"size": [height, width], "counts": counts},
                                        height, width)
        else:
            raise ValueError("its RLE needs \"counts\" (a string or a list of run lengths)")
        return coco_mask.decode(rle).astype(bool)
    if isinstance(segmentation, list):
        if not segmentation:
            raise ValueError("its segmentation is an empty list of polygons")
        polygons = []
        for number, polygon in enumerate(segmentation, 1):
            polygons.append(_check_polygon(polygon, number, height, width))
        rles = coco_mask.frPyObjects(polygons, height, width)
        return coco_mask.decode(coco_mask.merge(rles)).astype(bool)
    raise ValueError("its segmentation is neither an RLE object nor a list of polygons")


def _check_polygon(polygon: Any, number: int, height: int, width: int) -> list[float]:
    if not isinstance(polygon, list) or not all(_is_number(v) for v in polygon):
        raise ValueError(f"polygon {number} is not a list of numbers [x0, y0, x1, y1, ...]")
    if len(polygon) % 2:
        raise ValueError(f"polygon {number} has an odd number of coordinates ({len(polygon)})")
    if len(polygon) < 6:
        raise ValueError(f"polygon {number} has {len(polygon) // 2} point(s); a polygon needs "
                         "at least 3")
    values = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(values).all():
        raise ValueError(f"polygon {number} has a coordinate that is not a finite number")
    outside = ((values < -POLYGON_MARGIN) | (values > np.array([width, height]) + POLYGON_MARGIN))
    if outside.any():
        x, y = values[np.flatnonzero(outside.any(axis=1))[0]]
        raise ValueError(f"polygon {number} has the point ({x:g}, {y:g}) outside the "
                         f"{width}x{height} image")
    values = np.clip(values, 0, [width, height])
    return [float(v) for v in values.reshape(-1)]


def compressed_rle_total(counts: str) -> int | None:
    """Sum of the run lengths of a compressed RLE string (pycocotools' ``rleFrString``), or
    None when the string is malformed: pycocotools does not check, and would read or write past
    its buffers."""
    runs: list[int] = []
    position, length = 0, len(counts)
    while position < length:
        value, shift, more = 0, 0, True
        while more:
            if position >= length:
                return None  # the last run continues past the end
            code = ord(counts[position]) - 48
            if not 0 <= code < 64:
                return None
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:  # runs after the first three are stored as differences
            value += runs[-2]
        if not 0 <= value < 2**32:
            return None
        runs.append(value)
    return sum(runs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- instances of an item ----------------------------------------------------------------------
def item_instances(project: Project, item: Item,
                   from_classes: bool = False) -> tuple[np.ndarray, dict[int, Instance]] | str:
    """The item's instance map and table, or why it has none.

    With ``from_classes``, an item without an instance map gets one from its class map (one
    instance per connected component of each class).
    """
    if item.kind != "image" or item.frames > 1:
        return NOT_AN_IMAGE
    if project.has_instances(item.id):
        return project.load_mask(item, layer="instances"), project.instances(item.id)
    if from_classes and project.has_mask(item.id):
        instance_map, rows = split_components(project.load_mask(item))
        return instance_map, {row.id: row for row in rows}
    return NO_INSTANCES


@dataclass
class InstanceMask:
    """One exportable instance: its row and its pixels (a full-size boolean mask)."""

    instance: Instance
    mask: np.ndarray
    area: int
    bbox: list[float]


def iter_instance_masks(instance_map: np.ndarray, table: Mapping[int, Instance],
                        classes: set[int], problems: list[str] | None = None
                        ) -> Iterator[InstanceMask]:
    """The instances of a map that have pixels, a row and a class in ``classes``, by id.

    What is left out is described in ``problems`` (when given).
    """
    for ident, stats in sorted(instance_stats(instance_map).items()):
        row = table.get(ident)
        if row is None:
            if problems is not None:
                problems.append(f"instance {ident} has pixels but no row in the instance table "
                                "(no class): left out")
            continue
        if row.class_index not in classes:
            if problems is not None:
                what = ("the background" if row.class_index == 0
                        else f"class {row.class_index}, which the project does not have")
                problems.append(f"instance {ident} belongs to {what}: left out")
            continue
        x0, y0, x1, y1 = stats.bbox
        mask = np.zeros(instance_map.shape, bool)  # compare inside the box only
        mask[y0:y1, x0:x1] = instance_map[y0:y1, x0:x1] == ident
        yield InstanceMask(row, mask, stats.area,
                           [float(x0), float(y0), float(x1 - x0), float(y1 - y0)])


# -- export ------------------------------------------------------------------------------------
def export_coco(project: Project, items: list[Item], stage: StagedDir, progress: Progress, *,
                copy_originals: bool = False, polygons: bool = False,
                from_classes: bool = False) -> tuple[int, Skipped]:
    """Write ``items`` as COCO instance annotations into ``stage``; returns (images written,
    skipped)."""
    categories = [c for c in project.classes() if c.index != 0]
    known = {c.index for c in categories}
    images: list[dict] = []
    annotations: list[dict] = []
    results: list[dict] = []
    skipped: Skipped = []
    for item in items:
        progress.check()
        found = item_instances(project, item, from_classes)
        if isinstance(found, str):
            skipped.append((item.name, found))
            progress.advance(max(item.frames, 1))
            continue
        instance_map, table = found
        if instance_map.shape != (item.height, item.width):
            skipped.append((item.name, f"its instance map is {instance_map.shape[1]}x"
                                       f"{instance_map.shape[0]}, the image {item.width}x"
                                       f"{item.height}"))
            progress.advance()
            continue
        image_id = len(images) + 1
        file_name = f"{item.name}{_suffix(item)}"
        images.append({"id": image_id, "file_name": file_name, "width": item.width,
                       "height": item.height})
        problems: list[str] = []
        for entry in iter_instance_masks(instance_map, table, known, problems):
            segmentation = mask_polygons(entry.mask) if polygons else encode_rle(entry.mask)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": entry.instance.class_index,
                "segmentation": segmentation,
                "area": entry.area,
                "bbox": entry.bbox,
                "iscrowd": 0,
                "attributes": _attributes(entry.instance),
            })
        skipped += [(item.name, problem) for problem in problems]
        results += _kept_predictions(project, item, image_id, known, skipped)
        if copy_originals:
            if item.source is None:
                skipped.append((item.name, "source image missing; its annotations were "
                                           "exported without the image"))
            else:
                stage.copy_file(f"{IMAGE_DIR}/{file_name}", item.source)
        progress.advance()
    data = {
        "info": {"description": "SegStudio export", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c.index, "name": c.name, "supercategory": "",
                        "color": list(c.color)} for c in categories],
    }
    if results:
        stage.write_bytes(PREDICTIONS, _json_bytes(results), last=True)
    stage.write_bytes(ANNOTATIONS, _json_bytes(data), last=True)
    return len(images), skipped


def _suffix(item: Item) -> str:
    source = item.source if item.source is not None else Path(item.abs_path)
    return source.suffix.lower()


def _attributes(instance: Instance) -> dict[str, Any]:
    attributes: dict[str, Any] = {"source": instance.source, "reviewed": instance.reviewed}
    if instance.score is not None:
        attributes["score"] = instance.score
    return attributes


def _kept_predictions(project: Project, item: Item, image_id: int, known: set[int],
                      skipped: Skipped) -> list[dict]:
    """The item's kept model predictions as COCO results of ``image_id``."""
    kept = project.load_predictions(item.id)
    if kept is None:
        return []
    _model, predictions = kept
    results = []
    for number, result in enumerate(predictions, 1):
        try:
            results.append(prediction_result(result, image_id, item.height, item.width, known))
        except ValueError as err:
            skipped.append((item.name, f"kept prediction {number}: {err}: left out of "
                                       f"{PREDICTIONS}"))
    return results


def prediction_result(result: Mapping[str, Any], image_id: int, height: int, width: int,
                      categories: set[int] | None = None) -> dict[str, Any]:
    """One kept model prediction as a COCO result (``image_id``, ``category_id``, compressed
    RLE ``segmentation``, ``bbox`` (its own, else its mask's), ``score`` (1.0 when missing),
    ``area``); ValueError when it is unusable."""
    if not isinstance(result, Mapping):
        raise ValueError("not an object")
    category = result.get("category_id")
    if not _is_int(category) or (categories is not None and category not in categories):
        raise ValueError(f"category_id {category!r} is not a class of the project")
    score = result.get("score", 1.0)
    if not _is_number(score) or not math.isfinite(score):
        raise ValueError(f"score {score!r} is not a number")
    mask = decode_segmentation(result.get("segmentation"), height, width)
    bbox = result.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4
            and all(_is_number(v) and math.isfinite(v) for v in bbox)):
        bbox = mask_bbox(mask)  # the model's own box when it gave one, else the mask's
    return {"image_id": image_id, "category_id": category, "segmentation": encode_rle(mask),
            "bbox": [float(v) for v in bbox], "score": float(score), "area": int(mask.sum())}


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


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


class _Problems:
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
    problems = _Problems(source, skip_bad)
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


def _read_images(entries: list[Any], problems: _Problems) -> dict[int, _Image]:
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
                      problems: _Problems) -> Skipped:
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
                  problems: _Problems) -> list[_Image]:
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


def _build(image: _Image, problems: _Problems | None
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
