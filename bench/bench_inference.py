"""Inference engine speed against named baselines (not a test).

Run ``python bench/bench_inference.py`` (needs ``pip install -e .[bench]`` for MONAI). CPU only,
``torch.set_num_threads(2)``; every comparison is timed in this one process, its runs
interleaved (A, B, A, B, ...) after a warm-up, and reported as the ratio of medians:

1. ``engine.predict`` / the bare model forward on the same preprocessed input: a U-Net
   (base 32, depth 4) on a 512 x 512 RGB photo that fits in one tile. What the engine adds
   (preprocessing, softmax, argmax, confidence) must stay small. Target <= 1.05.
2. SegStudio's ``sliding_window`` / MONAI's ``sliding_window_inference``: same small
   fully-convolutional model, 2048 x 2048 input, window 256, overlap 0.25, gaussian blending,
   batch 4, both stitching on the CPU. Target <= 1.0. The forward dominates both, so this
   mostly shows that the stitching adds nothing. Then the outputs: against MONAI given our
   importance map (same grid, same weights: should be float rounding), and each against the
   whole-image forward, the seam-free answer for a model with a 9-pixel receptive field. Both
   use a gaussian of sigma = window / 8, but MONAI clamps the 2-D map at 1e-3 while ours floors
   each axis' factor: where two windows both fall below MONAI's clamp (window corners inside
   the overlaps, strips along the image border) MONAI weighs them equally, and a window's edge
   pixels, computed without context, leak into the result.
3. The sliding-window patch classifier (registered as ``patch_classifier``) / an FCN of similar
   depth and width, both run by the engine on a 256 x 256 image: how much the patch-by-patch
   classifier recomputes (the lecture's claim that FCNs share the work of overlapping patches).
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from skimage import data, transform
from torch import nn

from core.inference.engine import InferenceEngine, InferenceSettings
from core.inference.postprocess import decode_logits
from core.inference.preprocess import prepare_input
from core.inference.tiling import gaussian_importance_map, sliding_window
from core.models.loading import LoadedModel, default_normalisation

THREADS = 2
CPU = torch.device("cpu")


def interleaved(runs: dict[str, Callable[[], object]], repeats: int,
                cold: frozenset[str] = frozenset()) -> dict[str, float]:
    """Median seconds of each function, runs interleaved after one warm-up call each (except
    those named in ``cold``: slow runs with nothing to warm up)."""
    for name, fn in runs.items():
        if name not in cold:
            fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def report(title: str, times: dict[str, float], ours: str, baseline: str, target: float) -> None:
    ratio = times[ours] / times[baseline]
    verdict = "ok" if ratio <= target else "ABOVE TARGET"
    print(f"\n{title}")
    for name, seconds in times.items():
        print(f"  {name:<44} {seconds * 1000:9.1f} ms (median)")
    print(f"  ratio {ours} / {baseline}: {ratio:.3f}  (target <= {target}: {verdict})")


class SmallFCN(nn.Module):
    """``layers`` 3x3 conv + ReLU of ``width`` channels and a 1x1 head: (N, C, H, W) -> (N, K, H, W)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, layers: int = 4,
                 width: int = 16) -> None:
        super().__init__()
        body: list[nn.Module] = []
        channels = in_channels
        for _ in range(layers):
            body += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
        self.body = nn.Sequential(*body)
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


# -- 1 ------------------------------------------------------------------------------------------
def bench_engine_overhead() -> None:
    torch.manual_seed(0)
    engine = InferenceEngine(InferenceSettings(device="cpu", tile_size=512))
    loaded = engine.load("unet", num_classes=2, in_channels=3)
    image = data.astronaut()  # 512 x 512 x 3 uint8
    x = prepare_input(image, 3, loaded.mean, loaded.std)

    def bare() -> torch.Tensor:
        with torch.inference_mode():
            return loaded.module(x)

    times = interleaved({"engine.predict (U-Net, 512x512, one tile)":
                         lambda: engine.predict(loaded, image),
                         "bare forward": bare}, repeats=11)
    report("1. Engine overhead on a whole-image run", times,
           "engine.predict (U-Net, 512x512, one tile)", "bare forward", 1.05)
    # The engine's own steps alone: the ratio above moves by a few % from run to run (the
    # forward's allocations), this says how much of it is the engine.
    logits = bare()
    steps = interleaved({"preprocess": lambda: prepare_input(image, 3, loaded.mean, loaded.std),
                         "postprocess": lambda: decode_logits(logits.clone())}, repeats=11)
    own = steps["preprocess"] + steps["postprocess"]
    print(f"  the engine's own steps: preprocess {steps['preprocess'] * 1000:.1f} ms + postprocess "
          f"{steps['postprocess'] * 1000:.1f} ms = {own / times['bare forward']:.1%} of the forward")


# -- 2 ------------------------------------------------------------------------------------------
def bench_sliding_window() -> None:
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    model = SmallFCN().eval()
    big = transform.resize(data.camera(), (2048, 2048), order=1, preserve_range=True)
    x = prepare_input(big.astype(np.uint8), 1, (0.5,), (0.25,))
    window, overlap, batch = 256, 0.25, 4
    our_map = torch.from_numpy(gaussian_importance_map(window))

    def ours() -> torch.Tensor:
        with torch.inference_mode():
            return sliding_window(x, model, window, overlap, batch, CPU, "gaussian")

    def monai(weight_map: torch.Tensor | None = None) -> torch.Tensor:
        with torch.inference_mode():
            out = sliding_window_inference(x, (window, window), batch, model, overlap=overlap,
                                           mode="gaussian", sigma_scale=0.125, sw_device=CPU,
                                           device=CPU, roi_weight_map=weight_map)
        return torch.as_tensor(out)

    times = interleaved({"SegStudio sliding_window": ours,
                         "MONAI sliding_window_inference": monai}, repeats=7)
    report(f"2. Tiled inference, 2048x2048, window {window}, overlap {overlap}, gaussian, "
           f"batch {batch}, 4-layer FCN of width 16", times,
           "SegStudio sliding_window", "MONAI sliding_window_inference", 1.0)
    result = ours()
    with torch.inference_mode():
        whole = model(x)  # receptive field 9 pixels: the seam-free reference
    same_map = float((result - monai(our_map)).abs().max())
    seams_ours = float((result - whole).abs().max())
    seams_monai = float((monai() - whole).abs().max())
    print(f"  max |ours - MONAI given our importance map|: {same_map:.1e} (logits up to "
          f"{float(whole.abs().max()):.2f})")
    print(f"  max |tiled - whole-image forward|: ours {seams_ours:.1e}, MONAI's own gaussian "
          f"{seams_monai:.1e} ({seams_monai / seams_ours:.0f}x larger seams)")


# -- 3 ------------------------------------------------------------------------------------------
def bench_patch_classifier() -> None:
    torch.manual_seed(0)
    image = transform.resize(data.camera(), (256, 256), order=1, preserve_range=True)
    image = image.astype(np.uint8)
    engine = InferenceEngine(InferenceSettings(device="cpu", tile_size=256))
    from core.models.registry import get_model

    patch = get_model("patch_classifier", num_classes=2, in_channels=1).eval()
    fcn = matching_fcn(patch)
    source = ("registered patch_classifier, 33x33 patches, vs an FCN of its convolutions "
              "at full resolution, its linear layers as 1x1 convolutions")
    mean, std = default_normalisation(1)
    loaded = {label: LoadedModel(module, label, ("a", "b"), 1, mean, std)
              for label, module in (("patch classifier", patch), ("FCN", fcn))}
    times = interleaved({label: (lambda m=m: engine.predict(m, image, keep_probabilities=True))
                         for label, m in loaded.items()}, repeats=2,
                        cold=frozenset({"patch classifier"}))
    print(f"\n3. Sliding-window patch classifier vs FCN, 256x256 image through the engine\n"
          f"   ({source})")
    for name, seconds in times.items():
        print(f"  {name + f' ({count_params(loaded[name].module)} parameters)':<44} "
              f"{seconds * 1000:9.1f} ms (median)")
    print(f"  the patch classifier takes {times['patch classifier'] / times['FCN']:.0f}x the "
          f"FCN's time")



def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def matching_fcn(patch: nn.Module) -> nn.Module:
    """An FCN with the patch classifier's layers: its convolutions as 3x3 convolutions of the
    same widths at full resolution (no pooling: more work per pixel than the classifier's
    pooled layers, so the factor is if anything understated), its linear layers as 1x1
    convolutions. Random weights: it is timed, not compared."""
    layers: list[nn.Module] = []
    for module in patch.modules():
        if isinstance(module, nn.Conv2d):
            layers += [nn.Conv2d(module.in_channels, module.out_channels, 3, padding=1),
                       nn.ReLU(inplace=True)]
    linears = [m for m in patch.modules() if isinstance(m, nn.Linear)]
    channels = layers[-2].out_channels
    for linear in linears:
        layers += [nn.Conv2d(channels, linear.out_features, 1), nn.ReLU(inplace=True)]
        channels = linear.out_features
    return nn.Sequential(*layers[:-1]).eval()  # no ReLU after the logits


def main() -> None:
    torch.set_num_threads(THREADS)
    print(f"torch {torch.__version__}, {THREADS} threads, CPU")
    start = time.perf_counter()
    bench_engine_overhead()
    if importlib.util.find_spec("monai") is None:
        print("\n2. skipped: MONAI is not installed (pip install -e .[bench])")
    else:
        bench_sliding_window()
    bench_patch_classifier()
    print(f"\n(total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
