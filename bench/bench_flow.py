"""Optical flow speed on 640x480 frames against named baselines (not a test).

Run ``python bench/bench_flow.py``. Frames: a camera pan over skimage's ``coffee`` photograph
(400x600, scaled by 1.25 with bicubic interpolation to 500x750), a 640x480 window whose content
moves by (1.5, 0.7) px a frame (sub-pixel ``cv2.warpAffine``): real content, known motion, no
network. Everything is timed in this one process, runs interleaved (A, B, B, A, ...) after a
warm-up, and reported as medians:

1. ``compute_flow(grey0, grey1, "farneback")`` / the bare ``cv2.calcOpticalFlowFarneback``
   with the same parameters on the same grey frames. Target <= 1.05 (the wrapper adds parameter
   checks only). ``compute_flow`` on the RGB frames (with its grey conversion) is shown too.
2. ``compute_flow(..., "dis", {"preset": p})`` / a bare ``cv2.DISOpticalFlow`` of that preset,
   created once and reused, for each preset. Target <= 1.05.
3. Pictures of one 640x480 flow: ``flow_to_color`` / torchvision's ``flow_to_image`` (the
   same Middlebury coding, on one torch thread) with target <= 1.0; ``flow_arrows`` (step 16) + ``draw_arrows``
   and ``flow_magnitude_heat``, each against one 60 Hz display frame (16.7 ms).
4. Mask propagation per frame: ``propagate`` over 10 frames with the flows already in a
   ``FlowCache`` (what propagation adds: warping, the two forward-backward checks, the masks;
   target <= 10 ms a frame), and end to end with DIS "medium" flows computed on the way, against
   the two DIS flows each step needs (target <= 1.3x).
5. RAFT (information only): torchvision's raft_small with untrained weights (same cost as
   trained ones), 12 updates, on this machine's CPU.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np
from skimage import data

from core.flow import (
    FlowCache,
    FlowProvider,
    compute_flow,
    default_params,
    draw_arrows,
    flow_arrows,
    flow_magnitude_heat,
    flow_to_color,
    propagate,
)

SIZE = (640, 480)
VELOCITY = (1.5, 0.7)
REPEATS = 20
RATIO_TARGET = 1.05
COLOR_TARGET = 1.0  # ours / torchvision's flow_to_image
DISPLAY_FRAME_MS = 1000 / 60
PROPAGATION_OVERHEAD_MS = 10.0
PROPAGATION_TARGET = 1.3  # end to end / the two flows of a step
STEPS = 10


def pan_frames(count: int) -> list[np.ndarray]:
    image = cv2.resize(data.coffee(), None, fx=1.25, fy=1.25, interpolation=cv2.INTER_CUBIC)
    width, height = SIZE
    frames = []
    for t in range(count):
        move = np.float32([[1, 0, VELOCITY[0] * t], [0, 1, VELOCITY[1] * t]])
        moved = cv2.warpAffine(image, move, (image.shape[1], image.shape[0]),
                               flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.ascontiguousarray(moved[10:10 + height, 50:50 + width]))
    return frames


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = REPEATS) -> dict[str, float]:
    """Median seconds of each function, runs interleaved after one warm-up each.

    The order is reversed every other round (A B C, C B A, ...): with a fixed order the
    function that runs first after another pays that one's cache and allocator aftermath
    (measured: 8% on Farneback for two identical calls)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats):
        order = list(fns.items())
        for name, fn in order[::-1] if round_ % 2 else order:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.2f} ms"


def bench_farneback(frames: list[np.ndarray]) -> list[tuple[str, bool]]:
    rgb0, rgb1 = frames[0], frames[1]
    grey0, grey1 = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (rgb0, rgb1))
    p = default_params("farneback")
    args = (p["pyr_scale"], p["levels"], p["winsize"], p["iterations"], p["poly_n"],
            p["poly_sigma"], p["flags"])
    same = np.array_equal(compute_flow(grey0, grey1),
                          cv2.calcOpticalFlowFarneback(grey0, grey1, None, *args))
    t = interleaved({
        "ours": lambda: compute_flow(grey0, grey1, "farneback"),
        "bare": lambda: cv2.calcOpticalFlowFarneback(grey0, grey1, None, *args),
        "ours_rgb": lambda: compute_flow(rgb0, rgb1, "farneback"),
    })
    ratio = t["ours"] / t["bare"]
    print(f"[1. Farneback] {SIZE[0]}x{SIZE[1]}, {p}; identical to the bare call: {same}")
    print(f"  ours (compute_flow, grey):    {ms(t['ours'])}")
    print(f"  baseline (cv2 call, grey):    {ms(t['bare'])}")
    print(f"  ours on RGB (with cvtColor):  {ms(t['ours_rgb'])}")
    print(f"  ours/baseline: {ratio:.3f}x (target <= {RATIO_TARGET}x)")
    return [(f"Farneback compute_flow/cv2 {ratio:.3f}x <= {RATIO_TARGET}x", ratio <= RATIO_TARGET),
            ("Farneback flow identical to the bare cv2 call", same)]


def bench_dis(frames: list[np.ndarray]) -> list[tuple[str, bool]]:
    grey0, grey1 = (cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames[:2])
    checks = []
    print("\n[2. DIS] bare: one cv2.DISOpticalFlow per preset, created once and reused")
    for preset in ("ultrafast", "fast", "medium"):
        dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
        options = {"preset": preset}
        t = interleaved({
            "ours": lambda options=options: compute_flow(grey0, grey1, "dis", options),
            "bare": lambda dis=dis: dis.calc(grey0, grey1, None),
        }, repeats=3 * REPEATS)
        ratio = t["ours"] / t["bare"]
        print(f"  {preset:9s} ours {ms(t['ours'])}   baseline {ms(t['bare'])}   "
              f"ours/baseline {ratio:.3f}x (target <= {RATIO_TARGET}x)")
        checks.append((f"DIS {preset} compute_flow/cv2 {ratio:.3f}x <= {RATIO_TARGET}x",
                       ratio <= RATIO_TARGET))
    return checks


def bench_pictures(frames: list[np.ndarray]) -> list[tuple[str, bool]]:
    import torch
    from torchvision.utils import flow_to_image

    # One torch thread: interleaved with OpenCV's pool, torch's spinning OpenMP threads slowed
    # flow_to_image down 30x on 2 cores (215 ms instead of ~7).
    torch.set_num_threads(1)
    flow = compute_flow(frames[0], frames[1], "dis")
    tensor = torch.from_numpy(flow).permute(2, 0, 1)
    t = interleaved({
        "color": lambda: flow_to_color(flow),
        "torchvision": lambda: flow_to_image(tensor).permute(1, 2, 0).numpy(),
        "arrows": lambda: draw_arrows(frames[0], flow_arrows(flow, step=16, scale=4.0)),
        "arrow_grid": lambda: flow_arrows(flow, step=16, scale=4.0),
        "heat": lambda: flow_magnitude_heat(flow),
    })
    ratio = t["color"] / t["torchvision"]
    count = len(flow_arrows(flow, step=16))
    print(f"\n[3. pictures] one {SIZE[0]}x{SIZE[1]} DIS flow")
    print(f"  flow_to_color:                    {ms(t['color'])}   torchvision flow_to_image "
          f"{ms(t['torchvision'])}   ours/baseline {ratio:.2f}x (target <= {COLOR_TARGET}x)")
    print(f"  flow_arrows (step 16, {count} arrows): {ms(t['arrow_grid'])}; with draw_arrows "
          f"{ms(t['arrows'])} (target <= {DISPLAY_FRAME_MS:.1f} ms)")
    print(f"  flow_magnitude_heat (RGBA):       {ms(t['heat'])} "
          f"(target <= {DISPLAY_FRAME_MS:.1f} ms)")
    return [
        (f"flow_to_color/torchvision {ratio:.2f}x <= {COLOR_TARGET}x", ratio <= COLOR_TARGET),
        (f"flow_to_color {t['color'] * 1000:.1f} ms <= {DISPLAY_FRAME_MS:.1f} ms",
         t["color"] * 1000 <= DISPLAY_FRAME_MS),
        (f"arrows + drawing {t['arrows'] * 1000:.1f} ms <= {DISPLAY_FRAME_MS:.1f} ms",
         t["arrows"] * 1000 <= DISPLAY_FRAME_MS),
        (f"magnitude heat map {t['heat'] * 1000:.1f} ms <= {DISPLAY_FRAME_MS:.1f} ms",
         t["heat"] * 1000 <= DISPLAY_FRAME_MS),
    ]


def bench_propagation(frames: list[np.ndarray]) -> list[tuple[str, bool]]:
    width, height = SIZE
    ys, xs = np.indices((height, width))
    labels = (((xs - 300) / 120.0) ** 2 + ((ys - 240) / 90.0) ** 2 <= 1).astype(np.uint8)
    labels[((xs - 150) ** 2 + (ys - 120) ** 2) <= 40 ** 2] = 2
    cached = FlowProvider(frames, "dis", cache=FlowCache(max_mb=1024), source_id="pan")
    for t in range(STEPS):  # fill the cache: every field propagation asks for
        cached(t, 1)
        cached(t + 1, -1)

    def run(provider: FlowProvider) -> None:
        for _ in propagate(labels, provider, 0, STEPS):
            pass

    def two_flows() -> None:
        for t in range(STEPS):
            compute_flow(frames[t], frames[t + 1], "dis")
            compute_flow(frames[t + 1], frames[t], "dis")

    t = interleaved({
        "overhead": lambda: run(cached),
        "end_to_end": lambda: run(FlowProvider(frames, "dis")),
        "flows": two_flows,
    }, repeats=5)
    per = {name: seconds / STEPS for name, seconds in t.items()}
    ratio = per["end_to_end"] / per["flows"]
    print(f"\n[4. propagation] {STEPS} frames, 2 classes, DIS medium flows")
    print(f"  propagate with cached flows:          {ms(per['overhead'])} a frame "
          f"(target <= {PROPAGATION_OVERHEAD_MS:.0f} ms)")
    print(f"  propagate computing its flows:        {ms(per['end_to_end'])} a frame")
    print(f"  baseline, the 2 DIS flows of a step:  {ms(per['flows'])} a frame")
    print(f"  end to end / flows: {ratio:.2f}x (target <= {PROPAGATION_TARGET}x)")
    return [
        (f"propagation overhead {per['overhead'] * 1000:.1f} ms/frame <= "
         f"{PROPAGATION_OVERHEAD_MS:.0f} ms", per["overhead"] * 1000 <= PROPAGATION_OVERHEAD_MS),
        (f"propagation end to end / its flows {ratio:.2f}x <= {PROPAGATION_TARGET}x",
         ratio <= PROPAGATION_TARGET),
    ]


def bench_raft(frames: list[np.ndarray]) -> None:
    import torch

    from core.flow import raft

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    module = raft.build_raft("raft_small")
    t = interleaved({"raft": lambda: compute_flow(frames[0], frames[1], "raft_small",
                                                  device="cpu", weights=module)}, repeats=2)
    print(f"\n[5. RAFT, information] raft_small (untrained weights), 12 updates, CPU "
          f"({torch.get_num_threads()} threads): {ms(t['raft'])} a frame pair")


def main() -> None:
    print(f"{os.cpu_count()} CPUs, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), "
          f"numpy {np.__version__}")
    frames = pan_frames(STEPS + 1)
    checks = bench_farneback(frames)
    checks += bench_dis(frames)
    checks += bench_pictures(frames)
    checks += bench_propagation(frames)
    bench_raft(frames)
    print()
    for text, ok in checks:
        print(f"  {'met    ' if ok else 'NOT met'}  {text}")


if __name__ == "__main__":
    main()
