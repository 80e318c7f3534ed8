"""Action recognition over a whole video: clip sampling, a sliding window, batched inference.

A clip model sees ``T`` frames at a time (``spec.frames`` of the model's
:class:`~core.models.action_specs.ClipSpec`). To score a video of any length,
:func:`clip_windows` cuts it into windows: each samples ``T`` frames ``stride`` apart
(``start, start + stride, ...``), so a window spans ``(T - 1) * stride + 1`` frames; a window
starts every ``step`` frames (default: the span, windows side by side), and the last window is
shifted back to end on the last frame, so that every frame lies inside some window. A video
shorter than one span gets one window whose missing frames repeat the last frame
(:attr:`VideoScores.notes` says so).

:func:`classify_video` runs a loaded action model on every window:

* the stride defaults to the spec's sampling rate: ``round(video fps / spec.fps)`` (torchvision's
  Kinetics weights were measured on clips sampled at 15 fps), 1 when the spec has none;
* frames are decoded, resized (``spec.resize``: the short side to S, or exactly (H, W) such as
  C3D's 128x171) and centre-cropped to ``spec.size`` in a background thread, a small queue
  ahead of the model, so decoding overlaps the forward passes; a frame shared by overlapping
  windows is decoded and resized once;
* windows are batched (``batch_size`` clips per forward), moved to the device as uint8 and
  normalised there (``(x / 255 - mean) / std``; the weights' own statistics win over the
  spec's, as :mod:`core.models.action_specs` says);
* class scores are the softmax of each clip's logits; the video's score is the mean of its
  clips' scores; each frame's score is the mean of the scores of the windows whose span holds
  it (the timeline in the GUI, :func:`core.annotation.segments.propose_segments`).

Input layouts (``spec.input``, the call convention of :mod:`core.models.action_specs`):
``"clip"`` (B, 3, T, H, W), ``"frames"`` (B, T, 3, H, W), and ``"two_stream"``:
``module(rgb, flow)`` with the window's middle frame (index ``T // 2``) as rgb (B, 3, H, W) and
the ``L = T - 1`` flow fields between the window's consecutive sampled frames as flow
(B, 2L, H, W), field k's (dx, dy) in channels 2k and 2k + 1. Flow comes from a
:class:`core.flow.FlowProvider` (cached: overlapping windows share fields), is resized like the
frames (displacements scaled with the image: pixels of the resized frame), centre-cropped, each
component minus its mean over the crop, divided by ``spec.flow_scale``. A padded window's
repeated frames have zero flow.

torch is imported inside the functions (importing ``core`` must not load torch).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from core.inference.clip_sampling import (  # noqa: F401 (re-exported)
    FLOW_SCALE,
    ClipSpecLike,
    ClipWindow,
    _crop_box,
    _resize,
    clip_span,
    clip_windows,
    default_stride,
    flow_pairs,
    flow_stack,
    frame_coverage,
    preprocess_flow,
    preprocess_frame,
    resized_size,
)
from core.inference.errors import InferenceCancelled, InferenceError, InferenceOutOfMemoryError
from core.inference.tiling import CancelToken, ReportFn

if TYPE_CHECKING:
    import torch

INPUT_LAYOUTS = ("clip", "frames", "two_stream")
PREFETCH_BATCHES = 2  # batches prepared ahead of the model


# -- results --------------------------------------------------------------------------------------------
@dataclass
class VideoScores:
    """What an action model made of a video.

    Attributes:
        labels: Class names, the columns of the scores.
        windows: The clips, by start.
        clip_scores: float32 (N, C): softmax scores of each clip.
        video_scores: float32 (C,): the mean of the clip scores.
        frame_scores: float32 (frame_count, C): each frame's mean over the windows holding it.
        fps: The video's frame rate (for times).
        model: The model's name.
        device: Where it ran.
        notes: What happened on the way (padding, a fallback), in sentences.
    """

    labels: tuple[str, ...]
    windows: list[ClipWindow]
    clip_scores: np.ndarray
    video_scores: np.ndarray
    frame_scores: np.ndarray
    fps: float
    model: str = ""
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    @property
    def frame_count(self) -> int:
        return int(self.frame_scores.shape[0])

    @property
    def clips(self) -> list[ClipWindow]:
        """The clips (the same list as :attr:`windows`)."""
        return self.windows

    def top_k(self, scores: np.ndarray | None = None, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` best (label, score) of ``scores`` (default: the video's), best first."""
        values = self.video_scores if scores is None else np.asarray(scores)
        order = np.argsort(-values, kind="stable")[:max(0, k)]
        return [(self.labels[i], float(values[i])) for i in order]

    def to_json(self, top_k: int = 5) -> dict[str, Any]:
        """JSON-ready: model, labels, fps, frame_count, device, notes, the video's ``top_k``
        ([{"label", "score"}]) and ``scores`` (in the order of labels), and ``clips``: each with
        its frame range ``start``/``end`` (both included), ``start_s``/``end_s``, the sampled
        ``frames``, ``top_k`` and ``scores``."""
        def best(values: np.ndarray) -> list[dict[str, Any]]:
            return [{"label": label, "score": round(score, 6)}
                    for label, score in self.top_k(values, top_k)]

        clips = []
        for window, scores in zip(self.windows, self.clip_scores, strict=True):
            clips.append({
                "start": window.start, "end": window.end,
                "start_s": round(window.start / self.fps, 6),
                "end_s": round((window.end + 1) / self.fps, 6),
                "frames": list(window.frame_indices),
                "top_k": best(scores),
                "scores": [round(float(v), 6) for v in scores],
            })
        return {
            "model": self.model, "labels": list(self.labels), "fps": self.fps,
            "frame_count": self.frame_count, "device": self.device, "notes": list(self.notes),
            "top_k": best(self.video_scores),
            "scores": [round(float(v), 6) for v in self.video_scores],
            "clips": clips,
        }


# -- running ---------------------------------------------------------------------------------------------
def classify_video(loaded: Any, reader: Any, spec: ClipSpecLike, *, stride: int | None = None,
                   step: int | None = None, batch_size: int = 8,
                   device: str | torch.device = "auto", report: ReportFn | None = None,
                   cancel: CancelToken | None = None, flow: Callable[[int, int], np.ndarray]
                   | None = None, amp: bool = True, engine: Any = None) -> VideoScores:
    """Score every clip of a video with an action model.

    Args:
        loaded: A :class:`core.models.loading.LoadedModel` (its ``module``, ``classes``,
            ``model``; its ``mean``/``std`` are used when it has weights, else the spec's).
        reader: An open :class:`core.io.video.VideoReader` (``frame(i)``, ``frame_count``,
            ``fps``).
        spec: The model's clip spec (see the module docstring).
        stride: Frames between a clip's sampled frames; default :func:`default_stride` (the
            spec's sampling rate).
        step: Frames between window starts (see :func:`clip_windows`); default the span.
        batch_size: Clips per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"`` or a torch device.
        report: ``report(done, total)`` in clips, after every batch (``(0, total)`` first).
        cancel: Checked before every batch.
        flow: Two-stream models: ``flow(t, k)``, the flow from frame ``t`` to ``t + k``
            (a :class:`core.flow.FlowProvider`); default a DIS provider with a 256 MiB cache.
        amp: Mixed precision on a GPU.
        engine: An :class:`core.inference.engine.InferenceEngine` whose device copies of the
            module are reused (default: a new one).

    Returns:
        The :class:`VideoScores`.

    Raises:
        InferenceCancelled: ``cancel`` was set; nothing is returned.
        InferenceError: the spec's layout is unknown, ``stride``/``step`` cannot cut the video
            (a step longer than the span), or the model's output is not (B, classes).
        InferenceOutOfMemoryError: one clip does not fit in the device's memory.
        DeviceUnavailableError, VideoError: from the device and the reader.
    """
    import torch

    from core.inference.device import autocast_context, is_out_of_memory, select_device

    layout = getattr(spec, "input", "clip")
    if layout not in INPUT_LAYOUTS:
        raise InferenceError(f"Unknown clip input layout {layout!r}; expected one of "
                             f"{', '.join(INPUT_LAYOUTS)}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    count = int(reader.frame_count)
    if stride is None:
        stride = default_stride(spec, float(reader.fps))
    try:
        windows = clip_windows(count, int(spec.frames), stride, step)
    except ValueError as err:
        raise InferenceError(f"Cannot cut the video into clips: {err}.") from None
    notes = _notes(windows, spec, stride, count, reader)
    if layout == "two_stream" and flow is None:
        flow = _default_flow(reader)
    torch_device = device if not isinstance(device, str) else select_device(device)
    if engine is None:
        from core.inference.engine import InferenceEngine

        engine = InferenceEngine()
    module = engine.module_on(loaded, torch_device)
    mean, std = _normalisation(loaded, spec)
    normalise = _Normaliser(mean, std, layout, torch_device)
    classes = tuple(loaded.classes)
    total = len(windows)
    scores = np.zeros((total, len(classes)), np.float32)
    if report is not None:
        report(0, total)
    done = 0
    with _Prefetcher(reader, spec, windows, batch_size, layout, flow) as batches, \
            torch.inference_mode():
        for batch in batches:
            if cancel is not None and cancel.is_set():
                raise InferenceCancelled("Classification cancelled.")
            inputs = normalise(batch.arrays)

            def forward(inputs: tuple[torch.Tensor, ...] = inputs) -> torch.Tensor:
                with autocast_context(torch_device, amp):
                    return _as_logits(module(*inputs))

            try:
                logits = forward()
            except Exception as err:
                if not is_out_of_memory(err):
                    raise
                logits = _one_by_one(forward, inputs, torch_device, err)
            _check_logits(logits, len(batch.windows), len(classes), loaded)
            probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
            scores[done:done + len(batch.windows)] = probs
            done += len(batch.windows)
            if report is not None:
                report(done, total)
    if cancel is not None and cancel.is_set():
        raise InferenceCancelled("Classification cancelled.")
    frame_scores = _frame_scores(windows, scores, count)
    return VideoScores(classes, windows, scores, scores.mean(axis=0).astype(np.float32),
                       frame_scores, float(reader.fps), str(getattr(loaded, "model", "")),
                       str(torch_device), notes)


def _notes(windows: list[ClipWindow], spec: Any, stride: int, count: int,
           reader: Any) -> list[str]:
    notes = []
    if windows[0].padded:
        notes.append(f"The video has {count} frame{'s' if count != 1 else ''}, fewer than one "
                     f"clip spans ({clip_span(int(spec.frames), stride)}): its last frame was "
                     "repeated to fill the clip.")
    notes.extend(w for w in getattr(reader, "warnings", ()) if "variable frame rate" in w)
    return notes


def _default_flow(reader: Any) -> Callable[[int, int], np.ndarray]:
    from core.flow import FlowCache, FlowProvider

    return FlowProvider(reader.frame, "dis", cache=FlowCache(256),
                        source_id=str(getattr(reader, "source", "video")),
                        count=reader.frame_count)


def _normalisation(loaded: Any, spec: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The weights' own normalisation when the model has weights, else the spec's."""
    if getattr(loaded, "weights_name", None) is not None:
        return tuple(loaded.mean), tuple(loaded.std)
    return tuple(spec.mean), tuple(spec.std)


def _frame_scores(windows: list[ClipWindow], scores: np.ndarray, count: int) -> np.ndarray:
    sums = np.zeros((count, scores.shape[1]), np.float64)
    for window, row in zip(windows, scores, strict=True):
        sums[window.start:window.end + 1] += row
    counts = frame_coverage(windows, count)
    return (sums / counts[:, None]).astype(np.float32)


def _as_logits(output: Any) -> torch.Tensor:
    if isinstance(output, Mapping):
        for key in ("logits", "out"):
            if key in output:
                return output[key]
    if isinstance(output, Sequence) and not isinstance(output, str) and output:
        return output[0]
    return output


def _check_logits(logits: Any, batch: int, classes: int, loaded: Any) -> None:
    import torch

    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (batch, classes):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InferenceError(f"{getattr(loaded, 'model', 'The model')} turned {batch} clip(s) "
                             f"into {shape}; expected ({batch}, {classes}) class scores.")


def _one_by_one(forward: Callable, inputs: tuple, device: Any, err: BaseException) -> Any:
    """After running out of memory on a batch: the same clips one at a time."""
    import torch

    from core.inference.device import device_label, is_out_of_memory, release_cached_memory

    del err
    release_cached_memory(device)
    outputs = []
    try:
        for index in range(inputs[0].shape[0]):
            outputs.append(forward(tuple(x[index:index + 1] for x in inputs)))
    except Exception as again:
        if not is_out_of_memory(again):
            raise
        raise InferenceOutOfMemoryError(
            f"The {device_label(device)} ran out of memory on a single clip; use the CPU "
            "(--device cpu) or a smaller model.") from None
    return torch.cat(outputs)


class _Normaliser:
    """uint8 arrays (the model's layout) -> normalised float tensors on the device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], layout: str,
                 device: torch.device) -> None:
        import torch

        shape = {"clip": (1, 3, 1, 1, 1), "frames": (1, 1, 3, 1, 1),
                 "two_stream": (1, 3, 1, 1)}[layout]
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).reshape(shape)
        self.scale = (1.0 / (255.0 * torch.tensor(std, dtype=torch.float32,
                                                  device=device))).reshape(shape)
        self.shift = self.mean / torch.tensor(std, dtype=torch.float32,
                                              device=device).reshape(shape)
        self.device = device

    def __call__(self, arrays: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, ...]:
        import torch

        non_blocking = self.device.type == "cuda"
        rgb = torch.from_numpy(arrays[0]).to(self.device, non_blocking=non_blocking)
        rgb = rgb.float().mul_(self.scale).sub_(self.shift)  # (x / 255 - mean) / std
        if len(arrays) == 1:
            return (rgb,)
        flow = torch.from_numpy(arrays[1]).to(self.device, non_blocking=non_blocking)
        return rgb, flow


@dataclass
class _Batch:
    windows: list[ClipWindow]
    arrays: tuple[np.ndarray, ...]


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


class _Prefetcher:
    """Decodes, resizes and stacks the batches in a background thread, ``PREFETCH_BATCHES``
    ahead; iterate it for :class:`_Batch` es. Leaving the with-block stops the thread."""

    def __init__(self, reader: Any, spec: Any, windows: list[ClipWindow], batch_size: int,
                 layout: str, flow: Callable[[int, int], np.ndarray] | None) -> None:
        self.reader = reader
        self.spec = spec
        self.windows = windows
        self.batch_size = batch_size
        self.layout = layout
        self.flow = flow
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=PREFETCH_BATCHES)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="clip-prefetch", daemon=True)

    def __enter__(self) -> Iterator[_Batch]:
        self.thread.start()
        return self._iterate()

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        while self.thread.is_alive():  # unblock a put() waiting for room
            try:
                self.queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self.thread.join()

    def _iterate(self) -> Iterator[_Batch]:
        while True:
            item = self.queue.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            frames: dict[int, np.ndarray] = {}
            for first in range(0, len(self.windows), self.batch_size):
                if self.stop.is_set():
                    return
                chunk = self.windows[first:first + self.batch_size]
                arrays = self._assemble(chunk, frames)
                following = self.windows[first + self.batch_size:first + self.batch_size + 1]
                keep_from = min(following[0].frame_indices) if following else None
                for index in [i for i in frames if keep_from is None or i < keep_from]:
                    del frames[index]
                if not self._put(_Batch(chunk, arrays)):
                    return
            self._put(_DONE)
        except BaseException as err:  # handed to the consumer, which re-raises it
            self._put(_Failure(err))

    def _frame(self, index: int, frames: dict[int, np.ndarray]) -> np.ndarray:
        frame = frames.get(index)
        if frame is None:
            frame = frames[index] = preprocess_frame(self.reader.frame(index), self.spec)
        return frame

    def _assemble(self, chunk: list[ClipWindow],
                  frames: dict[int, np.ndarray]) -> tuple[np.ndarray, ...]:
        if self.layout == "two_stream":
            rgb = np.stack([self._frame(w.centre, frames) for w in chunk])  # (B, h, w, 3)
            rgb = np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))
            return rgb, np.stack([self._flow_input(w) for w in chunk])
        clips = np.stack([np.stack([self._frame(i, frames) for i in w.frame_indices])
                          for w in chunk])  # (B, T, h, w, 3)
        order = (0, 4, 1, 2, 3) if self.layout == "clip" else (0, 1, 4, 2, 3)
        return (np.ascontiguousarray(clips.transpose(order)),)

    def _flow_input(self, window: ClipWindow) -> np.ndarray:
        """(2L, h, w) float32: the window's flow fields, each as :func:`preprocess_flow`."""
        assert self.flow is not None
        zero = np.zeros((2, *self.spec.size), np.float32)
        fields = [zero if t1 == t else preprocess_flow(self.flow(t, t1 - t), self.spec)
                  for t, t1 in flow_pairs(window)]
        return np.concatenate(fields)
