"""Frames with known motion for the optical-flow tests (tests/core/test_flow*.py).

Made from skimage's photographs: a camera pan is a crop window of the photograph translated
with sub-pixel bilinear interpolation (``cv2.warpAffine``), so every frame is filled with real
content and the true flow is known exactly.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np
from scipy import ndimage
from skimage import data

SHIFT = (2.3, -1.7)  # (dx, dy) of the known sub-pixel translation
BORDER = 16  # pixels left out of endpoint errors (content shifted in from outside)
PAN = (1.5, 0.7)  # camera pan in px per frame
CROP = (60, 180, 320, 320)  # x, y, width, height of the pan's window in the astronaut
PATCH = (110.0, 205.0, 38.0)  # the astronaut's round mission patch in the window: cx, cy, r


@cache
def _image(name: str) -> np.ndarray:
    if name == "camera":
        return np.repeat(data.camera()[..., None], 3, axis=2)
    return getattr(data, name)()


def _grey(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def _pan(count: int, velocity: tuple[float, float] = PAN) -> list[np.ndarray]:
    """Frames 0..count-1 of a window over the astronaut whose content moves by ``velocity``."""
    image = _image("astronaut")
    x, y, w, h = CROP
    frames = []
    for t in range(count):
        move = np.float32([[1, 0, velocity[0] * t], [0, 1, velocity[1] * t]])
        moved = cv2.warpAffine(image, move, (image.shape[1], image.shape[0]),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.ascontiguousarray(moved[y:y + h, x:x + w]))
    return frames


def _disc(t: float = 0, velocity: tuple[float, float] = PAN, shape: tuple[int, int] = (320, 320),
          circle: tuple[float, float, float] = PATCH) -> np.ndarray:
    """The true uint8 mask of the mission patch in frame ``t`` of the pan."""
    cx, cy, r = circle
    ys, xs = np.indices(shape, dtype=np.float64)
    return ((xs - cx - velocity[0] * t) ** 2 + (ys - cy - velocity[1] * t) ** 2 <= r * r
            ).astype(np.uint8)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a != 0, b != 0
    return float((a & b).sum() / max(1, (a | b).sum()))


def _textured(grey: np.ndarray) -> np.ndarray:
    """Pixels where flow is observable: the structure tensor's smaller eigenvalue (7x7 window,
    3x3 Sobel; OpenCV's normalised units) above 1e-4, away from the border. About half of each
    test image; flat areas (sky, skin, the black background) are left out."""
    mask = cv2.cornerMinEigenVal(grey, 7, 3) > 1e-4
    mask[:BORDER], mask[-BORDER:], mask[:, :BORDER], mask[:, -BORDER:] = False, False, False, False
    return mask


def _shifted_pair(name: str) -> tuple[np.ndarray, np.ndarray]:
    """An image and the same image moved by SHIFT (cubic spline, content moves by +SHIFT)."""
    image = _image(name)
    moved = ndimage.shift(image.astype(np.float32), (SHIFT[1], SHIFT[0], 0), order=3,
                          mode="reflect")
    return image, np.clip(np.round(moved), 0, 255).astype(np.uint8)


def _endpoint_error(flow: np.ndarray) -> np.ndarray:
    return np.hypot(flow[..., 0] - SHIFT[0], flow[..., 1] - SHIFT[1])

