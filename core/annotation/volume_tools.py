"""Volume operations on a 3-D label array (Z, Y, X): slice interpolation, threshold fill, 3-D
connected components.

Like the 2D tools in :mod:`core.annotation.tools`, every operation works on the smallest region it
needs, builds one :class:`~core.annotation.edits.Edit` with :func:`diff_region`, applies it to
``labels`` in place and returns it (None when nothing changes). With ``preview=True`` the edit is
built but *not* applied: ``labels`` is untouched and the GUI can draw ``edit.new`` where
``edit.changed`` is True inside ``edit.region``, then apply it (``edit.apply``) if the user accepts.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from core.annotation.edits import Edit, Region, diff_region

# (before, after, region): region-shaped values around a change, and where the region sits
Change = tuple[np.ndarray, np.ndarray, Region]

_STRUCTURE_RANK = {6: 1, 18: 2, 26: 3}  # neighbours in 3-D -> scipy's connectivity rank


# -- slice interpolation ---------------------------------------------------------------------------
def interpolate_between_slices(
    labels: np.ndarray, value: int, axis: int = 0, start: int | None = None,
    stop: int | None = None, preview: bool = False,
) -> Edit | None:
    """Fill the slices between annotated slices of class ``value`` by shape-based interpolation.

    The key slices are the slices along ``axis`` that contain ``value``, limited to the index range
    ``[start, stop]`` (both inclusive; default: the whole axis). For every slice strictly between
    two consecutive keys, the signed distance maps of the two key masks are blended linearly by
    position (Raya & Udupa 1990; Herman et al. 1992) and ``value`` is written where the blend is
    > 0. The signed distance is the Euclidean distance to the other side minus half a pixel,
    positive inside, so the zero level runs halfway between the last inside and first outside pixel
    centres and a key mask is reproduced exactly at its own slice. Only background (0) pixels are
    written: other classes are preserved. Pixels beyond the array's edge count as outside.

    Args:
        labels: Label array (Z, Y, X) (any N-D works), modified in place unless ``preview``.
        value: The class to interpolate.
        axis: The axis the slices are taken along.
        start: First slice index that may be a key (None: 0).
        stop: Last slice index that may be a key, inclusive (None: the last slice).
        preview: Build the edit without applying it.

    Returns:
        The edit, or None when fewer than two keys exist or no slice between them changes.
    """
    return _apply(labels, _interpolation_change(labels, value, axis, start, stop), preview)


def _interpolation_change(
    labels: np.ndarray, value: int, axis: int, start: int | None, stop: int | None,
) -> Change | None:
    _check_value(labels, value)
    axis = axis % labels.ndim
    stack = np.moveaxis(labels, axis, 0)  # a view: slices along axis 0
    plane_axes = tuple(range(1, stack.ndim))
    annotated = np.flatnonzero((stack == value).any(axis=plane_axes))
    lo = 0 if start is None else start
    hi = stack.shape[0] - 1 if stop is None else stop
    keys = annotated[(annotated >= lo) & (annotated <= hi)]
    pairs = [(int(a), int(b)) for a, b in itertools.pairwise(keys) if b - a > 1]
    if not pairs:
        return None
    first, last = pairs[0][0], pairs[-1][1]
    # The blend is > 0 only where one key mask is inside, so the keys' bounding box holds it all.
    in_plane = _bbox((stack[first : last + 1] == value).any(axis=0))
    box = (slice(first, last + 1), *in_plane)
    before = stack[box].copy()
    after = before.copy()
    sdfs: dict[int, np.ndarray] = {}
    for k0, k1 in pairs:
        for k in (k0, k1):
            if k not in sdfs:
                sdfs[k] = _signed_distance(before[k - first] == value)
        for j in range(k0 + 1, k1):
            t = (j - k0) / (k1 - k0)
            inside = (1.0 - t) * sdfs[k0] + t * sdfs[k1] > 0
            target = after[j - first]
            target[inside & (target == 0)] = value
    region = tuple(box[1:axis + 1]) + (box[0],) + tuple(box[axis + 1:])
    return np.moveaxis(before, 0, axis), np.moveaxis(after, 0, axis), region


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed Euclidean distance of ``mask``'s pixels to its boundary: > 0 inside, < 0 outside."""
    padded = np.pad(mask, 1)  # a background rim: a mask touching the edge still has an outside
    inside = ndimage.distance_transform_edt(padded)
    outside = ndimage.distance_transform_edt(~padded)
    sdf = np.where(padded, inside - 0.5, 0.5 - outside)
    return sdf[(slice(1, -1),) * mask.ndim]


# -- threshold fill --------------------------------------------------------------------------------
def threshold_fill(
    labels: np.ndarray, image: np.ndarray, low: float, high: float, value: int,
    box: Sequence[slice] | None = None, within: np.ndarray | None = None,
    overwrite: bool = False, preview: bool = False,
) -> Edit | None:
    """Set ``value`` where ``low <= image <= high`` (e.g. bone: 300..3000 HU).

    Args:
        labels: Label array (Z, Y, X), modified in place unless ``preview``.
        image: Intensities of the same shape as ``labels`` (real values, e.g. HU); NaN never matches.
        low: Lowest intensity filled (inclusive).
        high: Highest intensity filled (inclusive).
        value: The class written.
        box: One slice per leading axis (step 1) restricting the fill; missing axes are whole.
        within: bool array of ``labels``' shape restricting the fill (e.g. a class mask or a
            brushed region).
        overwrite: Also overwrite other classes; by default only background (0) is written.
        preview: Build the edit without applying it.

    Returns:
        The edit, or None when no pixel changes.
    """
    _check_value(labels, value)
    if image.shape != labels.shape:
        raise ValueError(f"image shape {image.shape} differs from labels shape {labels.shape}")
    region = _box_region(labels.shape, box)
    if within is not None:
        if within.shape != labels.shape:
            raise ValueError(f"within shape {within.shape} differs from labels {labels.shape}")
        inner = _bbox(within[region])  # shrink to the mask's bounding box
        if inner is None:
            return None
        region = tuple(slice(r.start + i.start, r.start + i.stop)
                       for r, i in zip(region, inner, strict=True))
    before = labels[region].copy()
    values = image[region]
    mask = (values >= low) & (values <= high)
    if within is not None:
        mask &= within[region]
    if not overwrite:
        mask &= before == 0
    after = before.copy()
    after[mask] = value
    return _apply(labels, (before, after, region), preview)


# -- 3-D connected components ----------------------------------------------------------------------
def connected_components_3d(
    labels: np.ndarray, value: int, connectivity: int = 26,
) -> tuple[np.ndarray, int]:
    """Label the connected components of class ``value``.

    Args:
        labels: Label array (Z, Y, X).
        value: The class whose components are labelled.
        connectivity: 6 (faces), 18 (faces and edges) or 26 (faces, edges and corners).

    Returns:
        (components, count): int32 array of ``labels``' shape, 0 off the class and 1..count on its
        components (numbered in C scan order), and the number of components.
    """
    structure = _structure(labels.ndim, connectivity)
    components = np.zeros(labels.shape, np.int32)
    box = _bbox(labels == value)
    if box is None:
        return components, 0
    local, count = ndimage.label(labels[box] == value, structure=structure, output=np.int32)
    components[box] = local
    return components, int(count)


def keep_largest_component(
    labels: np.ndarray, value: int, connectivity: int = 26, preview: bool = False,
) -> Edit | None:
    """Set every component of class ``value`` but the largest to background (0).

    Ties keep the component found first in C scan order. Returns None when there is at most one.
    """
    def keep(sizes: np.ndarray) -> np.ndarray:
        kept = np.zeros(sizes.size, bool)
        kept[int(np.argmax(sizes[1:])) + 1] = True
        return kept

    return _apply(labels, _component_change(labels, value, connectivity, keep), preview)


def remove_small_components_3d(
    labels: np.ndarray, value: int, min_voxels: int, connectivity: int = 26,
    preview: bool = False,
) -> Edit | None:
    """Set the components of class ``value`` with fewer than ``min_voxels`` voxels to background."""
    def keep(sizes: np.ndarray) -> np.ndarray:
        return sizes >= min_voxels

    return _apply(labels, _component_change(labels, value, connectivity, keep), preview)


def _component_change(
    labels: np.ndarray, value: int, connectivity: int,
    keep: Callable[[np.ndarray], np.ndarray],
) -> Change | None:
    """Remove the components of ``value`` that ``keep(sizes)`` (sizes[0] is unused) rejects."""
    structure = _structure(labels.ndim, connectivity)
    box = _bbox(labels == value)
    if box is None:
        return None
    before = labels[box].copy()
    mask = before == value
    components, count = ndimage.label(mask, structure=structure, output=np.int32)
    kept = keep(np.bincount(components.ravel(), minlength=count + 1))
    after = before.copy()
    after[mask & ~kept[components]] = 0
    return before, after, box


# -- helpers ---------------------------------------------------------------------------------------
def _apply(labels: np.ndarray, change: Change | None, preview: bool) -> Edit | None:
    """Turn a change into its edit and, unless previewing, apply it to ``labels``."""
    if change is None:
        return None
    edit = diff_region(*change)
    if edit is not None and not preview:
        edit.apply(labels)
    return edit


def _check_value(labels: np.ndarray, value: int) -> None:
    info = np.iinfo(labels.dtype)
    if not info.min <= value <= info.max:
        raise ValueError(f"label {value} does not fit in {labels.dtype}")


def _structure(ndim: int, connectivity: int) -> np.ndarray:
    if connectivity not in _STRUCTURE_RANK:
        raise ValueError(f"connectivity must be 6, 18 or 26, not {connectivity}")
    return ndimage.generate_binary_structure(ndim, min(_STRUCTURE_RANK[connectivity], ndim))


def _bbox(mask: np.ndarray) -> Region | None:
    """Bounding box of the True pixels of ``mask``, or None when there are none."""
    bounds = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        bounds.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(bounds)


def _box_region(shape: tuple[int, ...], box: Sequence[slice] | None) -> Region:
    """Normalise ``box`` (slices of the leading axes, None = whole) to start/stop slices."""
    box = tuple(box or ())
    if len(box) > len(shape):
        raise ValueError(f"box has {len(box)} axes, labels have {len(shape)}")
    region = []
    for n, s in zip(shape, box + (slice(None),) * (len(shape) - len(box)), strict=True):
        start, stop, step = s.indices(n)
        if step != 1:
            raise ValueError("box slices must have step 1")
        region.append(slice(start, max(stop, start)))
    return tuple(region)
