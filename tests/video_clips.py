"""Clips encoded here from real photographs (a camera panning over astronaut, chelsea and
coffee side by side), and the reference the video tests compare the reader with: a fresh
``cv2.VideoCapture`` read from the start, converted to RGB, as SHA-1 digests per frame."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

SIZE = (320, 240)  # width, height of the clips made here
FRAMES = 60


def _panorama() -> np.ndarray:
    """Three photographs side by side (BGR, 240 rows): a camera panning over it gives real
    frames with real motion."""
    height = SIZE[1]
    strips = []
    for image in (skdata.astronaut(), skdata.chelsea(), skdata.coffee()):
        width = round(image.shape[1] * height / image.shape[0])
        strips.append(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))
    return cv2.cvtColor(np.hstack(strips), cv2.COLOR_RGB2BGR)


def pan_frames(count: int) -> list[np.ndarray]:
    panorama = _panorama()
    width = SIZE[0]
    return [np.ascontiguousarray(panorama[:, 7 * k : 7 * k + width]) for k in range(count)]


def encode(path: Path, fourcc: str, frames: list[np.ndarray], fps: float = 25.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps,
                             SIZE)
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} into {path.suffix}"
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def write_clips(folder: Path) -> dict[str, Path]:
    """The pan encoded as MPEG-4 in MP4 and MKV and as MJPEG in AVI (FRAMES frames of SIZE)."""
    frames = pan_frames(FRAMES)
    return {
        "mp4": encode(folder / "pan.mp4", "mp4v", frames),
        "avi": encode(folder / "pan.avi", "MJPG", frames),
        "mkv": encode(folder / "pan.mkv", "mp4v", frames),
    }


def digest(rgb: np.ndarray) -> bytes:
    return hashlib.sha1(np.ascontiguousarray(rgb)).digest()


def reference_digests(path: Path) -> list[bytes]:
    """Digests of every frame, decoded in order by a fresh capture, as RGB."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    digests = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        digests.append(digest(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    cap.release()
    return digests


def shuffled(count: int, seed: int = 0) -> list[int]:
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order




def write_astronaut_pan(path: Path, frames: int, size: tuple[int, int], *, fps: float = 25.0,
                        shift: int = 2, top: int = 100, left: int = 150,
                        fourcc: str = "FFV1") -> list[np.ndarray]:
    """A clip of scikit-image's astronaut seen through a ``size`` (width, height) window whose
    left edge starts at (``left``, ``top``) and moves right by ``shift`` px a frame (content
    moves left); returns the RGB frames written (FFV1 is lossless: what decodes)."""
    source = skdata.astronaut()
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc} into {path.suffix}"
    written = []
    for t in range(frames):
        x = left + shift * t
        rgb = np.ascontiguousarray(source[top:top + height, x:x + width])
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        written.append(rgb)
    writer.release()
    return written
