"""Models > Train: retrain a semantic model on the project's corrected items, off the UI thread.

Live plots of the training loss and the validation Dice per epoch; Cancel stops between steps and
keeps the last checkpoint on disk. When training ends the checkpoint is offered in the Models panel
(``trained(path, model)``), ready to predict the items not done yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyqtgraph as pg
from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from app.dialogs.job_dialog import JobDialog
from core.models import list_models
from core.project.store import Project


class _EpochRelay(QObject):
    """Carries each finished epoch's row from the training thread to the UI thread."""

    epoch = Signal(object)


class TrainDialog(JobDialog):
    """Signals ``trained(checkpoint path, model name)`` when a run leaves a best checkpoint."""

    trained = Signal(str, str)

    def __init__(self, project: Project, parent: QWidget | None = None) -> None:
        super().__init__("Train a model", "Train", cancellable=True, parent=parent)
        self.project = project
        self.model = QComboBox()
        self.model.setObjectName("train_model")
        for name in list_models("semantic"):
            self.model.addItem(name, name)
        self.items = QComboBox()
        self.items.addItem("Items marked done", "done")
        self.items.addItem("Every item with labels", "all")
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 1000)
        self.epochs.setValue(20)
        self.batch = QSpinBox()
        self.batch.setRange(1, 256)
        self.batch.setValue(4)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(5)
        self.lr.setRange(1e-5, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setValue(1e-3)
        self.patch = QSpinBox()
        self.patch.setRange(32, 2048)
        self.patch.setSingleStep(32)
        self.patch.setValue(256)
        self.device = QComboBox()
        self.device.addItems(("auto", "cpu", "cuda", "mps"))
        self.out = QLineEdit(str(project.folder / "models" / "trained.pt"))
        self.out.setObjectName("train_out")
        for label, widget in (("Model", self.model), ("Train on", self.items),
                              ("Epochs", self.epochs), ("Batch size", self.batch),
                              ("Learning rate", self.lr), ("Patch", self.patch),
                              ("Device", self.device)):
            self.form.addRow(label, widget)
        self.form.addRow("Checkpoint", self.out)
        self.plot = pg.PlotWidget(background=(30, 30, 30))
        self.plot.setMinimumHeight(180)
        self.plot.addLegend(offset=(5, 5))
        self.plot.setLabel("bottom", "epoch")
        self.loss_curve = self.plot.plot([], [], pen=pg.mkPen(255, 140, 0, width=2),
                                         symbol="o", symbolSize=5, name="training loss")
        self.dice_curve = self.plot.plot([], [], pen=pg.mkPen(80, 200, 255, width=2),
                                         symbol="o", symbolSize=5, name="validation Dice")
        self.extra.addWidget(self.plot)
        self.history: list[dict[str, Any]] = []
        self._relay = _EpochRelay(self)
        self._relay.epoch.connect(self._show_epoch)
        self.resize(620, 600)

    def start(self) -> None:
        from core.train.loop import TrainConfig

        out = self.out.text().strip()
        if not out:
            self.status.setText("Choose where to save the checkpoint.")
            return
        try:
            config = TrainConfig(
                model=self.model.currentData(), out=Path(out), epochs=self.epochs.value(),
                batch_size=self.batch.value(), lr=self.lr.value(), patch=self.patch.value(),
                device=self.device.currentText(), log=Path(out).with_suffix(".csv"))
        except ValueError as err:
            self.status.setText(str(err))
            return
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        items, relay = self.items.currentData(), self._relay
        self.history = []
        self.loss_curve.setData([], [])
        self.dice_curve.setData([], [])

        def run(report, cancel):
            from core.train.data import dataset_from_project
            from core.train.loop import train

            dataset = dataset_from_project(self.project.folder, items)
            return train(config, dataset, report=report, cancel=cancel,
                         on_epoch=relay.epoch.emit)

        self.run_job(run, f"Training {config.model}…")

    def _show_epoch(self, row: dict[str, Any]) -> None:
        self.history.append(row)
        epochs = [r["epoch"] for r in self.history]
        self.loss_curve.setData(epochs, [r["train_loss"] for r in self.history])
        dice = [(r["epoch"], r["mean_dice"]) for r in self.history
                if r.get("mean_dice") is not None]
        self.dice_curve.setData([e for e, _ in dice], [d for _, d in dice])
        self.status.setText(f"Epoch {row['epoch']}: loss {row['train_loss']:.4f}"
                            + (f", validation Dice {row['mean_dice']:.3f}"
                               if row.get("mean_dice") is not None else ""))

    def describe_result(self, result) -> str:
        if result.best_path is not None:
            self.trained.emit(str(result.best_path), self.model.currentData())
        best = "" if result.best_metric is None else f" (validation Dice {result.best_metric:.3f})"
        return (f"Trained {result.epochs_run} epoch(s), {result.stopped}; best epoch "
                f"{result.best_epoch}{best}, saved to {result.best_path}. It is selected in "
                "the Models panel.")
