"""Run a segmentation model over files or project items: what ``segstudio-cli predict`` and the
GUI's "run on all items" share.

A prediction never silently destroys a person's work: in a project, items marked done are skipped
unless asked, every written mask goes through the journal as one edit, and the item is marked
"needs_review" when it was new.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import SegStudioError

ReportFn = Callable[[int, int], None]


@dataclass
class PredictSummary:
    """What a batch prediction did: files or item names written, and (name, reason) skipped."""

    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    last_confidence: float | None = None  # mean winning probability of the last single image


class _Steps:
    """Turns per-image progress into overall progress: image i of n, window j of m."""

    def __init__(self, total: int, report: ReportFn | None) -> None:
        self.total, self.report, self.index = total, report, 0

    def image_report(self) -> ReportFn | None:
        if self.report is None:
            return None
        base = self.index * 1000

        def report(done: int, total: int) -> None:
            self.report(base + (1000 * done) // max(total, 1), 1000 * self.total)

        return report

    def next(self) -> None:
        self.index += 1
        if self.report is not None:
            self.report(1000 * self.index, 1000 * self.total)


def classes_json(classes: list[str]) -> dict[str, Any]:
    from core.annotation.classes import default_color

    return {"format": "segstudio-index", "version": 1,
            "classes": [{"id": i, "name": name, "color": list(default_color(i)) if i else [0, 0, 0]}
                        for i, name in enumerate(classes)]}


def predict_files(engine, loaded, inputs: Iterable[Path], out_dir: Path, *,
                  report: ReportFn | None = None, cancel=None) -> PredictSummary:
    """Write ``<out_dir>/<stem>.png`` (index PNG, the input's size) per input plus classes.json.

    Unreadable inputs are skipped with their reason; cancel stops between and inside images.
    """
    from core.fsutil import atomic_write_bytes
    from core.io import load_image

    inputs = list(inputs)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary()
    steps = _Steps(len(inputs), report)
    used: set[str] = set()
    for path in inputs:
        try:
            image = load_image(path).array
        except SegStudioError as err:
            summary.skipped.append((str(path), str(err)))
            steps.next()
            continue
        planes = image if image.ndim >= 3 and _is_stack(image) else None
        prediction = _predict_image(engine, loaded, image, planes, steps, cancel, summary)
        name = _unique(Path(path).stem, used)
        pages = [prediction] if prediction.ndim == 2 else list(prediction)
        for index, labels in enumerate(pages):  # a stack: one PNG per page, <name>_0000.png
            target = out_dir / (f"{name}.png" if len(pages) == 1 and prediction.ndim == 2
                                else f"{name}_{index:04d}.png")
            atomic_write_bytes(target, encode_index_png(labels))
            summary.written.append(str(target))
        steps.next()
    atomic_write_bytes(out_dir / "classes.json",
                       json.dumps(classes_json(list(loaded.classes)), indent=2).encode())
    return summary


def predict_items(engine, loaded, project, items, *, include_done: bool = False,
                  report: ReportFn | None = None, cancel=None) -> PredictSummary:
    """Predict each item and write its mask through the journal (one edit per item)."""
    from core.annotation.tools import replace_labels
    from core.io import load_image

    items = list(items)
    summary = PredictSummary()
    steps = _Steps(len(items), report)
    for item in items:
        reason = _skip_reason(item, include_done)
        if reason is None:
            try:
                image = load_image(item.source).array
            except SegStudioError as err:
                reason = str(err)
        if reason is not None:
            summary.skipped.append((item.name, reason))
            steps.next()
            continue
        planes = image if item.frames > 1 else None
        labels = _predict_image(engine, loaded, image, planes, steps, cancel, summary)
        # kept to measure the corrections and to rank what to label next
        project.save_class_prediction(item.id, loaded.model, labels, summary.last_confidence)
        current = project.load_mask(item)
        if labels.dtype.itemsize > current.dtype.itemsize:
            current = current.astype(labels.dtype)
        edit = replace_labels(current, labels.reshape(current.shape)) if labels.ndim == 2 \
            else _replace_stack(current, labels)
        if edit is not None:
            project.append_edit(item.id, edit)
        if item.state == "new":
            project.set_state(item.id, "needs_review")
        summary.written.append(item.name)
        steps.next()
    return summary


def _skip_reason(item, include_done: bool) -> str | None:
    if item.kind == "video":
        return "a video: open it and run the model on its frames"
    if item.kind == "volume":
        return "a volume: open it and run the model on every slice"
    if item.missing:
        return "the source image is missing"
    if item.state == "done" and not include_done:
        return "marked done (use include done to overwrite)"
    return None


def _replace_stack(current: np.ndarray, labels: np.ndarray):
    from core.annotation.edits import diff_region

    before = current.copy()
    current[...] = labels
    region = tuple(slice(0, n) for n in current.shape)
    return diff_region(before, current, region)


def _is_stack(image: np.ndarray) -> bool:
    return image.ndim == 4 or (image.ndim == 3 and image.shape[-1] not in (3, 4))


def _predict_image(engine, loaded, image, planes, steps: _Steps, cancel, summary) -> np.ndarray:
    """Labels for an image, or for every page of a stack (D, H, W)."""
    if planes is None:
        prediction = engine.predict(loaded, image, report=steps.image_report(), cancel=cancel)
        summary.notes.extend(n for n in prediction.notes if n not in summary.notes)
        summary.last_confidence = mean_confidence(prediction)
        return prediction.labels
    pages, confidences = [], []
    for page in planes:
        prediction = engine.predict(loaded, page, report=None, cancel=cancel)
        summary.notes.extend(n for n in prediction.notes if n not in summary.notes)
        pages.append(prediction.labels)
        confidences.append(mean_confidence(prediction))
    # pages are the same size: the stack's mean is the mean of its pages' means
    summary.last_confidence = None if None in confidences else float(np.mean(confidences))
    dtype = np.uint16 if any(p.dtype == np.uint16 for p in pages) else np.uint8
    return np.stack([p.astype(dtype) for p in pages])


def keep_prediction(project, item_id: int, model: str, prediction, *,
                    plane: tuple[int, ...] = (), axes: tuple[int, ...] = (),
                    frame: int | None = None) -> None:
    """Keep what a model predicted on what a view showed (to measure the corrections and to rank
    what to label next): the whole item, a video's ``frame``, or slice ``plane`` of
    ``labels.transpose(axes)`` (an edit session's view) — replacing what was kept for it."""
    from core.project.predictions import part_of_view

    part, labels = part_of_view(tuple(plane), tuple(axes), prediction.labels, frame)
    project.save_class_prediction(item_id, model, labels, mean_confidence(prediction), part)


def mean_confidence(prediction) -> float | None:
    """The mean winning-class probability of a prediction (how sure the model was)."""
    confidence = getattr(prediction, "confidence", None)
    return None if confidence is None else float(np.mean(confidence))


def encode_index_png(labels: np.ndarray) -> bytes:
    """A 2D label map as an 8- or 16-bit grey PNG."""
    import cv2

    ok, data = cv2.imencode(".png", labels)
    if not ok:
        raise SegStudioError("Could not encode the prediction as PNG.")
    return data.tobytes()


def _unique(stem: str, used: set[str]) -> str:
    name, n = stem, 2
    while name in used:
        name, n = f"{stem}_{n}", n + 1
    used.add(name)
    return name
