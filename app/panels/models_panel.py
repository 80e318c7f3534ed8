"""The Models panel: pick a model, its weights, the device and tiling; run it on the current
item, on every item or on the items not done, off the UI thread with progress and Cancel.

A result on the current item becomes one undo step; a batch run writes each item's mask through
the project journal and marks new items "needs review".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.worker import Job
from app.workspace import Workspace
from core.errors import SegStudioError
from core.models import list_models, model_info

CHECKPOINT = "__checkpoint__"
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
    plane: tuple[int, ...] = ()


class ModelsPanel(QWidget):
    """Signals ``applied(prediction)`` after a result lands on the current item."""

    applied = Signal(object)
    batch_done = Signal()

    def __init__(self, workspace: Workspace, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.job: Job | None = None
        self.last_prediction: Any = None
        self._engine: Any = None
        self._engine_key: tuple | None = None
        self.model = QComboBox()
        self.model.setObjectName("model_combo")
        for name in list_models("semantic"):
            self.model.addItem(name, name)
            self.model.setItemData(self.model.count() - 1, model_info(name).paper, 3)
        self.weights = QComboBox()
        self.weights.setObjectName("weights_combo")
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.tile = QSpinBox()
        self.tile.setRange(64, 4096)
        self.tile.setSingleStep(64)
        self.tile.setValue(512)
        self.tile.setSuffix(" px")
        self.overlap = QDoubleSpinBox()
        self.overlap.setRange(0.0, 0.9)
        self.overlap.setSingleStep(0.05)
        self.overlap.setValue(0.25)
        self.confidence = QCheckBox("Show confidence")
        self.confidence.setObjectName("confidence_toggle")
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.buttons = {scope: QPushButton(text) for scope, text in (
            ("current", "Run on item"), ("volume", "Every slice"), ("all", "All items"),
            ("not_done", "Items not done"))}
        self.cancel = QPushButton("Cancel")
        self.cancel.setEnabled(False)
        self.cancel.clicked.connect(self._cancel)
        self._layout()
        self.model.currentIndexChanged.connect(self._fill_weights)
        self.weights.activated.connect(self._maybe_browse)
        for scope, button in self.buttons.items():
            button.setObjectName(f"run_{scope}")
            button.clicked.connect(lambda _c=False, s=scope: self.run(s))
        self._fill_weights()

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

    # -- weights ------------------------------------------------------------------------------------
    def _fill_weights(self) -> None:
        """Untrained, the model's published weights (importing its family, hence torch), a file."""
        self.weights.clear()
        self.weights.addItem("Untrained (random weights: for testing)", None)
        name = self.model.currentData()
        try:
            published = model_info(name).weights() if name else {}
        except Exception as err:  # a broken family must not break the panel
            published = {}
            self.status.setText(f"Could not list the weights of {name}: {err}")
        if published:
            from core.models.loading import cached_weights_path  # torch: already loaded

            for key, record in published.items():
                where = "" if cached_weights_path(record) else "  (not on this machine)"
                self.weights.addItem(f"{key}{where}", key)
        self.weights.addItem("Checkpoint file…", CHECKPOINT)
        if published:
            self.weights.setCurrentIndex(1)

    def _maybe_browse(self) -> None:
        if self.weights.currentData() != CHECKPOINT:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Model checkpoint", "",
                                              "Checkpoints (*.pt *.pth);;All files (*)")
        if path:
            self.weights.insertItem(self.weights.count() - 1, path, path)
            self.weights.setCurrentIndex(self.weights.count() - 2)
        else:
            self.weights.setCurrentIndex(0)

    # -- running ------------------------------------------------------------------------------------
    def request(self, scope: str) -> RunRequest:
        weights = self.weights.currentData()
        if weights == CHECKPOINT:
            raise SegStudioError("Choose a checkpoint file first.")
        classes = self.workspace.classes()
        num_classes = max((c.index for c in classes), default=1) + 1
        session = self.workspace.session
        return RunRequest(
            model=self.model.currentData(), weights=weights,
            num_classes=max(num_classes, 2) if weights is None else None,
            device=self.device.currentText(), tile=self.tile.value(),
            overlap=self.overlap.value(), scope=scope,
            item_id=session.item.id if session else None,
            plane=session.plane if session else ())

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
            if scope == "volume" and self.workspace.item.frames <= 1:
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
        self.status.setText(f"Running {request.model}…")
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
        if request.scope in ("current", "volume"):
            item = project.item(request.item_id)
            from core.io.volumes import load_item_pixels

            if item.source is None:
                raise SegStudioError(f"The source image of {item.name} is missing.")
            image = load_item_pixels(item)
            if request.scope == "volume":
                return _predict_slices(engine, loaded, image, report, cancel)
            if request.plane:
                image = image[request.plane]
            return engine.predict(loaded, image, report=report, cancel=cancel)
        from core.predict import predict_items

        items = [i for i in project.items() if request.scope == "all" or i.state != "done"]
        return predict_items(engine, loaded, project, items, include_done=request.scope == "all",
                             report=report, cancel=cancel)

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(done)

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
        """The result becomes one undoable edit of the item it was run on."""
        ws = self.workspace
        session = ws.session
        self.workspace.ensure_classes(prediction.classes, prediction.labels)
        whole = request.scope == "volume"
        if session is not None and session.item.id == request.item_id \
                and (whole or session.plane == request.plane):
            session.replace_plane(prediction.labels, whole=whole)
        else:  # the person moved on meanwhile: write it to the item it belongs to
            self._write_elsewhere(request, prediction.labels)
        self.last_prediction = prediction
        self.status.setText(" ".join([f"{request.model} done on {prediction.device}.",
                                      *prediction.notes]))
        self.applied.emit(prediction)

    def _write_elsewhere(self, request: RunRequest, labels) -> None:
        from core.annotation.tools import replace_labels

        project = self.workspace.project
        current = project.load_mask(request.item_id)
        edit = replace_labels(current, labels, () if request.scope == "volume" else request.plane)
        if edit is not None:
            project.append_edit(request.item_id, edit)

    def _on_failure(self, request: RunRequest, message: str) -> None:
        self._set_running(False)
        if request.scope in ("all", "not_done"):
            self.workspace.resume()
        self.status.setText(message)

    def _set_running(self, running: bool) -> None:
        if not running:
            self.job = None
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


def _predict_slices(engine, loaded, volume, report, cancel):
    """Run a 2D model on every slice (axis 0) of a volume or stack; one result for all."""
    import numpy as np

    from core.inference.engine import Prediction
    from core.inference.errors import InferenceCancelled

    results = []
    for index, plane in enumerate(volume):
        if cancel is not None and cancel.is_set():
            raise InferenceCancelled("Inference cancelled.")
        results.append(engine.predict(loaded, plane, cancel=cancel))
        if report is not None:
            report(index + 1, len(volume))
    dtype = np.uint16 if any(r.labels.dtype == np.uint16 for r in results) else np.uint8
    notes = list(dict.fromkeys(n for r in results for n in r.notes))
    return Prediction(labels=np.stack([r.labels.astype(dtype) for r in results]),
                      probabilities=None,
                      confidence=np.stack([r.confidence for r in results]),
                      classes=results[0].classes, device=results[-1].device, notes=notes)
