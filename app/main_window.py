"""The main window: composes the canvas, the panels and the actions; holds no business logic."""

from __future__ import annotations

from pathlib import Path

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
    QTabWidget,
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
from app.panels.instances_panel import InstancesPanel
from app.panels.items_panel import ItemsPanel
from app.panels.models_panel import ModelsPanel
from app.panels.video_panel import VideoPanel
from app.panels.volume_panel import VolumePanel
from app.toolbar import ToolOptionsBar
from app.window_media import InstancesVideoMixin
from app.window_views import SliceViewsMixin
from app.workspace import Workspace
from core.errors import SegStudioError, StorageFullError


class MainWindow(SliceViewsMixin, InstancesVideoMixin, QMainWindow):
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
        # seven tabs side by side elide to two letters each: along the dock's edge, with the
        # tabbed panels given most of the height, each keeps its whole name
        self.setTabPosition(right, QTabWidget.TabPosition.East)
        self.resizeDocks(docks[:2], [220, 600], Qt.Orientation.Vertical)
        self.resizeDocks(docks, [430, 430, 220], Qt.Orientation.Horizontal)
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
        for edited in (self.tools.edited, self.volume_panel.applied, self.assist_panel.applied,
                       self.video_panel.propagated):  # the open item's model Dice follows
            edited.connect(self.items_panel.labels_edited)
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

    def _on_classes_changed(self) -> None:
        for pane in self.views.panes:
            if not (self.instances_panel.active and pane.canvas is self.canvas):
                pane.canvas.set_palette(self.workspace.palette())
        self.instances_panel.refresh()

    def _set_opacity(self, opacity: float) -> None:
        for pane in self.views.panes:
            pane.canvas.set_overlay_opacity(opacity)
        settings.set_value("display/opacity", int(round(opacity * 100)))

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
        if self.workspace.has_instance_session():
            self.workspace.instance_session().checkpoint()
        dialog = TrainDialog(project, self)
        dialog.trained.connect(self.use_trained_model)
        dialog.open()
        self.train_dialog = dialog

    def use_trained_model(self, path: str, model: str, task: str = "semantic",
                          stride: int = 0) -> None:
        """Offer a freshly trained checkpoint, selected, where the models of its task run: the
        Models panel (semantic), the Instances panel or the Actions panel (with the clip stride
        it was trained with); that panel's tab is brought to the front."""
        from app.dialogs.train_tasks import offer_checkpoint

        panels = {"semantic": (self.models_panel, "dock_models"),
                  "instance": (self.instances_panel, "dock_instances"),
                  "action": (self.actions_panel, "dock_actions")}
        panel, dock_name = panels[task]
        offer_checkpoint(panel.choice, model, path)
        if task == "action":
            panel.stride.setValue(stride)
        dock = self.findChild(QDockWidget, dock_name)
        if dock is not None:
            dock.show()
            dock.raise_()

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
