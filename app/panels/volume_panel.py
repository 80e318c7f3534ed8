"""The 3D panel: tools that work across the slices of a volume (or pages of a stack).

* Interpolate the selected class between the slices where it was drawn, along the axis of the view
  the person edits in (axial, coronal or sagittal): at once, or first as a preview that the main
  window draws hatched on its views (``preview_changed``) and the person applies or discards.
* Fill a value range (e.g. bone above 300 HU) on the active view's slice or the whole volume,
  anywhere, within the area visible on screen, or inside another class's mask.
* Keep the largest 3D component of the selected class.

Each change is one undo step on the open item. Other classes are never overwritten, with one
exception the person asks for by name: a range fill "inside class N mask" turns the voxels of
class N in the range into the selected class (bone inside the body mask becomes bone, the rest of
the body stays body); voxels of every other class, and background, are left alone.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.workspace import Workspace
from core.annotation.edits import Edit
from core.errors import SegStudioError
from core.io.orientation import SliceGeometry

# (row slice, column slice) of the active view's slice that is visible on screen, or None
VisibleBox = Callable[[], tuple[slice, slice] | None]

# The last edit whose changed mask preview_mask unpacked: scrolling through a preview asks for
# one slice after another of the same edit (bit-unpacking its region once, not on every slice).
_unpacked: tuple[Edit, np.ndarray] | None = None


def _changed(edit: Edit) -> np.ndarray:
    global _unpacked
    if _unpacked is None or _unpacked[0] is not edit:
        _unpacked = (edit, edit.changed)
    return _unpacked[1]


def _forget_unpacked() -> None:
    global _unpacked
    _unpacked = None


def preview_mask(edit: Edit, labels_shape: tuple[int, ...], geometry: SliceGeometry | None,
                 index: int) -> np.ndarray | None:
    """The voxels ``edit`` changes in slice ``index`` of the view cut by ``geometry``.

    Equals ``m.transpose(geometry.axes)[index]`` for the full-volume bool mask ``m`` of the edit's
    changed voxels, but only the edit's region is looked at.

    Args:
        edit: A (preview) edit of a label array of ``labels_shape``, regions in label order.
        labels_shape: Shape of the label array, (Z, Y, X) (or (H, W) with ``geometry`` None).
        geometry: How the view lays out its slices; None for a plain 2-D image (``index`` unused).
        index: The slice of the view (along ``geometry.axis``).

    Returns:
        (rows, columns) bool mask of the view's slice, or None when the edit changes nothing in it.
    """
    region = edit.region
    if geometry is None:
        if len(labels_shape) != 2:
            raise ValueError(f"a {len(labels_shape)}-D label array needs a slice geometry")
        plane, rows, cols = _changed(edit), region[0], region[1]
    else:
        axis, row_axis, col_axis = geometry.axes
        span = region[axis]
        if not span.start <= index < span.stop:
            return None
        plane = _changed(edit).transpose(geometry.axes)[index - span.start]
        rows, cols = region[row_axis], region[col_axis]
        labels_shape = (labels_shape[row_axis], labels_shape[col_axis])
    if not plane.any():
        return None
    mask = np.zeros(labels_shape, bool)
    mask[rows, cols] = plane
    return mask


class VolumePanel(QWidget):
    """Tools across slices.

    Signals:
        applied(edit): a tool changed the open item (one undo step).
        preview_changed(edit | None): the interpolation preview to draw (an :class:`Edit` not
            applied to the labels; see :func:`preview_mask`), or None when it is gone.

    Args:
        workspace: The open project and item.
        current_class: The class the tools write (the tool bar's selection).
        visible_box: The rows and columns of the active view's slice visible on screen, as
            (row slice, column slice), or None when nothing is shown; None (no callable) makes
            the "visible area" restriction unavailable.
    """

    applied = Signal(object)
    preview_changed = Signal(object)

    def __init__(self, workspace: Workspace, current_class: Callable[[], int],
                 visible_box: VisibleBox | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.workspace = workspace
        self.current_class = current_class
        self.visible_box = visible_box
        self._preview: Edit | None = None

        self.interpolate = QPushButton("Interpolate class between slices")
        self.interpolate.setObjectName("interpolate_slices")
        self.interpolate.setToolTip("Fill the slices between the slices where the class is "
                                    "drawn, along the axis of the view you draw in.")
        self.interpolate.clicked.connect(lambda: self._run(self._interpolate))
        self.preview = QPushButton("Preview")
        self.preview.setObjectName("preview_interpolation")
        self.preview.setToolTip("Show what the interpolation would fill, without filling it.")
        self.preview.clicked.connect(lambda: self._run(self._preview_interpolation))
        self.apply = QPushButton("Apply")
        self.apply.setObjectName("apply_preview")
        self.apply.clicked.connect(self._apply_preview)
        self.discard = QPushButton("Discard")
        self.discard.setObjectName("discard_preview")
        self.discard.clicked.connect(self._discard_clicked)

        self.low, self.high = QDoubleSpinBox(), QDoubleSpinBox()
        for box, value in ((self.low, 300.0), (self.high, 3000.0)):
            box.setRange(-1e6, 1e6)
            box.setDecimals(1)
            box.setValue(value)
        self.scope = QComboBox()
        self.scope.addItem("this slice", "slice")
        self.scope.addItem("whole volume", "volume")
        self.within = QComboBox()
        self.within.setToolTip(
            "Where the range may be filled. Anywhere and the visible area fill background "
            "only; inside a class's mask turns that class's voxels in the range into the "
            "selected class (e.g. bone inside the body) and leaves everything else alone.")
        self._fill_within()
        self.fill = QPushButton("Fill range with class")
        self.fill.setObjectName("range_fill")
        self.fill.clicked.connect(lambda: self._run(self._range_fill))
        self.largest = QPushButton("Keep largest 3D component of class")
        self.largest.setObjectName("keep_largest")
        self.largest.clicked.connect(lambda: self._run(self._keep_largest))
        self.status = QLabel("")
        self.status.setWordWrap(True)

        previewing = QHBoxLayout()
        for button in (self.preview, self.apply, self.discard):
            previewing.addWidget(button)
        band = QHBoxLayout()
        band.addWidget(self.low)
        band.addWidget(QLabel("to"))
        band.addWidget(self.high)
        form = QFormLayout()
        form.addRow("Values", band)
        form.addRow("On", self.scope)
        form.addRow("Within", self.within)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.interpolate)
        layout.addLayout(previewing)
        layout.addLayout(form)
        layout.addWidget(self.fill)
        layout.addWidget(self.largest)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._update_buttons()

        workspace.item_opened.connect(self.discard_preview)
        workspace.project_changed.connect(self.discard_preview)
        workspace.classes_changed.connect(self._fill_within)
        workspace.project_changed.connect(self._fill_within)

    # -- the preview -----------------------------------------------------------------------------
    @property
    def current_preview(self) -> Edit | None:
        """The interpolation shown as a preview (not applied), or None."""
        return self._preview

    def discard_preview(self) -> None:
        """Drop the preview (the labels changed elsewhere, another item opened); no-op if none."""
        if self._preview is None:
            return
        self._set_preview(None)

    def _set_preview(self, edit: Edit | None) -> None:
        self._preview = edit
        _forget_unpacked()
        self._update_buttons()
        self.preview_changed.emit(edit)

    def _update_buttons(self) -> None:
        self.apply.setEnabled(self._preview is not None)
        self.discard.setEnabled(self._preview is not None)

    def _discard_clicked(self) -> None:
        if self._preview is not None:
            self.discard_preview()
            self.status.setText("Preview discarded.")

    def _apply_preview(self) -> None:
        edit, session = self._preview, self.workspace.session
        if edit is None:
            return
        self._preview = None  # before applied: a listener discarding the preview finds none
        _forget_unpacked()
        self._update_buttons()
        if session is None:
            self.status.setText("Open a volume or a stack first.")
            self.preview_changed.emit(None)
            return
        try:
            session.apply_edit(edit)
        except SegStudioError as err:
            self.status.setText(str(err))
            self.preview_changed.emit(None)
            return
        self.status.setText(f"Interpolated {edit.count:,} voxels between the drawn slices.")
        self.applied.emit(edit)
        self.preview_changed.emit(None)

    # -- running a tool ----------------------------------------------------------------------------
    def _run(self, tool: Callable[[], str]) -> None:
        """Run a tool on the open item; the outcome (or why not) goes to the status line."""
        try:
            if self.workspace.session is None or self.workspace.item is None:
                raise SegStudioError("Open a volume or a stack first.")
            if self.current_class() == 0:
                raise SegStudioError("Select a class other than background.")
            self.status.setText(tool())
        except SegStudioError as err:
            self.status.setText(str(err))

    def _done(self, edit: Edit) -> None:
        """A tool changed the labels: an older preview no longer fits them."""
        self.discard_preview()
        self.applied.emit(edit)

    def _require_volume(self) -> None:
        if self.workspace.item.frames <= 1 or self.workspace.geometry() is None:
            raise SegStudioError("This tool works across slices: open a volume or a stack.")

    def _axis_name(self) -> str:
        geometry = self.workspace.geometry()
        return "slices" if geometry is None else f"{geometry.name} slices"

    def _interpolate(self) -> str:
        self._require_volume()
        edit = self.workspace.session.interpolate_slices(self.current_class(),
                                                         axis=self.workspace.view_axis)
        if edit is None:
            return self._nothing_to_interpolate()
        self._done(edit)
        return f"Interpolated {edit.count:,} voxels between the drawn {self._axis_name()}."

    def _preview_interpolation(self) -> str:
        self._require_volume()
        axis = self.workspace.view_axis
        edit = self.workspace.session.preview_interpolation(self.current_class(), axis=axis)
        if edit is None:
            self.discard_preview()
            return self._nothing_to_interpolate()
        self._set_preview(edit)
        others = tuple(a for a in range(len(edit.region)) if a != axis)
        slices = int(np.count_nonzero(_changed(edit).any(axis=others)))  # kept for preview_mask
        return (f"Preview: {edit.count:,} voxels on {slices} {self._axis_name()} would be "
                f"filled. Apply or Discard.")

    def _nothing_to_interpolate(self) -> str:
        return (f"Draw the class on at least two {self._axis_name()} with empty slices between "
                f"them.")

    def _range_fill(self) -> str:
        ws = self.workspace
        value = self.current_class()
        low, high = self.low.value(), self.high.value()
        if low > high:
            raise SegStudioError("The lower value must not exceed the upper one.")
        labels = ws.session.labels
        if ws.image is None or ws.image.shape != labels.shape:
            raise SegStudioError("Range fill needs one value per pixel: a grey image or volume.")
        geometry = ws.geometry() if labels.ndim == 3 else None
        box: list[slice] = [slice(None)] * labels.ndim
        if self.scope.currentData() == "slice" and geometry is not None:
            at = ws.position[geometry.axis]
            box[geometry.axis] = slice(at, at + 1)
        where = self.within.currentData()
        within, overwrite, inside = None, False, ""
        if where == "visible":
            visible = self.visible_box() if self.visible_box is not None else None
            if visible is None:
                raise SegStudioError("The visible area is not available here.")
            rows, cols = visible
            row_axis, col_axis = (0, 1) if geometry is None else geometry.axes[1:]
            box[row_axis], box[col_axis] = rows, cols
            inside = " in the visible area"
        elif isinstance(where, int):
            if where == value:
                raise SegStudioError("Choose the mask of another class than the one filled.")
            within, overwrite = labels == where, True  # the mask's voxels are class `where`
            names = {c.index: c.name for c in ws.classes()}
            inside = f" inside the {names.get(where, f'class {where}')} mask"
        edit = ws.session.threshold_fill(ws.image, low, high, value, box=tuple(box),
                                         within=within, overwrite=overwrite)
        if edit is None:
            what = "" if within is not None else "background "
            return f"No {what}pixel{inside} between {low:g} and {high:g}."
        self._done(edit)
        return f"Filled {edit.count:,} pixels{inside} between {low:g} and {high:g}."

    def _fill_within(self) -> None:
        """List the restrictions: anywhere, the visible area, and the mask of each class."""
        keep = self.within.currentData()
        self.within.blockSignals(True)
        self.within.clear()
        self.within.addItem("anywhere", "anywhere")
        if self.visible_box is None:
            self.within.addItem("visible area (unavailable)", "visible")
            self.within.model().item(1).setFlags(Qt.ItemFlag.NoItemFlags)
        else:
            self.within.addItem("visible area", "visible")
        for label_class in self.workspace.classes():
            if label_class.index != 0:
                self.within.addItem(f"inside the {label_class.name} mask",
                                    int(label_class.index))
        found = self.within.findData(keep)
        self.within.setCurrentIndex(max(found, 0))
        self.within.blockSignals(False)

    def _keep_largest(self) -> str:
        self._require_volume()
        edit = self.workspace.session.keep_largest_component(self.current_class())
        if edit is None:
            return "The class has one connected component (or none): nothing removed."
        self._done(edit)
        return f"Removed {edit.count:,} voxels outside the largest component."
