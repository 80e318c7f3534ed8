"""COCO segmentation helpers: masks to and from RLE and polygons, and the instances of an item.

Part of :mod:`core.export.coco` (which re-exports every public name here).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.annotation.instances import instance_stats, split_components
from core.export.base import Progress, Skipped
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


def sized_instances(project: Project, item: Item, from_classes: bool, skipped: Skipped,
                    progress: Progress) -> tuple[np.ndarray, dict[int, Instance]] | None:
    """The item's instance map and table (:func:`item_instances`) when the map is the size of
    the image; else None, the reason added to ``skipped`` and the item's progress advanced."""
    found = item_instances(project, item, from_classes)
    if isinstance(found, str):
        skipped.append((item.name, found))
        progress.advance(max(item.frames, 1))
        return None
    instance_map, table = found
    if instance_map.shape != (item.height, item.width):
        skipped.append((item.name, f"its instance map is {instance_map.shape[1]}x"
                                   f"{instance_map.shape[0]}, the image {item.width}x"
                                   f"{item.height}"))
        progress.advance()
        return None
    return instance_map, table
