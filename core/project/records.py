"""What a project keeps beside the label maps: instance tables and model predictions, video
segments and action scores, per-frame states.

A mixin of :class:`core.project.store.Project`: it uses the project's ``_read``, ``_write`` and
``_reading`` (one lock, one transaction per write) and its ``meta``/``set_meta``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable

import numpy as np

from core.annotation.segments import Segment
from core.errors import ProjectError
from core.project.items import FRAME_STATES, FrameInfo, Instance


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
                              confidence: float | None = None) -> None:
        """Keep what a model predicted on a whole item (and its mean winning probability)."""
        labels = np.ascontiguousarray(labels)
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO class_predictions (item_id, model, shape, dtype, "
                       "data, confidence) VALUES (?, ?, ?, ?, ?, ?)",
                       (item_id, model, json.dumps(list(labels.shape)), labels.dtype.str,
                        zlib.compress(labels.tobytes(), 3), confidence))

    def load_class_prediction(self, item_id: int) -> tuple[str, np.ndarray] | None:
        """(model, labels) of the last prediction kept for an item, or None."""
        rows = self._read("SELECT model, shape, dtype, data FROM class_predictions "
                          "WHERE item_id = ?", (item_id,))
        if not rows:
            return None
        model, shape, dtype, data = rows[0]
        with self._reading():
            raw = np.frombuffer(zlib.decompress(data), np.dtype(dtype))
        return model, raw.reshape(json.loads(shape)).copy()

    def prediction_confidences(self) -> dict[int, float | None]:
        """Item id -> mean winning probability of its kept prediction (None: not recorded)."""
        rows = self._read("SELECT item_id, confidence FROM class_predictions")
        return {int(i): None if c is None else float(c) for i, c in rows}

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
