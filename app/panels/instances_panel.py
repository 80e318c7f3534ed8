"""The Instances panel: every object of the open image on its own, as CVAT and Cellpose users
expect.

With "Edit instances" on, the canvas shows the instance map (a colour per object) and the tools
edit it: the brush paints the selected instance only, the eraser erases only it. The table lists
the instances (sortable by id, class, score, area, source, reviewed) and follows the selection on
the canvas (Select tool, S: a click picks, Ctrl+click adds, a drag splits the selected instance
along the line). New (N), Delete (Del), class change, merge, split, accept all / accept selected;
a score slider hides detections below it. Every change of the map is one undo step of the
instance layer; the table lives in the project.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.panels.model_choice import ModelChoice
from app.widgets import double_spin_box, spin_box
from app.worker import JobControls
from app.workspace import Workspace
from core.annotation.instances import (
    flatten,
    instance_stats,
    next_instance_id,
    relabel_edit,
    split_components,
    split_edit,
)
from core.errors import SegStudioError
from core.project.items import Instance

COLUMNS = ("ID", "Class", "Score", "Area", "Source", "Reviewed")


def instance_palette(count: int = 256) -> np.ndarray:
    """(count, 3) distinct colours by instance id (golden-ratio hues; 0 unused)."""
    hues = (np.arange(count) * 0.61803398875) % 1.0
    rgb = np.zeros((count, 3), np.uint8)
    for index, hue in enumerate(hues):
        h6 = hue * 6.0
        c, x = 0.9, 0.9 * (1 - abs(h6 % 2 - 1))
        r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h6) % 6]
        rgb[index] = [int(255 * (v + 0.1)) for v in (r, g, b)]
    return rgb


class _Number(QTableWidgetItem):
    """A cell that sorts by its number (None last)."""

    def __init__(self, value: float | None, text: str) -> None:
        super().__init__(text)
        self.value = -1.0 if value is None else float(value)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        return self.value < getattr(other, "value", -1.0)


class InstancesPanel(QWidget):
    """Signals: ``mode_changed(bool)``, ``changed()`` (map or table changed: redraw),
    ``selection_changed()``, ``status(str)``."""

    mode_changed = Signal(bool)
    changed = Signal()
    selection_changed = Signal()

    def __init__(self, workspace: Workspace, current_class: Callable[[], int | None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.current_class = current_class
        self.selected: list[int] = []
        self._stats: dict = {}
        self._table_rows: dict[int, Instance] = {}
        self.edit_mode = QCheckBox("Edit instances (I)")
        self.edit_mode.setObjectName("instance_mode")
        self.edit_mode.toggled.connect(self._mode_toggled)
        self.show_boxes = QCheckBox("Boxes")
        self.show_boxes.setChecked(True)
        self.show_captions = QCheckBox("Class and score")
        self.show_captions.setChecked(True)
        for box in (self.show_boxes, self.show_captions):
            box.toggled.connect(lambda _on: self.changed.emit())
        self.min_score = QSlider(Qt.Orientation.Horizontal)
        self.min_score.setObjectName("min_score")
        self.min_score.setRange(0, 100)
        self.min_score.valueChanged.connect(self._score_moved)
        self.score_label = QLabel("Score ≥ 0.00")
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setObjectName("instance_table")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSortingEnabled(True)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._table_selection)
        self.class_box = QComboBox()
        self.class_box.setObjectName("instance_class")
        self.buttons: dict[str, QPushButton] = {}
        for name, text, slot in (
                ("new", "New (N)", self.new_instance), ("delete", "Delete", self.delete_selected),
                ("set_class", "Set class", self.set_class_of_selected),
                ("merge", "Merge", self.merge_selected),
                ("accept_selected", "Accept selected", lambda: self.accept(self.selected)),
                ("accept_all", "Accept all", lambda: self.accept(None)),
                ("from_classes", "Split class map", self.split_class_map),
                ("to_classes", "Flatten to class map", self.flatten_to_class_map),
                ("compare", "Compare with the model", self.compare_with_model)):
            button = QPushButton(text)
            button.setObjectName(f"instances_{name}")
            button.clicked.connect(lambda _c=False, s=slot: self._guard(s))
            self.buttons[name] = button
        self.status = QLabel("")
        self.status.setWordWrap(True)
        # Detection with an instance model (Mask R-CNN)
        self.choice = ModelChoice("instance", self, self.status.setText, lazy=True)
        self.score_threshold = double_spin_box(0.0, 1.0, 0.5, step=0.05)
        self.mask_threshold = double_spin_box(0.05, 0.95, 0.5, step=0.05)
        self.max_detections = spin_box(1, 1000, 100)
        self.tile = spin_box(0, 8192, step=128, suffix=" px", special="whole image")
        self.detect = QPushButton("Detect instances")
        self.detect.setObjectName("detect_instances")
        self.detect.clicked.connect(self.run_detection)
        self.cancel = QPushButton("Cancel")
        self.progress = QProgressBar()
        self.runner = JobControls(self, self.detect, self.cancel, self.progress, self.status)
        self._engine = None
        self._layout()

    def _layout(self) -> None:
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        top = QHBoxLayout()
        top.addWidget(self.edit_mode)
        top.addWidget(self.show_boxes)
        top.addWidget(self.show_captions)
        layout.addLayout(top)
        score = QHBoxLayout()
        score.addWidget(self.score_label)
        score.addWidget(self.min_score, 1)
        layout.addLayout(score)
        layout.addWidget(self.table, 1)
        grid = QGridLayout()
        b = self.buttons
        grid.addWidget(b["new"], 0, 0)
        grid.addWidget(b["delete"], 0, 1)
        grid.addWidget(b["merge"], 0, 2)
        grid.addWidget(self.class_box, 1, 0, 1, 2)
        grid.addWidget(b["set_class"], 1, 2)
        grid.addWidget(b["accept_selected"], 2, 0)
        grid.addWidget(b["accept_all"], 2, 1)
        grid.addWidget(b["from_classes"], 3, 0)
        grid.addWidget(b["to_classes"], 3, 1)
        grid.addWidget(b["compare"], 3, 2)
        layout.addLayout(grid)
        detect = QGroupBox("Detect with a model")
        form = QFormLayout(detect)
        form.addRow("Model", self.choice.model)
        form.addRow("Weights", self.choice.weights)
        thresholds = QHBoxLayout()
        thresholds.addWidget(QLabel("score"))
        thresholds.addWidget(self.score_threshold)
        thresholds.addWidget(QLabel("mask"))
        thresholds.addWidget(self.mask_threshold)
        form.addRow("Thresholds", thresholds)
        form.addRow("At most", self.max_detections)
        form.addRow("Tiles", self.tile)
        run = QHBoxLayout()
        run.addWidget(self.detect)
        run.addWidget(self.progress)
        run.addWidget(self.cancel)
        form.addRow(run)
        layout.addWidget(detect)
        layout.addWidget(self.status)

    # -- state -----------------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Instance mode is on and the open item can have instances (a single image): while
        another item opens, the window redraws before :meth:`item_opened` leaves the mode."""
        item = self.workspace.item
        return (self.edit_mode.isChecked() and item is not None and item.kind == "image"
                and item.frames <= 1)

    def session(self):
        return self.workspace.instance_session()

    def _mode_toggled(self, on: bool) -> None:
        if on:
            try:
                self.session()
            except SegStudioError as err:
                self.edit_mode.blockSignals(True)
                self.edit_mode.setChecked(False)
                self.edit_mode.blockSignals(False)
                self.status.setText(str(err))
                return
        self.selected = []
        self.refresh()
        self.mode_changed.emit(on)

    def item_opened(self) -> None:
        """Another item: leave instance mode if it cannot have instances, else reload."""
        self.selected = []
        if self.edit_mode.isChecked() and not self.active:
            self.edit_mode.setChecked(False)
            return
        self.refresh()
        if self.active:
            self.mode_changed.emit(True)

    def refresh(self) -> None:
        """Re-read the instance map's areas and boxes and the table; rebuild the list."""
        self._fill_classes()
        ws = self.workspace
        if not self.active or ws.item is None:
            self._stats, self._table_rows = {}, {}
            self.table.setRowCount(0)
            return
        session = self.session()
        self._stats = instance_stats(session.labels)
        self._table_rows = ws.project.instances(ws.item.id)
        names = {c.index: c.name for c in ws.classes()}
        self.selected = [i for i in self.selected if i in self._stats]
        self.table.blockSignals(True)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(0)
        for ident in sorted(self._stats):
            row = self._table_rows.get(ident, Instance(ident, 0))
            stats = self._stats[ident]
            index = self.table.rowCount()
            self.table.insertRow(index)
            cells = [_Number(ident, str(ident)),
                     QTableWidgetItem(names.get(row.class_index, f"class {row.class_index}")),
                     _Number(row.score, "" if row.score is None else f"{row.score:.2f}"),
                     _Number(stats.area, str(stats.area)), QTableWidgetItem(row.source),
                     QTableWidgetItem("yes" if row.reviewed else "")]
            for column, cell in enumerate(cells):
                cell.setData(Qt.ItemDataRole.UserRole, ident)
                self.table.setItem(index, column, cell)
        self.table.setSortingEnabled(True)
        self._show_selection()
        self.table.blockSignals(False)
        self.status.setText(f"{len(self._stats)} instance(s).")

    def _fill_classes(self) -> None:
        current = self.class_box.currentData()
        self.class_box.blockSignals(True)
        self.class_box.clear()
        for cls in self.workspace.classes():
            if cls.index:
                self.class_box.addItem(f"{cls.index}: {cls.name}", cls.index)
        at = self.class_box.findData(current)
        self.class_box.setCurrentIndex(max(at, 0))
        self.class_box.blockSignals(False)

    # -- what to draw ------------------------------------------------------------------------------------
    def hidden_ids(self) -> set[int]:
        """Detections below the score slider (person-made instances are never hidden)."""
        threshold = self.min_score.value() / 100.0
        return {i for i, row in self._table_rows.items()
                if row.score is not None and row.score < threshold}

    def boxes(self) -> list[tuple[float, float, float, float, str]]:
        """Boxes and captions of the visible instances, in table-id order."""
        if not self.show_boxes.isChecked() and not self.show_captions.isChecked():
            return []
        names = {c.index: c.name for c in self.workspace.classes()}
        hidden = self.hidden_ids()
        out = []
        for ident, stats in sorted(self._stats.items()):
            if ident in hidden:
                continue
            row = self._table_rows.get(ident)
            text = ""
            if self.show_captions.isChecked() and row is not None:
                text = names.get(row.class_index, str(row.class_index))
                if row.score is not None:
                    text += f" {row.score:.2f}"
            out.append((*stats.bbox, text))
        return out

    def box_positions(self, ids: list[int]) -> list[int]:
        visible = [i for i in sorted(self._stats) if i not in self.hidden_ids()]
        return [visible.index(i) for i in ids if i in visible]

    def instance_at(self, x: float, y: float) -> int:
        labels = self.session().labels
        col, row = int(round(x)), int(round(y))
        if 0 <= row < labels.shape[0] and 0 <= col < labels.shape[1]:
            ident = int(labels[row, col])
            return 0 if ident in self.hidden_ids() else ident
        return 0

    # -- selection ----------------------------------------------------------------------------------------
    def pick(self, x: float, y: float, add: bool = False) -> int:
        """Select the instance under (x, y) (``add``: toggle it in the selection)."""
        ident = self.instance_at(x, y)
        if add and ident:
            if ident in self.selected:
                self.selected.remove(ident)
            else:
                self.selected.append(ident)
        else:
            self.selected = [ident] if ident else []
        self._show_selection()
        self.selection_changed.emit()
        return ident

    def select(self, ids: list[int]) -> None:
        self.selected = [i for i in ids if i in self._stats]
        self._show_selection()
        self.selection_changed.emit()

    def _show_selection(self) -> None:
        self.table.blockSignals(True)
        self.table.clearSelection()
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) in self.selected:
                for column in range(len(COLUMNS)):
                    self.table.item(row, column).setSelected(True)
        self.table.blockSignals(False)

    def _table_selection(self) -> None:
        ids = {item.data(Qt.ItemDataRole.UserRole) for item in self.table.selectedItems()}
        self.selected = sorted(ids)
        self.selection_changed.emit()

    def _score_moved(self, value: int) -> None:
        self.score_label.setText(f"Score ≥ {value / 100:.2f}")
        self.selected = [i for i in self.selected if i not in self.hidden_ids()]
        self.changed.emit()

    # -- operations -----------------------------------------------------------------------------------------
    def _require(self, count: int = 1):
        if not self.active:
            raise SegStudioError("Turn on Edit instances first.")
        if len(self.selected) < count:
            raise SegStudioError("Select an instance first (Select tool, S)." if count == 1
                                 else f"Select {count} instances (Ctrl+click adds one).")
        return self.session()

    def _apply(self, edit) -> None:
        if edit is not None:
            self.session().apply_edit(edit)
        self.refresh()
        self.changed.emit()

    def new_instance(self) -> int:
        """A new, empty instance of the selected class, selected: paint it with the brush."""
        if not self.active:
            raise SegStudioError("Turn on Edit instances first.")
        cls = self.current_class()
        if not cls:
            raise SegStudioError("Select a class other than background for the new instance.")
        ws = self.workspace
        ident = next_instance_id(self.session().labels, ws.project.instances(ws.item.id))
        ws.project.set_instances(ws.item.id, [Instance(ident, int(cls))])
        self._table_rows = ws.project.instances(ws.item.id)
        self.selected = [ident]
        self.status.setText(f"Instance {ident} is new: paint it with the brush.")
        self.selection_changed.emit()
        return ident

    def delete_selected(self) -> None:
        session = self._require()
        count = len(self.selected)
        self._apply(relabel_edit(session.labels, {i: 0 for i in self.selected}))
        self.selected = []
        self.selection_changed.emit()
        self.status.setText(f"Deleted {count} instance(s) (undo brings them back).")

    def merge_selected(self) -> None:
        session = self._require(2)
        keep, *others = self.selected
        self._apply(relabel_edit(session.labels, {i: keep for i in others}))
        self.selected = [keep]
        self.selection_changed.emit()
        self.status.setText(f"Merged {len(others) + 1} instances into {keep}.")

    def split_selected(self, p0: tuple[float, float], p1: tuple[float, float]) -> int | None:
        """Cut the selected instance along the line p0-p1; the part on its left is new."""
        session = self._require()
        ws = self.workspace
        target = self.selected[0]
        new = next_instance_id(session.labels, ws.project.instances(ws.item.id))
        edit = split_edit(session.labels, target, p0, p1, new)
        if edit is None:
            raise SegStudioError("The line does not cut the selected instance.")
        old = ws.project.instances(ws.item.id).get(target, Instance(target, 0))
        ws.project.set_instances(ws.item.id, [Instance(new, old.class_index, old.score,
                                                       old.source, False)])
        self._apply(edit)
        self.selected = [target, new]
        self.selection_changed.emit()
        self.status.setText(f"Split instance {target}: the new part is {new}.")
        return new

    def set_class_of_selected(self) -> None:
        self._require()
        cls = self.class_box.currentData()
        if cls is None:
            raise SegStudioError("Add a class first.")
        ws = self.workspace
        rows = ws.project.instances(ws.item.id)
        ws.project.set_instances(ws.item.id, [
            Instance(i, int(cls), rows[i].score if i in rows else None,
                     rows[i].source if i in rows else "person", True) for i in self.selected])
        self.refresh()
        self.changed.emit()

    def accept(self, ids: list[int] | None) -> None:
        """Mark instances (all visible ones when ``ids`` is None) reviewed."""
        if not self.active:
            raise SegStudioError("Turn on Edit instances first.")
        ws = self.workspace
        rows = ws.project.instances(ws.item.id)
        hidden = self.hidden_ids()
        chosen = [i for i in (self._stats if ids is None else ids)
                  if i in rows and i not in hidden]
        ws.project.set_instances(ws.item.id, [
            Instance(i, rows[i].class_index, rows[i].score, rows[i].source, True)
            for i in chosen])
        self.refresh()
        self.changed.emit()
        self.status.setText(f"Accepted {len(chosen)} instance(s).")

    def split_class_map(self) -> None:
        """Instances from the class map: one per connected component (replaces the map)."""
        if not self.active:
            raise SegStudioError("Turn on Edit instances first.")
        ws = self.workspace
        instance_map, rows = split_components(ws.session.labels)
        ws.project.delete_instances(ws.item.id)
        ws.project.set_instances(ws.item.id, rows)
        self.session().replace_plane(instance_map)
        self.selected = []
        self.refresh()
        self.changed.emit()
        self.status.setText(f"{len(rows)} instance(s) from the class map.")

    def flatten_to_class_map(self) -> None:
        """The class map becomes what the instances say (one undo step of the class map)."""
        if not self.active:
            raise SegStudioError("Turn on Edit instances first.")
        ws = self.workspace
        classes = flatten(self.session().labels, ws.project.instances(ws.item.id))
        edit = ws.session.replace_plane(classes)
        self.changed.emit()
        self.status.setText("The class map now follows the instances." if edit is not None
                            else "The class map already follows the instances.")

    def compare_with_model(self) -> str:
        """How much the person changed the model's detections: COCO mask and box AP of what the
        model predicted on this image against the instances now (1.0: nothing fixed)."""
        from core.metrics import EvaluationError, evaluate_instances

        ws = self.workspace
        if ws.item is None or ws.project is None:
            raise SegStudioError("Open an image first.")
        kept = ws.project.load_predictions(ws.item.id)
        if kept is None:
            raise SegStudioError("No model has detected instances on this image yet.")
        model, results = kept
        labels = self.session().labels if self.active else \
            ws.project.load_mask(ws.item, layer="instances")
        try:
            result = evaluate_instances({ws.item.id: (labels, ws.project.instances(ws.item.id))},
                                        {ws.item.id: results}, per_image=False)
        except EvaluationError as err:
            raise SegStudioError(str(err)) from err

        def show(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        text = (f"{model} against your corrections: mask AP {show(result.mask.ap)} "
                f"(AP50 {show(result.mask.ap50)}), box AP {show(result.box.ap)}; 1.000 means "
                "you changed nothing.")
        self.status.setText(text)
        return text

    # -- detection ---------------------------------------------------------------------------------------
    def run_detection(self) -> None:
        """Run the chosen instance model on the open image off the UI thread."""
        try:
            if self.runner.running:
                return
            if not self.active:
                self.edit_mode.setChecked(True)
                if not self.active:
                    return  # the reason is in the status line
            ws = self.workspace
            if ws.image_error:
                raise SegStudioError(ws.image_error)
            weights = self.choice.chosen_weights()
            model = self.choice.model.currentData()
            if model is None:
                raise SegStudioError("No instance model is registered.")
            classes = [c.index for c in ws.classes()]
            num_classes = max(max(classes, default=1) + 1, 2) if weights is None else None
            from core.inference.instances import InstanceSettings

            settings = InstanceSettings(
                score_threshold=self.score_threshold.value(),
                mask_threshold=self.mask_threshold.value(),
                max_detections=self.max_detections.value(), tile=self.tile.value() or None)
        except (SegStudioError, ValueError) as err:
            self.status.setText(str(err))
            return
        image, item_id = ws.image_plane(), ws.item.id

        def work(report, cancel):
            from core.inference.engine import InferenceEngine
            from core.inference.instances import predict_instances

            if self._engine is None:
                self._engine = InferenceEngine()
            loaded = self._engine.load(model, weights=weights, num_classes=num_classes)
            return predict_instances(loaded, image, settings, report=report, cancel=cancel,
                                     engine=self._engine)

        self.runner.start(work, f"Running {model}…",
                          lambda result: self._detected(item_id, model, result))

    @property
    def job(self):
        """The running detection, or None."""
        return self.runner.job

    def _detected(self, item_id: int, model: str, prediction) -> None:
        """The detections become the instance map (one undo step) and model rows; what the
        model said is kept aside to measure the corrections later."""
        from core.inference.instances import to_coco_results

        ws = self.workspace
        if ws.item is None or ws.item.id != item_id or not self.active:
            self.status.setText("The image changed while the model ran: its result was dropped.")
            return
        labels = prediction.labels.astype(np.int64)
        ws.ensure_classes(prediction.class_names, labels)
        rows = [Instance(k + 1, int(labels[k]), float(prediction.scores[k]), "model")
                for k in range(prediction.num_instances)]
        ws.project.delete_instances(item_id)
        ws.project.set_instances(item_id, rows)
        ws.project.save_predictions(item_id, model, to_coco_results(prediction, item_id))
        self.session().replace_plane(prediction.instance_map.astype(np.uint32))
        self.selected = []
        self.refresh()
        self.changed.emit()
        self.status.setText(" ".join([f"{model} found {prediction.num_instances} instance(s) "
                                      f"on {prediction.device}.", *prediction.notes]))

    def shutdown(self) -> None:
        self.runner.shutdown()

    def _guard(self, action) -> None:
        try:
            action()
        except SegStudioError as err:
            self.status.setText(str(err))
