"""Pictures of flow fields: Middlebury colour coding, its legend, arrows and a magnitude heat map.

Colour coding follows S. Baker, D. Scharstein, J. P. Lewis, S. Roth, M. J. Black, R. Szeliski,
"A Database and Evaluation Methodology for Optical Flow", IJCV 2011 (the Middlebury
``flow-code``), as torchvision's ``flow_to_image`` does: the hue is the direction of the flow
on a wheel of 55 colours built from six ramps (red-yellow 15, yellow-green 6, green-cyan 4,
cyan-blue 11, blue-magenta 13, magenta-red 6), the saturation is the magnitude divided by the
largest magnitude, so still pixels are white and the fastest are fully saturated. With image
axes (y down): right is red, down is orange-yellow, left is cyan-blue and up is blue-violet.

Flows are float32 (H, W, 2) arrays of (dx, dy) in pixels; pictures are uint8 RGB(A).
"""

from __future__ import annotations

import cv2
import numpy as np

# The six ramps of the wheel: (length, base colour, channel that ramps, rising or falling).
_RAMPS = (
    (15, (255, 0, 0), 1, True),  # red -> yellow: green rises
    (6, (255, 255, 0), 0, False),  # yellow -> green: red falls
    (4, (0, 255, 0), 2, True),  # green -> cyan: blue rises
    (11, (0, 255, 255), 1, False),  # cyan -> blue: green falls
    (13, (0, 0, 255), 0, True),  # blue -> magenta: red rises
    (6, (255, 0, 255), 2, False),  # magenta -> red: blue falls
)
OUT_OF_RANGE_DIMMING = 0.75  # Middlebury: magnitudes above the maximum are drawn darker


def color_wheel() -> np.ndarray:
    """The 55 Middlebury wheel colours, float64 (55, 3) RGB in 0..255, starting at red."""
    rows = []
    for length, base, channel, rising in _RAMPS:
        ramp = np.floor(255.0 * np.arange(length) / length)
        block = np.tile(np.asarray(base, np.float64), (length, 1))
        block[:, channel] = ramp if rising else 255.0 - ramp
        rows.append(block)
    return np.concatenate(rows)


_WHEEL_SIZE = 55
# Per channel, as 256-entry tables for cv2.LUT (indexed by the wheel position's integer part):
# the colour at each wheel entry and the step to the next entry (the last wraps to red).
_WHEEL_LUT = np.zeros((3, 256), np.float32)
_WHEEL_LUT[:, :_WHEEL_SIZE] = color_wheel().T
_STEP_LUT = np.zeros((3, 256), np.float32)
_STEP_LUT[:, :_WHEEL_SIZE] = np.roll(color_wheel(), -1, axis=0).T - color_wheel().T


def _check_flow(flow: np.ndarray) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"a flow field is (H, W, 2); got {flow.shape}")
    return flow.astype(np.float32, copy=False)


def flow_magnitude(flow: np.ndarray) -> np.ndarray:
    """float32 (H, W) length of each flow vector (NaN where the flow is not finite)."""
    flow = _check_flow(flow)
    return cv2.magnitude(np.ascontiguousarray(flow[..., 0]), np.ascontiguousarray(flow[..., 1]))


def _max_magnitude(magnitude: np.ndarray, max_magnitude: float | None) -> float:
    if max_magnitude is not None:
        if not max_magnitude > 0:
            raise ValueError(f"max_magnitude must be > 0; got {max_magnitude}")
        return float(max_magnitude)
    finite = magnitude[np.isfinite(magnitude)]
    peak = float(finite.max()) if finite.size else 0.0
    return peak if peak > 1e-9 else 1.0


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """Middlebury colour coding of a flow field.

    Args:
        flow: (H, W, 2) flow.
        max_magnitude: Magnitude drawn fully saturated (use one value for a whole sequence so
            frames compare); None: the largest finite magnitude of this field. Larger
            magnitudes keep their hue, darkened by :data:`OUT_OF_RANGE_DIMMING`.

    Returns:
        uint8 (H, W, 3) RGB: white where still, black where the flow is not finite.
    """
    flow = _check_flow(flow)
    dx, dy = np.ascontiguousarray(flow[..., 0]), np.ascontiguousarray(flow[..., 1])
    magnitude = cv2.magnitude(dx, dy)
    peak = _max_magnitude(magnitude, max_magnitude)
    finite = np.isfinite(magnitude)
    all_finite = bool(finite.all())
    if not all_finite:
        dx, dy, magnitude = (np.where(finite, a, np.float32(0)) for a in (dx, dy, magnitude))
    radius = magnitude / np.float32(peak)
    # Wheel position in [0, 54]: angle of the reversed vector, -pi..pi mapped linearly.
    position = np.arctan2(-dy, -dx)
    position += np.float32(np.pi)
    position *= np.float32((_WHEEL_SIZE - 1) / (2 * np.pi))
    index = position.astype(np.uint8)  # floor (position >= 0)
    frac = position - index
    outside = radius > 1.0
    any_outside = bool(outside.any())
    rgb = np.empty(flow.shape[:2] + (3,), np.uint8)
    for channel in range(3):
        # colour of the wheel at the position, 0..255, linear between the two nearest entries
        value = cv2.LUT(index, _STEP_LUT[channel])
        value *= frac
        value += cv2.LUT(index, _WHEEL_LUT[channel])
        saturated = np.float32(255) - radius * (np.float32(255) - value)
        if any_outside:
            saturated = np.where(outside, value * np.float32(OUT_OF_RANGE_DIMMING), saturated)
        rgb[..., channel] = saturated  # truncation = floor for values >= 0
    if not all_finite:
        rgb[~finite] = 0
    return rgb


def color_wheel_legend(size: int = 128) -> np.ndarray:
    """The legend disc of :func:`flow_to_color`: uint8 (size, size, 3) RGB.

    The pixel at offset (dx, dy) from the centre shows the colour of the flow (dx, dy) / R
    (R = the disc's radius) coded with ``max_magnitude=1``: the rim is full saturation, the
    centre white. Outside the disc is white.
    """
    if size < 2:
        raise ValueError(f"size must be >= 2; got {size}")
    centre = (size - 1) / 2.0
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    flow = np.dstack([(xs - centre) / centre, (ys - centre) / centre])
    legend = flow_to_color(flow, max_magnitude=1.0)
    legend[np.hypot(flow[..., 0], flow[..., 1]) > 1.0] = 255
    return legend


def flow_arrows(flow: np.ndarray, step: int = 16, scale: float = 1.0,
                min_magnitude: float = 0.0) -> np.ndarray:
    """Arrows on a grid for drawing: float32 (N, 4) rows ``(x0, y0, x1, y1)``.

    Args:
        flow: (H, W, 2) flow.
        step: Grid spacing in pixels; the first row and column are at ``step // 2``.
        scale: Arrow length per pixel of flow (``x1 = x0 + scale * dx``).
        min_magnitude: Leave out arrows of flows shorter than this (pixels of flow).

    Returns:
        One row per grid point with a finite flow of at least ``min_magnitude``, row-major;
        each arrow starts at its grid point and points along the flow.
    """
    flow = _check_flow(flow)
    if step < 1:
        raise ValueError(f"step must be >= 1; got {step}")
    ys = np.arange(step // 2, flow.shape[0], step)
    xs = np.arange(step // 2, flow.shape[1], step)
    grid_y, grid_x = np.meshgrid(ys, xs, indexing="ij")
    vectors = flow[grid_y, grid_x].reshape(-1, 2)
    x0 = grid_x.reshape(-1).astype(np.float32)
    y0 = grid_y.reshape(-1).astype(np.float32)
    keep = np.isfinite(vectors).all(axis=1) & (np.hypot(*vectors.T) >= min_magnitude)
    arrows = np.stack([x0, y0, x0 + scale * vectors[:, 0], y0 + scale * vectors[:, 1]], axis=1)
    return arrows[keep].astype(np.float32)


def flow_magnitude_heat(flow: np.ndarray, max_magnitude: float | None = None,
                        colormap: int = cv2.COLORMAP_INFERNO,
                        alpha: int | None = None) -> np.ndarray:
    """Heat map of the flow magnitude as uint8 (H, W, 4) RGBA.

    Args:
        flow: (H, W, 2) flow.
        max_magnitude: Magnitude at the top of the colour map (None: this field's largest).
        colormap: An OpenCV colour map (``cv2.COLORMAP_*``).
        alpha: Constant opacity 0-255; None: opacity grows with the magnitude (still pixels
            transparent), so the map can lie over the frame.
    """
    magnitude = flow_magnitude(flow)
    level = np.nan_to_num(magnitude / _max_magnitude(magnitude, max_magnitude), nan=0.0)
    level8 = (np.clip(level, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    rgba = np.empty(level8.shape + (4,), np.uint8)
    rgba[..., :3] = cv2.cvtColor(cv2.applyColorMap(level8, colormap), cv2.COLOR_BGR2RGB)
    rgba[..., 3] = level8 if alpha is None else int(np.clip(alpha, 0, 255))
    return rgba


def draw_arrows(image: np.ndarray, arrows: np.ndarray, color: tuple[int, int, int] = (255, 0, 0),
                thickness: int = 1, tip_length: float = 0.3) -> np.ndarray:
    """A copy of ``image`` (RGB, or grey made RGB) with ``arrows`` (N, 4) drawn with OpenCV.

    Arrows are drawn antialiased at sub-pixel precision (1/16 px); ``color`` is RGB and
    ``tip_length`` is a fraction of each arrow's length. For exported pictures; the GUI draws
    the arrows itself.
    """
    canvas = np.asarray(image)
    if canvas.ndim == 2:
        canvas = np.repeat(canvas[..., None], 3, axis=2)
    canvas = np.ascontiguousarray(canvas[..., :3], dtype=np.uint8).copy()
    shift = 4
    points = np.round(np.asarray(arrows, np.float64).reshape(-1, 4) * (1 << shift)).astype(int)
    colour = tuple(int(c) for c in color)
    for x0, y0, x1, y1 in points:
        cv2.arrowedLine(canvas, (x0, y0), (x1, y1), colour, thickness, cv2.LINE_AA, shift,
                        tip_length)
    return canvas
