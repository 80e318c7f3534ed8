"""Instance maps: one uint32 id per pixel (0 = no instance) beside an item's class map.

An item's instances are its instance map (edited through an
:class:`~core.annotation.session.EditSession` with ``layer="instances"``: same diffs, journal and
undo as the class map) and its instance table (:class:`~core.project.items.Instance` rows in the
project: class, model score, source, reviewed). Rows may outlive their pixels: an instance erased
by an edit that can be undone keeps its row; what has no pixel is not listed nor exported.

The editing operations here (delete, merge, split, relabel) build an :class:`Edit` *without*
applying it; ``session.apply_edit(edit)`` applies it as one undo step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.annotation.edits import Edit, diff_region
from core.project.items import Instance

INSTANCE_DTYPE = np.uint32


@dataclass(frozen=True)
class InstanceStats:
    """Pixel count and bounding box (x0, y0, x1, y1; stops exclusive) of one instance."""

    id: int
    area: int
    bbox: tuple[int, int, int, int]


def instance_stats(instance_map: np.ndarray) -> dict[int, InstanceStats]:
    """Area and box of every instance present in ``instance_map`` (one pass each)."""
    ids, counts = np.unique(instance_map, return_counts=True)
    present = {int(i): int(c) for i, c in zip(ids, counts, strict=True) if i != 0}
    if not present:
        return {}
    # find_objects wants dense labels: relabel the ids present to 1..n
    order = sorted(present)
    lookup = np.searchsorted(order, instance_map)
    dense = np.where(instance_map != 0, lookup + 1, 0)
    stats = {}
    for index, box in enumerate(ndimage.find_objects(dense)):
        if box is None:
            continue
        ident = order[index]
        ys, xs = box[-2], box[-1]
        stats[ident] = InstanceStats(ident, present[ident], (xs.start, ys.start, xs.stop, ys.stop))
    return stats


def next_instance_id(instance_map: np.ndarray, table: Mapping[int, Instance] | None = None) -> int:
    """An id used neither in the map nor in the table (rows of erased instances included)."""
    used = int(instance_map.max(initial=0))
    if table:
        used = max(used, max(table))
    return used + 1


def split_components(class_map: np.ndarray, connectivity: int = 8,
                     ignore: Iterable[int] = (0,)) -> tuple[np.ndarray, list[Instance]]:
    """Turn a semantic class map into instances: one per connected component of each class.

    Args:
        class_map: (H, W) class indices.
        connectivity: 4 or 8 (pixel neighbours that join a component).
        ignore: Class values that make no instance (background).

    Returns:
        The uint32 instance map (ids 1..n in class then raster order) and the instances.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8; got {connectivity}")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    out = np.zeros(class_map.shape, INSTANCE_DTYPE)
    instances: list[Instance] = []
    skip = set(int(v) for v in ignore)
    for value in np.unique(class_map):
        if int(value) in skip:
            continue
        components, count = ndimage.label(class_map == value, structure)
        first = len(instances) + 1
        out[components > 0] = components[components > 0] + (first - 1)
        instances += [Instance(first + n, int(value)) for n in range(count)]
    return out, instances


def flatten(instance_map: np.ndarray, table: Mapping[int, Instance]) -> np.ndarray:
    """The class map the instances make (pixels of ids without a row stay background)."""
    top = max((i.class_index for i in table.values()), default=0)
    dtype = np.uint8 if top <= 255 else np.uint16
    lookup_ids = np.array(sorted(table), dtype=np.int64)
    if lookup_ids.size == 0:
        return np.zeros(instance_map.shape, dtype)
    classes = np.array([table[i].class_index for i in lookup_ids], dtype=dtype)
    position = np.searchsorted(lookup_ids, instance_map)
    position = np.clip(position, 0, lookup_ids.size - 1)
    found = (lookup_ids[position] == instance_map) & (instance_map != 0)
    return np.where(found, classes[position], 0).astype(dtype)


def relabel_edit(instance_map: np.ndarray, mapping: Mapping[int, int]) -> Edit | None:
    """The (unapplied) edit giving every pixel of id ``a`` the id ``mapping[a]``: delete
    (``{a: 0}``), merge (``{b: a}``)."""
    mapping = {int(a): int(b) for a, b in mapping.items() if int(a) != int(b) and int(a) != 0}
    if not mapping:
        return None
    hit = np.isin(instance_map, list(mapping))
    if not hit.any():
        return None
    rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
    region = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    before = instance_map[region]
    after = before.copy()
    for a, b in mapping.items():
        after[before == a] = b
    return diff_region(before, after, region)


def split_edit(instance_map: np.ndarray, instance_id: int, p0: tuple[float, float],
               p1: tuple[float, float], new_id: int) -> Edit | None:
    """Cut instance ``instance_id`` along the line through ``p0`` and ``p1`` (x, y): the pixels
    on the left of the direction p0 -> p1 (in image coordinates, y down) get ``new_id``.

    Returns None when the line does not cut it (all its pixels on one side).
    """
    hit = instance_map == instance_id
    if not hit.any() or p0 == p1:
        return None
    rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
    region = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    yy, xx = np.mgrid[region]
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    side = dx * (yy - p0[1]) - dy * (xx - p0[0]) < 0  # left of the line on screen
    mine = hit[region]
    moved = mine & side
    if not moved.any() or moved.sum() == mine.sum():
        return None
    before = instance_map[region]
    after = before.copy()
    after[moved] = new_id
    return diff_region(before, after, region)
