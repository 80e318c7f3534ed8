"""The main window's slice views: which canvas cuts along which axis, drawing each view (image,
labels, geometry, crosshair, preview, confidence), moving through slices and the shared window.

A mixin of :class:`app.main_window.MainWindow`: it uses the window's workspace, canvases, views,
tools and panels, and holds no state of its own beyond ``main_axis`` and ``_levels``.
"""

from __future__ import annotations

import math

from app.canvas.viewer import ImageCanvas
from app.panels.instances_panel import instance_palette
from app.panels.volume_panel import preview_mask
from core.errors import SegStudioError


class SliceViewsMixin:
    def view_axes(self) -> list[tuple[ImageCanvas, int | None]]:
        """(canvas, axis it cuts along) of every view on screen; axis None for a plain image."""
        ws = self.workspace
        if not ws.geometries:
            return [(self.canvas, None)]
        axes = [self.main_axis] + [a for a in range(3) if a != self.main_axis]
        return [(pane.canvas, axes[i]) for i, pane in enumerate(self.views.visible_panes())]

    def axis_of(self, canvas: ImageCanvas) -> int | None:
        for shown, axis in self.view_axes():
            if shown is canvas:
                return axis
        return None

    def _show_plane(self, fit: bool = False, axis: int | None = None) -> None:
        """Redraw the views (only those cutting along ``axis`` when given)."""
        for canvas, view_axis in self.view_axes():
            if axis is None or view_axis == axis:
                self._show_view(canvas, view_axis, fit)
        self._show_crosshairs()
        self._show_confidence()
        if self._levels is not None:
            self.display_panel.show_levels(*self._levels)

    def _show_view(self, canvas: ImageCanvas, axis: int | None, fit: bool) -> None:
        ws = self.workspace
        image, labels = ws.image_plane(axis), ws.label_plane(axis)
        if image is None or labels is None:
            return
        canvas.set_image(image, self._levels)
        if self.instances_panel.active and axis is None:
            canvas.set_labels(ws.instance_session().labels, instance_palette())
        else:
            canvas.set_labels(labels, ws.palette())
        pane = self.views.panes[[p.canvas for p in self.views.panes].index(canvas)]
        geometry = ws.geometry(axis) if axis is not None else None
        if geometry is None:
            canvas.set_geometry()
            pane.hide_slices()
        else:
            volume = ws.item is not None and ws.item.kind == "volume"
            canvas.set_geometry(geometry.aspect, geometry.rows_up, geometry.cols_left,
                                geometry.edges if volume else ("", "", "", ""))
            name = geometry.name.capitalize() if volume else geometry.name
            pane.show_slice(name, ws.position[axis], ws.session.labels.shape[axis])
        canvas.set_preview(self._preview_mask(axis))
        if fit:
            canvas.fit()

    def _show_crosshairs(self) -> None:
        """In the three-view layout every view marks where the other two cut it."""
        ws = self.workspace
        for canvas, axis in self.view_axes():
            geometry = ws.geometry(axis) if axis is not None else None
            if geometry is None or not self.views.three:
                canvas.set_crosshair(None, None)
            else:
                canvas.set_crosshair(ws.position[geometry.axes[2]], ws.position[geometry.axes[1]])

    def _on_position(self, axis: int) -> None:
        if self._is_video():
            self._show_plane()
            self.video_bar.show_frame(self.workspace.frame)
            self.timeline.set_frame(self.workspace.frame)
            self.video_panel.frame_shown(self.workspace.frame)
            return
        self._show_plane(axis=axis)
        if axis == self.main_axis:
            self.display_panel.show_frame(self.workspace.position[axis])

    def _move_slice(self, canvas: ImageCanvas, index: int) -> None:
        axis = self.axis_of(canvas)
        if axis is not None:
            self.tools.finish_pending()
            self.workspace.set_position(axis, index)

    def _scroll(self, canvas: ImageCanvas, steps: int) -> None:
        axis = self.axis_of(canvas)
        if axis is not None:
            self._move_slice(canvas, self.workspace.position[axis] + steps)

    def _place_cursor(self, x: float, y: float) -> None:
        """The crosshair tool: point the other views at the voxel under the click."""
        ws = self.workspace
        axis = self.axis_of(self.tools.canvas)
        geometry = ws.geometry(axis) if axis is not None else None
        if geometry is None or ws.session is None:
            return
        shape = ws.session.labels.shape
        for along, value in ((geometry.axes[1], y), (geometry.axes[2], x)):
            ws.set_position(along, min(max(int(round(value)), 0), shape[along] - 1))

    def set_main_axis(self, axis: int) -> None:
        """Show the cut along ``axis`` in the main view (the others go to the side views)."""
        ws = self.workspace
        if not ws.geometries:
            raise SegStudioError("Only volumes and stacks can be cut along other axes.")
        self.tools.finish_pending()
        self.main_axis = int(axis)
        self.views.panes[0].set_choices(
            [g.name.capitalize() if ws.item.kind == "volume" else g.name
             for g in ws.geometries], self.main_axis)
        self._show_frame_count()
        self._sync_active_axis()
        self._show_plane(fit=True)

    def _toggle_three(self) -> None:
        three = self.actions_by_id["view_three"].isChecked()
        if three and not self.workspace.geometries:
            self.actions_by_id["view_three"].setChecked(False)
            raise SegStudioError("The three-view layout is for volumes and stacks.")
        self.tools.finish_pending()
        self.views.set_three(three)
        self._sync_active_axis()
        self._show_plane(fit=True)

    def _sync_active_axis(self) -> None:
        """Point the edit session at the slice of the canvas the person works in."""
        if self.axis_of(self.tools.canvas) is None and self.workspace.geometries:
            self.tools.activate(self.canvas)  # its view was hidden
        axis = self.axis_of(self.tools.canvas)
        if axis is not None:
            self.workspace.set_view_axis(axis)

    def _on_edited(self, _edit) -> None:
        """Another view may show the voxels just changed: redraw the views not drawn yet."""
        if self.instances_panel.active:
            self.instances_panel.refresh()
            self._show_instances()
        if self._is_video():
            self._refresh_markers()
        for canvas, _axis in self.view_axes():
            if canvas is not self.tools.canvas:
                canvas.refresh_labels()
        self.volume_panel.discard_preview()
        self._update_title()

    def _set_preview(self, edit) -> None:
        self._preview = edit
        for canvas, axis in self.view_axes():
            canvas.set_preview(self._preview_mask(axis))

    def _preview_mask(self, axis: int | None):
        ws = self.workspace
        if self._is_video():  # a propagated frame: the pixels whose flow failed the check
            return self.video_panel.unreliable_mask(ws.frame)
        if self._preview is None or axis is None or ws.session is None:
            return None
        return preview_mask(self._preview, ws.session.labels.shape, ws.geometry(axis),
                            ws.position[axis])

    def _visible_box(self) -> tuple[slice, slice] | None:
        """Rows and columns of the active view's slice that are on screen."""
        labels = self.workspace.label_plane()
        if labels is None:
            return None
        rect = self.tools.canvas.view_rect()
        (y0, y1), (x0, x1) = sorted((rect.top(), rect.bottom())), sorted((rect.left(),
                                                                          rect.right()))
        rows = slice(max(math.ceil(y0 - 0.5), 0), min(math.floor(y1 + 0.5), labels.shape[0]))
        cols = slice(max(math.ceil(x0 - 0.5), 0), min(math.floor(x1 + 0.5), labels.shape[1]))
        if rows.start >= rows.stop or cols.start >= cols.stop:
            return None
        return rows, cols

    def _on_prediction(self, _prediction) -> None:
        for canvas, axis in self.view_axes():  # labels may have been widened: re-attach
            labels = self.workspace.label_plane(axis)
            if labels is not None:
                canvas.set_labels(labels, self.workspace.palette())
        self._show_confidence()
        self._update_title()

    def _show_confidence(self) -> None:
        """The last prediction's confidence, when asked for and it belongs to what is shown: a
        run over every slice in every view, a run on one slice in the view it was made in."""
        ws = self.workspace
        prediction = self.models_panel.last_prediction
        wanted = self.models_panel.confidence.isChecked() and prediction is not None \
            and prediction.confidence is not None
        whole = wanted and prediction.confidence.ndim == 3 and ws.session is not None \
            and prediction.confidence.shape == ws.session.labels.shape
        active = self.axis_of(self.tools.canvas)
        for canvas, axis in self.view_axes():
            shown = None
            if whole and axis is not None:
                geometry = ws.geometry(axis)
                shown = prediction.confidence.transpose(geometry.axes)[ws.position[axis]]
            elif wanted and axis == active:
                shown = self.models_panel.confidence_plane()
            canvas.set_confidence(shown)

    def _set_levels(self, low: float, high: float) -> None:
        """One window for every view (set in the panel, by right-drag or by a preset)."""
        self._levels = (float(low), float(high))
        for pane in self.views.panes:
            pane.canvas.set_levels(low, high)

    def _set_frame(self, frame: int) -> None:
        self.tools.finish_pending()
        self.workspace.set_position(self.main_axis, frame)

    def _step_frame(self, delta: int) -> None:
        """Next/previous slice of the view the person works in (frame of a video)."""
        if self._is_video():
            self.video_bar.step(delta)
            return
        axis = self.axis_of(self.tools.canvas)
        if axis is not None:
            self._move_slice(self.tools.canvas, self.workspace.position[axis] + delta)

    def _show_cursor(self, canvas: ImageCanvas, x: float, y: float) -> None:
        ws = self.workspace
        axis = self.axis_of(canvas)
        ix, iy = int(round(x)), int(round(y))
        labels = ws.label_plane(axis)
        if labels is None or not (0 <= iy < labels.shape[0] and 0 <= ix < labels.shape[1]):
            self.cursor_label.setText("")
            return
        value = canvas.value_at(x, y)
        label = int(labels[iy, ix])
        name = {c.index: c.name for c in ws.classes()}.get(label, "?")
        unit = "HU" if ws.modality == "CT" else "value"
        shown = "" if value is None else f"  {unit} {_format_value(value)}"
        geometry = ws.geometry(axis) if axis is not None else None
        if geometry is None:
            where = f"x {ix}  y {iy}"
        else:  # the voxel (x = column, y = row, z = slice of the volume)
            voxel = [0, 0, 0]
            voxel[geometry.axes[0]] = ws.position[axis]
            voxel[geometry.axes[1]], voxel[geometry.axes[2]] = iy, ix
            where = f"x {voxel[2]}  y {voxel[1]}  z {voxel[0]}"
        self.cursor_label.setText(f"{where}{shown}  label {label} ({name})")


def _format_value(value) -> str:
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_format_value(v) for v in value) + ")"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}"
    return str(int(value))
