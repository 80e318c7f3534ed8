"""Painting operations on a label array: brush/eraser segments, flood fill, polygon fill.

Every operation works on one 2D plane of an N-D label array (``plane`` indexes the leading axes; a
plain image has ``plane=()``), touches only the bounding box of the change, applies it in place and
returns the :class:`~core.annotation.edits.Edit` (or None when nothing changed). Coordinates are
image pixel coordinates ``(x, y)`` with pixel centres at integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.annotation.edits import Edit, Region, diff_region

Point = tuple[float, float]


@dataclass(frozen=True)
class PaintRule:
    """What a tool may overwrite.

    Attributes:
        value: The label written (0 for the eraser).
        preserve_others: When True, a brush paints only background and its own class, and an
            eraser (value 0) removes only ``active_class``, leaving other classes intact.
        active_class: The class selected in the palette (used by the eraser with preserve).
    """

    value: int
    preserve_others: bool = False
    active_class: int = 0

    def writable(self, current: np.ndarray) -> np.ndarray | None:
        """Boolean mask of pixels this rule may change, or None when all may change."""
        if not self.preserve_others:
            return None
        if self.value == 0:
            return current == self.active_class
        return (current == 0) | (current == self.value)


def _lift(plane: tuple[int, ...], ys: slice, xs: slice) -> Region:
    return tuple(slice(i, i + 1) for i in plane) + (ys, xs)


def _commit(
    labels: np.ndarray, plane: tuple[int, ...], ys: slice, xs: slice, shape_mask: np.ndarray,
    rule: PaintRule,
) -> Edit | None:
    """Write ``rule.value`` where ``shape_mask`` (over ys/xs of the plane) allows; return the edit."""
    view = labels[plane][ys, xs]
    allowed = shape_mask
    writable = rule.writable(view)
    if writable is not None:
        allowed = allowed & writable
    before = view.copy()
    view[allowed] = rule.value
    region = _lift(plane, ys, xs)
    lead = (1,) * len(plane)
    edit = diff_region(before.reshape(lead + before.shape), view.reshape(lead + view.shape), region)
    return edit


def paint_segment(
    labels: np.ndarray, p0: Point, p1: Point, radius: float, rule: PaintRule,
    plane: tuple[int, ...] = (),
) -> Edit | None:
    """Paint a round brush dragged from ``p0`` to ``p1`` (a capsule), e.g. one mouse-move step.

    Args:
        labels: Label array (..., H, W), modified in place.
        p0: Start point (x, y); equal to ``p1`` for a single dab.
        p1: End point (x, y).
        radius: Brush radius in pixels (a brush of size s has radius s / 2).
        rule: Value and overwrite policy.
        plane: Index of the 2D plane in the leading axes.

    Returns:
        The applied edit, or None if no pixel changed.
    """
    height, width = labels.shape[-2:]
    r = max(float(radius), 0.5)
    x0 = max(int(np.floor(min(p0[0], p1[0]) - r)), 0)
    x1 = min(int(np.ceil(max(p0[0], p1[0]) + r)) + 1, width)
    y0 = max(int(np.floor(min(p0[1], p1[1]) - r)), 0)
    y1 = min(int(np.ceil(max(p0[1], p1[1]) + r)) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1]
    mask = _segment_distance_sq(xx, yy, p0, p1) <= r * r
    return _commit(labels, plane, slice(y0, y1), slice(x0, x1), mask, rule)


def _segment_distance_sq(xx: np.ndarray, yy: np.ndarray, p0: Point, p1: Point) -> np.ndarray:
    """Squared distance of every grid point to the segment p0-p1."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    length_sq = dx * dx + dy * dy
    if length_sq == 0:
        t = np.zeros(xx.shape)
    else:
        t = np.clip(((xx - p0[0]) * dx + (yy - p0[1]) * dy) / length_sq, 0.0, 1.0)
    px = xx - (p0[0] + t * dx)
    py = yy - (p0[1] + t * dy)
    return px * px + py * py


def flood_fill(
    labels: np.ndarray, seed: Point, rule: PaintRule, plane: tuple[int, ...] = (),
    connectivity: int = 4,
) -> Edit | None:
    """Fill the connected region of equal labels around ``seed`` with ``rule.value``."""
    import cv2

    view = labels[plane]
    height, width = view.shape
    sx, sy = int(round(seed[0])), int(round(seed[1]))
    if not (0 <= sx < width and 0 <= sy < height):
        return None
    target = view[sy, sx]
    if target == rule.value:
        return None
    # C order whatever the view's layout: a slice of a transposed volume (a side view) is
    # column-major, and cv2 refuses such arrays
    same = np.ascontiguousarray(view == target, dtype=np.uint8)
    fill_mask = np.zeros((height + 2, width + 2), np.uint8)
    flags = connectivity | cv2.FLOODFILL_MASK_ONLY | (1 << 8)
    _, _, _, rect = cv2.floodFill(same, fill_mask, (sx, sy), 1, 0, 0, flags)
    x, y, w, h = rect
    ys, xs = slice(y, y + h), slice(x, x + w)
    region_mask = fill_mask[1 + y : 1 + y + h, 1 + x : 1 + x + w].astype(bool)
    return _commit(labels, plane, ys, xs, region_mask, rule)


def fill_polygon(
    labels: np.ndarray, points: Sequence[Point], rule: PaintRule, plane: tuple[int, ...] = (),
) -> Edit | None:
    """Fill the closed polygon through ``points`` (x, y), pixel centres inside or on the edge."""
    if len(points) < 3:
        return None
    height, width = labels.shape[-2:]
    pts = np.asarray(points, dtype=np.float64)
    x0 = max(int(np.floor(pts[:, 0].min())), 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 1, width)
    y0 = max(int(np.floor(pts[:, 1].min())), 0)
    y1 = min(int(np.ceil(pts[:, 1].max())) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return None
    mask = _polygon_mask(pts, x0, x1, y0, y1)
    return _commit(labels, plane, slice(y0, y1), slice(x0, x1), mask, rule)


_EPS = 1e-7  # centres closer than this to an edge count as on it (float rounding of vertices)


def _polygon_mask(pts: np.ndarray, x0: int, x1: int, y0: int, y1: int) -> np.ndarray:
    """Pixels of the box [y0, y1) x [x0, x1) whose centres lie inside the polygon or on its edge.

    A scanline fill (even-odd rule) evaluated at pixel centres. cv2.fillPoly is not used: it rounds
    vertices to whole pixels and adds the outline, which grows small polygons by up to a third.
    """
    height, width = y1 - y0, x1 - x0
    a, b = pts, np.roll(pts, -1, axis=0)
    lo, hi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    slope = np.divide(b[:, 0] - a[:, 0], b[:, 1] - a[:, 1], out=np.zeros(len(pts)),
                      where=b[:, 1] != a[:, 1])
    # Rows an edge crosses: lo <= y < hi (half-open, so a vertex is crossed once and a peak never).
    first = np.clip(np.ceil(lo), y0, y1).astype(np.intp)
    counts = np.maximum(np.clip(np.ceil(hi), y0, y1).astype(np.intp) - first, 0)
    edge = np.repeat(np.arange(len(pts)), counts)
    rows = first[edge] + np.arange(edge.size) - np.repeat(np.cumsum(counts) - counts, counts)
    xs = a[edge, 0] + (rows - a[edge, 1]) * slope[edge]
    order = np.lexsort((xs, rows))  # every row holds an even number of crossings: pair them
    rows, xs = rows[order][0::2] - y0, xs[order]
    start = np.clip(np.ceil(xs[0::2] - _EPS) - x0, 0, width).astype(np.intp)
    stop = np.clip(np.floor(xs[1::2] + _EPS) - x0 + 1, 0, width).astype(np.intp)
    keep = start < stop
    toggles = np.zeros((height, width + 1), np.int16)
    np.add.at(toggles, (rows[keep], start[keep]), 1)
    np.add.at(toggles, (rows[keep], stop[keep]), -1)
    mask = np.cumsum(toggles, axis=1, dtype=np.int16)[:, :width] > 0
    _mark_lower_edges(mask, a, b, x0, y0)
    return mask


def _mark_lower_edges(mask: np.ndarray, a: np.ndarray, b: np.ndarray, x0: int, y0: int) -> None:
    """Add centres on horizontal edges and on vertices, which the half-open scanline skips."""
    height, width = mask.shape
    for (ax, ay), (bx, by) in zip(a, b, strict=True):
        row = round(ay)
        if ay != by or abs(ay - row) > _EPS or not y0 <= row < y0 + height:
            continue
        start = max(int(np.ceil(min(ax, bx) - _EPS)) - x0, 0)
        stop = min(int(np.floor(max(ax, bx) + _EPS)) - x0 + 1, width)
        mask[row - y0, start:stop] = True
    for vx, vy in a:
        col, row = round(vx) - x0, round(vy) - y0
        if abs(vx - round(vx)) <= _EPS and abs(vy - round(vy)) <= _EPS \
                and 0 <= row < height and 0 <= col < width:
            mask[row, col] = True


def replace_labels(
    labels: np.ndarray, new_plane: np.ndarray, plane: tuple[int, ...] = ()
) -> Edit | None:
    """Replace a whole plane (e.g. a model's prediction) as one undoable edit.

    ``plane`` indexes the leading axes; ``()`` on an N-D array replaces all of it (a volume
    predicted slice by slice).
    """
    view = labels[plane]
    if new_plane.shape != view.shape:
        raise ValueError(f"mask shape {new_plane.shape} does not match the item {view.shape}")
    before = view.copy()
    view[...] = new_plane
    lead = (1,) * len(plane)
    region = tuple(slice(i, i + 1) for i in plane) + tuple(slice(0, n) for n in view.shape)
    return diff_region(before.reshape(lead + before.shape), view.reshape(lead + view.shape), region)
