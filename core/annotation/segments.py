"""Temporal labels of a video: what happens when, as segments of frames with an action label.

A :class:`SegmentTrack` holds the segments of one video (frames ``start..end``, both inclusive,
an action label, where they came from and a model score), keeps them sorted and non-overlapping,
and makes every change (create, resize, relabel, split, merge, delete, accept proposals) one undo
step. Tracks are small (tens of segments), so undo keeps whole snapshots.

:func:`propose_segments` turns a model's per-frame class scores into segments for the person to
correct: smoothing, a threshold and a minimum duration.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from core.errors import SegStudioError

SEGMENT_SOURCES = ("person", "model")


class SegmentError(SegStudioError):
    """A segment operation that cannot be done (out of the video, overlapping, unknown)."""


@dataclass(frozen=True)
class Segment:
    """Frames ``start`` to ``end`` (inclusive) show ``label``.

    Attributes:
        start, end: First and last frame, ``0 <= start <= end``.
        label: The action's name.
        source: "person" or "model" (a proposal not yet touched by the person).
        score: The model's mean score over the segment (None for the person's).
    """

    start: int
    end: int
    label: str
    source: str = "person"
    score: float | None = None

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def to_json(self) -> dict:
        return {"start": self.start, "end": self.end, "label": self.label,
                "source": self.source, "score": self.score}

    @classmethod
    def from_json(cls, data: dict) -> Segment:
        score = data.get("score")
        return cls(int(data["start"]), int(data["end"]), str(data["label"]),
                   str(data.get("source", "person")), None if score is None else float(score))


class SegmentTrack:
    """The segments of one video of ``frames`` frames, with undo/redo.

    Segments never overlap: creating or growing one over others trims them (a segment fully
    covered is removed), as a timeline editor does.
    """

    def __init__(self, frames: int, segments: Iterable[Segment] = (), max_undo: int = 200):
        if frames < 1:
            raise SegmentError("A video has at least one frame.")
        self.frames = int(frames)
        self._segments: list[Segment] = []
        for segment in sorted(segments, key=lambda s: s.start):
            self._check(segment)
            self._segments = self._carve(self._segments, segment.start, segment.end)
            self._segments.append(segment)
            self._segments.sort(key=lambda s: s.start)
        self._undo: list[list[Segment]] = []
        self._redo: list[list[Segment]] = []
        self.max_undo = max_undo

    # -- reading --------------------------------------------------------------------------------
    @property
    def segments(self) -> list[Segment]:
        return list(self._segments)

    def __len__(self) -> int:
        return len(self._segments)

    def at(self, frame: int) -> int | None:
        """Index of the segment covering ``frame``, or None."""
        for index, segment in enumerate(self._segments):
            if segment.start <= frame <= segment.end:
                return index
        return None

    def labels_per_frame(self, none: str = "") -> list[str]:
        """The label of every frame (``none`` where no segment covers it)."""
        out = [none] * self.frames
        for segment in self._segments:
            out[segment.start:segment.end + 1] = [segment.label] * segment.length
        return out

    # -- editing (each one undo step) ---------------------------------------------------------------
    def add(self, start: int, end: int, label: str, source: str = "person",
            score: float | None = None) -> Segment:
        """A new segment (``start``/``end`` in any order); segments under it are trimmed."""
        start, end = sorted((int(start), int(end)))
        segment = Segment(start, end, label, source, score)
        self._check(segment)
        self._change(self._carve(self._segments, start, end) + [segment])
        return segment

    def resize(self, index: int, start: int | None = None, end: int | None = None) -> Segment:
        """Move the edges of segment ``index`` (neighbours it grows over are trimmed)."""
        old = self._get(index)
        new_start = old.start if start is None else int(start)
        new_end = old.end if end is None else int(end)
        if new_start > new_end:
            raise SegmentError("A segment's start cannot come after its end.")
        segment = replace(old, start=new_start, end=new_end, source="person")
        self._check(segment)
        rest = self._segments[:index] + self._segments[index + 1:]
        self._change(self._carve(rest, new_start, new_end) + [segment])
        return segment

    def relabel(self, index: int, label: str) -> Segment:
        segment = replace(self._get(index), label=label, source="person")
        self._change(self._replaced(index, [segment]))
        return segment

    def split(self, index: int, frame: int) -> tuple[Segment, Segment]:
        """Cut segment ``index`` before ``frame``: ``start..frame-1`` and ``frame..end``."""
        old = self._get(index)
        if not old.start < frame <= old.end:
            raise SegmentError(f"Frame {frame} does not cut the segment {old.start}-{old.end}.")
        first, second = replace(old, end=frame - 1), replace(old, start=frame)
        self._change(self._replaced(index, [first, second]))
        return first, second

    def merge(self, first: int, second: int) -> Segment:
        """Join two segments (and the gap between them) under the first one's label."""
        a, b = sorted((first, second))
        sa, sb = self._get(a), self._get(b)
        joined = replace(sa, start=min(sa.start, sb.start), end=max(sa.end, sb.end),
                         source="person")
        rest = [s for i, s in enumerate(self._segments) if i not in (a, b)]
        self._change(self._carve(rest, joined.start, joined.end) + [joined])
        return joined

    def delete(self, indices: Iterable[int]) -> int:
        chosen = {int(i) for i in indices}
        for index in chosen:
            self._get(index)
        self._change([s for i, s in enumerate(self._segments) if i not in chosen])
        return len(chosen)

    def replace_all(self, segments: Iterable[Segment]) -> None:
        """Set the whole track (e.g. accepted proposals) as one undo step."""
        fresh = SegmentTrack(self.frames, segments)
        self._change(fresh._segments)

    def accept(self, indices: Iterable[int] | None = None) -> None:
        """Mark model segments as the person's (all of them when ``indices`` is None)."""
        chosen = set(range(len(self._segments))) if indices is None else set(indices)
        self._change([replace(s, source="person") if i in chosen else s
                      for i, s in enumerate(self._segments)])

    # -- undo ----------------------------------------------------------------------------------------
    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    def undo(self) -> bool:
        if not self._undo:
            return False
        self._redo.append(self._segments)
        self._segments = self._undo.pop()
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        self._undo.append(self._segments)
        self._segments = self._redo.pop()
        return True

    # -- internals -------------------------------------------------------------------------------------
    def _get(self, index: int) -> Segment:
        if not 0 <= index < len(self._segments):
            raise SegmentError(f"There is no segment {index}.")
        return self._segments[index]

    def _check(self, segment: Segment) -> None:
        if not 0 <= segment.start <= segment.end < self.frames:
            raise SegmentError(f"Frames {segment.start}-{segment.end} are not all in the video "
                               f"(frames 0-{self.frames - 1}).")
        if not segment.label.strip():
            raise SegmentError("A segment needs an action label.")
        if segment.source not in SEGMENT_SOURCES:
            raise SegmentError(f"Unknown segment source {segment.source!r}.")

    def _replaced(self, index: int, new: list[Segment]) -> list[Segment]:
        return self._segments[:index] + new + self._segments[index + 1:]

    @staticmethod
    def _carve(segments: Sequence[Segment], start: int, end: int) -> list[Segment]:
        """``segments`` with the frames ``start..end`` cut out of them."""
        out = []
        for s in segments:
            if s.end < start or s.start > end:
                out.append(s)
                continue
            if s.start < start:
                out.append(replace(s, end=start - 1))
            if s.end > end:
                out.append(replace(s, start=end + 1))
        return out

    def _change(self, segments: list[Segment]) -> None:
        self._undo.append(self._segments)
        del self._undo[:-self.max_undo]
        self._redo.clear()
        self._segments = sorted(segments, key=lambda s: s.start)


def propose_segments(scores: np.ndarray, labels: Sequence[str], threshold: float = 0.5,
                     min_frames: int = 8, smooth: int = 5,
                     background: Sequence[str] = ()) -> list[Segment]:
    """Segments from per-frame class scores (T, C): the best class of each frame after a moving
    average over ``smooth`` frames, where its score reaches ``threshold``; runs shorter than
    ``min_frames`` are dropped. Labels in ``background`` make no segment.

    Returns:
        Model segments with their mean (smoothed) score.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(labels):
        raise SegmentError(f"Scores of shape {scores.shape} do not match {len(labels)} labels.")
    if smooth > 1:
        kernel = np.ones(int(smooth)) / int(smooth)
        padded = np.pad(scores, ((smooth // 2, smooth - 1 - smooth // 2), (0, 0)), mode="edge")
        scores = np.stack([np.convolve(padded[:, c], kernel, mode="valid")
                           for c in range(scores.shape[1])], axis=1)
    best = scores.argmax(axis=1)
    value = scores[np.arange(len(best)), best]
    active = np.where(value >= threshold, best, -1)
    skip = {labels.index(b) for b in background if b in labels}
    segments = []
    start = 0
    for t in range(1, len(active) + 1):
        if t == len(active) or active[t] != active[start]:
            cls = int(active[start])
            if cls >= 0 and cls not in skip and t - start >= min_frames:
                segments.append(Segment(start, t - 1, labels[cls], "model",
                                        float(value[start:t].mean())))
            start = t
    return segments
