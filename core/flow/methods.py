"""Dense optical flow between two frames, and sparse Lucas-Kanade point tracks over many.

Dense methods (:func:`compute_flow`), all returning float32 (H, W, 2) fields of (dx, dy) in
pixels such that ``frame0[y, x]`` corresponds to ``frame1[y + dy, x + dx]`` (OpenCV's
``calcOpticalFlowFarneback`` convention):

* ``"farneback"``: G. Farnebäck, "Two-Frame Motion Estimation Based on Polynomial Expansion",
  SCIA 2003 (``cv2.calcOpticalFlowFarneback``). Local: in textureless areas it returns 0.
* ``"dis"``: T. Kroeger et al., "Fast Optical Flow using Dense Inverse Search", ECCV 2016
  (``cv2.DISOpticalFlow``). Its variational refinement fills textureless areas.
* ``"raft_small"``, ``"raft_large"``: Z. Teed, J. Deng, "RAFT: Recurrent All-Pairs Field
  Transforms for Optical Flow", ECCV 2020 (torchvision's models, see :mod:`core.flow.raft`).

Sparse tracking (:func:`track_points`): Shi-Tomasi corners (``cv2.goodFeaturesToTrack``;
J. Shi, C. Tomasi, CVPR 1994) followed with pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``;
J.-Y. Bouguet, 2000) from frame to frame, dropping points that fail the forward-backward check
(Z. Kalal et al., "Forward-Backward Error", ICPR 2010).

Frames are RGB uint8 (H, W, 3) or grey (H, W) arrays. This module does not import torch;
the RAFT methods load it on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.flow.errors import FlowError, UnknownFlowMethodError

FLOW_METHODS = ("farneback", "dis", "raft_small", "raft_large")

# OpenCV's own sample values (samples/python/opt_flow.py): a 3-level pyramid halving each
# level, 15x15 averaging window, 3 iterations, polynomial neighbourhood 5 with sigma 1.2.
# Measured on skimage's astronaut shifted by (2.3, -1.7) px: 0.05 px mean endpoint error on
# textured pixels, ~40 ms for 512x512 on one CPU core pair.
FARNEBACK_DEFAULTS: dict[str, Any] = {
    "pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5,
    "poly_sigma": 1.2, "flags": 0,
}
DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
# "medium" is the accurate preset (0.06-0.10 px on the shifted test images, ~10 ms at 512x512);
# "fast" and "ultrafast" trade that for 2-5x speed (0.2-0.6 px).
DIS_DEFAULTS: dict[str, Any] = {"preset": "medium"}
# Optional DIS overrides applied after the preset: parameter name -> DISOpticalFlow setter.
_DIS_SETTERS = {
    "finest_scale": "setFinestScale",
    "patch_size": "setPatchSize",
    "patch_stride": "setPatchStride",
    "gradient_descent_iterations": "setGradientDescentIterations",
    "variational_refinement_iterations": "setVariationalRefinementIterations",
    "variational_refinement_alpha": "setVariationalRefinementAlpha",
    "variational_refinement_delta": "setVariationalRefinementDelta",
    "variational_refinement_gamma": "setVariationalRefinementGamma",
    "use_mean_normalization": "setUseMeanNormalization",
    "use_spatial_propagation": "setUseSpatialPropagation",
}
RAFT_DEFAULTS: dict[str, Any] = {"num_flow_updates": 12}  # torchvision's default iterations

_DEFAULTS = {"farneback": FARNEBACK_DEFAULTS, "dis": DIS_DEFAULTS,
             "raft_small": RAFT_DEFAULTS, "raft_large": RAFT_DEFAULTS}
_OPTIONAL = {"dis": frozenset(_DIS_SETTERS)}

# One DISOpticalFlow object per thread and setting: building one costs up to a few ms, and an
# object must not be used by two threads at once.
_dis_objects = threading.local()


def default_params(method: str) -> dict[str, Any]:
    """The parameters ``method`` runs with when none are given (a fresh dict)."""
    return dict(_DEFAULTS[_check_method(method)])


def resolve_params(method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The defaults of ``method`` updated with ``params``.

    Raises:
        UnknownFlowMethodError: ``method`` is not one of :data:`FLOW_METHODS`.
        FlowError: A parameter ``method`` does not have, or a DIS preset that does not exist.
    """
    method = _check_method(method)
    merged = default_params(method)
    known = set(merged) | _OPTIONAL.get(method, frozenset())
    unknown = sorted(set(params or {}) - known)
    if unknown:
        raise FlowError(f"Unknown parameter(s) {', '.join(unknown)} for {method} flow; "
                        f"known: {', '.join(sorted(known))}.")
    merged.update(params or {})
    if method == "dis" and merged["preset"] not in DIS_PRESETS:
        raise FlowError(f"Unknown DIS preset {merged['preset']!r}; choose one of "
                        f"{', '.join(DIS_PRESETS)}.")
    return merged


def _check_method(method: str) -> str:
    if method not in _DEFAULTS:
        raise UnknownFlowMethodError(f"Unknown optical flow method {method!r}; choose one of "
                                     f"{', '.join(FLOW_METHODS)}.")
    return method


def compute_flow(frame0: np.ndarray, frame1: np.ndarray, method: str = "farneback",
                 params: Mapping[str, Any] | None = None, device: str = "auto",
                 weights: str | Path | Any | None = "default", *,
                 allow_network: bool = False) -> np.ndarray:
    """Dense optical flow from ``frame0`` to ``frame1``.

    Args:
        frame0, frame1: Frames of the same size: RGB (H, W, 3) or grey (H, W), uint8 (other
            dtypes are scaled to uint8 with the pair's joint minimum and maximum).
        method: One of :data:`FLOW_METHODS`.
        params: Overrides of the method's defaults (:func:`default_params`): Farneback takes
            ``cv2.calcOpticalFlowFarneback``'s arguments (``pyr_scale``, ``levels``,
            ``winsize``, ``iterations``, ``poly_n``, ``poly_sigma``, ``flags``); DIS takes
            ``preset`` (``"ultrafast"``, ``"fast"``, ``"medium"``) and optional overrides
            named after its setters (``finest_scale``, ``patch_size``, ...); RAFT takes
            ``num_flow_updates``.
        device: RAFT only: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
        weights: RAFT only: ``"default"`` (torchvision's recommended published weights),
            another published weights name (``"raft_small.c_t_v1"``), a weights file, an
            ``nn.Module`` already built, or None for an untrained network (tests).
        allow_network: RAFT only: download published weights missing from the torch hub cache.

    Returns:
        float32 (H, W, 2) flow, (dx, dy) per pixel.

    Raises:
        UnknownFlowMethodError, FlowError: bad method, parameters or frames.
        OfflineWeightsError: RAFT weights are not on this machine and the network is not allowed.
    """
    options = resolve_params(method, params)
    if method in ("raft_small", "raft_large"):
        from core.flow import raft  # imports torch

        rgb0, rgb1 = _as_uint8_pair(frame0, frame1, rgb=True)
        return raft.raft_flow(rgb0, rgb1, method, options["num_flow_updates"], device=device,
                              weights=weights, allow_network=allow_network)
    grey0, grey1 = _as_uint8_pair(frame0, frame1, rgb=False)
    if method == "farneback":
        return farneback_flow(grey0, grey1, options)
    return dis_flow(grey0, grey1, options)


def farneback_flow(grey0: np.ndarray, grey1: np.ndarray,
                   options: Mapping[str, Any]) -> np.ndarray:
    """``cv2.calcOpticalFlowFarneback`` on two uint8 grey frames with full ``options``."""
    return cv2.calcOpticalFlowFarneback(
        grey0, grey1, None, float(options["pyr_scale"]), int(options["levels"]),
        int(options["winsize"]), int(options["iterations"]), int(options["poly_n"]),
        float(options["poly_sigma"]), int(options["flags"]))


def dis_flow(grey0: np.ndarray, grey1: np.ndarray, options: Mapping[str, Any]) -> np.ndarray:
    """``cv2.DISOpticalFlow.calc`` on two uint8 grey frames with full ``options``."""
    return _dis_object(options).calc(grey0, grey1, None)


def _dis_object(options: Mapping[str, Any]) -> Any:
    key = tuple(sorted(options.items()))
    objects = getattr(_dis_objects, "by_key", None)
    if objects is None:
        objects = _dis_objects.by_key = {}
    dis = objects.get(key)
    if dis is None:
        dis = cv2.DISOpticalFlow_create(DIS_PRESETS[options["preset"]])
        for name, value in options.items():
            if name in _DIS_SETTERS:
                getattr(dis, _DIS_SETTERS[name])(value)
        if len(objects) >= 8:  # a handful of settings per thread at most
            objects.clear()
        objects[key] = dis
    return dis


# -- frames -------------------------------------------------------------------------------------
def to_grey(frame: np.ndarray) -> np.ndarray:
    """A uint8 frame as grey (H, W): RGB(A) through ``cv2.COLOR_RGB2GRAY``, grey unchanged."""
    _check_frame(frame, "frame")
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 1:
        return frame[..., 0]
    return cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), cv2.COLOR_RGB2GRAY)


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """A uint8 frame as RGB (H, W, 3): grey repeated, alpha dropped."""
    _check_frame(frame, "frame")
    if frame.ndim == 2:
        return np.repeat(frame[..., None], 3, axis=2)
    if frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    return frame[..., :3]


def _check_frame(frame: np.ndarray, what: str) -> None:
    if not isinstance(frame, np.ndarray) or frame.ndim not in (2, 3) or (
            frame.ndim == 3 and frame.shape[2] not in (1, 3, 4)) or frame.size == 0:
        shape = getattr(frame, "shape", type(frame).__name__)
        raise FlowError(f"The {what} must be a grey (H, W) or RGB (H, W, 3) image; got {shape}.")


def _as_uint8_pair(frame0: np.ndarray, frame1: np.ndarray,
                   rgb: bool) -> tuple[np.ndarray, np.ndarray]:
    _check_frame(frame0, "first frame")
    _check_frame(frame1, "second frame")
    if frame0.shape[:2] != frame1.shape[:2]:
        raise FlowError(f"The frames differ in size: {frame0.shape[1]}x{frame0.shape[0]} and "
                        f"{frame1.shape[1]}x{frame1.shape[0]}.")
    if frame0.dtype != np.uint8 or frame1.dtype != np.uint8:
        frame0, frame1 = _scale_to_uint8([frame0, frame1])
    convert = to_rgb if rgb else to_grey
    return convert(frame0), convert(frame1)


def _grey_frames(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Frames of one size as uint8 grey (other dtypes scaled jointly)."""
    for index, frame in enumerate(frames):
        _check_frame(frame, f"frame {index}")
        if frame.shape[:2] != frames[0].shape[:2]:
            raise FlowError(f"Frame {index} is {frame.shape[1]}x{frame.shape[0]}; frame 0 is "
                            f"{frames[0].shape[1]}x{frames[0].shape[0]}.")
    frames = list(frames)
    if any(f.dtype != np.uint8 for f in frames):
        frames = _scale_to_uint8(frames)
    return [to_grey(f) for f in frames]


def _scale_to_uint8(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Frames mapped to uint8 by one linear map (their joint range -> 0..255)."""
    low = float(min(np.nanmin(f) for f in frames))
    high = float(max(np.nanmax(f) for f in frames))
    scale = 255.0 / (high - low) if high > low else 0.0
    return [np.clip((np.nan_to_num(f.astype(np.float32), nan=low) - low) * scale + 0.5,
                    0, 255).astype(np.uint8) for f in frames]


# -- sparse Lucas-Kanade tracks -----------------------------------------------------------------
@dataclass(frozen=True)
class Tracks:
    """Point tracks over consecutive frames.

    Attributes:
        points: float32 (N, T, 2) positions (x, y) of N points in T frames; NaN from the frame
            where a point is lost (tracks never come back).
        fb_error: float32 (N, T) forward-backward error in pixels of the step into each frame
            (0 in frame 0, NaN once lost).
    """

    points: np.ndarray
    fb_error: np.ndarray

    @property
    def num_tracks(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.points.shape[1])

    def alive(self, t: int) -> np.ndarray:
        """bool (N,): which points are still tracked in frame ``t``."""
        return ~np.isnan(self.points[:, t, 0])

    def positions(self, t: int) -> np.ndarray:
        """float32 (M, 2): the positions in frame ``t`` of the points alive there."""
        return self.points[self.alive(t), t]

    def survival(self) -> np.ndarray:
        """float64 (T,): the share of points alive in each frame."""
        if self.num_tracks == 0:
            return np.ones(self.num_frames)
        return (~np.isnan(self.points[..., 0])).mean(axis=0)

    def polylines(self, t: int, history: int | None = None) -> list[np.ndarray]:
        """Trails to draw over frame ``t``: for each point alive there, its float32 (K, 2)
        positions from frame ``max(0, t - history)`` (frame 0 when None) to ``t``."""
        first = 0 if history is None else max(0, t - history)
        return [track for track in self.points[self.alive(t), first:t + 1]]


def track_points(frames: Sequence[np.ndarray], max_corners: int = 200, quality: float = 0.01,
                 min_distance: float = 7, win_size: int = 15, max_level: int = 3, *,
                 points: np.ndarray | None = None, mask: np.ndarray | None = None,
                 fb_threshold: float = 1.0) -> Tracks:
    """Track corners of the first frame through ``frames`` with pyramidal Lucas-Kanade.

    Args:
        frames: T >= 1 frames of one size (RGB or grey uint8).
        max_corners, quality, min_distance: ``cv2.goodFeaturesToTrack``'s limits (at most this
            many corners; corner strength at least ``quality`` times the best; spacing).
        win_size: Lucas-Kanade window side (pixels) at each pyramid level.
        max_level: Pyramid levels above the full image (0 = no pyramid).
        points: float (N, 2) positions (x, y) in frame 0 to track instead of detected corners.
        mask: Optional (H, W) array; corners are detected only where it is non-zero.
        fb_threshold: A point is dropped when tracking it back from the next frame misses its
            position by this many pixels or more (and when LK reports failure or it leaves the
            image).

    Returns:
        The :class:`Tracks`.
    """
    if len(frames) == 0:
        raise FlowError("Tracking needs at least one frame.")
    greys = _grey_frames(frames)
    if points is None:
        start = _corners(greys[0], max_corners, quality, min_distance, mask)
    else:
        start = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    n, t_count = len(start), len(greys)
    tracks = np.full((n, t_count, 2), np.nan, np.float32)
    errors = np.full((n, t_count), np.nan, np.float32)
    tracks[:, 0], errors[:, 0] = start, 0.0
    lk = {"winSize": (win_size, win_size), "maxLevel": max_level,
          "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)}
    height, width = greys[0].shape
    for t in range(1, t_count):
        alive = np.flatnonzero(~np.isnan(tracks[:, t - 1, 0]))
        if alive.size == 0:
            break
        p0 = tracks[alive, t - 1].reshape(-1, 1, 2)
        p1, ok1, _ = cv2.calcOpticalFlowPyrLK(greys[t - 1], greys[t], p0, None, **lk)
        back, ok2, _ = cv2.calcOpticalFlowPyrLK(greys[t], greys[t - 1], p1, None, **lk)
        p1, back = p1.reshape(-1, 2), back.reshape(-1, 2)
        fb = np.linalg.norm(back - p0.reshape(-1, 2), axis=1)
        inside = ((p1[:, 0] >= 0) & (p1[:, 0] <= width - 1)
                  & (p1[:, 1] >= 0) & (p1[:, 1] <= height - 1))
        good = ok1.ravel().astype(bool) & ok2.ravel().astype(bool) & (fb < fb_threshold) & inside
        tracks[alive[good], t] = p1[good]
        errors[alive[good], t] = fb[good]
    return Tracks(tracks, errors)


def _corners(grey: np.ndarray, max_corners: int, quality: float, min_distance: float,
             mask: np.ndarray | None) -> np.ndarray:
    if mask is not None:
        mask = (np.asarray(mask) != 0).astype(np.uint8)
    found = cv2.goodFeaturesToTrack(grey, max_corners, quality, min_distance, mask=mask)
    if found is None:
        return np.zeros((0, 2), np.float32)
    return found.reshape(-1, 2).astype(np.float32)
