"""Clip sampling and preprocessing for action recognition (the torch-free part of
:mod:`core.inference.clips`, which re-exports every name here).

:func:`clip_windows` cuts a video into windows of ``T`` frames sampled ``stride`` apart;
:func:`preprocess_frame` / :func:`preprocess_flow` resize and centre-crop a frame or a flow field
as a model's :class:`~core.models.action_specs.ClipSpec` says; :func:`flow_stack` builds a
two-stream window's stacked flow. See :mod:`core.inference.clips` for the full description.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from core.inference.errors import InferenceError

FLOW_SCALE = 20.0  # a spec without flow_scale: 20 px of displacement -> 1.0


class ClipSpecLike(Protocol):
    """What this module reads from a model's clip spec
    (:class:`core.models.action_specs.ClipSpec`, from ``clip_spec(name)``)."""

    frames: int
    size: tuple[int, int]
    resize: tuple[int, ...]  # (S,): the short side becomes S; (H, W): exactly that size
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input: str
    fps: float | None
    flow_scale: float


# -- windows ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipWindow:
    """One clip of a video.

    Attributes:
        start: First frame of the window.
        frame_indices: The ``T`` frames given to the model, ``start`` first; a window of a video
            shorter than one span repeats the last frame.
    """

    start: int
    frame_indices: tuple[int, ...]

    @property
    def end(self) -> int:
        """Last frame of the window's span (inclusive): the frames it scores are start..end."""
        return max(self.frame_indices)

    @property
    def centre(self) -> int:
        """The middle sampled frame (the RGB frame of a two-stream model)."""
        return self.frame_indices[len(self.frame_indices) // 2]

    @property
    def padded(self) -> bool:
        """Whether frames are repeated because the video is shorter than one clip."""
        return len(set(self.frame_indices)) < len(self.frame_indices)


def clip_span(clip_frames: int, stride: int = 1) -> int:
    """Frames from a clip's first sampled frame to its last, both included."""
    return (clip_frames - 1) * stride + 1


def clip_windows(frame_count: int, clip_frames: int, stride: int = 1,
                 step: int | None = None) -> list[ClipWindow]:
    """The windows that cover a video of ``frame_count`` frames.

    Args:
        frame_count: Frames of the video (at least 1).
        clip_frames: ``T``, frames per clip.
        stride: Frames between two sampled frames of a clip (1: consecutive frames).
        step: Frames between the starts of two windows; default the span
            ``(T - 1) * stride + 1`` (windows side by side, none overlapping). It may not exceed
            the span: frames between windows would be left out.

    Returns:
        Windows by start; the last one ends on the last frame (shifted back when the steps do
        not land there). Every frame lies in some window's ``start..end``.

    Raises:
        ValueError: a count, ``stride`` or ``step`` below 1, or ``step`` above the span.
    """
    for name, value in (("frame_count", frame_count), ("clip_frames", clip_frames),
                        ("stride", stride)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, not {value}")
    span = clip_span(clip_frames, stride)
    if step is None:
        step = span
    if int(step) != step or step < 1:
        raise ValueError(f"step must be a whole number of at least 1, not {step}")
    if step > span:
        raise ValueError(f"step {step} is longer than a clip's span of {span} frames "
                         f"({clip_frames} frames, stride {stride}): frames between the clips "
                         "would never be seen")
    last = frame_count - 1
    if span > frame_count:  # one padded window
        indices = tuple(min(i * stride, last) for i in range(clip_frames))
        return [ClipWindow(0, indices)]
    starts = list(range(0, frame_count - span + 1, step))
    if starts[-1] + span - 1 < last:
        starts.append(frame_count - span)
    return [ClipWindow(s, tuple(range(s, s + span, stride))) for s in starts]


def frame_coverage(windows: Sequence[ClipWindow], frame_count: int) -> np.ndarray:
    """How many windows hold each frame (int32, (frame_count,))."""
    counts = np.zeros(frame_count, np.int32)
    for window in windows:
        counts[window.start:window.end + 1] += 1
    return counts


# -- preprocessing -----------------------------------------------------------------------------------
def resized_size(height: int, width: int, spec: ClipSpecLike) -> tuple[int, int]:
    """(height, width) a frame is resized to before the centre crop: ``spec.resized_size`` when
    the spec has it, else the short side to ``resize[0]`` (the longer one rounded down, as
    torchvision does) or exactly ``resize`` = (H, W)."""
    own = getattr(spec, "resized_size", None)
    if callable(own):
        new_h, new_w = own(height, width)
    elif len(spec.resize) == 2:
        new_h, new_w = spec.resize
    else:
        short = spec.resize[0]
        new_h, new_w = ((short, max(1, int(short * width / height))) if height <= width
                        else (max(1, int(short * height / width)), short))
    crop_h, crop_w = spec.size
    if new_h < crop_h or new_w < crop_w:
        raise InferenceError(f"A {width}x{height} frame resized to {new_w}x{new_h} is smaller "
                             f"than the model's {crop_w}x{crop_h} crop.")
    return int(new_h), int(new_w)


def _crop_box(resized: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of the centre crop (torchvision's ``center_crop`` rounding)."""
    return int(round((resized[0] - crop[0]) / 2.0)), int(round((resized[1] - crop[1]) / 2.0))


def _resize(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``array`` (H, W, C) resized to (h, w): area averaging to shrink, bilinear to grow."""
    import cv2

    new_h, new_w = size
    if (new_h, new_w) == array.shape[:2]:
        return array
    shrink = new_h * new_w < array.shape[0] * array.shape[1]
    return cv2.resize(np.ascontiguousarray(array), (new_w, new_h),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def preprocess_frame(frame: np.ndarray, spec: ClipSpecLike) -> np.ndarray:
    """An RGB uint8 frame resized and centre-cropped as the model expects: uint8 (h, w, 3) of
    ``spec.size`` (C3D: 128x171 first, then the 112x112 centre)."""
    resized = _resize(frame, resized_size(frame.shape[0], frame.shape[1], spec))
    top, left = _crop_box(resized.shape[:2], tuple(spec.size))
    crop_h, crop_w = spec.size
    return np.ascontiguousarray(resized[top:top + crop_h, left:left + crop_w])


def preprocess_flow(field: np.ndarray, spec: ClipSpecLike) -> np.ndarray:
    """A flow field (H, W, 2) as a two-stream model takes it: resized like the frames (the
    displacements scaled with the image), centre-cropped, each component minus its mean over
    the crop (camera motion), divided by ``spec.flow_scale``: float32 (2, h, w)."""
    height, width = field.shape[:2]
    new_h, new_w = resized_size(height, width, spec)
    resized = _resize(np.asarray(field, np.float32), (new_h, new_w))
    top, left = _crop_box((new_h, new_w), tuple(spec.size))
    crop_h, crop_w = spec.size
    crop = resized[top:top + crop_h, left:left + crop_w].transpose(2, 0, 1)  # (2, h, w)
    scale = np.array([new_w / width, new_h / height], np.float32)[:, None, None]
    crop = crop * scale
    crop -= crop.mean(axis=(1, 2), keepdims=True)
    crop /= np.float32(getattr(spec, "flow_scale", None) or FLOW_SCALE)
    return np.ascontiguousarray(crop, dtype=np.float32)


def flow_pairs(window: ClipWindow) -> list[tuple[int, int]]:
    """The frame pairs of a two-stream window's flow stack: its consecutive sampled frames
    (``T - 1`` pairs); a pair of a padded window's repeated frame is ``(t, t)``."""
    return list(itertools.pairwise(window.frame_indices))


def flow_stack(flow: Callable[[int, int], np.ndarray], window: ClipWindow,
               shape: tuple[int, int] | None = None) -> np.ndarray:
    """The raw flow stack of a window: float32 (2L, H, W), channels ``dx_0, dy_0, dx_1, ...``
    of the flows between its consecutive sampled frames (zero between repeated frames).

    ``flow(t, k)`` gives the field from frame ``t`` to ``t + k`` (a
    :class:`core.flow.FlowProvider`); ``shape`` (H, W) is needed only when every pair repeats a
    frame (a one-frame video).
    """
    fields = [None if t1 == t else np.asarray(flow(t, t1 - t), np.float32)
              for t, t1 in flow_pairs(window)]
    known = next((f for f in fields if f is not None), None)
    if known is None and shape is None:
        raise ValueError("every pair repeats a frame (a one-frame video): give the shape")
    size = known.shape[:2] if known is not None else tuple(shape)  # type: ignore[arg-type]
    zero = np.zeros((*size, 2), np.float32)
    stacked = np.stack([f if f is not None else zero for f in fields])  # (L, H, W, 2)
    return np.ascontiguousarray(stacked.transpose(0, 3, 1, 2).reshape(2 * len(fields), *size))


def default_stride(spec: Any, video_fps: float) -> int:
    """Frames between a clip's sampled frames so that they come at about ``spec.fps``
    (1 when the spec has no rate or the video is slower)."""
    target = getattr(spec, "fps", None)
    if not target or not video_fps or video_fps <= 0:
        return 1
    return max(1, round(video_fps / target))
