"""Editing one item: its label array, undo history, strokes, and journaling to the project.

The GUI drives an :class:`EditSession` and redraws the regions it returns; the session knows
nothing of Qt. Every completed edit is journaled at once; when the disk refuses a write the edit
stays queued in memory and goes out with the next successful write, so nothing is lost while the
app runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.annotation.edits import Edit, merge_edits
from core.annotation.history import History
from core.annotation.tools import (
    PaintRule,
    Point,
    fill_polygon,
    flood_fill,
    paint_segment,
    replace_labels,
)
from core.annotation.volume_tools import (
    interpolate_between_slices,
    keep_largest_component,
    remove_small_components_3d,
    threshold_fill,
)
from core.errors import SegStudioError
from core.project.items import Item
from core.project.store import Project

CHECKPOINT_EVERY = 200  # journal entries of one item before they are folded into its mask


class EditSession:
    """The open item of a project.

    Args:
        project: The project the item belongs to.
        item: The item to edit.
        max_undo: Undo steps kept.
        frame: For a video, the frame whose labels are edited (each frame has its own
            session, labels, journal and undo history).
        layer: "class" (the class map) or "instances" (the uint32 instance map of an image,
            with its own journal and undo history; the instance table lives in the project).
    """

    def __init__(self, project: Project, item: Item, max_undo: int = 500,
                 frame: int | None = None, layer: str = "class") -> None:
        self.project = project
        self.item = item
        self.frame = frame
        self.layer = layer
        self.labels = project.load_mask(item, frame, layer)
        # what the frame's labels are ("annotated", "propagated", "reviewed"); None: no video
        self.frame_state = None if frame is None else \
            getattr(project.frame_info(item.id).get(frame), "state", None)
        self.history = History(max_steps=max_undo)
        # The 2D slice the tools edit: ``plane`` indexes the leading axes of
        # ``labels.transpose(axes)`` (identity axes: the leading axes of ``labels``). A volume
        # seen from the side (coronal, sagittal) has axes such as (1, 0, 2): see set_view.
        self.plane: tuple[int, ...] = ()
        self.axes: tuple[int, ...] = tuple(range(self.labels.ndim))
        self._stroke: list[Edit] | None = None
        self._last_point: Point | None = None
        self._unsaved: list[Edit] = []
        # edited since the last checkpoint (a journal left by a crash counts: fold it in)
        self._dirty = project.journal_length(item.id, frame, layer) > 0

    # -- the slice being edited ------------------------------------------------------------------------
    def set_view(self, plane: tuple[int, ...], axes: tuple[int, ...] | None = None) -> None:
        """Edit slice ``plane`` of ``labels.transpose(axes)`` from now on (a running stroke is
        committed first). ``axes`` None keeps the array's own order."""
        axes = tuple(range(self.labels.ndim)) if axes is None else tuple(int(a) for a in axes)
        if sorted(axes) != list(range(self.labels.ndim)):
            raise ValueError(f"axes {axes} are not a permutation of the label array's axes")
        plane = tuple(int(i) for i in plane)
        if (plane, axes) == (self.plane, self.axes):
            return
        if self._stroke is not None:
            self.end_stroke()
        self.plane, self.axes = plane, axes

    def view_labels(self) -> np.ndarray:
        """``labels`` in the order of the current view (a view of the array, no copy)."""
        return self.labels if self._identity() else self.labels.transpose(self.axes)

    def plane_labels(self) -> np.ndarray:
        """The 2D label slice the tools edit (a view: edits show in it)."""
        view = self.view_labels()
        return view[self.plane] if self.plane else view

    def plane_box(self, edit: Edit) -> tuple[int, int, int, int] | None:
        """(y0, y1, x0, x1) of ``edit`` in the current slice, or None when it misses the slice."""
        region = [edit.region[a] for a in self.axes]
        for index, span in zip(self.plane, region, strict=False):
            if not span.start <= index < span.stop:
                return None
        ys, xs = region[-2], region[-1]
        return ys.start, ys.stop, xs.start, xs.stop

    def _identity(self) -> bool:
        return self.axes == tuple(range(len(self.axes)))

    def _to_labels(self, edit: Edit | None) -> Edit | None:
        """An edit made on :meth:`view_labels`, in the axis order of ``labels``."""
        if edit is None or self._identity():
            return edit
        return edit.transposed(tuple(int(a) for a in np.argsort(self.axes)))

    # -- strokes (brush/eraser drags) --------------------------------------------------------------
    def begin_stroke(self, point: Point, radius: float, rule: PaintRule) -> Edit | None:
        """Start a drag at ``point``; returns the dab's edit (for redraw) or None."""
        if self._stroke is not None:
            self.end_stroke()  # its pixels are already painted: record them, never drop them
        self._stroke = []
        self._last_point = point
        return self._stroke_step(point, point, radius, rule)

    def continue_stroke(self, point: Point, radius: float, rule: PaintRule) -> Edit | None:
        """Extend the drag to ``point``; returns the step's edit (for redraw) or None."""
        if self._stroke is None or self._last_point is None:
            return self.begin_stroke(point, radius, rule)
        start, self._last_point = self._last_point, point
        return self._stroke_step(start, point, radius, rule)

    def end_stroke(self) -> Edit | None:
        """Finish the drag: the whole drag becomes one undo step and one journal entry."""
        steps, self._stroke, self._last_point = self._stroke, None, None
        if not steps:
            return None
        edit = self._to_labels(merge_edits(steps, self.view_labels()))
        if edit is not None:
            self._record(edit)
        return edit

    @property
    def stroke_active(self) -> bool:
        return self._stroke is not None

    def _stroke_step(self, p0: Point, p1: Point, radius: float, rule: PaintRule) -> Edit | None:
        edit = paint_segment(self.view_labels(), p0, p1, radius, rule, self.plane)
        if edit is not None and self._stroke is not None:
            self._stroke.append(edit)  # in view order; end_stroke converts the merged edit
        return self._to_labels(edit)

    # -- one-shot tools ------------------------------------------------------------------------------
    def fill(self, seed: Point, rule: PaintRule) -> Edit | None:
        return self._finish(self._to_labels(flood_fill(self.view_labels(), seed, rule,
                                                       self.plane)))

    def polygon(self, points: Sequence[Point], rule: PaintRule) -> Edit | None:
        return self._finish(self._to_labels(fill_polygon(self.view_labels(), points, rule,
                                                         self.plane)))

    def replace_plane(self, new_plane: np.ndarray, whole: bool = False) -> Edit | None:
        """Set the current plane (or, with ``whole``, every plane: e.g. a model run slice by
        slice over a volume) to ``new_plane`` as one undo step."""
        if new_plane.max(initial=0) > np.iinfo(self.labels.dtype).max:
            self.labels = self.labels.astype(np.uint16)
        if whole:
            return self._finish(replace_labels(self.labels, new_plane, ()))
        return self._finish(self._to_labels(replace_labels(self.view_labels(), new_plane,
                                                           self.plane)))

    # -- volume tools (whole label volume, one undo step each) ---------------------------------------
    def interpolate_slices(self, value: int, axis: int = 0, start: int | None = None,
                           stop: int | None = None) -> Edit | None:
        """Fill the slices between annotated slices of ``value`` (shape-based interpolation)."""
        return self._finish(interpolate_between_slices(self.labels, value, axis, start, stop))

    def preview_interpolation(self, value: int, axis: int = 0, start: int | None = None,
                              stop: int | None = None) -> Edit | None:
        """What :meth:`interpolate_slices` would change, without changing anything (for a
        preview the person accepts with :meth:`apply_edit`)."""
        return interpolate_between_slices(self.labels, value, axis, start, stop, preview=True)

    def apply_edit(self, edit: Edit) -> Edit:
        """Apply an edit built from these labels but not applied (an accepted preview) as one
        undo step.

        Raises:
            SegStudioError: The labels changed since the edit was built (preview again).
        """
        if any(s.stop > n for s, n in zip(edit.region, self.labels.shape, strict=True)) or \
                not np.array_equal(self.labels[edit.region][edit.changed], edit.old):
            raise SegStudioError("The labels changed since the preview was made; preview again.")
        edit.apply(self.labels)
        self._record(edit)
        return edit

    def threshold_fill(self, image: np.ndarray, low: float, high: float, value: int,
                       box: Sequence[slice] | None = None, within: np.ndarray | None = None,
                       overwrite: bool = False) -> Edit | None:
        """Set ``value`` where ``low <= image <= high`` inside ``box`` and ``within``."""
        return self._finish(threshold_fill(self.labels, image, low, high, value, box=box,
                                           within=within, overwrite=overwrite))

    def keep_largest_component(self, value: int, connectivity: int = 26) -> Edit | None:
        """Erase every connected component of ``value`` but the largest."""
        return self._finish(keep_largest_component(self.labels, value, connectivity))

    def remove_small_components(self, value: int, min_voxels: int,
                                connectivity: int = 26) -> Edit | None:
        """Erase the connected components of ``value`` smaller than ``min_voxels``."""
        return self._finish(remove_small_components_3d(self.labels, value, min_voxels,
                                                       connectivity))

    def _finish(self, edit: Edit | None) -> Edit | None:
        if edit is not None:
            self._record(edit)
        return edit

    # -- undo/redo -------------------------------------------------------------------------------------
    def undo(self) -> Edit | None:
        edit = self.history.undo(self.labels)
        if edit is not None:
            self._journal(edit)
        return edit

    def redo(self) -> Edit | None:
        edit = self.history.redo(self.labels)
        if edit is not None:
            self._journal(edit)
        return edit

    # -- persistence -----------------------------------------------------------------------------------
    @property
    def unsaved_count(self) -> int:
        """Edits that the disk refused so far (kept in memory, retried on every write)."""
        return len(self._unsaved)

    def _record(self, edit: Edit) -> None:
        self.history.push(edit)
        self._journal(edit)
        if self.item.state == "new":
            self.project.set_state(self.item.id, "in_progress")
            self.item = self.project.item(self.item.id)
        if self.frame is not None and self.frame_state != "annotated":
            self.set_frame_state("annotated")  # the person drew or corrected this frame

    def set_frame_state(self, state: str, reliability: float | None = None) -> None:
        """Record what this video frame's labels are (e.g. "propagated" with its reliability)."""
        if self.frame is None:
            raise ValueError("only a video frame's session has a frame state")
        self.project.set_frame_info(self.item.id, self.frame, state, reliability)
        self.frame_state = state

    def _journal(self, edit: Edit) -> None:
        """Persist ``edit`` (and any earlier refused ones), in order; raise if the disk refuses."""
        self._unsaved.append(edit)
        self._dirty = True
        self.flush()
        if self.project.journal_length(self.item.id, self.frame, self.layer) >= CHECKPOINT_EVERY:
            self.checkpoint()

    def flush(self) -> None:
        """Write the queued edits; on a full disk keep them queued and raise StorageFullError."""
        while self._unsaved:
            self.project.append_edit(self.item.id, self._unsaved[0],  # StorageFullError: kept
                                     frame=self.frame, layer=self.layer)
            self._unsaved.pop(0)

    def checkpoint(self) -> None:
        """Fold the journal into the stored mask (when switching items, closing, periodically)."""
        self.flush()
        if self._dirty:  # an item only looked at gets no mask (and is not exported)
            self.project.save_mask(self.item.id, self.labels, self.frame, self.layer)
            self._dirty = False

    def close(self) -> None:
        """Checkpoint and end the session (the project stays open)."""
        if self._stroke is not None:
            self.end_stroke()
        self.checkpoint()
