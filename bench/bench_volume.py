"""DICOM series loading and slice switching for a 512x512x300 CT volume (not a test).

Run ``python bench/bench_volume.py``. Everything is timed in the same process against a named
baseline:

1. Loading: a 300-slice series is written once into a temporary folder from the real 512x512 CT
   slice ``693_UNCI.dcm`` (pydicom-data; no network), with ImagePositionPatient z in 1.25 mm
   steps, new SOPInstanceUIDs, one shared SeriesInstanceUID and shuffled file names.
   ours: ``core.io.dicom.load_series(folder)``; baseline: a plain pydicom loop (``dcmread``
   every file, sort by IPP z, ``np.stack`` of ``pixel_array * slope + intercept`` as int16).
   Times are medians of 3 (the files are in the OS cache after being written). Peak memory is
   measured with tracemalloc (numpy allocations are traced) against the raw volume size.
2. Slice switch in the viewer: offscreen Qt, an ImageCanvas of 900x900 showing the volume
   fitted; one switch = ``set_image(volume[z])`` (automatic levels, as the main window does) +
   ``set_labels(labels[z], palette)`` + the viewport repaint, run synchronously inside the timed
   block by processing the pending events (exactly one paint per switch, counted; an extra
   explicit ``viewport().repaint()`` would paint twice). Baseline: a bare pyqtgraph ImageItem in
   a 900x900 GraphicsView, ``setImage(volume[z], levels=fixed)`` + the same repaint.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pydicom
import pyqtgraph as pg
from _paint_counter import PaintCounter
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from PySide6.QtWidgets import QApplication

from app.canvas.viewer import ImageCanvas
from core.annotation.classes import LabelClass, palette_rgb, voc_color
from core.io.dicom import load_series

SLICES = 300
STEP_MM = 1.25
LOAD_REPEATS = 3
VIEW = (900, 900)
SWITCHES = 100
LOAD_TARGET = 1.2  # ours / plain pydicom loop
MEMORY_TARGET = 1.2  # peak / raw volume size
SWITCH_TARGET_MS = 16.0


# --- 1. loading ---------------------------------------------------------------------------


def write_series(folder: Path) -> None:
    source = get_testdata_file("693_UNCI.dcm", download=False)
    if source is None:
        raise SystemExit("pydicom-data does not hold 693_UNCI.dcm")
    ds = pydicom.dcmread(source)
    series_uid = generate_uid()
    x, y, z0 = (float(v) for v in ds.ImagePositionPatient)
    names = [f"IM{i:05d}.dcm" for i in range(SLICES)]
    random.Random(7).shuffle(names)  # file order (sorted names) != slice order
    for k in range(SLICES):
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [x, y, round(z0 + k * STEP_MM, 3)]
        ds.SliceLocation = round(z0 + k * STEP_MM, 3)
        ds.save_as(folder / names[k], enforce_file_format=True)


def plain_load(folder: Path) -> np.ndarray:
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    return np.stack([
        (d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept)).astype(np.int16)
        for d in datasets
    ])


def ours_load(folder: Path) -> np.ndarray:
    return load_series(folder).array


def timed(fn, folder: Path) -> float:
    start = time.perf_counter()
    fn(folder)
    return time.perf_counter() - start


def peak_bytes(fn, folder: Path) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        result = fn(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak


def bench_loading(folder: Path) -> tuple[np.ndarray, list[tuple[str, bool]]]:
    start = time.perf_counter()
    write_series(folder)
    print(f"[1. loading] {SLICES} files of 512x512 int16 written in "
          f"{time.perf_counter() - start:.1f} s (shuffled names, IPP z every {STEP_MM} mm)")
    volume = ours_load(folder)
    plain = plain_load(folder)
    same = volume.shape == plain.shape and np.array_equal(volume, plain)
    raw = volume.nbytes
    print(f"  result: {volume.shape} {volume.dtype}, {raw / 2**20:.0f} MiB raw; "
          f"identical to the plain loop: {same}")
    del plain
    ours_t, plain_t = [], []
    for _ in range(LOAD_REPEATS):  # interleaved so both see the same cache state
        ours_t.append(timed(ours_load, folder))
        plain_t.append(timed(plain_load, folder))
    ours_s, plain_s = statistics.median(ours_t), statistics.median(plain_t)
    ratio = ours_s / plain_s
    print(f"  ours (load_series):      {ours_s:6.2f} s  (median of {LOAD_REPEATS}; "
          f"{', '.join(f'{t:.2f}' for t in ours_t)})")
    print(f"  baseline (pydicom loop): {plain_s:6.2f} s  (median of {LOAD_REPEATS}; "
          f"{', '.join(f'{t:.2f}' for t in plain_t)})")
    print(f"  ours/baseline: {ratio:.2f}x (target <= {LOAD_TARGET}x)")
    ours_peak = peak_bytes(ours_load, folder)
    plain_peak = peak_bytes(plain_load, folder)
    mem = ours_peak / raw
    print(f"  peak traced memory: ours {ours_peak / 2**20:.0f} MiB = {mem:.2f}x the raw volume "
          f"(target <= ~{MEMORY_TARGET}x); baseline {plain_peak / 2**20:.0f} MiB = "
          f"{plain_peak / raw:.2f}x")
    checks = [
        (f"load time ours/baseline {ratio:.2f}x <= {LOAD_TARGET}x", ratio <= LOAD_TARGET),
        (f"load peak memory {mem:.2f}x <= ~{MEMORY_TARGET}x", mem <= MEMORY_TARGET + 0.05),
        ("loaded volume identical to the plain loop", same),
    ]
    return volume, checks


# --- 2. slice switching -------------------------------------------------------------------


def make_labels(shape: tuple[int, int, int]) -> np.ndarray:
    """A few blobs per slice whose size varies with z, so every slice has different labels."""
    depth, rows, cols = shape
    labels = np.zeros(shape, np.uint8)
    yy, xx = np.ogrid[:rows, :cols]
    for z in range(depth):
        r = 40 + 30 * np.sin(z / 25)
        labels[z][(yy - 200) ** 2 + (xx - 180) ** 2 < r * r] = 1
        labels[z][(yy - 330) ** 2 + (xx - 330) ** 2 < (r * 0.7) ** 2] = 2
        labels[z, 100 + z % 50 : 140 + z % 50, 300:420] = 3
    return labels


def settle(app: QApplication) -> None:
    app.processEvents()
    app.processEvents()


def switch_order() -> list[int]:
    """Scrolling through the middle of the volume, one slice per step (like a mouse wheel)."""
    start = SLICES // 2 - SWITCHES // 2
    return list(range(start, start + SWITCHES))


def bench_ours(app, volume, labels, palette) -> tuple[list[float], list[float], float]:
    canvas = ImageCanvas()
    canvas.resize(*VIEW)
    canvas.show()
    canvas.set_image(volume[0])
    canvas.set_labels(labels[0], palette)
    canvas.fit()
    settle(app)
    view = canvas.viewport()
    counter = PaintCounter()
    view.installEventFilter(counter)
    for z in range(1, 6):  # warm-up
        canvas.set_image(volume[z])
        canvas.set_labels(labels[z], palette)
        settle(app)
    counter.count = 0
    times, before_paint = [], []
    for z in switch_order():
        start = time.perf_counter()
        canvas.set_image(volume[z])
        canvas.set_labels(labels[z], palette)
        mid = time.perf_counter()
        settle(app)  # the queued scene update and the viewport repaint run here
        times.append((time.perf_counter() - start) * 1000)
        before_paint.append((mid - start) * 1000)
    paints = counter.count / SWITCHES
    canvas.close()
    return times, before_paint, paints


def bench_baseline(app, volume) -> tuple[list[float], float]:
    view = pg.GraphicsView(background=(32, 32, 32))
    view.resize(*VIEW)
    box = pg.ViewBox(lockAspect=True, invertY=True)
    view.setCentralItem(box)
    item = pg.ImageItem(axisOrder="row-major")
    box.addItem(item)
    levels = (-160.0, 240.0)
    item.setImage(volume[0], autoLevels=False, levels=levels)
    view.show()
    box.autoRange(padding=0)
    settle(app)
    viewport = view.viewport()
    counter = PaintCounter()
    viewport.installEventFilter(counter)
    for z in range(1, 6):
        item.setImage(volume[z], autoLevels=False, levels=levels)
        settle(app)
    counter.count = 0
    times = []
    for z in switch_order():
        start = time.perf_counter()
        item.setImage(volume[z], autoLevels=False, levels=levels)
        settle(app)
        times.append((time.perf_counter() - start) * 1000)
    paints = counter.count / SWITCHES
    view.close()
    return times, paints


def bench_switching(volume: np.ndarray) -> list[tuple[str, bool]]:
    app = QApplication.instance() or QApplication(sys.argv)
    labels = make_labels(volume.shape)
    classes = [LabelClass(0, "background", (0, 0, 0))]
    classes += [LabelClass(i, f"class {i}", voc_color(i)) for i in range(1, 4)]
    palette = palette_rgb(classes)
    ours, before_paint, ours_paints = bench_ours(app, volume, labels, palette)
    base, base_paints = bench_baseline(app, volume)
    ours_med, ours_p90 = statistics.median(ours), float(np.percentile(ours, 90))
    base_med, base_p90 = statistics.median(base), float(np.percentile(base, 90))
    print(f"\n[2. slice switch] {volume.shape[2]}x{volume.shape[1]} {volume.dtype} slices, "
          f"uint8 labels, view {VIEW[0]}x{VIEW[1]} fitted, {SWITCHES} switches, offscreen Qt")
    print(f"  ours (set_image + set_labels + paint): median {ours_med:6.2f} ms, "
          f"p90 {ours_p90:6.2f} ms ({ours_paints:.2f} viewport paints per switch; "
          f"set_image + set_labels before the paint {statistics.median(before_paint):.2f} ms)")
    print(f"  baseline (ImageItem.setImage + paint): median {base_med:6.2f} ms, "
          f"p90 {base_p90:6.2f} ms ({base_paints:.2f} viewport paints per switch)")
    print(f"  ours/baseline: {ours_med / base_med:.2f}x (median), {ours_p90 / base_p90:.2f}x (p90)")
    return [
        (f"slice switch median {ours_med:.2f} ms < {SWITCH_TARGET_MS:.0f} ms",
         ours_med < SWITCH_TARGET_MS),
        (f"slice switch p90 {ours_p90:.2f} ms < {SWITCH_TARGET_MS:.0f} ms",
         ours_p90 < SWITCH_TARGET_MS),
    ]


def bench_window(folder: Path, volume: np.ndarray) -> list[tuple[str, bool]]:
    """The whole main window in the three-view layout: one wheel step in the axial view (the
    coronal and sagittal crosshairs move) and one in the coronal view (a 512x300 strided slice,
    drawn with 1.25 mm rows). Same baseline as section 2, same switches."""
    from app.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv)
    window = MainWindow()
    window.resize(1400, 900)
    window.show()
    window.open_paths([str(folder)])
    window.actions_by_id["view_three"].trigger()
    window.workspace.session.labels[...] = make_labels(volume.shape)
    window._on_prediction(None)  # re-attach the labels written behind the session's back
    settle(app)
    results = {}
    for axis, name in ((0, "axial"), (1, "coronal")):
        count = volume.shape[axis]
        steps = [count // 2 - SWITCHES // 2 + i for i in range(SWITCHES)]
        for index in steps[:5]:
            window.workspace.set_position(axis, index)
            settle(app)
        times = []
        for index in steps:
            start = time.perf_counter()
            window.workspace.set_position(axis, index)
            settle(app)
            times.append((time.perf_counter() - start) * 1000)
        results[name] = times
    window.workspace.session.labels[...] = 0  # nothing to save: the bench painted no edit
    window.close()
    base, _ = bench_baseline(app, volume)
    base_med = statistics.median(base)
    print("\n[3. slice switch in the main window, three views]")
    checks = []
    for name, times in results.items():
        med, p90 = statistics.median(times), float(np.percentile(times, 90))
        print(f"  {name:8s} wheel step: median {med:6.2f} ms, p90 {p90:6.2f} ms "
              f"({med / base_med:.2f}x the bare ImageItem baseline, {base_med:.2f} ms)")
        checks.append((f"{name} view slice switch in the window median {med:.2f} ms < "
                       f"{SWITCH_TARGET_MS:.0f} ms", med < SWITCH_TARGET_MS))
    return checks


def main() -> None:
    print(f"{os.cpu_count()} CPUs, pydicom {pydicom.__version__}, numpy {np.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        volume, checks = bench_loading(Path(tmp))
        checks += bench_window(Path(tmp), volume)
    checks += bench_switching(volume)
    print()
    for text, ok in checks:
        print(f"  {'met    ' if ok else 'NOT met'}  {text}")


if __name__ == "__main__":
    main()
