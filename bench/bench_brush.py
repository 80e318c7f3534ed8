"""Brush latency on a 4096x4096 image: partial overlay update vs. full recolour (not a test).

Run ``python bench/bench_brush.py``. Offscreen Qt; an ImageCanvas of 1200x900 shows a 4096x4096
grey image with its labels, fitted. Both paths are timed in the same process, view and zoom:

* ours: a real mouse-move event sent to the viewport -> ToolController -> EditSession stroke step
  -> ``canvas.refresh_labels(edit box)`` -> the view's repaint, run synchronously by processing
  the pending events (the repaint covers only the changed rectangles);
* baseline: the same EditSession stroke step, then the whole label map recoloured with the palette
  (``rgba = palette_rgba[labels]``), handed to a pyqtgraph ImageItem with ``setImage`` and the
  view repainted.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pyqtgraph as pg
from _paint_counter import PaintCounter
from PySide6.QtCore import QEvent, QPointF, QRectF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtWidgets import QApplication

from app.canvas.tools import ToolController
from app.canvas.viewer import ImageCanvas
from core.annotation.classes import LabelClass, palette_rgb, voc_color
from core.annotation.session import EditSession
from core.annotation.tools import PaintRule
from core.project.store import Project

SIZE = 4096
VIEW = (1200, 900)
BRUSH = 40  # diameter in image pixels
MOVES = 200
BASELINE_MOVES = 20
TARGET_MS = 8.0


def make_project(folder: Path) -> tuple[Project, EditSession]:
    import tifffile

    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    image = (127 + 60 * np.sin(xx / 97) * np.cos(yy / 131)).astype(np.uint8)
    path = folder / "big.tif"
    tifffile.imwrite(path, image)
    classes = [LabelClass(0, "background", (0, 0, 0))]
    classes += [LabelClass(i, f"class {i}", voc_color(i)) for i in range(1, 4)]
    project = Project.create(folder / "proj", classes)
    project.add_items([path])
    session = EditSession(project, project.items()[0])
    for i in range(1, 4):  # some existing labels, so the overlay has content everywhere
        session.labels[i * 900 : i * 900 + 700, 300 : SIZE - 300 : 2] = i
    return project, session, image


def stroke_points(canvas: ImageCanvas, count: int) -> list[QPointF]:
    """A wavy stroke inside the visible part of the image, 5-10 screen pixels per move."""
    width, height = VIEW
    points = []
    for i in range(count + 1):
        x = width * (0.15 + 0.7 * i / count)
        y = height * (0.5 + 0.35 * math.sin(i / 12))
        points.append(QPointF(x, y))
    return points


def send_move(widget, pos: QPointF) -> None:
    event = QMouseEvent(QEvent.Type.MouseMove, pos, QPointF(widget.mapToGlobal(pos)),
                        Qt.MouseButton.NoButton, Qt.MouseButton.LeftButton,
                        Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)


def send_button(widget, kind: QEvent.Type, pos: QPointF) -> None:
    held = Qt.MouseButton.LeftButton if kind == QEvent.Type.MouseButtonPress \
        else Qt.MouseButton.NoButton
    event = QMouseEvent(kind, pos, QPointF(widget.mapToGlobal(pos)), Qt.MouseButton.LeftButton,
                        held, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)


def settle(app: QApplication) -> None:
    app.processEvents()
    app.processEvents()


def bench_ours(app, canvas, session, counter) -> tuple[list[float], list[float], float]:
    tools = ToolController(canvas, lambda: session)
    tools.set_brush_size(BRUSH)
    view = canvas.viewport()
    points = stroke_points(canvas, MOVES)
    send_button(view, QEvent.Type.MouseButtonPress, points[0])
    settle(app)
    counter.count = 0
    times, step_only = [], []
    for pos in points[1:]:
        start = time.perf_counter()
        send_move(view, pos)
        mid = time.perf_counter()
        settle(app)  # the queued scene update and the viewport repaint run here
        times.append((time.perf_counter() - start) * 1000)
        step_only.append((mid - start) * 1000)
    paints = counter.count / MOVES
    send_button(view, QEvent.Type.MouseButtonRelease, points[-1])
    settle(app)
    return times, step_only, paints


def bench_baseline(app, canvas, session, counter) -> tuple[list[float], float]:
    palette_rgba = np.zeros((256, 4), np.uint8)
    palette_rgba[:, :3] = palette_rgb(session.project.classes())
    palette_rgba[1:, 3] = 128
    item = pg.ImageItem(axisOrder="row-major")
    item.setPos(-0.5, -0.5)
    item.setZValue(1)
    canvas.set_overlay_visible(False)
    canvas.view_box.addItem(item)
    item.setImage(palette_rgba[session.labels], autoLevels=False)
    settle(app)
    rule = PaintRule(2)
    points = [canvas.map_widget_to_image(p) for p in stroke_points(canvas, MOVES)]
    points = points[: BASELINE_MOVES + 1]
    session.begin_stroke(points[0], BRUSH / 2, rule)
    counter.count = 0
    times = []
    for point in points[1:]:
        start = time.perf_counter()
        session.continue_stroke(point, BRUSH / 2, rule)
        item.setImage(palette_rgba[session.labels], autoLevels=False)
        settle(app)
        times.append((time.perf_counter() - start) * 1000)
    paints = counter.count / BASELINE_MOVES
    session.end_stroke()
    canvas.view_box.removeItem(item)
    canvas.set_overlay_visible(True)
    canvas.refresh_labels()
    settle(app)
    return times, paints


def set_zoom(canvas: ImageCanvas, factor: float | None) -> None:
    """Fit (None) or show ``factor`` screen pixels per image pixel around the image centre."""
    if factor is None:
        canvas.fit()
        return
    width, height = VIEW[0] / factor, VIEW[1] / factor
    canvas.view_box.setRange(
        QRectF(SIZE / 2 - width / 2, SIZE / 2 - height / 2, width, height), padding=0.0
    )


def main() -> None:
    app = QApplication.instance() or QApplication(sys.argv)
    print(f"image {SIZE}x{SIZE} uint8, labels {SIZE}x{SIZE} uint8, view {VIEW[0]}x{VIEW[1]}, "
          f"brush {BRUSH} px, offscreen Qt, {os.cpu_count()} CPUs; times are medians per move")
    with tempfile.TemporaryDirectory() as tmp:
        project, session, image = make_project(Path(tmp))
        canvas = ImageCanvas()
        canvas.resize(*VIEW)
        canvas.show()
        canvas.set_image(image)
        canvas.set_labels(session.labels, palette_rgb(project.classes()))
        counter = PaintCounter()
        canvas.viewport().installEventFilter(counter)
        results = []
        for name, factor in (("fitted", None), ("1:1", 1.0), ("4x", 4.0)):
            set_zoom(canvas, factor)
            settle(app)
            zoom = canvas.zoom_factor()
            ours, step_only, paints = bench_ours(app, canvas, session, counter)
            base, base_paints = bench_baseline(app, canvas, session, counter)
            start = time.perf_counter()
            canvas.viewport().repaint()
            full_repaint = (time.perf_counter() - start) * 1000
            ours_ms, base_ms = statistics.median(ours), statistics.median(base)
            results.append((name, ours_ms))
            print(f"\n[{name}: {zoom:.3f} screen px per image px]")
            print(f"  ours:     {ours_ms:7.2f} ms over {MOVES} moves (p90 "
                  f"{np.percentile(ours, 90):.2f} ms; event+session+refresh before the paint "
                  f"{statistics.median(step_only):.2f} ms; {paints:.2f} viewport paints per move)")
            print(f"  baseline: {base_ms:7.2f} ms over {BASELINE_MOVES} moves (same stroke step, "
                  f"full recolour + ImageItem.setImage + repaint; {base_paints:.2f} paints/move)")
            print(f"  one full viewport repaint, for reference: {full_repaint:.2f} ms")
            print(f"  baseline/ours: {base_ms / ours_ms:.0f}x")
        canvas.close()
        session.close()
        project.close()
    worst = max(ms for _, ms in results)
    verdict = "met" if worst <= TARGET_MS else "NOT met"
    print(f"\ntarget {TARGET_MS:.0f} ms per brush move (worst zoom: {worst:.2f} ms): {verdict}")


if __name__ == "__main__":
    main()
