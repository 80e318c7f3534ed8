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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.export.base import Progress, Skipped
from core.export.coco_import import (
    BadEntryError,
    Problems,
    coco_categories,
    find_coco_json,
    import_coco,
    read_coco_json,
)
from core.export.coco_masks import (
    ANNOTATIONS,
    IMAGE_DIR,
    NO_INSTANCES,
    NOT_AN_IMAGE,
    POLYGON_MARGIN,
    PREDICTIONS,
    InstanceMask,
    _is_int,
    _is_number,
    compressed_rle_total,
    decode_segmentation,
    encode_rle,
    item_instances,
    iter_instance_masks,
    mask_bbox,
    mask_polygons,
    sized_instances,
)
from core.fsutil import StagedDir
from core.project.items import Instance, Item
from core.project.store import Project

__all__ = [
    "ANNOTATIONS", "IMAGE_DIR", "NOT_AN_IMAGE", "NO_INSTANCES", "POLYGON_MARGIN", "PREDICTIONS",
    "BadEntryError", "InstanceMask", "Problems", "coco_categories", "compressed_rle_total",
    "decode_segmentation", "encode_rle", "export_coco", "find_coco_json", "import_coco",
    "item_instances", "iter_instance_masks", "mask_bbox", "mask_polygons", "prediction_result",
    "read_coco_json", "sized_instances",
]


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
        found = sized_instances(project, item, from_classes, skipped, progress)
        if found is None:
            continue
        instance_map, table = found
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
