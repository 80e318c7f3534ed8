"""Turn mouse and keys on the canvas into EditSession calls: brush, eraser, fill, polygon, pan.

The controller is the canvas's input handler (:meth:`ImageCanvas.set_input_handler`): the canvas's
viewport event filter offers it every mouse event, in image coordinates, before pyqtgraph sees it.
The controller consumes the left button whenever a painting tool is active (so a brush drag never
pans) and leaves it to the ViewBox for the pan tool and while Space is held; middle- and right-
drags always pan. After every edit it redraws only the edit's bounding box.

Errors the session raises (:class:`~core.errors.SegStudioError`, e.g. StorageFullError when the
journal cannot be written) are reported through ``error``; the edit stays in memory and the whole
overlay is redrawn, since the failed call does not return the edit's box.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, Qt, Signal
from PySide6.QtGui import QKeyEvent, QMouseEvent

from app.canvas.viewer import ImageCanvas
from core.annotation.edits import Edit
from core.annotation.session import EditSession
from core.annotation.tools import PaintRule, Point
from core.errors import SegStudioError

TOOLS = ("brush", "eraser", "fill", "polygon", "pan", "crosshair", "select")
DRAG_PX = 5.0  # a select press that moves farther than this (screen px) draws a line
PAINT_TOOLS = ("brush", "eraser")
MIN_BRUSH, MAX_BRUSH = 1, 512
BRUSH_STEP = 1.15  # [ and ] scale the brush by about 15%, by at least one pixel
CLOSE_DISTANCE_PX = 6.0  # a click this close (screen px) to the first vertex closes a polygon
SAME_POINT_PX = 1.5  # a click this close to the last vertex adds nothing (double-click press)
POLYGON_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Escape, Qt.Key.Key_Backspace)


class ToolController(QObject):
    """The current tool and its settings, driving the EditSession of the open item.

    A volume shows several canvases (axial, coronal, sagittal): :meth:`add_canvas` listens to
    more. A press on a canvas makes it the active one (``canvas_activated``, before the press
    is handled, so the owner can point the session at that canvas's slice); a running stroke
    or polygon on the previous canvas is committed or dropped first.

    Args:
        canvas: The canvas to listen to and redraw.
        session: Returns the current EditSession, or None when no item is open.
        parent: QObject parent.

    Signals:
        edited(Edit): After each completed edit: stroke end, fill, polygon, undo, redo.
        tool_changed(str): The tool changed (one of :data:`TOOLS`).
        brush_size_changed(int): The brush diameter changed (pixels).
        error(str): The session refused or could not save an edit; a message to show.
        canvas_activated(ImageCanvas): A press landed on another canvas than the last one.
        cursor_placed(float, float): The crosshair tool clicked or dragged at image (x, y) of
            the active canvas.
    """

    edited = Signal(object)
    canvas_activated = Signal(object)
    cursor_placed = Signal(float, float)
    picked = Signal(float, float, bool)  # the select tool clicked at (x, y); Ctrl held
    line_drawn = Signal(float, float, float, float)  # the select tool dragged a line
    tool_changed = Signal(str)
    brush_size_changed = Signal(int)
    error = Signal(str)

    def __init__(self, canvas: ImageCanvas, session: Callable[[], EditSession | None],
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._canvas = canvas
        self._session = session
        self._tool = "brush"
        self._class_index = 1
        self._brush_size = 10
        self._preserve = False
        self._left_held = False  # we consumed a left press: its moves and release are ours too
        self._stroke_session: EditSession | None = None  # set while a brush/eraser drag runs
        self._polygon: list[Point] = []
        # (image point, screen position, Ctrl held) of a select press
        self._select_start: tuple[Point, object, bool] | None = None
        self._canvases: list[ImageCanvas] = []
        self.add_canvas(canvas)
        self._show_tool()

    def add_canvas(self, canvas: ImageCanvas) -> None:
        """Take the input of one more canvas (another view of the same item)."""
        self._canvases.append(canvas)
        canvas.set_input_handler(_CanvasBinding(self, canvas))
        self._show_tool_on(canvas)

    @property
    def canvas(self) -> ImageCanvas:
        """The active canvas: the one pressed last."""
        return self._canvas

    def activate(self, canvas: ImageCanvas) -> None:
        """Make ``canvas`` the active one (finishing work on the previous one first)."""
        if canvas is self._canvas:
            return
        self.finish_pending()
        self._canvas = canvas
        self.canvas_activated.emit(canvas)

    # -- state ---------------------------------------------------------------------------------------
    @property
    def tool(self) -> str:
        return self._tool

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}; use one of {', '.join(TOOLS)}")
        if tool == self._tool:
            return
        self.finish_pending()
        self._tool = tool
        self._show_tool()
        self.tool_changed.emit(tool)

    @property
    def class_index(self) -> int:
        return self._class_index

    def set_class_index(self, index: int) -> None:
        self._class_index = int(index)

    @property
    def brush_size(self) -> int:
        """Brush diameter in image pixels (the radius painted is half of it)."""
        return self._brush_size

    def set_brush_size(self, size: int) -> None:
        size = min(max(int(size), MIN_BRUSH), MAX_BRUSH)
        if size == self._brush_size:
            return
        self._brush_size = size
        self._show_tool()
        self.brush_size_changed.emit(size)

    def grow_brush(self) -> None:
        self.set_brush_size(max(self._brush_size + 1, round(self._brush_size * BRUSH_STEP)))

    def shrink_brush(self) -> None:
        self.set_brush_size(min(self._brush_size - 1, round(self._brush_size / BRUSH_STEP)))

    @property
    def preserve_others(self) -> bool:
        return self._preserve

    def set_preserve_others(self, preserve: bool) -> None:
        """Brush/fill/polygon paint only background and the own class; eraser erases only it."""
        self._preserve = bool(preserve)

    def polygon_points(self) -> list[Point]:
        return list(self._polygon)

    def rule(self) -> PaintRule:
        """What the current tool writes."""
        value = 0 if self._tool == "eraser" else self._class_index
        return PaintRule(value, self._preserve, self._class_index)

    # -- actions (also for menus and shortcuts) ------------------------------------------------------
    def finish_pending(self) -> None:
        """Commit a running stroke and drop an unfinished polygon (before switching item/tool)."""
        if self._stroke_session is not None:
            self._end_stroke()
        self.cancel_polygon()

    def close_polygon(self) -> Edit | None:
        """Fill the polygon clicked so far (3 points at least) and start a new one."""
        points, self._polygon = self._polygon, []
        self._canvas.clear_polygon_preview()
        session = self._session()
        if session is None or len(points) < 3:
            return None
        return self._finish(lambda: session.polygon(points, self.rule()))

    def cancel_polygon(self) -> None:
        self._polygon = []
        self._canvas.clear_polygon_preview()

    def remove_last_point(self) -> None:
        self._polygon = self._polygon[:-1]
        self._canvas.set_polygon_preview(self._polygon)

    def undo(self) -> Edit | None:
        return self._history_step(undo=True)

    def redo(self) -> Edit | None:
        return self._history_step(undo=False)

    # -- canvas input (CanvasInputHandler) -----------------------------------------------------------
    def canvas_mouse_event(self, event: QMouseEvent, x: float, y: float) -> bool:
        kind = event.type()
        left = event.button() == Qt.MouseButton.LeftButton
        if kind in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonDblClick):
            if not left or self._tool == "pan" or self._canvas.space_held:
                return False  # pyqtgraph pans (middle/right, pan tool, Space+left)
            self._left_held = True
            self._press(event, x, y, kind == QEvent.Type.MouseButtonDblClick)
            return True
        if kind == QEvent.Type.MouseMove:
            if self._tool == "polygon" and self._polygon:
                self._canvas.set_polygon_preview(self._polygon, (x, y))
            if self._left_held and self._stroke_session is not None:
                self._stroke_to(x, y)
            elif self._left_held and self._tool == "crosshair":
                self.cursor_placed.emit(x, y)
            elif self._left_held and self._select_start is not None:
                self._canvas.set_polygon_preview([self._select_start[0]], (x, y))
            return self._left_held
        if kind == QEvent.Type.MouseButtonRelease and left and self._left_held:
            self._left_held = False
            if self._stroke_session is not None:
                self._end_stroke()
            if self._select_start is not None:
                self._finish_select(x, y, event.position())
            return True
        return False

    def canvas_key_event(self, event: QKeyEvent) -> bool:
        key = event.key()
        polygon_key = bool(self._polygon) and key in POLYGON_KEYS
        if event.type() == QEvent.Type.ShortcutOverride:
            return polygon_key  # claim Enter/Esc/Backspace from window shortcuts mid-polygon
        if polygon_key:
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self.close_polygon()
            elif key == Qt.Key.Key_Escape:
                self.cancel_polygon()
            else:
                self.remove_last_point()
            return True
        if key == Qt.Key.Key_BracketLeft:
            self.shrink_brush()
            return True
        if key == Qt.Key.Key_BracketRight:
            self.grow_brush()
            return True
        return False

    # -- internals ---------------------------------------------------------------------------------------
    def _show_tool(self) -> None:
        for canvas in self._canvases:
            self._show_tool_on(canvas)

    def _show_tool_on(self, canvas: ImageCanvas) -> None:
        canvas.set_pan_mode(self._tool == "pan")
        radius = self._brush_size / 2 if self._tool in PAINT_TOOLS else None
        canvas.set_brush_cursor(radius)

    def _press(self, event: QMouseEvent, x: float, y: float, double: bool) -> None:
        session = self._session()
        if self._tool == "crosshair":
            self.cursor_placed.emit(x, y)
        elif self._tool == "select":
            ctrl = bool(event.modifiers() & Qt.KeyboardModifier.ControlModifier)
            self._select_start = ((x, y), event.position(), ctrl)
        elif self._tool == "polygon":
            self._polygon_click(event, x, y, double)
        elif session is None:
            return
        elif self._tool in PAINT_TOOLS:
            if self._stroke_session is not None:  # a lost release: commit that stroke first
                self._end_stroke()
            self._stroke_session = session
            radius = self._brush_size / 2
            self._redraw(self._run(lambda: session.begin_stroke((x, y), radius, self.rule())))
        elif self._tool == "fill":
            self._finish(lambda: session.fill((x, y), self.rule()))

    def _finish_select(self, x: float, y: float, pos) -> None:
        (x0, y0), start, ctrl = self._select_start
        self._select_start = None
        self._canvas.clear_polygon_preview()
        if math.hypot(pos.x() - start.x(), pos.y() - start.y()) > DRAG_PX:
            self.line_drawn.emit(x0, y0, x, y)
        else:
            self.picked.emit(x0, y0, ctrl)

    def _stroke_to(self, x: float, y: float) -> None:
        session, radius = self._stroke_session, self._brush_size / 2
        self._redraw(self._run(lambda: session.continue_stroke((x, y), radius, self.rule())))

    def _end_stroke(self) -> None:
        session, self._stroke_session = self._stroke_session, None
        edit = self._run(session.end_stroke)  # the steps are drawn already: nothing to redraw
        if edit is not None:
            self.edited.emit(edit)

    def _polygon_click(self, event: QMouseEvent, x: float, y: float, double: bool) -> None:
        if double and len(self._polygon) >= 3:
            self.close_polygon()
            return
        if self._polygon:
            here = event.position()
            if len(self._polygon) >= 3 and self._screen_distance(self._polygon[0], here) \
                    <= CLOSE_DISTANCE_PX:
                self.close_polygon()
                return
            if self._screen_distance(self._polygon[-1], here) <= SAME_POINT_PX:
                return
        self._polygon.append((x, y))
        self._canvas.set_polygon_preview(self._polygon, (x, y))

    def _screen_distance(self, point: Point, pos) -> float:
        mapped = self._canvas.map_image_to_widget(*point)
        return math.hypot(mapped.x() - pos.x(), mapped.y() - pos.y())

    def _history_step(self, undo: bool) -> Edit | None:
        session = self._session()
        if session is None:
            return None
        self.finish_pending()
        return self._finish(session.undo if undo else session.redo)

    def _finish(self, action: Callable[[], Edit | None]) -> Edit | None:
        """Run a one-shot edit, redraw its box and announce it."""
        edit = self._run(action)
        if edit is not None:
            self._redraw(edit)
            self.edited.emit(edit)
        return edit

    def _redraw(self, edit: Edit | None) -> None:
        session = self._session()
        if edit is None or session is None:
            return
        box = session.plane_box(edit)  # the edit's box in the slice this canvas shows
        if box is not None:
            self._canvas.refresh_labels(box)

    def _run(self, action: Callable[[], Edit | None]) -> Edit | None:
        try:
            return action()
        except SegStudioError as err:
            # The labels may have changed before saving failed, and the edit's box is lost.
            self._canvas.refresh_labels()
            self.error.emit(str(err))
            return None


class _CanvasBinding:
    """One canvas's input, handed to the controller: a press activates that canvas; other
    events of a canvas that is not the active one go to pyqtgraph (hover, pan, zoom)."""

    def __init__(self, controller: ToolController, canvas: ImageCanvas) -> None:
        self._controller = controller
        self._canvas = canvas

    def canvas_mouse_event(self, event: QMouseEvent, x: float, y: float) -> bool:
        controller = self._controller
        if event.type() in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonDblClick) \
                and event.button() == Qt.MouseButton.LeftButton:
            controller.activate(self._canvas)
        if controller.canvas is not self._canvas:
            return False
        return controller.canvas_mouse_event(event, x, y)

    def canvas_key_event(self, event: QKeyEvent) -> bool:
        if self._controller.canvas is not self._canvas and event.key() in POLYGON_KEYS:
            return False
        return self._controller.canvas_key_event(event)
