"""The Actions panel: what happens when in the open video.

The action vocabulary of the project, the label new segments get, and the segment operations
(set label, split at the shown frame, merge, delete, accept the model's proposals, undo, redo) on
the video's :class:`~core.annotation.segments.SegmentTrack`; segments are drawn and created on the
timeline under the video. A model (C3D, R(2+1)D, two-stream, ...) scores the whole video clip by
clip off the UI thread; its per-frame probabilities go on the timeline and "Propose segments"
turns them into segments (smoothing, threshold, minimum duration) for the person to correct.
Every change is saved at once.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.panels.model_choice import ModelChoice
from app.widgets import double_spin_box, spin_box
from app.worker import JobControls
from app.workspace import Workspace
from core.annotation.segments import SegmentError, SegmentTrack, propose_segments
from core.errors import SegStudioError


class ActionsPanel(QWidget):
    """Signals ``track_changed()`` (segments or selection changed) and ``scores_changed()``."""

    track_changed = Signal()
    scores_changed = Signal()

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.track: SegmentTrack | None = None
        self.selected = -1
        self.scores: tuple[str, list[str], np.ndarray] | None = None  # model, labels, (T, C)
        self._engine = None
        self.label = QComboBox()
        self.label.setObjectName("action_label")
        self.new_label = QLineEdit()
        self.new_label.setPlaceholderText("new action label")
        self.new_label.returnPressed.connect(lambda: self._guard(self.add_label))
        add = QPushButton("Add")
        add.clicked.connect(lambda: self._guard(self.add_label))
        self.buttons: dict[str, QPushButton] = {}
        for name, text, slot in (
                ("relabel", "Set label", self.relabel_selected),
                ("split", "Split at frame", self.split_selected),
                ("merge", "Merge with next", self.merge_selected),
                ("delete", "Delete", self.delete_selected),
                ("accept", "Accept proposals", self.accept_proposals),
                ("undo", "Undo", lambda: self._history(undo=True)),
                ("redo", "Redo", lambda: self._history(undo=False))):
            button = QPushButton(text)
            button.setObjectName(f"segments_{name}")
            button.clicked.connect(lambda _c=False, s=slot: self._guard(s))
            self.buttons[name] = button
        self.choice = ModelChoice("action", self, lambda text: self.status.setText(text),
                                  lazy=True)
        self.step = spin_box(0, 10000, prefix="every ", suffix=" frames", special="one clip span")
        self.stride = spin_box(0, 30, prefix="frame stride ", special="stride: the model's rate")
        self.run = QPushButton("Score the video")
        self.run.setObjectName("classify_video")
        self.run.clicked.connect(self.run_model)
        self.cancel = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.threshold = double_spin_box(0.0, 1.0, 0.5, step=0.05)
        self.min_frames = spin_box(1, 10000, 8)
        self.smooth = spin_box(1, 301, 5)
        self.propose = QPushButton("Propose segments")
        self.propose.setObjectName("propose_segments")
        self.propose.clicked.connect(lambda: self._guard(self.propose_segments))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.runner = JobControls(self, self.run, self.cancel, self.progress, self.status)
        self._layout(add)
        workspace.item_opened.connect(self.item_opened)

    def _layout(self, add: QPushButton) -> None:
        labels = QGroupBox("Segments")
        form = QFormLayout(labels)
        form.addRow("Label", self.label)
        row = QHBoxLayout()
        row.addWidget(self.new_label)
        row.addWidget(add)
        form.addRow("", row)
        grid = QGridLayout()
        for index, name in enumerate(("relabel", "split", "merge", "delete", "accept", "undo",
                                      "redo")):
            grid.addWidget(self.buttons[name], index // 3, index % 3)
        form.addRow(grid)
        form.addRow(QLabel("Drag on the track under the video to add a segment; click one to "
                           "select it, drag its edges to resize it."))
        model = QGroupBox("Model")
        mform = QFormLayout(model)
        mform.addRow("Model", self.choice.model)
        mform.addRow("Weights", self.choice.weights)
        clips = QHBoxLayout()
        clips.addWidget(self.stride)
        clips.addWidget(self.step)
        mform.addRow("Clips", clips)
        run = QHBoxLayout()
        run.addWidget(self.run)
        run.addWidget(self.progress)
        run.addWidget(self.cancel)
        mform.addRow(run)
        proposals = QHBoxLayout()
        proposals.addWidget(QLabel("score ≥"))
        proposals.addWidget(self.threshold)
        proposals.addWidget(QLabel("min frames"))
        proposals.addWidget(self.min_frames)
        proposals.addWidget(QLabel("smooth"))
        proposals.addWidget(self.smooth)
        mform.addRow(proposals)
        mform.addRow(self.propose)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(labels)
        layout.addWidget(model)
        layout.addWidget(self.status)
        layout.addStretch(1)

    # -- state -------------------------------------------------------------------------------------------
    def item_opened(self) -> None:
        """Load the open video's segments, vocabulary and kept scores (nothing for others)."""
        ws = self.workspace
        item = ws.item
        self.selected = -1
        if item is None or item.kind != "video" or ws.project is None:
            self.track, self.scores = None, None
        else:
            self.track = SegmentTrack(item.frames, ws.project.load_segments(item.id))
            self.scores = ws.project.load_action_scores(item.id)
        self._fill_labels()
        self.track_changed.emit()
        self.scores_changed.emit()

    def _fill_labels(self) -> None:
        current = self.label.currentText()
        self.label.clear()
        if self.workspace.project is not None:
            self.label.addItems(self.workspace.project.action_labels())
        at = self.label.findText(current)
        self.label.setCurrentIndex(max(at, 0))

    def _require(self, selected: bool = False) -> SegmentTrack:
        if self.track is None:
            raise SegStudioError("Temporal labels are for videos: open one first.")
        if selected and not 0 <= self.selected < len(self.track):
            raise SegStudioError("Select a segment first (click it on the track).")
        return self.track

    def _current_label(self) -> str:
        label = self.label.currentText().strip()
        if not label:
            raise SegStudioError("Add an action label first.")
        return label

    def _save(self, text: str = "") -> None:
        ws = self.workspace
        ws.project.save_segments(ws.item.id, self.track.segments)
        if self.selected >= len(self.track):
            self.selected = -1
        self.track_changed.emit()
        if text:
            self.status.setText(text)

    # -- operations ----------------------------------------------------------------------------------------
    def add_label(self) -> str:
        project = self.workspace.project
        if project is None:
            raise SegStudioError("Open a project first.")
        label = self.new_label.text().strip()
        if not label:
            raise SegStudioError("Type the new action label first.")
        labels = project.action_labels()
        if label not in labels:
            project.set_action_labels([*labels, label])
        self.new_label.clear()
        self._fill_labels()
        self.label.setCurrentIndex(self.label.findText(label))
        return label

    def add_segment(self, start: int, end: int) -> None:
        track = self._require()
        track.add(start, end, self._current_label())
        self.selected = track.at(start) if track.at(start) is not None else -1
        self._save(f"Segment {start + 1}-{end + 1} added.")

    def resize_segment(self, index: int, start: int, end: int) -> None:
        self._require().resize(index, start, end)
        self.selected = self.track.at(start) if self.track.at(start) is not None else -1
        self._save()

    def select(self, index: int) -> None:
        self.selected = index
        if self.track is not None and 0 <= index < len(self.track):
            segment = self.track.segments[index]
            at = self.label.findText(segment.label)
            if at >= 0:
                self.label.setCurrentIndex(at)
            self.status.setText(f"{segment.label}: frames {segment.start + 1}-{segment.end + 1}"
                                + (f", model score {segment.score:.2f}" if segment.score is not None
                                   else ""))
        self.track_changed.emit()

    def relabel_selected(self) -> None:
        self._require(selected=True).relabel(self.selected, self._current_label())
        self._save()

    def split_selected(self) -> None:
        first, second = self._require(selected=True).split(self.selected, self.workspace.frame)
        self._save(f"Split into {first.start + 1}-{first.end + 1} and "
                   f"{second.start + 1}-{second.end + 1}.")

    def merge_selected(self) -> None:
        track = self._require(selected=True)
        if self.selected + 1 >= len(track):
            raise SegStudioError("The selected segment is the last one: nothing to merge with.")
        track.merge(self.selected, self.selected + 1)
        self._save()

    def delete_selected(self) -> None:
        self._require(selected=True).delete([self.selected])
        self.selected = -1
        self._save("Segment deleted.")

    def accept_proposals(self) -> None:
        self._require().accept()
        self._save("The model's segments are now yours.")

    def _history(self, undo: bool) -> None:
        track = self._require()
        if not (track.undo() if undo else track.redo()):
            raise SegStudioError("Nothing to undo." if undo else "Nothing to redo.")
        self.selected = -1
        self._save()

    def propose_segments(self) -> int:
        """Segments from the kept scores; the person's own segments are kept as they are."""
        track = self._require()
        if self.scores is None:
            raise SegStudioError("Score the video with a model first.")
        _model, labels, scores = self.scores
        proposals = propose_segments(scores, labels, self.threshold.value(),
                                     self.min_frames.value(), self.smooth.value())
        person = [s for s in track.segments if s.source == "person"]
        for segment in person:
            proposals = SegmentTrack._carve(proposals, segment.start, segment.end)
        track.replace_all(person + proposals)
        project = self.workspace.project
        known = project.action_labels()
        new = [label for label in dict.fromkeys(p.label for p in proposals) if label not in known]
        if new:
            project.set_action_labels([*known, *new])
            self._fill_labels()
        self._save(f"{len(proposals)} segment(s) proposed; check them, then Accept proposals.")
        return len(proposals)

    # -- model -------------------------------------------------------------------------------------------------
    def run_model(self) -> None:
        """Score every clip of the open video with the chosen action model, off the UI thread."""
        ws = self.workspace
        try:
            self._require()
            if self.runner.running:
                return
            if ws.video is None:
                raise SegStudioError(ws.image_error or "The video cannot be read.")
            weights = self.choice.chosen_weights()
            model = self.choice.model.currentData()
            if model is None:
                raise SegStudioError("No action model is registered.")
            labels = ws.project.action_labels()
            num_classes = max(len(labels), 2) if weights is None else None
        except SegStudioError as err:
            self.status.setText(str(err))
            return
        reader, item_id = ws.video, ws.item.id
        stride, step = self.stride.value() or None, self.step.value() or None

        def work(report, cancel):
            from core.inference.clips import classify_video
            from core.inference.engine import InferenceEngine
            from core.models.action_specs import clip_spec

            if self._engine is None:
                self._engine = InferenceEngine()
            loaded = self._engine.load(model, weights=weights, num_classes=num_classes)
            spec = clip_spec(model, **loaded.model_kwargs)
            frames = loaded.meta.get("clip_frames")  # a checkpoint trained on other clips
            if frames and int(frames) != spec.frames:
                spec = replace(spec, frames=int(frames), min_frames=min(spec.min_frames,
                                                                        int(frames)))
            return classify_video(loaded, reader, spec, stride=stride, step=step,
                                  report=report, cancel=cancel)

        untrained = weights is None  # its classes are the project's action labels
        self.runner.start(work, f"Scoring the clips with {model}…", lambda result: self._scored(
            item_id, model, labels if untrained else [], result))

    @property
    def job(self):
        """The running job, or None."""
        return self.runner.job

    def _scored(self, item_id: int, model: str, project_labels: list[str], result) -> None:
        ws = self.workspace
        scores = np.asarray(result.frame_scores, np.float32)
        names = list(result.labels)
        if project_labels:  # an untrained model's classes are the project's action labels
            names = (project_labels + names[len(project_labels):])[:scores.shape[1]]
        ws.project.save_action_scores(item_id, model, names, scores)
        if ws.item is not None and ws.item.id == item_id:
            self.scores = (model, names, scores)
            self.scores_changed.emit()
        top = names[int(np.argmax(np.asarray(result.video_scores)))]
        self.status.setText(f"{model}: {len(result.windows)} clip(s); the whole video looks most "
                            f"like '{top}'. Propose segments turns the curves into segments.")

    def shutdown(self) -> None:
        self.runner.shutdown()

    def _guard(self, action) -> None:
        try:
            action()
        except (SegStudioError, SegmentError) as err:
            self.status.setText(str(err))
