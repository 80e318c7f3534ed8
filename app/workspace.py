"""The open project, the current item and its edit session, as seen by the GUI.

The main window and panels talk to this object instead of to each other; it turns core calls into
signals. It holds no widgets.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from core.annotation.classes import LabelClass, default_color, palette_rgb
from core.annotation.session import EditSession
from core.errors import ProjectError, SegStudioError
from core.io.orientation import SliceGeometry, slice_geometries
from core.io.volume import Volume
from core.project.items import AddReport, Item
from core.project.store import Project, is_project

AUTO_PROJECT_DIR = ".segstudio"
FRAME_SESSION_BYTES = 256 * 2**20  # labels + undo of a video's recently visited frames


def project_folder_for(paths: list[Path]) -> Path:
    """Where the project for a set of opened images lives: ``.segstudio`` in their folder."""
    first = paths[0]
    base = first if first.is_dir() else first.parent
    return base / AUTO_PROJECT_DIR


class Workspace(QObject):
    """Holds the project and the item being edited; emits what changed."""

    project_changed = Signal()
    classes_changed = Signal()
    items_changed = Signal()
    item_opened = Signal()
    frame_changed = Signal(int)  # the slice along axis 0 (page of a stack) changed
    position_changed = Signal(int)  # the slice along this array axis changed (any view)
    view_axis_changed = Signal(int)  # the view the tools edit now cuts along this axis

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.project: Project | None = None
        self.session: EditSession | None = None
        self.image: np.ndarray | None = None
        self.image_error: str | None = None
        self.items: list[Item] = []
        self.index = -1
        # The 3-D cursor of a volume or stack: the slice index along each array axis (Z, Y, X).
        # Every view shows the slice through it along its own axis; ``frame`` is position[0].
        self.position: list[int] = [0, 0, 0]
        self.view_axis = 0  # the axis of the view the person edits in (the session's view)
        self.geometries: tuple[SliceGeometry, ...] = ()  # 3 for a volume or stack, else ()
        self.modality = ""  # of the open volume ("CT": values are Hounsfield units)
        # A video: its reader, and one edit session per visited frame (each frame has its own
        # labels and undo history), the least recently used saved and dropped past a budget.
        self.video = None
        self._frame_sessions: OrderedDict[int, EditSession] = OrderedDict()
        self._instance_session: EditSession | None = None  # an image's instance map, lazily
        # Asks the person to pick one of several options (series of a DICOM folder, volumes of
        # a 4D NIfTI): (question, options) -> index or None. The window sets it; None refuses.
        self.chooser: Callable[[str, list[str]], int | None] | None = None

    # -- project -----------------------------------------------------------------------------------
    def open_project(self, folder: str | os.PathLike) -> None:
        project = Project.open(folder)
        self._set_project(project)

    def create_project(self, folder: str | os.PathLike) -> None:
        self._set_project(Project.create(folder))

    def open_paths(self, paths: list[str | os.PathLike]) -> AddReport | None:
        """Open what a user named: a project folder, or images/folders (their project is made)."""
        paths = [Path(p).absolute() for p in paths]
        if not paths:
            return None
        if len(paths) == 1 and is_project(paths[0]):
            self.open_project(paths[0])
            return None
        for path in paths:
            if not path.exists():
                raise SegStudioError(f"{path} does not exist.")
        target = project_folder_for(paths)
        if is_project(target):
            self.open_project(target)
        else:
            try:
                self.create_project(target)
            except ProjectError as err:
                raise ProjectError(f"{err} (SegStudio keeps its project beside the images.)") \
                    from err
        return self.add_paths(paths)

    def open_frames_folder(self, folder: str | os.PathLike) -> Item:
        """Open a folder of frame images as one video (its project is made beside it, or the
        open project gets it) and show it."""
        folder = Path(folder).absolute()
        if self.project is None:
            target = project_folder_for([folder])
            if is_project(target):
                self.open_project(target)
            else:
                self.create_project(target)
        item = self._require_project().add_video(folder)
        self.reload_items()
        self.open_item(next(i for i, it in enumerate(self.items) if it.id == item.id))
        return item

    def add_paths(self, paths: list[str | os.PathLike]) -> AddReport:
        """Add images, volumes (DICOM folders/files, NIfTI) and videos; bad ones land in the
        report."""
        from core.io.dicom import is_dicom_path
        from core.io.nifti import is_nifti_path
        from core.io.video import is_video_path

        project = self._require_project()
        videos = [p for p in paths if Path(p).is_file() and is_video_path(p)]
        volumes = [p for p in paths if p not in videos and (is_nifti_path(p) or is_dicom_path(p))]
        images = [p for p in paths if p not in volumes and p not in videos]
        report = project.add_items(images) if images else AddReport()
        for path in videos:
            try:
                report.added_ids.append(project.add_video(path).id)
            except SegStudioError as err:
                report.skipped.append((str(path), str(err)))
        for path in volumes:
            try:
                report.added_ids.append(self._add_volume(project, path).id)
            except SegStudioError as err:
                report.skipped.append((str(path), str(err)))
        self.reload_items()
        if self.index < 0 and self.items:
            self.open_item(0)
        return report

    def _add_volume(self, project: Project, path: str | os.PathLike) -> Item:
        """Add a volume, asking :attr:`chooser` which series / 4D volume when there are several."""
        from core.io.dicom import SeriesChoiceError
        from core.io.nifti import VolumeIndexRequiredError

        try:
            return project.add_volume(path)
        except SeriesChoiceError as err:
            pick = self._choose(f"{Path(path).name} holds several series; open which?",
                                [s.label for s in err.series], err)
            return project.add_volume(path, series_uid=err.series[pick].uid)
        except VolumeIndexRequiredError as err:
            pick = self._choose(f"{Path(path).name} holds {err.volumes} volumes; open which?",
                                [f"volume {i}" for i in range(err.volumes)], err)
            return project.add_volume(path, volume_index=pick)

    def _choose(self, question: str, options: list[str], err: SegStudioError) -> int:
        choice = self.chooser(question, options) if self.chooser is not None else None
        if choice is None:
            raise err  # nobody to ask, or the person cancelled: report what was ambiguous
        return choice

    def _set_project(self, project: Project) -> None:
        self.close()
        self.project = project
        self.reload_items()
        self.project_changed.emit()
        self.classes_changed.emit()
        if self.items:
            self.open_item(0)

    def _require_project(self) -> Project:
        if self.project is None:
            raise SegStudioError("Open or create a project first.")
        return self.project

    def close(self, force: bool = False) -> None:
        """Checkpoint the open item and close the project.

        Raises StorageFullError when the disk refuses the checkpoint, unless ``force`` (the user
        chose to quit anyway).
        """
        if not force:
            self._close_sessions()
        self.session = None
        self._frame_sessions.clear()
        self._close_video()
        if self.project is not None:
            self.project.close()
        self.project, self.items, self.index, self.image = None, [], -1, None
        self.geometries = ()
        self.project_changed.emit()

    # -- items -------------------------------------------------------------------------------------
    def reload_items(self) -> None:
        self.items = self.project.items() if self.project else []
        self.items_changed.emit()

    @property
    def item(self) -> Item | None:
        return self.items[self.index] if 0 <= self.index < len(self.items) else None

    def open_item(self, index: int) -> None:
        """Checkpoint the current item, then load item ``index`` (image and labels)."""
        if not 0 <= index < len(self.items) or self.project is None:
            return
        self._close_sessions()
        self._close_video()
        item = self.items[index]
        self.index = index
        if item.kind == "video":
            self._open_video(item)
            return
        self.image, self.image_error, volume = _load_image_or_placeholder(item)
        self.session = EditSession(self.project, item)
        self.geometries = _geometries(self.session.labels.shape, volume)
        self.modality = volume.modality if volume is not None else ""
        # a volume opens in its middle, where the anatomy is; a stack on its first page
        self.position = [n // 2 if volume is not None else 0
                         for n in self.session.labels.shape[:3]] if self.geometries else [0, 0, 0]
        self.view_axis = 0
        self._sync_view()
        self.item_opened.emit()

    def suspend(self) -> None:
        """Save and drop the open item's session (before something else writes its mask)."""
        self._close_sessions()
        self.session = None

    def _close_sessions(self) -> None:
        """Checkpoint and drop every open session (the item's, or a video's frames')."""
        sessions = list(self._frame_sessions.values()) or \
            ([self.session] if self.session is not None else [])
        if self._instance_session is not None:
            sessions.append(self._instance_session)
        self._instance_session = None
        self._frame_sessions.clear()
        for session in sessions:
            session.close()  # StorageFullError propagates: the caller decides

    # -- instances -------------------------------------------------------------------------------------
    def instance_session(self) -> EditSession:
        """The edit session of the open image's instance map (made on first use).

        Raises:
            SegStudioError: No image is open (volumes, stacks and videos have no instances).
        """
        item = self.item
        if item is None or self.project is None:
            raise SegStudioError("Open an image first.")
        if item.kind != "image" or item.frames > 1:
            raise SegStudioError("Instances are drawn on single images; this item is a "
                                 f"{'stack' if item.kind == 'image' else item.kind}.")
        if self._instance_session is None or self._instance_session.item.id != item.id:
            self._instance_session = EditSession(self.project, item, layer="instances")
        return self._instance_session

    def has_instance_session(self) -> bool:
        return self._instance_session is not None

    # -- videos ----------------------------------------------------------------------------------------
    def _open_video(self, item: Item) -> None:
        from core.io.video import open_video

        self.geometries, self.modality, self.view_axis = (), "", 0
        self.position = [0, 0, 0]
        self.image_error = None
        if item.source is None:
            self.image_error = f"The video {item.name} is missing ({item.abs_path})."
        else:
            try:
                self.video = open_video(item.source, fps=item.extra.get("fps"))
            except SegStudioError as err:
                self.image_error = str(err)
        self._show_video_frame(0)
        self.item_opened.emit()

    def _show_video_frame(self, frame: int) -> None:
        self.position[0] = frame
        self.session = self.frame_session(frame)
        self.image = None
        if self.video is not None:
            try:
                self.image = self.video.frame(frame)
            except SegStudioError as err:
                self.image_error = str(err)
        if self.image is None:
            self.image = np.full(self.item.mask_shape, 64, np.uint8)

    def frame_session(self, frame: int) -> EditSession:
        """The edit session of video frame ``frame`` (kept while recently used)."""
        session = self._frame_sessions.get(frame)
        if session is None:
            session = EditSession(self._require_project(), self.item, frame=frame)
            self._frame_sessions[frame] = session
            self._trim_frame_sessions(keep=frame)
        self._frame_sessions.move_to_end(frame)
        return session

    def _trim_frame_sessions(self, keep: int) -> None:
        budget = FRAME_SESSION_BYTES
        while len(self._frame_sessions) > 1 and sum(
                s.labels.nbytes + s.history.nbytes for s in self._frame_sessions.values()) > budget:
            frame, oldest = next(iter(self._frame_sessions.items()))
            if frame == keep:
                self._frame_sessions.move_to_end(frame)
                continue
            oldest.close()  # saved before it is dropped: its undo history goes with it
            del self._frame_sessions[frame]

    def _close_video(self) -> None:
        if self.video is not None:
            self.video.close()
        self.video = None

    def resume(self) -> None:
        """Reload classes, items and the current item after :meth:`suspend`."""
        index = max(self.index, 0)
        self.index = -1
        self.reload_items()
        self.classes_changed.emit()
        self.open_item(min(index, len(self.items) - 1))

    def step_item(self, delta: int) -> None:
        if self.items:
            self.open_item(min(max(self.index + delta, 0), len(self.items) - 1))

    # -- slices of a volume or stack --------------------------------------------------------------------
    @property
    def frame(self) -> int:
        """The slice along axis 0 (the page of a stack)."""
        return self.position[0]

    def set_frame(self, frame: int) -> None:
        self.set_position(0, frame)

    def set_position(self, axis: int, index: int) -> None:
        """Move the 3-D cursor along ``axis``: views cutting along it show slice ``index``."""
        if self.item is not None and self.item.kind == "video" and axis == 0:
            index = min(max(int(index), 0), self.item.frames - 1)
            if index != self.position[0] and self.session is not None:
                if self.session.stroke_active:
                    self.session.end_stroke()
                self._show_video_frame(index)
                self.position_changed.emit(0)
                self.frame_changed.emit(index)
            return
        if self.session is None or not self.geometries:
            return
        index = min(max(int(index), 0), self.session.labels.shape[axis] - 1)
        if index == self.position[axis]:
            return
        self.position[axis] = index
        self._sync_view()
        self.position_changed.emit(axis)
        if axis == 0:
            self.frame_changed.emit(index)

    def set_view_axis(self, axis: int) -> None:
        """Edit in the view that cuts along ``axis`` (0 axial, 1 coronal, 2 sagittal for a
        typical CT) from now on."""
        if not self.geometries or axis == self.view_axis:
            return
        self.view_axis = int(axis)
        self._sync_view()
        self.view_axis_changed.emit(self.view_axis)

    def geometry(self, axis: int | None = None) -> SliceGeometry | None:
        """How the view along ``axis`` (default: the active one) lays out its slices; None for
        a plain image."""
        if not self.geometries:
            return None
        return self.geometries[self.view_axis if axis is None else axis]

    def _sync_view(self) -> None:
        if self.session is None:
            return
        geometry = self.geometry()
        if geometry is None:
            self.session.set_view(())
        else:
            self.session.set_view((self.position[geometry.axis],), geometry.axes)

    def image_plane(self, axis: int | None = None) -> np.ndarray | None:
        """The image slice shown by the view along ``axis`` (default: the active view)."""
        if self.image is None or self.item is None:
            return None
        geometry = self.geometry(axis)
        if geometry is None:
            return self.image
        channels = tuple(range(3, self.image.ndim))  # RGB stacks keep their colour axis last
        return self.image.transpose(geometry.axes + channels)[self.position[geometry.axis]]

    def label_plane(self, axis: int | None = None) -> np.ndarray | None:
        """The label slice of the view along ``axis`` (a view: edits show in it)."""
        if self.session is None:
            return None
        geometry = self.geometry(axis)
        if geometry is None:
            return self.session.labels
        return self.session.labels.transpose(geometry.axes)[self.position[geometry.axis]]

    def set_item_state(self, state: str) -> None:
        item = self.item
        if item is None or self.project is None:
            return
        self.project.set_state(item.id, state)
        self.items[self.index] = self.project.item(item.id)
        if self.session is not None:
            self.session.item = self.items[self.index]
        self.items_changed.emit()

    # -- classes -----------------------------------------------------------------------------------
    def classes(self) -> list[LabelClass]:
        return self.project.classes() if self.project else []

    def palette(self) -> np.ndarray:
        return palette_rgb(self.classes())

    def add_class(self, name: str, color: tuple[int, int, int] | None = None) -> LabelClass:
        classes = self.classes()
        index = max((c.index for c in classes), default=0) + 1
        new = LabelClass(index, name, color or default_color(index))
        self._require_project().set_classes([*classes, new])
        self.classes_changed.emit()
        return new

    def ensure_classes(self, names: list[str], labels: np.ndarray) -> list[LabelClass]:
        """Add a class for every label value in ``labels`` the project lacks, named after the
        model's class ``names`` (a model trained elsewhere brings its own classes)."""
        known = {c.index for c in self.classes()}
        present = np.unique(labels)
        added = [LabelClass(int(v), names[v] if v < len(names) else f"class {v}",
                            default_color(int(v)))
                 for v in present if int(v) not in known and v != 0]
        if added:
            self._require_project().set_classes([*self.classes(), *added])
            self.classes_changed.emit()
        return added

    def update_class(self, index: int, name: str | None = None,
                     color: tuple[int, int, int] | None = None) -> None:
        classes = [
            LabelClass(c.index, name or c.name, color or c.color) if c.index == index else c
            for c in self.classes()
        ]
        self._require_project().set_classes(classes)
        self.classes_changed.emit()

    def delete_class(self, index: int, replacement: int = 0) -> int:
        """Delete a class, relabelling its pixels everywhere; the open item's history is reset."""
        project = self._require_project()
        if index == 0:
            raise SegStudioError("The background class cannot be deleted.")
        if self.session is not None:
            self.session.checkpoint()
        changed = project.delete_class(index, replacement)
        if self.session is not None and self.session.frame is not None:
            self._frame_sessions.clear()  # their labels were remapped on disk: reload
            self.session = self.frame_session(self.position[0])
        elif self.session is not None:
            self.session = EditSession(project, self.session.item)
            self._sync_view()
        self.classes_changed.emit()
        self.item_opened.emit()
        return changed


def _load_image_or_placeholder(item: Item) -> tuple[np.ndarray, str | None, Volume | None]:
    """The item's pixels (and its Volume, for a volume), or a grey placeholder of its size with
    the reason it is missing."""
    from core.io.volumes import load_item_pixels, load_item_volume

    placeholder = np.full(item.mask_shape, 64, np.uint8)
    if item.source is None:
        return placeholder, f"The source image of {item.name} is missing ({item.abs_path}).", None
    try:
        if item.kind == "volume":
            volume = load_item_volume(item)
            return volume.array, None, volume
        return load_item_pixels(item), None, None
    except SegStudioError as err:
        return placeholder, str(err), None


def _geometries(shape: tuple[int, ...], volume: Volume | None) -> tuple[SliceGeometry, ...]:
    """The three views of a volume (oriented by its affine) or a stack (plain); () otherwise."""
    if len(shape) != 3:
        return ()
    if volume is not None and volume.shape == shape:
        return slice_geometries(shape, volume.affine, volume.spacing)
    return slice_geometries(shape)
