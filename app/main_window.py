"""The main window: composes the canvas, the panels and the actions; holds no business logic."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PySide6.QtCore import QByteArray, Qt
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QFrame,
    QInputDialog,
    QLabel,
    QMainWindow,
    QMessageBox,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app import settings
from app.actions import add_menu, make_action
from app.canvas.slice_views import SliceViews
from app.canvas.timeline import TimelineWidget
from app.canvas.tools import ToolController
from app.canvas.video_bar import VideoBar
from app.canvas.viewer import ImageCanvas, default_levels
from app.dialogs.export_dialog import ExportDialog
from app.dialogs.help_dialog import ShortcutsDialog
from app.dialogs.import_dialog import ImportDialog
from app.dialogs.train_dialog import TrainDialog
from app.panels.actions_panel import ActionsPanel
from app.panels.assist_panel import AssistPanel
from app.panels.classes_panel import ClassesPanel
from app.panels.display_panel import DisplayPanel
from app.panels.instances_panel import InstancesPanel, instance_palette
from app.panels.items_panel import ItemsPanel
from app.panels.models_panel import ModelsPanel
from app.panels.video_panel import VideoPanel
from app.panels.volume_panel import VolumePanel, preview_mask
from app.toolbar import ToolOptionsBar
from app.workspace import Workspace
from core.errors import SegStudioError, StorageFullError


class MainWindow(QMainWindow):
    """SegStudio's window. ``open_paths`` opens images, folders or a project."""

    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("SegStudio")
        self.setAcceptDrops(True)
        self.workspace = Workspace(self)
        self.workspace.chooser = self._choose
        # The main canvas, and two more for the three-view layout of volumes and stacks.
        self.canvas = ImageCanvas()
        self.side_canvases = [ImageCanvas(), ImageCanvas()]
        self.views = SliceViews([self.canvas, *self.side_canvases])
        self.video_bar = VideoBar()
        self.video_bar.hide()
        self.timeline = TimelineWidget()
        self.timeline.setMaximumHeight(200)
        self.timeline.hide()
        central = QWidget()
        column = QVBoxLayout(central)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(self.views, 1)
        column.addWidget(self.video_bar)
        column.addWidget(self.timeline)
        self.setCentralWidget(central)
        self.main_axis = 0  # the cut the main canvas shows (0 axial for a typical CT)
        self._levels: tuple[float, float] | None = None  # one window for every view of an item
        self._preview = None  # the 3D panel's pending preview edit
        self.tools = ToolController(self.canvas, self._edit_session, self)
        for canvas in self.side_canvases:
            self.tools.add_canvas(canvas)
        self.classes_panel = ClassesPanel(self.workspace)
        self.items_panel = ItemsPanel(self.workspace)
        self.display_panel = DisplayPanel()
        self.models_panel = ModelsPanel(self.workspace)
        self.volume_panel = VolumePanel(self.workspace, lambda: self.tools.class_index,
                                        visible_box=self._visible_box)
        self.assist_panel = AssistPanel(self.workspace, lambda: self.tools.class_index)
        self.video_panel = VideoPanel(self.workspace)
        self.actions_panel = ActionsPanel(self.workspace)
        self.instances_panel = InstancesPanel(self.workspace,
                                              lambda: self.classes_panel.selected_index())
        self.options_bar = ToolOptionsBar(self.tools, self)
        self.addToolBar(self.options_bar)
        right = Qt.DockWidgetArea.RightDockWidgetArea
        docks = [self._dock("Classes", self.classes_panel, right),
                 self._dock("Display", self.display_panel, right),
                 self._dock("Items", self.items_panel, Qt.DockWidgetArea.LeftDockWidgetArea)]
        self.tabifyDockWidget(docks[1], self._dock("Models", self.models_panel, right))
        self.tabifyDockWidget(docks[1], self._dock("Assist", self.assist_panel, right))
        self.tabifyDockWidget(docks[1], self._dock("3D", self.volume_panel, right))
        self.tabifyDockWidget(docks[1], self._dock("Video", self.video_panel, right))
        self.tabifyDockWidget(docks[1], self._dock("Instances", self.instances_panel, right))
        self.tabifyDockWidget(docks[1], self._dock("Actions", self.actions_panel, right))
        docks[1].raise_()
        self.resizeDocks(docks[:2], [300, 200], Qt.Orientation.Vertical)
        self.resizeDocks(docks, [360, 360, 220], Qt.Orientation.Horizontal)
        self.cursor_label = QLabel("")
        self.statusBar().addPermanentWidget(self.cursor_label)
        self._build_actions()
        self._connect()
        self._restore_settings()

    # -- construction ------------------------------------------------------------------------------
    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"dock_{title.lower()}")
        scroll = QScrollArea()  # a tall panel scrolls instead of forcing the window's height
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(widget)
        dock.setWidget(scroll)
        self.addDockWidget(area, dock)
        return dock

    def _build_actions(self) -> None:
        act = lambda name, slot, **kw: make_action(self, name, slot, **kw)  # noqa: E731
        self.actions_by_id: dict[str, QAction] = {}
        specs = [
            ("open_images", self.choose_images), ("open_project", self.choose_project),
            ("open_frames", self.choose_frames_folder),
            ("export", self.show_export), ("import", self.show_import),
            ("train", self.show_train),
            ("add_images", self.choose_images_to_add), ("quit", self.close), ("undo", self.undo),
            ("redo", self.redo), ("next_item", lambda: self._step_item(1)),
            ("previous_item", lambda: self._step_item(-1)),
            ("brush_smaller", self.tools.shrink_brush), ("brush_larger", self.tools.grow_brush),
            ("preserve", self.options_bar.preserve.toggle),
            ("next_frame", lambda: self._step_frame(1)),
            ("previous_frame", lambda: self._step_frame(-1)),
            ("next_frame_10", lambda: self._step_frame(10)),
            ("previous_frame_10", lambda: self._step_frame(-10)),
            ("play", self.video_bar.toggle_play),
            ("instance_mode", self.instances_panel.edit_mode.toggle),
            ("new_instance", self.instances_panel.new_instance),
            ("delete_instance", self.instances_panel.delete_selected),
            ("accept_frame", self.accept_frame),
            ("mark_done", lambda: self.workspace.set_item_state("done")),
            ("mark_review", lambda: self.workspace.set_item_state("needs_review")),
            ("fit", self.canvas.fit), ("zoom_1to1", self.canvas.zoom_1to1),
            ("toggle_overlay", self.display_panel.show_labels.toggle),
            ("toggle_outline", self.display_panel.outline.toggle),
            ("help", self.show_shortcuts),
        ]
        for name, slot in specs:
            self.actions_by_id[name] = act(name, lambda s=slot: self._guard(s))
        for name, tool in (("tool_brush", "brush"), ("tool_eraser", "eraser"),
                           ("tool_fill", "fill"), ("tool_polygon", "polygon"),
                           ("tool_pan", "pan"), ("tool_crosshair", "crosshair"),
                           ("tool_select", "select")):
            self.actions_by_id[name] = act(name, lambda t=tool: self.tools.set_tool(t))
        self.actions_by_id["view_three"] = act(
            "view_three", lambda: self._guard(self._toggle_three), checkable=True)
        for axis in range(3):
            self.actions_by_id[f"view_axis_{axis}"] = act(
                f"view_axis_{axis}", lambda a=axis: self._guard(lambda: self.set_main_axis(a)))
        for number in range(1, 10):
            self.actions_by_id[f"class_{number}"] = act(
                f"class_{number}", lambda n=number: self.classes_panel.select_row(n))
        a = self.actions_by_id
        file_menu = add_menu(self, "&File", [a["open_images"], a["open_frames"],
                                             a["open_project"],
                                             a["add_images"], None, a["import"], a["export"],
                                             None, a["quit"]])
        self.recent_menu = file_menu.addMenu("Open &recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        file_menu.insertMenu(a["add_images"], self.recent_menu)
        add_menu(self, "&Edit", [a["undo"], a["redo"], None, a["brush_smaller"],
                                 a["brush_larger"], a["preserve"]])
        add_menu(self, "&Tools", [a["tool_brush"], a["tool_eraser"], a["tool_fill"],
                                  a["tool_polygon"], a["tool_pan"], a["tool_crosshair"],
                                  a["tool_select"], None, a["instance_mode"], a["new_instance"],
                                  a["delete_instance"]])
        add_menu(self, "&View", [a["fit"], a["zoom_1to1"], None, a["toggle_overlay"],
                                 a["toggle_outline"], None, a["view_three"], a["view_axis_0"],
                                 a["view_axis_1"], a["view_axis_2"]])
        add_menu(self, "&Item", [a["next_item"], a["previous_item"], a["next_frame"],
                                 a["previous_frame"], a["next_frame_10"], a["previous_frame_10"],
                                 a["play"], None, a["mark_done"], a["mark_review"],
                                 a["accept_frame"]])
        add_menu(self, "&Models", [a["train"]])
        add_menu(self, "&Help", [a["help"]])

    def _connect(self) -> None:
        ws = self.workspace
        ws.item_opened.connect(self._show_item)
        ws.position_changed.connect(self._on_position)
        ws.classes_changed.connect(self._on_classes_changed)
        ws.project_changed.connect(self._update_title)
        self.items_panel.item_activated.connect(lambda row: self._guard(lambda: self._open_item(row)))
        self.classes_panel.class_selected.connect(self._class_selected)
        self.tools.error.connect(self._show_error)
        self.tools.edited.connect(self._on_edited)
        self.tools.canvas_activated.connect(lambda _c: self._sync_active_axis())
        self.tools.cursor_placed.connect(self._place_cursor)
        dp = self.display_panel
        dp.opacity_changed.connect(self._set_opacity)
        dp.outline_changed.connect(self.canvas.set_outline_mode)
        dp.overlay_visible_changed.connect(self.canvas.set_overlay_visible)
        dp.levels_changed.connect(self._set_levels)
        dp.auto_levels_requested.connect(self._auto_levels)
        dp.frame_changed.connect(self._set_frame)
        for pane in self.views.panes:
            canvas = pane.canvas
            canvas.cursor_moved.connect(lambda x, y, c=canvas: self._show_cursor(c, x, y))
            canvas.levels_dragged.connect(self._set_levels)
            canvas.levels_dragged.connect(self.display_panel.show_levels)
            canvas.slice_scrolled.connect(lambda steps, c=canvas: self._scroll(c, steps))
            pane.slice_requested.connect(lambda index, c=canvas: self._move_slice(c, index))
        self.views.panes[0].axis_requested.connect(
            lambda axis: self._guard(lambda: self.set_main_axis(axis)))
        self.volume_panel.preview_changed.connect(self._set_preview)
        self.video_bar.frame_requested.connect(self._go_to_frame)
        self.video_panel.overlay_ready.connect(self._show_flow)
        self.video_panel.propagated.connect(self._on_propagated)
        ap, tl = self.actions_panel, self.timeline
        ap.track_changed.connect(lambda: tl.set_segments(ap.track.segments if ap.track else [],
                                                         ap.selected))
        ap.scores_changed.connect(lambda: tl.set_scores(*(ap.scores[2], ap.scores[1])
                                                        if ap.scores else (None,)))
        tl.frame_requested.connect(self._go_to_frame)
        tl.segment_drawn.connect(lambda a, b: ap._guard(lambda: ap.add_segment(a, b)))
        tl.segment_resized.connect(lambda i, a, b: ap._guard(lambda: ap.resize_segment(i, a, b)))
        tl.segment_selected.connect(ap.select)
        ip = self.instances_panel
        ip.mode_changed.connect(self._on_instance_mode)
        ip.changed.connect(self._show_instances)
        ip.selection_changed.connect(self._on_instance_selection)
        self.tools.picked.connect(self._pick_instance)
        self.tools.line_drawn.connect(
            lambda x0, y0, x1, y1: ip._guard(lambda: ip.split_selected((x0, y0), (x1, y1))))
        self.models_panel.applied.connect(self._on_prediction)
        self.models_panel.applied.connect(lambda _p: self.items_panel.refresh())
        self.models_panel.batch_done.connect(self.items_panel.refresh)
        self.assist_panel.applied.connect(self._on_prediction)
        self.volume_panel.applied.connect(self._on_prediction)
        self.models_panel.confidence.toggled.connect(lambda _on: self._show_confidence())

    def _restore_settings(self) -> None:
        geometry = settings.settings().value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 820)
        opacity = int(settings.value("display/opacity", 50, int))
        self.display_panel.opacity.setValue(opacity)
        self._set_opacity(opacity / 100.0)

    # -- opening -------------------------------------------------------------------------------------
    def open_paths(self, paths: list[str]) -> bool:
        """Open images, folders or a project; errors are shown, never raised."""
        try:
            report = self.workspace.open_paths([Path(p) for p in paths])
        except SegStudioError as err:
            self._show_error(str(err))
            return False
        if self.workspace.project is not None:
            settings.remember_project(str(self.workspace.project.folder))
        if report is not None and report.skipped:
            lines = "\n".join(f"{p}: {why}" for p, why in report.skipped[:20])
            QMessageBox.warning(self, "Some files were not added",
                                f"{len(report.skipped)} file(s) could not be added:\n{lines}")
        return True

    def choose_images(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self, "Open images", "",
            "Images, volumes and videos (*.png *.jpg *.jpeg *.tif *.tiff *.bmp *.nii *.nii.gz "
            "*.dcm *.mp4 *.m4v *.avi *.mov *.mkv *.webm);;"
            "All files (*)")
        if files:
            self.open_paths(files)

    def choose_frames_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a folder of video frames")
        if folder:
            self.open_frames_folder(folder)

    def open_frames_folder(self, folder: str) -> bool:
        """Open a folder of frame images as a video; errors are shown, never raised."""
        try:
            self.tools.finish_pending()
            self.workspace.open_frames_folder(folder)
        except SegStudioError as err:
            self._show_error(str(err))
            return False
        settings.remember_project(str(self.workspace.project.folder))
        return True

    def _choose(self, question: str, options: list[str]) -> int | None:
        """Ask the person to pick one option (a DICOM series, a 4D NIfTI volume)."""
        choice, ok = QInputDialog.getItem(self, "SegStudio", question, options, 0, False)
        return options.index(choice) if ok else None

    def choose_images_to_add(self) -> None:
        if self.workspace.project is None:
            self.choose_images()
            return
        files, _ = QFileDialog.getOpenFileNames(
            self, "Add images", "", "Images (*.png *.jpg *.jpeg *.tif *.tiff *.bmp)")
        if files:
            self._report_added(self.workspace.add_paths(files))

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for folder in settings.recent_projects():
            action = self.recent_menu.addAction(folder)
            action.triggered.connect(lambda _c=False, f=folder: self.open_paths([f]))
        if self.recent_menu.isEmpty():
            self.recent_menu.addAction("(none)").setEnabled(False)

    def choose_project(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a project or a folder of images")
        if folder:
            self.open_paths([folder])

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if not paths:
            return
        if self.workspace.project is not None:
            self._guard(lambda: self._report_added(self.workspace.add_paths(paths)))
        else:
            self.open_paths(paths)

    def _report_added(self, report) -> None:
        self.statusBar().showMessage(
            f"Added {len(report.added_ids)} item(s); skipped {len(report.skipped)}.", 5000)

    # -- showing -------------------------------------------------------------------------------------
    def _show_item(self) -> None:
        ws = self.workspace
        item = ws.item
        if item is None:
            return
        volume = item.kind == "volume"
        self.main_axis = 0
        self._preview = None
        stacked = bool(ws.geometries)
        three = self.actions_by_id["view_three"]
        three.setEnabled(stacked)
        if not stacked and self.views.three:
            three.setChecked(False)  # toggles the layout back to one view
        self.views.panes[0].set_choices(
            [g.name.capitalize() if volume else g.name for g in ws.geometries], 0)
        video = item.kind == "video"
        self.video_bar.setVisible(video)
        self.timeline.setVisible(video)
        if video:
            self.timeline.set_frames(item.frames)
            self.timeline.set_frame(0)
        self.video_panel.reset()
        self.canvas.set_flow_image(None)
        self.canvas.set_vectors(None)
        if video:
            self.video_bar.set_video(item.frames, float(item.extra.get("fps") or 25.0))
            self._refresh_markers()
            self.video_panel.frame_shown(0)
        else:
            self.video_bar.stop()
        for pane in self.views.panes:
            pane.canvas.set_window_level_drag(volume)  # radiology habit
            pane.canvas.set_slice_scrolling(stacked)
            pane.canvas.set_confidence(None)
            pane.canvas.set_preview(None)
        self.tools.activate(self.canvas)
        self.canvas.set_boxes()
        self.canvas.overlay.set_hidden(set())
        self._levels = default_levels(ws.image) if ws.image is not None else None
        self._show_frame_count()
        self.cursor_label.setText("")
        self.models_panel.last_prediction = None
        self._show_plane(fit=True)
        self.instances_panel.item_opened()
        if ws.image_error:
            self.statusBar().showMessage(ws.image_error, 10000)
        self._update_title()

    def _show_frame_count(self) -> None:
        """The Display panel's slice box follows the main view's cut."""
        ws = self.workspace
        item = ws.item
        if item is None:
            return
        if ws.geometries:
            count = ws.session.labels.shape[self.main_axis] if ws.session else item.frames
            noun = "Page" if item.kind != "volume" else "Slice"
            if self.main_axis:
                noun = f"{ws.geometry(self.main_axis).name.capitalize()} {noun.lower()}"
            self.display_panel.set_frame_count(count, noun)
            self.display_panel.show_frame(ws.position[self.main_axis])
        else:
            self.display_panel.set_frame_count(1)

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

    def _on_classes_changed(self) -> None:
        for pane in self.views.panes:
            if not (self.instances_panel.active and pane.canvas is self.canvas):
                pane.canvas.set_palette(self.workspace.palette())
        self.instances_panel.refresh()

    def _set_opacity(self, opacity: float) -> None:
        for pane in self.views.panes:
            pane.canvas.set_overlay_opacity(opacity)
        settings.set_value("display/opacity", int(round(opacity * 100)))

    def _set_levels(self, low: float, high: float) -> None:
        """One window for every view (set in the panel, by right-drag or by a preset)."""
        self._levels = (float(low), float(high))
        for pane in self.views.panes:
            pane.canvas.set_levels(low, high)

    def _auto_levels(self) -> None:
        from core.io import auto_levels

        image = self.workspace.image
        if image is not None:
            low, high = auto_levels(image)
            self._set_levels(low, high)
            self.display_panel.show_levels(low, high)

    def _open_item(self, row: int) -> None:
        self.tools.finish_pending()
        self.workspace.open_item(row)
        self.items_panel.refresh()  # the item left is checkpointed: its model Dice is current

    def _step_item(self, delta: int) -> None:
        self.tools.finish_pending()
        self.workspace.step_item(delta)
        self.items_panel.refresh()

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

    # -- instances --------------------------------------------------------------------------------------
    def _edit_session(self):
        """What the tools edit: the instance map in instance mode, else the class map."""
        if self.instances_panel.active and self.workspace.item is not None:
            return self.workspace.instance_session()
        return self.workspace.session

    def _class_selected(self, index: int) -> None:
        if not self.instances_panel.active:  # in instance mode the brush paints an instance
            self.tools.set_class_index(index)

    def _on_instance_mode(self, on: bool) -> None:
        self.tools.finish_pending()
        if on:
            self._preserve_before = self.tools.preserve_others
            self.tools.set_preserve_others(True)  # the brush paints its own instance only
            self._on_instance_selection()
        else:
            self.tools.set_preserve_others(getattr(self, "_preserve_before", False))
            self.tools.set_class_index(self.classes_panel.selected_index() or 1)
            self.canvas.set_boxes()
            self.canvas.overlay.set_hidden(set())
        self.options_bar.preserve.setChecked(self.tools.preserve_others)
        self._show_plane()
        self._show_instances()

    def _on_instance_selection(self) -> None:
        selected = self.instances_panel.selected
        if self.instances_panel.active:
            self.tools.set_class_index(selected[0] if selected else 0)
        self._show_instances()

    def _show_instances(self) -> None:
        """Redraw the instance map, hide low-score detections, draw boxes and captions."""
        panel = self.instances_panel
        if not panel.active:
            return
        from app.canvas.overlay import display_indices

        hidden = panel.hidden_ids()
        self.canvas.refresh_labels()
        indices = display_indices(np.array(sorted(hidden), np.int64)) if hidden else []
        self.canvas.overlay.set_hidden({int(i) for i in indices})
        self.canvas.set_boxes(panel.boxes(), panel.box_positions(panel.selected))

    def _pick_instance(self, x: float, y: float, add: bool) -> None:
        if self.instances_panel.active:
            self.instances_panel.pick(x, y, add)

    # -- video ------------------------------------------------------------------------------------------
    def _is_video(self) -> bool:
        item = self.workspace.item
        return item is not None and item.kind == "video"

    def _go_to_frame(self, frame: int) -> None:
        self.tools.finish_pending()
        self.workspace.set_position(0, frame)

    def _show_flow(self, overlay) -> None:
        """Draw the Video panel's flow picture, arrows and tracks over the shown frame."""
        if not self._is_video() or overlay.frame != self.workspace.frame:
            return
        self.canvas.set_flow_image(overlay.image, overlay.opacity)
        self.canvas.set_vectors(overlay.arrows, overlay.tracks)

    def _on_propagated(self, frames) -> None:
        self._refresh_markers()
        self._show_plane()  # the shown frame may be one of them, and its hatching changes
        self._update_title()

    def _refresh_markers(self) -> None:
        """The marker strip: which frames have labels, drawn or propagated (and how reliable)."""
        ws = self.workspace
        if ws.project is not None and self._is_video():
            info = ws.project.frame_info(ws.item.id)
            self.video_bar.set_markers(info)

    def accept_frame(self) -> None:
        """Mark the current video frame's labels as reviewed by the person."""
        session = self.workspace.session
        if not self._is_video() or session is None:
            raise SegStudioError("Accepting a frame is for videos: open one first.")
        self.tools.finish_pending()
        session.checkpoint()  # the labels the person accepted are on disk
        session.set_frame_state("reviewed")
        self.video_panel.unreliable.pop(self.workspace.frame, None)
        self.canvas.set_preview(None)
        self._refresh_markers()
        self.statusBar().showMessage(f"Frame {self.workspace.frame + 1} accepted.", 3000)

    def _update_title(self) -> None:
        ws = self.workspace
        parts = ["SegStudio"]
        if ws.project is not None:
            parts.append(str(ws.project.folder))
        if ws.item is not None:
            parts.append(f"{ws.item.name} [{ws.index + 1}/{len(ws.items)}]")
        if ws.session is not None and ws.session.unsaved_count:
            parts.append(f"{ws.session.unsaved_count} edit(s) NOT SAVED")
        self.setWindowTitle(" — ".join(parts))

    # -- editing ----------------------------------------------------------------------------------------
    def undo(self) -> None:
        self.tools.undo()
        self._update_title()

    def redo(self) -> None:
        self.tools.redo()
        self._update_title()

    # -- dialogs and errors -----------------------------------------------------------------------------
    def show_export(self) -> None:
        project = self.workspace.project
        if project is None:
            raise SegStudioError("Open a project first.")
        if self.workspace.session is not None:
            self.workspace.session.checkpoint()
        default = settings.value("export/last_dir", str(project.folder.parent / "export"), str)
        dialog = ExportDialog(project, str(default), self)
        dialog.finished.connect(lambda _r: settings.set_value("export/last_dir",
                                                              dialog.out_dir.text()))
        dialog.open()
        self.export_dialog = dialog

    def show_import(self) -> None:
        project = self.workspace.project
        if project is None:
            raise SegStudioError("Open a project first.")
        self.tools.finish_pending()
        item = self.workspace.item
        volume = item if item is not None and item.kind == "volume" else None
        self.workspace.suspend()  # the import may write the open item's mask
        dialog = ImportDialog(project, volume, self)
        dialog.finished.connect(lambda _r: self.workspace.resume())
        dialog.open()
        self.import_dialog = dialog

    def show_train(self) -> None:
        project = self.workspace.project
        if project is None:
            raise SegStudioError("Open a project first.")
        self.tools.finish_pending()
        if self.workspace.session is not None:
            self.workspace.session.checkpoint()  # train on what is on screen
        dialog = TrainDialog(project, self)
        dialog.trained.connect(self.use_trained_model)
        dialog.open()
        self.train_dialog = dialog

    def use_trained_model(self, path: str, model: str) -> None:
        """Offer a freshly trained checkpoint in the Models panel, selected."""
        choice = self.models_panel.choice
        choice.model.setCurrentIndex(max(choice.model.findData(model), 0))
        choice.fill_weights()
        choice.weights.insertItem(choice.weights.count() - 1, path, path)
        choice.weights.setCurrentIndex(choice.weights.count() - 2)

    def show_shortcuts(self) -> None:
        self.shortcuts_dialog = ShortcutsDialog(self)
        self.shortcuts_dialog.open()

    def _guard(self, action) -> None:
        try:
            action()
        except SegStudioError as err:
            self._show_error(str(err))

    def _show_error(self, message: str) -> None:
        self.statusBar().showMessage(message, 15000)
        QMessageBox.warning(self, "SegStudio", message)
        self._update_title()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.tools.finish_pending()
        self.models_panel.shutdown()
        self.assist_panel.shutdown()
        self.video_panel.shutdown()
        self.instances_panel.shutdown()
        self.actions_panel.shutdown()
        self.video_bar.stop()
        for dialog in (getattr(self, "export_dialog", None), getattr(self, "import_dialog", None),
                       getattr(self, "train_dialog", None)):
            if dialog is not None:
                dialog.close()  # cancels and waits: never destroy a worker thread that runs
        try:
            self.workspace.close()
        except StorageFullError as err:
            answer = QMessageBox.question(
                self, "Unsaved edits",
                f"{err}\n\nQuit anyway and lose the unsaved edits?")
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
            self.workspace.close(force=True)
        settings.set_value("window/geometry", self.saveGeometry())
        super().closeEvent(event)


def _format_value(value) -> str:
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_format_value(v) for v in value) + ")"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3g}"
    return str(int(value))
