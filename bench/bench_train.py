"""Training throughput: SegStudio's loop against a bare PyTorch loop (not a test).

Run ``python bench/bench_train.py [--device cpu|cuda] [--steps N]``. Same model (U-Net,
base width 16, depth 3), same batch (8 patches of 128 x 128, one channel, two classes), same
in-memory data (16 real 256 x 256 crops of scikit-image's camera and coins with Otsu masks),
same optimiser (AdamW 1e-3) and loss (cross-entropy + Dice):

* ours: ``core.train.loop.train`` for one epoch of N steps, no validation split, timed whole
  (model build, preprocessing, random crops per step, one best + one last checkpoint written).
  "plain crops" turns augmentation off (the like-for-like figure); "augmented" adds flips,
  rotations, rescale and intensity jitter.
* baseline: the same model built by hand, pre-cut batches of tensors already in memory, a
  ``for`` loop of forward / loss / backward / step; nothing written.

Images per second = N x batch / seconds; medians of 3 runs after one warm-up step each.
Target: baseline / ours <= 1.1 (plain crops).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from skimage import data, filters

from core.annotation.classes import LabelClass
from core.models.registry import get_model
from core.train import TrainDataset, TrainSample
from core.train.loop import TrainConfig, make_loss, train

BATCH = 8
PATCH = 128
KWARGS = {"base_channels": 16, "depth": 3}
REPEATS = 3
TARGET = 1.1


def samples() -> list[TrainSample]:
    out = []
    for name, image in (("camera", data.camera()), ("coins", data.coins())):
        mask = (image > filters.threshold_otsu(image)).astype(np.uint8)
        for i in range(8):
            top = (i * 37) % (image.shape[0] - 256)
            left = (i * 53) % (image.shape[1] - 256)
            out.append(TrainSample(f"{name}{i}", image[top:top + 256, left:left + 256],
                                   mask[top:top + 256, left:left + 256]))
    return out


def ours(dataset: TrainDataset, steps: int, device: str, augment: bool) -> float:
    with tempfile.TemporaryDirectory() as folder:
        config = TrainConfig("unet", Path(folder) / "best.pt", model_kwargs=KWARGS, epochs=1,
                             batch_size=BATCH, patch=PATCH, lr=1e-3, device=device,
                             val_fraction=0.0, steps_per_epoch=steps, augment=augment,
                             schedule="none")
        warm = TrainConfig(**{**config.__dict__, "steps_per_epoch": 1})
        train(warm, dataset)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train(config, dataset)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def baseline(dataset: TrainDataset, steps: int, device: str) -> float:
    dev = torch.device(device)
    model = get_model("unet", num_classes=2, in_channels=1, **KWARGS).to(dev).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = make_loss("ce+dice")
    rng = np.random.default_rng(0)
    images = [(s.image.astype(np.float32) / 255 - 0.5) / 0.5 for s in dataset.samples]
    batches = []
    for _ in range(min(steps, 8)):
        picks = rng.integers(len(images), size=BATCH)
        top, left = rng.integers(256 - PATCH + 1, size=2)
        x = np.stack([images[i][None, top:top + PATCH, left:left + PATCH] for i in picks])
        y = np.stack([dataset.samples[i].labels[top:top + PATCH, left:left + PATCH]
                      for i in picks]).astype(np.int64)
        batches.append((torch.from_numpy(x).to(dev), torch.from_numpy(y).to(dev)))

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(*batches[0])  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(steps):
        step(*batches[i % len(batches)])
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    dataset = TrainDataset([LabelClass(0, "background", (0, 0, 0)),
                            LabelClass(1, "object", (255, 0, 0))], samples())
    print(f"device {args.device} ({torch.get_num_threads()} threads), torch {torch.__version__}; "
          f"U-Net {KWARGS}, batch {BATCH} x 1 x {PATCH} x {PATCH}, {args.steps} steps, "
          f"median of {REPEATS}")
    runs: dict[str, list[float]] = {"baseline": [], "ours, plain crops": [],
                                    "ours, augmented": []}
    for _ in range(REPEATS):
        torch.manual_seed(0)
        runs["baseline"].append(baseline(dataset, args.steps, args.device))
        runs["ours, plain crops"].append(ours(dataset, args.steps, args.device, False))
        runs["ours, augmented"].append(ours(dataset, args.steps, args.device, True))
    base = statistics.median(runs["baseline"])
    for name, times in runs.items():
        seconds = statistics.median(times)
        print(f"{name:<20} {args.steps * BATCH / seconds:8.1f} images/s  "
              f"({seconds:.3f} s)  x{seconds / base:.3f} of baseline")
    ratio = statistics.median(runs["ours, plain crops"]) / base
    print(f"overhead (plain crops) x{ratio:.3f}: {'OK' if ratio <= TARGET else 'ABOVE'} "
          f"target x{TARGET}")


if __name__ == "__main__":
    main()
