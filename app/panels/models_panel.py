"""The Models panel: pick a model, its weights, the device and tiling; run it on the current
item (the slice the active view shows, whatever its axis), on every slice of a volume along the
active view's axis, on every item or on the items not done, off the UI thread with progress and
Cancel.

A result on the current item becomes one undo step; a batch run writes each item's mask through
the project journal and marks new items "needs review".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.panels.model_choice import ModelChoice
from app.widgets import double_spin_box, spin_box
from app.worker import Job
from app.workspace import Workspace
from core.errors import SegStudioError

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class RunRequest:
    """Everything a run needs, captured on the UI thread when Run is pressed."""

    model: str
    weights: str | None
    num_classes: int | None  # only for untrained models: weights bring their own classes
    device: str
    tile: int
    overlap: float
    scope: str  # "current", "volume" (every slice of the item), "all" or "not_done"
    item_id: int | None = None
    # "current": the slice of labels.transpose(axes) the result belongs to (the session's
    # plane and axes when Run was pressed); "volume": plane () and the axes the slices were cut
    # along (the active view's geometry). () for a plain image or a batch.
    plane: tuple[int, ...] = ()
    axes: tuple[int, ...] = ()
    view: str = ""  # "volume": the name of the view cut ("axial", "coronal", "XZ"...)
    frame: int | None = None  # a video: the frame the result belongs to
    # The pixels to predict, captured from the workspace (the shown slice for "current", the
    # whole (Z, Y, X[, C]) array for "volume"); None for a batch, which reads its items itself.
    image: np.ndarray | None = field(default=None, compare=False, repr=False)


class ModelsPanel(QWidget):
    """Signals ``applied(prediction)`` after a result lands on the current item."""

    applied = Signal(object)
    batch_done = Signal()

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.job: Job | None = None
        self.last_prediction: Any = None
        self.last_request: RunRequest | None = None  # the run that made last_prediction
        self._progress_text = ""  # "Every coronal slice" while such a run reports progress
        self._engine: Any = None
        self._engine_key: tuple | None = None
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.choice = ModelChoice("semantic", self, self.status.setText)
        self.model, self.weights = self.choice.model, self.choice.weights
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.tile = spin_box(64, 4096, 512, step=64, suffix=" px")
        self.overlap = double_spin_box(0.0, 0.9, 0.25, step=0.05)
        self.confidence = QCheckBox("Show confidence")
        self.confidence.setObjectName("confidence_toggle")
        self.progress = QProgressBar()
        self.buttons = {scope: QPushButton(text) for scope, text in (
            ("current", "Run on item"), ("volume", "Every slice (this view)"), ("all", "All items"),
            ("not_done", "Items not done"))}
        self.cancel = QPushButton("Cancel")
        self.cancel.setEnabled(False)
        self.cancel.clicked.connect(self._cancel)
        self._layout()
        for scope, button in self.buttons.items():
            button.setObjectName(f"run_{scope}")
            button.clicked.connect(lambda _c=False, s=scope: self.run(s))
        for signal in (workspace.item_opened, workspace.view_axis_changed,
                       workspace.project_changed):
            signal.connect(self._describe_volume_run)
        self._describe_volume_run()

    def _describe_volume_run(self, *_args) -> None:
        geometry = self.workspace.geometry() if self.workspace.session is not None else None
        what = f"every {geometry.name} slice" if geometry is not None else \
            "every slice of a volume or stack along the view you edit in"
        self.buttons["volume"].setToolTip(
            f"Run the 2D model on {what}; the whole result is one undo step.")

    def _layout(self) -> None:
        form = QFormLayout()
        form.addRow("Model", self.model)
        form.addRow("Weights", self.weights)
        form.addRow("Device", self.device)
        tiling = QHBoxLayout()
        tiling.addWidget(self.tile)
        tiling.addWidget(QLabel("overlap"))
        tiling.addWidget(self.overlap)
        form.addRow("Tile", tiling)
        runs = QHBoxLayout()
        for button in self.buttons.values():
            runs.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(form)
        layout.addLayout(runs)
        progress = QHBoxLayout()
        progress.addWidget(self.progress)
        progress.addWidget(self.cancel)
        layout.addLayout(progress)
        layout.addWidget(self.confidence)
        layout.addWidget(self.status)
        layout.addStretch(1)

    # -- running ------------------------------------------------------------------------------------
    def request(self, scope: str) -> RunRequest:
        weights = self.choice.chosen_weights()
        classes = self.workspace.classes()
        num_classes = max((c.index for c in classes), default=1) + 1
        ws = self.workspace
        session = ws.session
        where: dict[str, Any] = {}
        if session is not None and scope in ("current", "volume"):
            if ws.image_error:
                raise SegStudioError(ws.image_error)
            if scope == "current":  # the slice the active view shows, already transposed
                where = dict(plane=session.plane, axes=session.axes, image=ws.image_plane(),
                             frame=session.frame)
            else:
                geometry = ws.geometry()
                axes = geometry.axes if geometry is not None else (0, 1, 2)
                where = dict(axes=axes, view=geometry.name if geometry is not None else "",
                             image=ws.image)
        return RunRequest(
            model=self.model.currentData(), weights=weights,
            num_classes=max(num_classes, 2) if weights is None else None,
            device=self.device.currentText(), tile=self.tile.value(),
            overlap=self.overlap.value(), scope=scope,
            item_id=session.item.id if session else None, **where)

    def run(self, scope: str) -> None:
        """Start a run; errors become a message in the panel."""
        if self.job is not None:
            return
        try:
            request = self.request(scope)
            if self.workspace.project is None:
                raise SegStudioError("Open a project first.")
            if scope in ("current", "volume") and request.item_id is None:
                raise SegStudioError("Open an item first.")
            if scope == "volume" and (self.workspace.item.frames <= 1
                                      or self.workspace.item.kind == "video"):
                raise SegStudioError("Every slice: open a volume or a stack.")
            if scope == "all" and not self._confirm_overwrite():
                return
        except SegStudioError as err:
            self.status.setText(str(err))
            return
        if scope in ("all", "not_done"):
            self.workspace.suspend()  # the batch writes the open item's mask too
        self.job = Job(lambda report, cancel: self._work(request, report, cancel), self)
        self.job.progress.connect(self._on_progress)
        self.job.succeeded.connect(lambda result: self._on_success(request, result))
        self.job.failed.connect(lambda message: self._on_failure(request, message))
        self._set_running(True)
        self._progress_text = _volume_text(request) if scope == "volume" else ""
        self.status.setText(f"{self._progress_text}: running {request.model}…"
                            if self._progress_text else f"Running {request.model}…")
        self.job.start()

    def _confirm_overwrite(self) -> bool:
        project = self.workspace.project
        annotated = [i for i in self.workspace.items if project.has_mask(i.id)]
        if not annotated:
            return True
        answer = QMessageBox.question(
            self, "Replace masks?",
            f"{len(annotated)} item(s) already have masks, some maybe marked done. The model's "
            "result replaces them (undo is not possible for items other than the open one). "
            "Continue?")
        return answer == QMessageBox.StandardButton.Yes

    def _engine_for(self, request: RunRequest):
        """One engine per device/tiling setting; it caches loaded models between runs."""
        from core.inference.engine import InferenceEngine, InferenceSettings

        key = (request.device, request.tile, request.overlap)
        if self._engine is None or self._engine_key != key:
            self._engine = InferenceEngine(InferenceSettings(
                device=request.device, tile_size=request.tile, overlap=request.overlap))
            self._engine_key = key
        return self._engine

    def _work(self, request: RunRequest, report, cancel):
        """Runs on the worker thread: load (cached), then predict."""
        engine = self._engine_for(request)
        loaded = engine.load(request.model, weights=request.weights,
                             num_classes=request.num_classes)
        project = self.workspace.project
        if request.scope == "volume":
            return _predict_slices(engine, loaded, request.image, report, cancel,
                                   axes=request.axes)
        if request.scope == "current":
            return engine.predict(loaded, request.image, report=report, cancel=cancel)
        from core.predict import predict_items

        items = [i for i in project.items() if request.scope == "all" or i.state != "done"]
        return predict_items(engine, loaded, project, items, include_done=request.scope == "all",
                             report=report, cancel=cancel)

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(done)
        if self._progress_text and self.job is not None and not self.job.cancel_token.is_set():
            self.status.setText(f"{self._progress_text}: {done}/{total}")

    def _on_success(self, request: RunRequest, result) -> None:
        self._set_running(False)
        if request.scope in ("current", "volume"):
            self._apply(request, result)
            return
        self.workspace.resume()
        text = f"Predicted {len(result.written)} item(s)."
        if result.skipped:
            text += f" Skipped {len(result.skipped)}: " + "; ".join(
                f"{name}: {why}" for name, why in result.skipped[:3])
        self.status.setText(" ".join([text, *result.notes]))
        self.batch_done.emit()

    def _apply(self, request: RunRequest, prediction) -> None:
        """The result becomes one undoable edit of the item (and slice) it was run on."""
        ws = self.workspace
        session = ws.session
        self.workspace.ensure_classes(prediction.classes, prediction.labels)
        whole = request.scope == "volume"
        if session is not None and session.item.id == request.item_id \
                and session.frame != request.frame:  # a video: the person went to another frame
            session = ws.frame_session(request.frame)
        if session is None or session.item.id != request.item_id:
            self._write_elsewhere(request, prediction.labels)  # the person opened another item
        elif whole or (session.plane, session.axes) == (request.plane, request.axes):
            session.replace_plane(prediction.labels, whole=whole)
        else:  # same item, but the person moved to another slice or view meanwhile
            shown = session.plane, session.axes
            session.set_view(request.plane, request.axes)
            try:
                session.replace_plane(prediction.labels)
            finally:
                session.set_view(*shown)
        from core.predict import keep_prediction  # the item, frame or slice it was run on

        keep_prediction(ws.project, request.item_id, request.model, prediction,
                        plane=() if whole else request.plane, axes=request.axes,
                        frame=request.frame)
        self.last_prediction = prediction
        self.last_request = request
        done = f"{request.model} done on {prediction.device}."
        if whole:
            done = f"{_volume_text(request)}: {done}"
        self.status.setText(" ".join([done, *prediction.notes]))
        self.applied.emit(prediction)

    def _write_elsewhere(self, request: RunRequest, labels) -> None:
        """Journal the result onto an item that is not open (its mask on disk)."""
        from core.annotation.tools import replace_labels

        project = self.workspace.project
        current = project.load_mask(request.item_id, request.frame)
        if request.frame is not None:
            edit = replace_labels(current, labels)
            if edit is not None:
                project.append_edit(request.item_id, edit, frame=request.frame)
                project.set_frame_info(request.item_id, request.frame, "annotated")
            return
        if request.scope == "volume" or not request.axes:
            edit = replace_labels(current, labels, () if request.scope == "volume"
                                  else request.plane)
        else:
            edit = replace_labels(current.transpose(request.axes), labels, request.plane)
            if edit is not None:
                edit = edit.transposed(tuple(int(a) for a in np.argsort(request.axes)))
        if edit is not None:
            project.append_edit(request.item_id, edit)

    def confidence_plane(self) -> np.ndarray | None:
        """The last prediction's confidence for the slice the active view shows, or None when
        nothing was run, it belongs to another item, or (a run on one slice) to another slice."""
        prediction, request = self.last_prediction, self.last_request
        session = self.workspace.session
        if prediction is None or request is None or session is None \
                or session.item.id != request.item_id:
            return None
        if request.scope == "current" and (session.plane, session.axes, session.frame) != \
                (request.plane, request.axes, request.frame):
            return None
        return confidence_slice(prediction.confidence, self.workspace)

    def _on_failure(self, request: RunRequest, message: str) -> None:
        self._set_running(False)
        if request.scope in ("all", "not_done"):
            self.workspace.resume()
        self.status.setText(f"{_volume_text(request)}: {message}" if request.scope == "volume"
                            else message)

    def _set_running(self, running: bool) -> None:
        if not running:
            self.job = None
            self._progress_text = ""
        for button in self.buttons.values():
            button.setEnabled(not running)
        self.cancel.setEnabled(running)

    def _cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.setText("Cancelling…")

    def shutdown(self) -> None:
        """Stop a running job (the window is closing)."""
        if self.job is not None:
            self.job.cancel()
            self.job.wait()


def confidence_slice(confidence: np.ndarray | None, workspace: Workspace) -> np.ndarray | None:
    """The 2-D confidence of the slice the active view shows, or None when it does not fit.

    ``confidence`` is a prediction's: (H, W) for a run on one slice (returned as is when it has
    the shown slice's shape), or (Z, Y, X) for a run over every slice, whatever view it was run
    in (cut here along the active view's axis, as the labels are).
    """
    labels = workspace.label_plane()
    if confidence is None or labels is None:
        return None
    if confidence.ndim == 3:
        geometry = workspace.geometry()
        if geometry is None or workspace.session is None \
                or confidence.shape != workspace.session.labels.shape:
            return None
        confidence = confidence.transpose(geometry.axes)[workspace.position[geometry.axis]]
    return confidence if confidence.shape == labels.shape else None


def _volume_text(request: RunRequest) -> str:
    return f"Every {request.view} slice" if request.view else "Every slice"


def _predict_slices(engine, loaded, volume, report, cancel, axes=(0, 1, 2)):
    """Run a 2D model on every slice of a (Z, Y, X[, C]) volume or stack cut along ``axes[0]``
    (slice i is ``volume.transpose(axes)[i]``); one result for all, back in (Z, Y, X) order."""
    from core.inference.engine import Prediction
    from core.inference.errors import InferenceCancelled

    axes = tuple(int(a) for a in axes)
    channels = tuple(range(len(axes), volume.ndim))  # RGB stacks keep their colour axis last
    slices = volume.transpose(axes + channels)
    results = []
    for index, plane in enumerate(slices):
        if cancel is not None and cancel.is_set():
            raise InferenceCancelled("Inference cancelled.")
        results.append(engine.predict(loaded, plane, cancel=cancel))
        if report is not None:
            report(index + 1, len(slices))
    dtype = np.uint16 if any(r.labels.dtype == np.uint16 for r in results) else np.uint8
    notes = list(dict.fromkeys(n for r in results for n in r.notes))
    back = tuple(int(a) for a in np.argsort(axes))  # view order -> (Z, Y, X)
    labels = np.stack([r.labels.astype(dtype) for r in results]).transpose(back)
    confidence = np.stack([r.confidence for r in results]).transpose(back)
    return Prediction(labels=np.ascontiguousarray(labels), probabilities=None,
                      confidence=np.ascontiguousarray(confidence),
                      classes=results[0].classes, device=results[-1].device, notes=notes)
