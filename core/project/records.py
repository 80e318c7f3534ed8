"""What a project keeps beside the label maps: instance tables and model predictions, video
segments and action scores, per-frame states.

A mixin of :class:`core.project.store.Project`: it uses the project's ``_read``, ``_write`` and
``_reading`` (one lock, one transaction per write) and its ``meta``/``set_meta``.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Iterable, Mapping

import numpy as np

from core.annotation.segments import Segment
from core.errors import ProjectError
from core.project.items import FRAME_STATES, FrameInfo, Instance, Item
from core.project.predictions import (
    WHOLE_ITEM,
    KeptPrediction,
    PredictedPart,
    parts_agreement,
)


class ProjectRecords:
    # -- instances ---------------------------------------------------------------------------------
    def instances(self, item_id: int) -> dict[int, Instance]:
        """The instance table of an item, by instance id (rows may outlive their pixels: an
        instance erased by an edit that can be undone keeps its row)."""
        rows = self._read("SELECT inst_id, class_idx, score, source, reviewed FROM instances "
                          "WHERE item_id = ? ORDER BY inst_id", (item_id,))
        return {int(i): Instance(int(i), int(c), None if s is None else float(s), src, bool(r))
                for i, c, s, src, r in rows}

    def set_instances(self, item_id: int, instances: Iterable[Instance]) -> None:
        """Insert or update instance rows (others are kept)."""
        rows = [(item_id, i.id, i.class_index, i.score, i.source, int(i.reviewed))
                for i in instances]
        for row in rows:
            if row[1] <= 0:
                raise ProjectError(f"Instance ids start at 1; got {row[1]}.")
        with self._write() as db:
            db.executemany("INSERT OR REPLACE INTO instances (item_id, inst_id, class_idx, "
                           "score, source, reviewed) VALUES (?, ?, ?, ?, ?, ?)", rows)

    def delete_instances(self, item_id: int, ids: Iterable[int] | None = None) -> None:
        """Drop instance rows (all of the item's when ``ids`` is None)."""
        with self._write() as db:
            if ids is None:
                db.execute("DELETE FROM instances WHERE item_id = ?", (item_id,))
            else:
                db.executemany("DELETE FROM instances WHERE item_id = ? AND inst_id = ?",
                               [(item_id, int(i)) for i in ids])

    def save_predictions(self, item_id: int, model: str, results: list[dict]) -> None:
        """Keep what a model predicted on an item, untouched by later corrections, to measure
        how much the person had to fix (COCO results: ``category_id``, ``segmentation`` as
        RLE with ``counts`` a str, ``bbox``, ``score``)."""
        data = zlib.compress(json.dumps(results).encode(), 3)
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO instance_predictions (item_id, model, data) "
                       "VALUES (?, ?, ?)", (item_id, model, data))

    def load_predictions(self, item_id: int) -> tuple[str, list[dict]] | None:
        """(model, COCO results) of the last instance prediction kept for an item, or None."""
        rows = self._read("SELECT model, data FROM instance_predictions WHERE item_id = ?",
                          (item_id,))
        if not rows:
            return None
        with self._reading():
            return rows[0][0], json.loads(zlib.decompress(rows[0][1]))

    def has_instances(self, item_id: int) -> bool:
        """Whether the item has an instance map stored."""
        return self.has_mask(item_id, layer="instances")

    # -- semantic predictions kept -------------------------------------------------------------------
    def save_class_prediction(self, item_id: int, model: str, labels: np.ndarray,
                              confidence: float | None = None,
                              part: PredictedPart = WHOLE_ITEM) -> None:
        """Keep what a model predicted on a part of an item (the whole item unless ``part`` says
        otherwise) and its mean winning probability; it replaces the one kept for that part. A
        slice's labels are in array order (``np.take(volume, index, axis)``). A whole item
        replaces every part kept before (it covers them)."""
        labels = np.ascontiguousarray(labels)
        if part.kind != "item" and labels.ndim != 2:
            raise ProjectError(f"A {part.describe()} prediction is 2-D; got shape "
                               f"{labels.shape}.")
        with self._write() as db:
            if part.kind == "item":
                db.execute("DELETE FROM part_predictions WHERE item_id = ?", (item_id,))
            db.execute("INSERT OR REPLACE INTO part_predictions (item_id, part, position, model, "
                       "shape, dtype, data, confidence, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, "
                       "?)", (item_id, part.kind, part.position, model,
                              json.dumps(list(labels.shape)), labels.dtype.str,
                              zlib.compress(labels.tobytes(), 3), confidence, time.time()))

    def load_class_prediction(self, item_id: int,
                              part: PredictedPart = WHOLE_ITEM) -> tuple[str, np.ndarray] | None:
        """(model, labels) of the prediction kept for that part of an item, or None."""
        rows = self._read("SELECT model, shape, dtype, data FROM part_predictions "
                          "WHERE item_id = ? AND part = ? AND position = ?",
                          (item_id, part.kind, part.position))
        if not rows:
            return None
        model, shape, dtype, data = rows[0]
        return model, self._decode_labels(shape, dtype, data)

    def class_prediction_parts(self, item_id: int) -> list[KeptPrediction]:
        """Every prediction kept for an item, oldest first (where parts overlap, a later one
        wins)."""
        rows = self._read("SELECT part, position, model, shape, dtype, data, confidence, created "
                          "FROM part_predictions WHERE item_id = ? ORDER BY created, rowid",
                          (item_id,))
        return [KeptPrediction(PredictedPart(kind, int(position)), model,
                               self._decode_labels(shape, dtype, data),
                               None if c is None else float(c), None if t is None else float(t))
                for kind, position, model, shape, dtype, data, c, t in rows]

    def _decode_labels(self, shape: str, dtype: str, data: bytes) -> np.ndarray:
        with self._reading():
            raw = np.frombuffer(zlib.decompress(data), np.dtype(dtype))
        return raw.reshape(json.loads(shape)).copy()

    def prediction_stamps(self) -> dict[int, tuple[tuple[str, int, float | None], ...]]:
        """Item id -> (part, position, time) of each kept prediction: changes whenever one of
        the item's kept predictions does (to cache what is computed from them)."""
        rows = self._read("SELECT item_id, part, position, created FROM part_predictions "
                          "ORDER BY item_id, created, rowid")
        out: dict[int, list] = {}
        for item_id, kind, position, created in rows:
            out.setdefault(int(item_id), []).append((kind, int(position), created))
        return {item_id: tuple(stamps) for item_id, stamps in out.items()}

    def prediction_confidences(self) -> dict[int, float | None]:
        """Item id -> how sure the model was on it: the mean winning probability of its kept
        parts, weighted by their pixels (None: no part recorded one)."""
        rows = self._read("SELECT item_id, shape, confidence FROM part_predictions")
        sums: dict[int, list[float]] = {}
        for item_id, shape, confidence in rows:
            total = sums.setdefault(int(item_id), [0.0, 0.0])
            if confidence is not None:
                pixels = float(np.prod(json.loads(shape)))
                total[0] += float(confidence) * pixels
                total[1] += pixels
        return {i: (s / n if n > 0 else None) for i, (s, n) in sums.items()}

    def prediction_agreement(self, item: Item, labels: np.ndarray | None = None,
                             frames: Mapping[int, np.ndarray] | None = None) -> float | None:
        """How much of the model's kept predictions of ``item`` the labels now keep: see
        :func:`parts_agreement`. ``labels`` (an image's or a volume's) and ``frames`` (a video's,
        by frame) are labels the caller holds, newer than the stored ones; the rest are read."""
        parts = self.class_prediction_parts(item.id)
        if not parts:
            return None
        if item.kind == "video":
            frames = frames or {}
            return parts_agreement(parts, frame_labels=lambda f: frames[f] if f in frames
                                   else self.load_mask(item, f))
        return parts_agreement(parts, self.load_mask(item) if labels is None else labels)

    # -- temporal labels ---------------------------------------------------------------------------
    def load_segments(self, item_id: int) -> list[Segment]:
        """The action segments of a video, by start frame."""
        rows = self._read("SELECT start_frame, end_frame, label, source, score FROM segments "
                          "WHERE item_id = ? ORDER BY start_frame", (item_id,))
        return [Segment(int(a), int(b), label, source, None if score is None else float(score))
                for a, b, label, source, score in rows]

    def save_segments(self, item_id: int, segments: Iterable[Segment]) -> None:
        """Replace the video's segments (one transaction)."""
        rows = [(item_id, s.start, s.end, s.label, s.source, s.score) for s in segments]
        with self._write() as db:
            db.execute("DELETE FROM segments WHERE item_id = ?", (item_id,))
            db.executemany("INSERT INTO segments (item_id, start_frame, end_frame, label, "
                           "source, score) VALUES (?, ?, ?, ?, ?, ?)", rows)

    def action_labels(self) -> list[str]:
        """The project's action vocabulary (labels of temporal segments), in order."""
        return list(json.loads(self.meta("action_labels", "[]") or "[]"))

    def set_action_labels(self, labels: Iterable[str]) -> None:
        labels = [str(label).strip() for label in labels]
        if any(not label for label in labels) or len(set(labels)) != len(labels):
            raise ProjectError("Action labels must be non-empty and distinct.")
        self.set_meta("action_labels", json.dumps(labels))

    def save_action_scores(self, item_id: int, model: str, labels: list[str],
                           scores: np.ndarray) -> None:
        """Keep a model's per-frame class scores (T, C) of a video for the timeline."""
        scores = np.ascontiguousarray(scores, dtype=np.float32)
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO action_scores (item_id, model, labels, shape, data)"
                       " VALUES (?, ?, ?, ?, ?)",
                       (item_id, model, json.dumps(list(labels)), json.dumps(list(scores.shape)),
                        zlib.compress(scores.tobytes(), 3)))

    def load_action_scores(self, item_id: int) -> tuple[str, list[str], np.ndarray] | None:
        """(model, labels, scores (T, C)) kept for a video, or None."""
        rows = self._read("SELECT model, labels, shape, data FROM action_scores "
                          "WHERE item_id = ?", (item_id,))
        if not rows:
            return None
        model, labels, shape, data = rows[0]
        with self._reading():
            scores = np.frombuffer(zlib.decompress(data), np.float32).reshape(json.loads(shape))
        return model, json.loads(labels), scores.copy()

    # -- video frames --------------------------------------------------------------------------------
    def frame_info(self, item_id: int) -> dict[int, FrameInfo]:
        """What each annotated frame of a video is (drawn, propagated, reviewed), by frame."""
        rows = self._read("SELECT frame, state, reliability FROM frame_info WHERE item_id = ?",
                          (item_id,))
        return {int(f): FrameInfo(state, None if r is None else float(r)) for f, state, r in rows}

    def set_frame_info(self, item_id: int, frame: int, state: str,
                       reliability: float | None = None) -> None:
        """Record what frame ``frame``'s labels are (see :data:`FRAME_STATES`)."""
        if state not in FRAME_STATES:
            raise ProjectError(f"Unknown frame state {state!r}; use one of "
                               f"{', '.join(FRAME_STATES)}.")
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO frame_info (item_id, frame, state, reliability) "
                       "VALUES (?, ?, ?, ?)", (item_id, frame, state, reliability))
