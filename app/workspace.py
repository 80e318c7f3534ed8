"""The open project, the current item and its edit session, as seen by the GUI.

The main window and panels talk to this object instead of to each other; it turns core calls into
signals. It holds no widgets.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from core.annotation.classes import LabelClass, default_color, palette_rgb
from core.annotation.session import EditSession
from core.errors import ProjectError, SegStudioError
from core.project.items import AddReport, Item
from core.project.store import Project, is_project

AUTO_PROJECT_DIR = ".segstudio"


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
    frame_changed = Signal(int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.project: Project | None = None
        self.session: EditSession | None = None
        self.image: np.ndarray | None = None
        self.image_error: str | None = None
        self.items: list[Item] = []
        self.index = -1
        self.frame = 0
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

    def add_paths(self, paths: list[str | os.PathLike]) -> AddReport:
        """Add images and volumes (DICOM folders/files, NIfTI); bad ones land in the report."""
        from core.io.dicom import is_dicom_path
        from core.io.nifti import is_nifti_path

        project = self._require_project()
        volumes = [p for p in paths if is_nifti_path(p) or is_dicom_path(p)]
        images = [p for p in paths if p not in volumes]
        report = project.add_items(images) if images else AddReport()
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
        if self.session is not None and not force:
            self.session.close()
        self.session = None
        if self.project is not None:
            self.project.close()
        self.project, self.items, self.index, self.image = None, [], -1, None
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
        if self.session is not None:
            self.session.checkpoint()
        item = self.items[index]
        self.image, self.image_error = _load_image_or_placeholder(item)
        self.session = EditSession(self.project, item)
        self.index, self.frame = index, 0
        self.session.plane = (0,) if item.frames > 1 else ()
        self.item_opened.emit()

    def suspend(self) -> None:
        """Save and drop the open item's session (before something else writes its mask)."""
        if self.session is not None:
            self.session.close()
        self.session = None

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

    def set_frame(self, frame: int) -> None:
        item = self.item
        if item is None or item.frames <= 1 or self.session is None:
            return
        if self.session.stroke_active:
            self.session.end_stroke()
        self.frame = min(max(frame, 0), item.frames - 1)
        self.session.plane = (self.frame,)
        self.frame_changed.emit(self.frame)

    def image_plane(self) -> np.ndarray | None:
        if self.image is None or self.item is None:
            return None
        return self.image[self.frame] if self.item.frames > 1 else self.image

    def label_plane(self) -> np.ndarray | None:
        if self.session is None:
            return None
        return self.session.labels[self.session.plane] if self.session.plane else \
            self.session.labels

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
        if self.session is not None:
            plane = self.session.plane
            self.session = EditSession(project, self.session.item)
            self.session.plane = plane
        self.classes_changed.emit()
        self.item_opened.emit()
        return changed


def _load_image_or_placeholder(item: Item) -> tuple[np.ndarray, str | None]:
    """The item's pixels, or a grey placeholder of its size with the reason it is missing."""
    from core.io.volumes import load_item_pixels

    placeholder = np.full(item.mask_shape, 64, np.uint8)
    if item.source is None:
        return placeholder, f"The source image of {item.name} is missing ({item.abs_path})."
    try:
        return load_item_pixels(item), None
    except SegStudioError as err:
        return placeholder, str(err)
