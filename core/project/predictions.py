"""Which part of an item a kept semantic prediction covers, and how much of the kept predictions
the labels now keep (the "model Dice" of the item list).

A prediction is kept per part: the whole item (an image, a stack, a whole volume), one frame of
a video, or one slice of a volume across an array axis (0 = Z, 1 = Y, 2 = X). The item's Dice is
:func:`core.train.metrics.agreement_dice` over the pixels of all its kept parts, each compared
with the labels of that part now.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.errors import ProjectError

SLICE_AXES = "zyx"  # part kind of a slice across array axis 0, 1, 2
PART_KINDS = ("item", "frame", *SLICE_AXES)


@dataclass(frozen=True)
class PredictedPart:
    """The whole item (``kind`` "item"), frame ``position`` of a video ("frame"), or slice
    ``position`` of a volume or stack across array axis 0, 1 or 2 ("z", "y", "x")."""

    kind: str = "item"
    position: int = 0

    def __post_init__(self) -> None:
        if self.kind not in PART_KINDS:
            raise ProjectError(f"Unknown part {self.kind!r}; use one of {', '.join(PART_KINDS)}.")
        if self.position < 0 or (self.kind == "item" and self.position != 0):
            raise ProjectError(f"Bad position {self.position} for a {self.kind} part.")

    @classmethod
    def frame(cls, frame: int) -> PredictedPart:
        return cls("frame", int(frame))

    @classmethod
    def slice(cls, axis: int, index: int) -> PredictedPart:
        if axis not in (0, 1, 2):
            raise ProjectError(f"A slice is cut across array axis 0, 1 or 2; got {axis}.")
        return cls(SLICE_AXES[axis], int(index))

    @property
    def axis(self) -> int | None:
        """The array axis a slice is cut across (None for an item or a frame)."""
        return SLICE_AXES.index(self.kind) if self.kind in SLICE_AXES else None

    def describe(self) -> str:
        if self.kind == "item":
            return "whole-item"
        if self.kind == "frame":
            return f"frame {self.position}"
        return f"{self.kind.upper()} slice {self.position}"


WHOLE_ITEM = PredictedPart()


@dataclass(frozen=True)
class KeptPrediction:
    """A kept prediction of one part: its labels (a slice's in array order), the model, its mean
    winning probability and when it was made (seconds since the epoch; None: before SegStudio
    recorded it)."""

    part: PredictedPart
    model: str
    labels: np.ndarray = field(compare=False, repr=False)
    confidence: float | None = None
    created: float | None = None


def part_of_view(plane: tuple[int, ...], axes: tuple[int, ...], labels: np.ndarray,
                 frame: int | None = None) -> tuple[PredictedPart, np.ndarray]:
    """The part a prediction made on what a view shows belongs to, and its labels in array
    order. ``plane``/``axes`` are an edit session's (the slice ``labels.transpose(axes)[plane]``;
    ``()`` for a whole image, stack or volume); ``frame`` a video's frame."""
    if frame is not None:
        return PredictedPart.frame(frame), labels
    if not plane:
        return WHOLE_ITEM, labels
    if len(plane) != 1 or len(axes) != 3 or labels.ndim != 2:
        raise ProjectError(f"Cannot keep a prediction of plane {plane} along axes {axes}.")
    rest = axes[1:]  # the slice's rows and columns: array order when ascending
    return PredictedPart.slice(axes[0], plane[0]), labels if rest[0] < rest[1] else labels.T


def parts_agreement(parts: Sequence[KeptPrediction], labels: np.ndarray | None = None,
                    frame_labels: Callable[[int], np.ndarray] | None = None) -> float | None:
    """Dice between the kept predictions and the labels now, over the pixels they cover.

    ``labels``: the item's labels (an image, a stack or a volume): its kept whole-item and slice
    parts are laid over each other oldest first (where slices cross, the newer one counts).
    ``frame_labels``: a video frame's labels by frame, for its kept frames. A part whose shape no
    longer fits the labels is left out. None when nothing is covered or everything is
    background (see :func:`core.train.metrics.agreement_dice`).
    """
    from core.train.metrics import agreement_dice

    if frame_labels is not None:
        kept = [(p.labels, frame_labels(p.part.position)) for p in parts if p.part.kind == "frame"]
        kept = [(a, b) for a, b in kept if a.shape == b.shape]
        if not kept:
            return None
        return agreement_dice(np.concatenate([a.ravel() for a, _ in kept]),
                              np.concatenate([b.ravel() for _, b in kept]))
    if labels is None:
        return None
    predicted, covered = compose_parts(parts, labels.shape)
    if not covered.any():
        return None
    if covered.all():
        return agreement_dice(predicted, labels)
    return agreement_dice(predicted[covered], labels[covered])


def compose_parts(parts: Sequence[KeptPrediction],
                  shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The kept whole-item and slice predictions laid into an array of ``shape``, oldest first,
    and which pixels they cover. Frames and parts that do not fit ``shape`` are left out."""
    fitting = []
    for kept in parts:
        axis = kept.part.axis
        if kept.part.kind == "item":
            where: tuple = ()
            fits = kept.labels.shape == tuple(shape)
        elif axis is not None and axis < len(shape) and kept.part.position < shape[axis]:
            where = (slice(None),) * axis + (kept.part.position,)
            fits = kept.labels.shape == tuple(n for a, n in enumerate(shape) if a != axis)
        else:
            fits = False
        if fits:
            fitting.append((where, kept.labels))
    dtype = np.result_type(np.uint8, *(labels.dtype for _, labels in fitting))
    predicted = np.zeros(shape, dtype)
    covered = np.zeros(shape, bool)
    for where, labels in fitting:
        predicted[where] = labels
        covered[where] = True
    return predicted, covered
