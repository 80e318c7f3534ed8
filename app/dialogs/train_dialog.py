"""Models > Train: train a semantic, instance (Mask R-CNN) or action model on the project's
annotations, off the UI thread.

The task selector ("Semantic masks", "Instances", "Actions") picks the models listed and the
options shown: the patch side for semantic models, the longer image side and the validation mask
AP for instance models, the frames per clip and their stride for action models; the shared
options (what to train on, epochs, steps per epoch, batch size, learning rate, optimiser, device,
checkpoint) start at that task's defaults. A project with nothing to train on for the task is
told so before any job starts.

The live plot draws the training loss and the task's validation metric (Dice, mask AP or top-1)
per epoch; the status line reports each epoch. Cancel stops between steps and keeps the last
checkpoint on disk. When training ends the best checkpoint is offered, selected, where the task's
models run (``trained(path, model, task, stride)``: the Models, Instances or Actions panel).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from app.dialogs.job_dialog import JobDialog
from app.dialogs.train_tasks import (
    OPTIMIZERS,
    TASKS,
    TrainRequest,
    make_training,
    trainable_models,
    training_data,
)
from app.widgets import double_spin_box, spin_box
from core.errors import SegStudioError
from core.models import model_info
from core.models.action_specs import clip_spec
from core.project.store import Project


class _EpochRelay(QObject):
    """Carries each finished epoch's row from the training thread to the UI thread."""

    epoch = Signal(object)


class TrainDialog(JobDialog):
    """Signals ``trained(checkpoint path, model name, task, clip stride)`` when a run leaves a
    best checkpoint (the stride is the action clips' one, 0 for the model's rate)."""

    trained = Signal(str, str, str, int)

    def __init__(self, project: Project, parent: QWidget | None = None) -> None:
        super().__init__("Train a model", "Train", cancellable=True, parent=parent)
        self.project = project
        self.task = QComboBox()
        self.task.setObjectName("train_task")
        for key, task in TASKS.items():
            self.task.addItem(task.title, key)
        self.model = QComboBox()
        self.model.setObjectName("train_model")
        self.data_info = QLabel("")
        self.data_info.setWordWrap(True)
        self.items = QComboBox()
        self.items.addItem("Items marked done", "done")
        self.items.addItem("Every item with labels", "all")
        self._task_widgets()
        self._shared_widgets(project)
        self._layout_form()
        self._make_plot()
        self.extra.addWidget(self.plot)
        self.history: list[dict[str, Any]] = []
        self._run: tuple[str, str, int, int] | None = None  # task, model, stride, epochs
        self._relay = _EpochRelay(self)
        self._relay.epoch.connect(self._show_epoch)
        self.task.currentIndexChanged.connect(lambda _i: self._task_changed())
        self.model.currentIndexChanged.connect(lambda _i: self._model_changed())
        self.items.currentIndexChanged.connect(lambda _i: self._show_data())
        self._default_out = ""
        self._task_changed()
        self.status.setMinimumHeight(3 * self.status.fontMetrics().lineSpacing())
        self.resize(660, 800)

    def _make_plot(self) -> None:
        """The training loss on the left axis, the validation metric (0-1) on the right one."""
        self.plot = pg.PlotWidget(background=(30, 30, 30))
        self.plot.setMinimumHeight(200)
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        item = self.plot.getPlotItem()
        item.setLabel("bottom", "epoch")
        self.legend = item.addLegend(offset=(-5, 5))
        self.loss_curve = item.plot([], [], pen=pg.mkPen(255, 140, 0, width=2), symbol="o",
                                    symbolSize=5)
        self.metric_box = pg.ViewBox()
        item.showAxis("right")
        item.scene().addItem(self.metric_box)
        item.getAxis("right").linkToView(self.metric_box)
        self.metric_box.setXLink(item)
        self.metric_box.setYRange(0.0, 1.0, padding=0.04)
        self.metric_box.enableAutoRange(axis=pg.ViewBox.YAxis, enable=False)
        self.metric_curve = pg.PlotDataItem([], [], pen=pg.mkPen(80, 200, 255, width=2),
                                            symbol="o", symbolSize=5)
        self.metric_box.addItem(self.metric_curve)
        for side in ("left", "right"):
            item.getAxis(side).enableAutoSIPrefix(False)

        def follow() -> None:
            self.metric_box.setGeometry(item.vb.sceneBoundingRect())

        item.vb.sigResized.connect(follow)

    # -- form --------------------------------------------------------------------------------------
    def _task_widgets(self) -> None:
        self.patch = spin_box(32, 2048, 256, step=32, suffix=" px")
        self.max_side = spin_box(0, 8192, 512, step=64, suffix=" px", special="as they are",
                                 name="train_max_side")
        self.max_side.setToolTip("Images are scaled down to this longer side for training, and "
                                 "the trained detector scales images to it when it runs.")
        self.evaluate = QCheckBox("Score the validation images (mask AP) every epoch")
        self.evaluate.setChecked(True)
        self.frames = spin_box(1, 512, name="train_frames")
        self.stride = spin_box(0, 30, prefix="every ", suffix=" frame(s)",
                               special="the model's frame rate", name="train_stride")

    def _shared_widgets(self, project: Project) -> None:
        self.epochs = spin_box(1, 1000)
        self.steps = spin_box(0, 100000, special="one pass over the data", name="train_steps")
        self.batch = spin_box(1, 256)
        self.lr = double_spin_box(1e-5, 1.0, step=1e-4, decimals=5)
        self.optimizer = QComboBox()
        self.optimizer.addItems(OPTIMIZERS)
        self.device = QComboBox()
        self.device.addItems(("auto", "cpu", "cuda", "mps"))
        self.models_folder = project.folder / "models"
        self.out = QLineEdit()
        self.out.setObjectName("train_out")
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._choose_out)

    def _layout_form(self) -> None:
        form = self.form
        form.addRow("Task", self.task)
        form.addRow("Model", self.model)
        form.addRow("Data", self.data_info)
        form.addRow("Train on", self.items)
        form.addRow("Patch", self.patch)
        form.addRow("Max image side", self.max_side)
        form.addRow("Mask AP", self.evaluate)
        form.addRow("Frames per clip", self.frames)
        form.addRow("Frame stride", self.stride)
        form.addRow("Epochs", self.epochs)
        form.addRow("Steps per epoch", self.steps)
        form.addRow("Batch size", self.batch)
        form.addRow("Learning rate", self.lr)
        form.addRow("Optimizer", self.optimizer)
        form.addRow("Device", self.device)
        row = QHBoxLayout()
        row.addWidget(self.out, 1)
        row.addWidget(self.browse)
        form.addRow("Checkpoint", row)
        self._inputs = [self.task, self.model, self.items, self.patch, self.max_side,
                        self.evaluate, self.frames, self.stride, self.epochs, self.steps,
                        self.batch, self.lr, self.optimizer, self.device, self.out, self.browse]

    def current_task(self) -> str:
        return self.task.currentData()

    def _task_changed(self) -> None:
        """The chosen task's models, options and defaults."""
        key = self.current_task()
        task = TASKS[key]
        self.model.blockSignals(True)
        self.model.clear()
        for name in trainable_models(key):
            self.model.addItem(name, name)
            self.model.setItemData(self.model.count() - 1, model_info(name).paper, 3)
        self.model.blockSignals(False)
        for widget, shown in ((self.items, key != "action"), (self.patch, key == "semantic"),
                              (self.max_side, key == "instance"),
                              (self.evaluate, key == "instance"),
                              (self.frames, key == "action"), (self.stride, key == "action")):
            self.form.setRowVisible(widget, shown)
        self.items.setItemText(1, "Every image with instances" if key == "instance"
                               else "Every item with labels")
        self.epochs.setValue(task.epochs)
        self.batch.setValue(task.batch_size)
        self.lr.setValue(task.lr)
        self.optimizer.setCurrentText(task.optimizer)
        default = str(self.models_folder / task.checkpoint)
        if self.out.text().strip() in ("", self._default_out):  # not one the person chose
            self.out.setText(default)
        self._default_out = default
        self.legend.clear()
        self.legend.addItem(self.loss_curve, task.loss_name)
        self.legend.addItem(self.metric_curve, task.metric_name)
        self.plot.setLabel("left", task.loss_name)
        self.plot.setLabel("right", task.metric_name)
        self._model_changed()
        self._show_data()

    def _model_changed(self) -> None:
        """An action model's clip length: its own, fixed or free."""
        spec = self._clip_spec()
        if spec is None:
            return
        name = self.model.currentData()
        self.frames.setRange(spec.min_frames, 512 if not spec.fixed_frames else spec.frames)
        self.frames.setValue(spec.frames)
        self.frames.setEnabled(not spec.fixed_frames)
        self.frames.setToolTip(f"{name} takes exactly {spec.frames} frames per clip."
                               if spec.fixed_frames else
                               f"{name} was designed for {spec.frames} frames per clip; fewer "
                               "train faster.")

    def _clip_spec(self):
        name = self.model.currentData()
        if self.current_task() != "action" or name is None:
            return None
        return clip_spec(name)

    def _show_data(self) -> None:
        data = training_data(self.project, self.current_task(), self.items.currentData())
        self.data_info.setText(data.text)

    def _choose_out(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the trained model as",
                                              self.out.text(), "Checkpoints (*.pt)")
        if path:
            self.out.setText(path)

    def request(self) -> TrainRequest:
        """What the form says (raises SegStudioError without a checkpoint path)."""
        out = self.out.text().strip()
        if not out:
            raise SegStudioError("Choose where to save the checkpoint.")
        return TrainRequest(
            task=self.current_task(), model=self.model.currentData(), out=Path(out).expanduser(),
            items=self.items.currentData(), epochs=self.epochs.value(),
            batch_size=self.batch.value(), lr=self.lr.value(),
            optimizer=self.optimizer.currentText(), device=self.device.currentText(),
            steps_per_epoch=self.steps.value(), patch=self.patch.value(),
            max_side=self.max_side.value(), evaluate=self.evaluate.isChecked(),
            frames=self.frames.value(), stride=self.stride.value())

    # -- running -----------------------------------------------------------------------------------
    def start(self) -> None:
        task = self.current_task()
        data = training_data(self.project, task, self.items.currentData())
        self.data_info.setText(data.text)
        if not data.count:
            self.status.setText(f"Nothing to train a {TASKS[task].title.lower()} model on. "
                                f"{data.text}")
            return
        try:
            request = self.request()
            config, job = make_training(request, self.project.folder, self._relay.epoch.emit)
        except (SegStudioError, ValueError) as err:
            self.status.setText(str(err))
            return
        request.out.parent.mkdir(parents=True, exist_ok=True)
        self._run = (task, request.model, request.stride, config.epochs)
        self.history = []
        self.loss_curve.setData([], [])
        self.metric_curve.setData([], [])
        self.run_job(job, f"Training {request.model}… {data.text}")
        for widget in self._inputs:
            widget.setEnabled(False)
        self.job.finished.connect(self._enable_form)

    def _enable_form(self) -> None:
        for widget in self._inputs:
            widget.setEnabled(True)
        spec = self._clip_spec()
        self.frames.setEnabled(spec is not None and not spec.fixed_frames)

    def _show_epoch(self, row: dict[str, Any]) -> None:
        task = TASKS[self._run[0] if self._run else self.current_task()]
        self.history.append(row)
        epochs = [r["epoch"] for r in self.history]
        self.loss_curve.setData(epochs, [r[task.loss_key] for r in self.history])
        scored = [(r["epoch"], r[task.metric_key]) for r in self.history
                  if r.get(task.metric_key) is not None]
        self.metric_curve.setData([e for e, _ in scored], [m for _, m in scored])
        spacing = max(1, math.ceil(len(epochs) / 10))  # whole epochs on the axis
        self.plot.getAxis("bottom").setTickSpacing(spacing, spacing)
        total = f"/{self._run[3]}" if self._run else ""
        metric = row.get(task.metric_key)
        seconds = row.get("seconds")
        self.status.setText(
            f"Epoch {row['epoch']}{total}: {task.loss_name} {row[task.loss_key]:.4f}"
            + (f", {task.metric_name} {metric:.3f}" if metric is not None else "")
            + (f" ({seconds:.1f} s)" if seconds is not None else ""))

    def describe_result(self, result) -> str:
        task_key, model, stride, _epochs = self._run or (self.current_task(),
                                                         self.model.currentData(), 0, 0)
        task = TASKS[task_key]
        warnings = "".join(f" Note: {w}." for w in getattr(result, "warnings", []))
        if result.best_path is None:
            return (f"Stopped ({result.stopped}) before the first epoch ended: no checkpoint "
                    f"was written.{warnings}")
        self.trained.emit(str(result.best_path), model, task_key, stride)
        best = next((r for r in result.history if r["epoch"] == result.best_epoch), {})
        if best.get(task.metric_key) is not None:
            score = f"{task.metric_name} {best[task.metric_key]:.3f}"
        else:
            score = f"{task.loss_name} {best.get(task.loss_key, float('nan')):.4f}"
        return (f"Trained {result.epochs_run} epoch(s), {result.stopped}; best epoch "
                f"{result.best_epoch} ({score}), saved to {result.best_path}. It is selected in "
                f"the {task.panel} panel.{warnings}")
