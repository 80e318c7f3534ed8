"""Classical, weight-free segmentation helpers: thresholds, watershed, GrabCut, components.

Images are (H, W) grey or (H, W, 1|3|4) RGB(A) arrays of any numeric dtype. Every function leaves
its inputs untouched and returns a new (H, W) label map or bool mask; cv2 is imported lazily. Bad
arguments raise :class:`ClassicalInputError` (a ``ValueError`` and a ``SegStudioError``) whose
message is one sentence the GUI can show as-is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from core.errors import SegStudioError

#: ``mask_hint`` codes for :func:`grabcut`; 0 means "no hint here".
HINT_FOREGROUND = 1
HINT_BACKGROUND = 2

_OTSU_BINS = 4096  # histogram bins for float images and very wide integer ranges
_EXACT_RANGE = 1 << 16  # integer images spanning fewer values get one bin per value
_PERCENTILE_SAMPLES = 1 << 20  # pixels sampled to estimate the percentiles of a large image
_RGB_WEIGHTS = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as cv2 uses
_NEIGHBOURS_8 = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
_GRABCUT_MIN_SIDE = 3  # GrabCut fits 5-component colour models: it needs a few pixels
_GRABCUT_MIN_MARGIN = 16  # context kept around the box (pixels), at least
_KIND_NAMES = {"biuf": "numeric", "biu": "boolean or integer", "iu": "integer"}


class ClassicalInputError(SegStudioError, ValueError):
    """An argument of a classical helper has the wrong shape, dtype or value."""


def _check(array: np.ndarray, name: str, kinds: str = "biuf", colour: bool = False,
           shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Validate a non-empty (H, W) array ((H, W, 1|3|4) too when ``colour``) and return it."""
    if not isinstance(array, np.ndarray):
        raise ClassicalInputError(f"The {name} must be a numpy array, not {type(array).__name__}.")
    if array.ndim != 2 and not (colour and array.ndim == 3 and array.shape[2] in (1, 3, 4)):
        allowed = "(H, W) or (H, W, 1|3|4)" if colour else "(H, W)"
        raise ClassicalInputError(f"The {name} must have shape {allowed}, not {array.shape}.")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ClassicalInputError(f"The {name} is empty (shape {array.shape}).")
    if shape is not None and array.shape[:2] != shape:
        raise ClassicalInputError(
            f"The {name} has shape {array.shape[:2]} but the image is {shape}; they must match.")
    if array.dtype.kind not in kinds:
        raise ClassicalInputError(f"The {name} must be {_KIND_NAMES[kinds]}, not {array.dtype}.")
    return array


def to_gray(image: np.ndarray) -> np.ndarray:
    """Grey version of an image, in the image's own units.

    Args:
        image: (H, W) or (H, W, 1|3|4) array (RGB order, alpha ignored), any numeric dtype.

    Returns:
        A new (H, W) array: uint8 for uint8 input (as cv2's RGB2GRAY), 0/1 uint8 for bool input,
        float32 otherwise (RGB weighted 0.299/0.587/0.114).
    """
    _check(image, "image", colour=True)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3:
        if image.dtype == np.uint8:
            import cv2

            return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
        return image[..., :3].astype(np.float32) @ _RGB_WEIGHTS
    if image.dtype == np.uint8:
        return image.copy()
    return image.astype(np.uint8 if image.dtype == bool else np.float32)


def _plane(image: np.ndarray) -> np.ndarray:
    """(H, W) values to threshold: the grey image itself (not copied), else :func:`to_gray`."""
    _check(image, "image", colour=True)
    if image.ndim == 3:
        if image.shape[2] != 1:
            return to_gray(image)
        image = image[..., 0]
    return image.view(np.uint8) if image.dtype == bool else image


def to_uint8(image: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """8-bit copy of an image for OpenCV: uint8 kept, bool -> 0/255, anything else scaled.

    Scaling is linear, mapping the given percentiles of the finite values (all channels together,
    so colours stay balanced) to 0 and 255; outliers are clipped and NaN becomes 0.

    Args:
        image: (H, W) or (H, W, 1|3|4) array of any numeric dtype.
        percentiles: Low and high percentiles (0..100) mapped to 0 and 255.

    Returns:
        A new uint8 array, (H, W) for grey input or (H, W, 3) for colour input (alpha dropped).
    """
    _check(image, "image", colour=True)
    if image.ndim == 3:
        image = image[..., 0] if image.shape[2] == 1 else image[..., :3]
    if image.dtype == np.uint8:
        return image.copy()
    if image.dtype == bool:
        return image.astype(np.uint8) * np.uint8(255)
    step = max(1, int(math.sqrt(image.shape[0] * image.shape[1] / _PERCENTILE_SAMPLES)))
    sample = image[::step, ::step].astype(np.float64).ravel()
    sample = sample[np.isfinite(sample)]
    low, high = np.percentile(sample, percentiles) if sample.size else (0.0, 0.0)
    if high <= low and sample.size:  # flat between the percentiles: use the full range
        low, high = sample.min(), sample.max()
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    scaled = (image.astype(np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    np.nan_to_num(scaled, copy=False, nan=0.0)
    np.clip(scaled, 0, 255, out=scaled)
    return (scaled + 0.5).astype(np.uint8)


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) contiguous uint8 RGB for cv2 (grey replicated, 16-bit/float scaled)."""
    import cv2

    u8 = to_uint8(image)
    return cv2.cvtColor(u8, cv2.COLOR_GRAY2RGB) if u8.ndim == 2 else np.ascontiguousarray(u8)


def _otsu_index(counts: np.ndarray) -> int:
    """Last background bin maximising Otsu's between-class variance (first one on ties).

    Otsu is invariant to affine changes of the values: for equal bins, the index is the value.
    """
    counts = counts.astype(np.int64)
    index = np.arange(counts.size, dtype=np.int64)
    weight0 = np.cumsum(counts)[:-1]
    weight1 = counts.sum() - weight0
    sum0 = np.cumsum(counts * index)[:-1]
    sum1 = int(np.dot(counts, index)) - sum0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = weight0 * weight1 * (sum0 / weight0 - sum1 / weight1) ** 2
    between[(weight0 == 0) | (weight1 == 0)] = -1.0
    return int(np.argmax(between))


def otsu_threshold(image: np.ndarray) -> tuple[float, np.ndarray]:
    """Otsu's automatic threshold and the foreground it selects.

    Integer images spanning < 65,536 values (all uint8/uint16) get one histogram bin per value,
    as in skimage, so the threshold is exact. Floats and wider ranges use 4,096 bins over the
    finite range, and the threshold is the largest value in the background bins (NaN/inf are
    ignored). Colour is thresholded on :func:`to_gray`.

    Args:
        image: (H, W) or (H, W, 1|3|4) array of any numeric dtype.

    Returns:
        ``(threshold, mask)``: the threshold in the image's own units, and the (H, W) bool
        foreground ``grey > threshold``. A constant image gives its value and an empty mask.

    Raises:
        ClassicalInputError: The image has a bad shape or dtype, or no finite value.
    """
    gray = _plane(image)
    values = gray.ravel()
    if values.dtype.kind == "f":
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ClassicalInputError("The image has no finite value to threshold.")
    low, high = values.min(), values.max()
    if low == high:
        return float(low), np.zeros(gray.shape, bool)
    if values.dtype.kind in "iu" and int(high) - int(low) < _EXACT_RANGE:
        shifted = values if values.dtype.kind == "u" else values.astype(np.int64) - int(low)
        k = _otsu_index(np.bincount(shifted)[int(low) if values.dtype.kind == "u" else 0:])
        threshold = float(int(low) + k)
    else:
        counts, edges = np.histogram(values, bins=_OTSU_BINS, range=(float(low), float(high)))
        threshold = float(values[values < edges[_otsu_index(counts) + 1]].max())
    return threshold, gray > threshold


def threshold(image: np.ndarray, low: float, high: float | None = None) -> np.ndarray:
    """Pixels whose value lies in a manual range, both ends included.

    Args:
        image: (H, W) or (H, W, 1|3|4) array; colour is thresholded on :func:`to_gray`.
        low: Smallest value kept, in the image's units.
        high: Largest value kept; None keeps everything from ``low`` up.

    Returns:
        (H, W) bool mask ``low <= grey <= high``.

    Raises:
        ClassicalInputError: Bad image, a NaN bound, or ``low > high``.
    """
    gray = _plane(image)
    if math.isnan(low) or (high is not None and math.isnan(high)):
        raise ClassicalInputError("Threshold bounds must be numbers, not NaN.")
    if high is not None and low > high:
        raise ClassicalInputError(f"The low threshold ({low}) is above the high one ({high}).")
    mask = gray >= low
    if high is not None:
        mask &= gray <= high
    return mask


def watershed_from_markers(image: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """Grow seed labels over the image with OpenCV's marker-based watershed.

    The image is converted to 8-bit RGB for cv2.watershed (grey replicated; 16-bit and float
    scaled by :func:`to_uint8`) and padded by one pixel, as cv2 overwrites the outer ring. cv2
    marks the lines where regions meet with -1; each such pixel gets the label most common among
    its 8 neighbours (ties: the smaller label), repeated until none is left, so every pixel ends
    up labelled. Seed pixels always keep their own label. cv2 floods by the colour difference
    between neighbours, so regions meet on the image's edges (midway between seeds where it is
    flat): pass the image or a mask itself, not a distance map.

    Args:
        image: (H, W) or (H, W, 1|3|4) array of any numeric dtype.
        markers: (H, W) integer array: 0 = unknown, 1..N = seeds (N < 2**31).

    Returns:
        (H, W) int32 labels, every pixel one of the seed values.

    Raises:
        ClassicalInputError: Bad image; markers of another shape, not integer, negative, too
            large, or without any seed.
    """
    import cv2

    _check(image, "image", colour=True)
    _check(markers, "markers", kinds="iu", shape=image.shape[:2])
    if markers.min() < 0:
        raise ClassicalInputError("Markers must be 0 (unknown) or positive seed labels.")
    if markers.max() > np.iinfo(np.int32).max:
        raise ClassicalInputError("Marker labels must be below 2**31.")
    seeds = markers > 0
    if not seeds.any():
        raise ClassicalInputError("The markers contain no seed: label at least one pixel > 0.")
    # cv2 overwrites the outer pixel ring with -1 before flooding, seeds included: pad by one.
    rgb = cv2.copyMakeBorder(_to_rgb8(image), 1, 1, 1, 1, cv2.BORDER_REPLICATE)
    labels = np.pad(markers.astype(np.int32), 1)
    cv2.watershed(rgb, labels)
    labels = labels[1:-1, 1:-1]
    labels[seeds] = markers[seeds]
    return _resolve_unlabelled(labels)


def _resolve_unlabelled(labels: np.ndarray) -> np.ndarray:
    """Give each pixel <= 0 the majority label of its 8 neighbours until none is left.

    Each round decides from one snapshot (no order effects) the whole front next to labels.
    """
    padded = np.pad(labels, 1, constant_values=0)
    inner = padded[1:-1, 1:-1]
    while (inner <= 0).any():
        ys, xs = np.nonzero(inner <= 0)
        around = np.stack([padded[ys + 1 + dy, xs + 1 + dx] for dy, dx in _NEIGHBOURS_8], axis=1)
        votes = (around[:, :, None] == around[:, None, :]).sum(axis=2).astype(np.int64)
        votes[around <= 0] = 0
        best = np.argmax(votes * (1 << 32) - around, axis=1)  # most votes, then smaller label
        rows = np.arange(ys.size)
        decided = votes[rows, best] > 0
        inner[ys[decided], xs[decided]] = around[rows, best][decided]
    return np.ascontiguousarray(inner)


def _clip_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Integer (x0, y0, x1, y1), ordered, rounded outwards and clipped to the image."""
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ClassicalInputError(
            f"The box must be four numbers (x0, y0, x1, y1), not {box!r}.") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise ClassicalInputError(f"The box coordinates must be finite, not {box!r}.")
    left, right = max(0, math.floor(min(x0, x1))), min(width, math.ceil(max(x0, x1)))
    top, bottom = max(0, math.floor(min(y0, y1))), min(height, math.ceil(max(y0, y1)))
    if min(right - left, bottom - top) < _GRABCUT_MIN_SIDE:
        raise ClassicalInputError(f"The box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) keeps {max(0, right - left)} x "
                                  f"{max(0, bottom - top)} pixels of the {width} x {height} image; "
                                  f"draw one of at least 3 x 3 pixels on the image.")
    return left, top, right, bottom


def _grabcut_start(shape: tuple[int, int], box: tuple[int, int, int, int],
                   mask_hint: np.ndarray | None) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Initial cv2 GrabCut mask and the window GrabCut works on (box + margin + hints)."""
    import cv2

    x0, y0, x1, y1 = box
    start = np.full(shape, cv2.GC_BGD, np.uint8)
    start[y0:y1, x0:x1] = cv2.GC_PR_FGD
    margin = max(_GRABCUT_MIN_MARGIN, max(x1 - x0, y1 - y0) // 2)
    top, bottom = max(0, y0 - margin), min(shape[0], y1 + margin)
    left, right = max(0, x0 - margin), min(shape[1], x1 + margin)
    if mask_hint is not None:
        _check(mask_hint, "GrabCut hint", kinds="biu", shape=shape)
        if not np.isin(mask_hint, (0, HINT_FOREGROUND, HINT_BACKGROUND)).all():
            raise ClassicalInputError(
                "The GrabCut hint may only hold 0 (none), 1 (foreground) and 2 (background).")
        start[mask_hint == HINT_FOREGROUND] = cv2.GC_FGD
        start[mask_hint == HINT_BACKGROUND] = cv2.GC_BGD
        ys, xs = np.nonzero(mask_hint)
        if ys.size:
            top, bottom = min(top, int(ys.min())), max(bottom, int(ys.max()) + 1)
            left, right = min(left, int(xs.min())), max(right, int(xs.max()) + 1)
    return start, (slice(top, bottom), slice(left, right))


def grabcut(image: np.ndarray, box: Sequence[float], iterations: int = 5,
            mask_hint: np.ndarray | None = None) -> np.ndarray:
    """Foreground of the object inside a box, by OpenCV's GrabCut.

    The image becomes 8-bit RGB (grey replicated, 16-bit/float scaled by :func:`to_uint8`'s
    percentiles). The box starts as "probably foreground", the rest as background. For speed,
    GrabCut sees only the box, a margin of half its longer side (>= 16 px) and the hinted pixels.
    cv2's random seed is reset first, so the same call gives the same mask.

    Args:
        image: (H, W) or (H, W, 1|3|4) array of any numeric dtype.
        box: ``(x0, y0, x1, y1)`` in pixels (x right, y down; x1/y1 exclusive like slice ends);
            corners in either order, floats rounded outwards, clipped to the image.
        iterations: GrabCut iterations, at least 1.
        mask_hint: Optional (H, W) integer array from the user's strokes: 0 = no hint,
            :data:`HINT_FOREGROUND` (1) = surely foreground (even outside the box),
            :data:`HINT_BACKGROUND` (2) = surely background.

    Returns:
        (H, W) bool foreground mask, False outside the box except where hinted foreground.

    Raises:
        ClassicalInputError: Bad image; a box not of four finite numbers, keeping < 3 x 3 pixels
            of the image or leaving no background; ``iterations`` < 1; a bad hint.
    """
    import cv2

    _check(image, "image", colour=True)
    clipped = _clip_box(box, image.shape[1], image.shape[0])
    if int(iterations) < 1:
        raise ClassicalInputError(f"GrabCut needs at least 1 iteration, not {iterations}.")
    start, window = _grabcut_start(image.shape[:2], clipped, mask_hint)
    work = start[window].copy()
    foreground = np.count_nonzero((work == cv2.GC_FGD) | (work == cv2.GC_PR_FGD))
    if work.size - foreground < 5:  # each colour model fits 5 Gaussians
        raise ClassicalInputError("The box covers the whole image: leave some background "
                                  "around the object, or mark background with the hint.")
    if foreground < 5:
        raise ClassicalInputError("The hint marks the whole box as background.")
    cv2.setRNGSeed(0)
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(_to_rgb8(image[window]), work, None, *models, int(iterations),
                cv2.GC_INIT_WITH_MASK)
    mask = np.zeros(image.shape[:2], bool)
    mask[window] = (work == cv2.GC_FGD) | (work == cv2.GC_PR_FGD)
    return mask


def connected_components(mask_or_labels: np.ndarray, connectivity: int = 8,
                         min_size: int = 0) -> tuple[np.ndarray, int]:
    """Split a mask or a semantic label map into instances, one per connected region.

    Each connected region of each non-zero class gets its own id; regions of different classes
    never merge, even where they touch. Ids are consecutive, numbered class by class in
    ascending class order. :func:`instance_classes` gives each instance's class back.

    Args:
        mask_or_labels: (H, W) bool mask or integer semantic labels (0 = background).
        connectivity: 8 (diagonal neighbours connect) or 4.
        min_size: Regions with fewer pixels than this are dropped (become 0).

    Returns:
        ``(instances, count)``: (H, W) uint32 ids 0..count (0 = background), and their number.

    Raises:
        ClassicalInputError: Not an (H, W) bool/integer array, connectivity not 4 or 8, or a
            negative ``min_size``.
    """
    import cv2

    labels = _check(mask_or_labels, "mask or label map", kinds="biu")
    if connectivity not in (4, 8):
        raise ClassicalInputError(f"Connectivity must be 4 or 8, not {connectivity}.")
    if min_size < 0:
        raise ClassicalInputError(f"The minimum size must be 0 or more, not {min_size}.")
    if labels.dtype == bool:
        classes = [True]
    elif labels.dtype.kind == "u" and labels.dtype.itemsize <= 2:
        present = np.flatnonzero(np.bincount(labels.ravel()))  # much faster than np.unique
        classes = present[present != 0]
    else:
        classes = np.unique(labels[labels != 0])
    instances = np.zeros(labels.shape, np.uint32)
    count = 0
    for value in classes:
        inside = labels == value
        n, components, stats, _ = cv2.connectedComponentsWithStats(
            inside.view(np.uint8), connectivity=connectivity, ltype=cv2.CV_32S)
        keep = stats[1:, cv2.CC_STAT_AREA] >= min_size
        new_ids = np.zeros(n, np.uint32)
        new_ids[1:][keep] = np.arange(count + 1, count + 1 + np.count_nonzero(keep))
        instances += new_ids[components]  # components is 0 (-> 0) outside this class
        count += int(np.count_nonzero(keep))
    return instances, count


def instance_classes(instances: np.ndarray, semantic: np.ndarray) -> dict[int, int]:
    """Class of each instance: the semantic value most of its pixels have (ties: the smaller).

    Args:
        instances: (H, W) integer ids (0 = background), e.g. from :func:`connected_components`.
        semantic: (H, W) bool or integer class labels of the same image.

    Returns:
        ``{instance id: class}`` for every non-zero id present.

    Raises:
        ClassicalInputError: Arrays that are not (H, W) integer maps of the same shape.
    """
    _check(instances, "instance map", kinds="biu")
    _check(semantic, "semantic map", kinds="biu", shape=instances.shape)
    inside = instances != 0
    if not inside.any():
        return {}
    class_values, class_index = np.unique(semantic[inside], return_inverse=True)
    n_classes = class_values.size
    pairs, counts = np.unique(instances[inside].astype(np.int64) * n_classes + class_index,
                              return_counts=True)
    ids, classes = pairs // n_classes, pairs % n_classes
    order = np.lexsort((classes, -counts, ids))  # by id, then most pixels, then smaller class
    first = order[np.r_[True, ids[order][1:] != ids[order][:-1]]]
    return dict(zip(ids[first].tolist(), class_values[classes[first]].tolist(), strict=True))


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a mask: background regions not 4-connected to the image border.

    Args:
        mask: (H, W) bool (or integer, non-zero = foreground) mask.

    Returns:
        (H, W) bool mask with every enclosed background region set to True.
    """
    import cv2

    inside = _check(mask, "mask", kinds="biu") != 0
    padded = np.zeros((inside.shape[0] + 2, inside.shape[1] + 2), np.uint8)
    padded[1:-1, 1:-1] = inside
    cv2.floodFill(padded, None, (0, 0), 2, flags=4)  # the pad links all outer background
    return padded[1:-1, 1:-1] != 2


def remove_small(mask: np.ndarray, min_size: int, connectivity: int = 8) -> np.ndarray:
    """Drop the connected regions of a mask that have fewer than ``min_size`` pixels.

    Args:
        mask: (H, W) bool (or integer, non-zero = foreground) mask.
        min_size: Smallest region kept, in pixels.
        connectivity: 8 or 4.

    Returns:
        (H, W) bool mask of the regions kept.
    """
    inside = _check(mask, "mask", kinds="biu") != 0
    return connected_components(inside, connectivity, min_size)[0] != 0
