"""Learning curve: Dice on held-out real images after training on 1, 2, 4, 8 labelled images
(not a test).

Run ``python bench/bench_learning_curve.py [--device cpu|cuda] [--steps N] [--sizes 1,2,4,8]
[--tasks vessels,objects] [--seeds 0,1,2]``. Everything comes from pictures shipped inside
scikit-image (no download). Two tasks, one table each:

* vessels: scikit-image's retina photograph (green channel, half size: 706 x 706) cut into a
  4 x 4 grid of 144 x 144 crops of its centre; the mask is the retinal vessel tree, found by the
  Sato ridge filter (dark ridges, sigmas 1-3) thresholded by Otsu inside the field of view (the
  DRIVE-style task: thin structures, 7 % of the pixels). The crops on the dark squares of the
  checkerboard are the training pool, those on the light squares the held-out set: disjoint
  pixels, each held-out crop framed by training crops, as in a project where some images of a
  series are labelled and the rest must be segmented.
* objects: 14 pictures (coins, a photo, a deep-field sky, printed text, a cell, a rocket, a
  cup, a tissue section, a cat, a clock...), grey, about 256 pixels a side, with the "bright
  object" mask of each: the Otsu threshold of the lightly smoothed (Gaussian sigma 1) picture.
  Eight form the training pool (coins, the sky and the tissue each give a disjoint crop to
  either side), six others are held out.

A row "n" trains on the first n of the pool, in the fixed order printed (each set holds the
smaller ones); the held-out set is only ever scored: never trained on, never used to pick a
checkpoint. Each row trains ``core.train.loop.train`` as the app does (U-Net base width 8,
depth 3; batch 4 patches of 96 x 96; AdamW 3e-3, cross-entropy + Dice, cosine schedule over 4
epochs, augmentation on; no validation split) for the SAME number of optimiser steps whatever n
is, from the SAME initial weights (``torch.manual_seed`` before the model is built) and crop
seed, so the rows differ by the data, not by compute: with fewer images each one is seen more
often ("passes" = patches drawn per training image). The last checkpoint is scored by
``core.train.loop.evaluate_model``: whole held-out images through the inference engine, one
confusion matrix over all of them.

Columns: n images; epochs x steps per epoch (default 480 steps: 14-35 s a row on 2 CPU
threads, 2.5-4.5 minutes in all); passes; training seconds (model build, steps, checkpoints; not the
scoring; after one warm-up step); mean Dice (background and object); object Dice; its sample
standard deviation over ``--seeds`` (each figure is the mean over the seeds); mean IoU; mean
Dice / the untrained model's. The "0" rows are the floor: "untrained" is the initial weights
every row starts from, "majority" predicts the pool's commonest class everywhere (object Dice
0). How to read it: object Dice rising with n says more labels still pay at this budget; a flat
curve says the task is learnt from one image (or that the step budget, not the data, is the
limit: rerun with more --steps). The objects task is mostly a local brightness rule and is flat
from n = 1 (object Dice about 0.77); the vessels task gains from 1 to 8 images (about 0.81 to
0.87-0.90) but not at every step: with this fixed order, 2 and 4 crops sit level with 1. One
seed is noisy: between seeds, and between CPU and CUDA (mixed precision), a row's object Dice
moves by up to about 0.04, so read 1 against 8, not 2 against 4, or pass ``--seeds 0,1,2``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from scipy import ndimage
from skimage import color, data, filters, morphology, transform

from core.annotation.classes import LabelClass
from core.models.loading import load_model
from core.train import SegmentationScores, TrainDataset, TrainSample, scores_from_confusion
from core.train.loop import TrainConfig, TrainError, evaluate_model, train
from core.train.metrics import confusion_matrix

KWARGS = {"base_channels": 8, "depth": 3}
BATCH = 4
PATCH = 96
LR = 3e-3
EPOCHS = 4
STEPS = 480
CLASSES = [LabelClass(0, "background", (0, 0, 0)), LabelClass(1, "object", (255, 0, 0))]


@dataclasses.dataclass
class Task:
    """A training pool (in the order rows take it) and a held-out set, disjoint."""

    name: str
    what: str
    pool: list[TrainSample]
    held_out: list[TrainSample]

    def subset(self, n: int) -> TrainDataset:
        return TrainDataset(list(CLASSES), self.pool[:n])

    def held_out_set(self) -> TrainDataset:
        return TrainDataset(list(CLASSES), self.held_out)


# -- vessels: crops of the retina ----------------------------------------------------------------
RETINA_CROP = 144
RETINA_GRID = 4


def vessels_task() -> Task:
    """Retinal vessels (Sato ridge filter, Otsu in the field of view) on a 4 x 4 grid of crops
    of the retina's green channel; dark checkerboard squares train, light ones are held out."""
    green = transform.rescale(data.retina()[..., 1] / 255.0, 0.5, anti_aliasing=True)
    ridges = filters.sato(green, sigmas=[1, 2, 3], black_ridges=True)
    field = ndimage.binary_erosion(green > 0.1, morphology.disk(5))
    vessels = field & (ridges > filters.threshold_otsu(ridges[field]))
    image = (green * 255).astype(np.uint8)
    margin = (image.shape[0] - RETINA_GRID * RETINA_CROP) // 2
    train, held = [], []
    for row in range(RETINA_GRID):
        for col in range(RETINA_GRID):
            top, left = margin + row * RETINA_CROP, margin + col * RETINA_CROP
            window = np.s_[top:top + RETINA_CROP, left:left + RETINA_CROP]
            sample = TrainSample(f"retina r{row}c{col}", np.ascontiguousarray(image[window]),
                                 vessels[window].astype(np.uint8))
            (train if (row + col) % 2 == 0 else held).append(sample)
    order = np.random.default_rng(0).permutation(len(train))
    return Task("vessels", "retinal vessels in crops of one fundus photograph",
                [train[i] for i in order], held)


# -- objects: Otsu foreground of 14 pictures -----------------------------------------------------
def _grey(loader: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    return lambda: (color.rgb2gray(loader()[..., :3]) * 255).astype(np.uint8)


# name: (loader of the whole grey picture, scale, (top, left, height, width) of the crop or
# None). Three pictures give two disjoint crops each, one to train on and one held out.
SOURCES: dict[str, tuple[Callable[[], np.ndarray], float, tuple[int, int, int, int] | None]] = {
    "coins left": (data.coins, 1.0, (0, 0, 303, 192)),
    "coins right": (data.coins, 1.0, (0, 192, 303, 192)),
    "hubble top left": (_grey(data.hubble_deep_field), 0.5, (0, 0, 218, 250)),
    "hubble bottom right": (_grey(data.hubble_deep_field), 0.5, (218, 250, 218, 250)),
    "ihc top left": (_grey(data.immunohistochemistry), 1.0, (0, 0, 256, 256)),
    "ihc bottom right": (_grey(data.immunohistochemistry), 1.0, (256, 256, 256, 256)),
    "camera": (data.camera, 0.5, None),
    "cell": (data.cell, 0.38, None),
    "rocket": (_grey(data.rocket), 0.4, None),
    "text": (data.text, 0.57, None),
    "coffee": (_grey(data.coffee), 0.42, None),
    "astronaut": (_grey(data.astronaut), 0.5, None),
    "clock": (data.clock, 0.64, None),
    "chelsea": (_grey(data.chelsea), 0.57, None),
}
OBJECTS_TRAIN = ("coins left", "hubble top left", "ihc top left", "camera", "cell", "rocket",
                 "text", "coffee")
OBJECTS_HELD_OUT = ("coins right", "hubble bottom right", "ihc bottom right", "astronaut",
                    "clock", "chelsea")


def bright_object_sample(name: str) -> TrainSample:
    """The grey picture ``name`` of ``SOURCES`` (scaled, then cropped), with the Otsu mask of the
    Gaussian-smoothed crop (1 = brighter than the threshold)."""
    loader, scale, box = SOURCES[name]
    image = loader()
    if scale != 1:
        image = (transform.rescale(image, scale, anti_aliasing=True) * 255).astype(np.uint8)
    if box is not None:
        top, left, height, width = box
        image = image[top:top + height, left:left + width]
    smooth = filters.gaussian(image, sigma=1, preserve_range=True)
    mask = (smooth > filters.threshold_otsu(smooth)).astype(np.uint8)
    return TrainSample(name, np.ascontiguousarray(image), mask)


def objects_task() -> Task:
    """The "bright object" (Otsu) masks of 14 pictures: 8 in the pool, 6 held out."""
    return Task("objects", "Otsu foreground of 14 different pictures",
                [bright_object_sample(name) for name in OBJECTS_TRAIN],
                [bright_object_sample(name) for name in OBJECTS_HELD_OUT])


TASKS: dict[str, Callable[[], Task]] = {"vessels": vessels_task, "objects": objects_task}


# -- training and scoring ------------------------------------------------------------------------
def majority_scores(task: Task) -> SegmentationScores:
    """Scores of predicting the training pool's commonest class on every held-out pixel."""
    counts = np.bincount(np.concatenate([s.labels.ravel() for s in task.pool]),
                         minlength=len(CLASSES))
    matrix = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    for sample in task.held_out:
        matrix += confusion_matrix(sample.labels, np.full_like(sample.labels, counts.argmax()),
                                   len(CLASSES))
    return scores_from_confusion(matrix, [c.name for c in CLASSES])


def untrained_scores(held_out: TrainDataset, device: str, seed: int) -> SegmentationScores:
    """Scores of the initial weights every trained row starts from (``train`` builds the model
    with the same call after the same ``torch.manual_seed``)."""
    torch.manual_seed(seed)
    loaded = load_model("unet", num_classes=len(CLASSES), in_channels=1, **KWARGS)
    loaded = dataclasses.replace(loaded, classes=tuple(c.name for c in CLASSES))
    return evaluate_model(loaded, held_out, device=device)


def _config(folder: str, steps: int, device: str, seed: int, epochs: int = EPOCHS,
            ) -> TrainConfig:
    return TrainConfig("unet", Path(folder) / "best.pt", model_kwargs=KWARGS, epochs=epochs,
                       steps_per_epoch=steps // epochs, batch_size=BATCH, patch=PATCH, lr=LR,
                       device=device, val_fraction=0.0, seed=seed)


def warm_up(train_set: TrainDataset, device: str) -> None:
    """One step of training, so that imports and first-call set-up are not timed."""
    with tempfile.TemporaryDirectory() as folder:
        train(_config(folder, 1, device, 0, epochs=1), train_set)


def train_and_score(train_set: TrainDataset, held_out: TrainDataset, steps: int, device: str,
                    seed: int) -> tuple[SegmentationScores, float]:
    """Train on ``train_set`` for ``steps`` optimiser steps from the seeded initial weights;
    (held-out scores of the last checkpoint, training seconds)."""
    with tempfile.TemporaryDirectory() as folder:
        config = _config(folder, steps, device, seed)
        torch.manual_seed(seed)
        start = time.perf_counter()
        result = train(config, train_set)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        loaded = load_model("unet", weights=result.last_path)
        return evaluate_model(loaded, held_out, device=device), seconds


# -- the table -----------------------------------------------------------------------------------
HEADER = (f"{'n images':>13} | {'epochs':>9} | {'passes':>6} | {'seconds':>7} | {'mean Dice':>9} "
          f"| {'object Dice':>11} | {'± seeds':>7} | {'mean IoU':>8} | vs untrained")


def _row(label: str, schedule: str, passes: str, seconds: str,
         scores: list[SegmentationScores], floor: float) -> str:
    """One line: the means over the seeds' scores, and the spread (sample standard deviation)
    of the object Dice when there are several."""
    mean_dice = float(np.mean([s.mean_dice for s in scores]))
    objects = [s.dice[1] for s in scores]
    spread = f"{np.std(objects, ddof=1):7.3f}" if len(scores) > 1 else f"{'-':>7}"
    return (f"{label:>13} | {schedule:>9} | {passes:>6} | {seconds:>7} | {mean_dice:9.3f} | "
            f"{np.mean(objects):11.3f} | {spread} | "
            f"{np.mean([s.mean_iou for s in scores]):8.3f} | x{mean_dice / floor:.2f}")


def learning_curve(task: Task, sizes: list[int], steps: int, device: str,
                   seeds: list[int]) -> None:
    """Print the table of ``task``; every figure is the mean over ``seeds``."""
    held_out = task.held_out_set()
    pixels = np.concatenate([s.labels.ravel() for s in task.held_out])
    print(f"\n{task.name}: {task.what}")
    print(f"training pool (in order): {', '.join(s.name for s in task.pool)}")
    print(f"held out ({len(task.held_out)}): {', '.join(s.name for s in task.held_out)} "
          f"({pixels.size} pixels, {pixels.mean():.1%} object)")
    print(HEADER)
    untrained = [untrained_scores(held_out, device, seed) for seed in seeds]
    floor = float(np.mean([s.mean_dice for s in untrained]))
    print(_row("0 (untrained)", "-", "-", "-", untrained, floor))
    print(_row("0 (majority)", "-", "-", "-", [majority_scores(task)], floor))
    for n in sizes:
        scores, seconds = [], []
        for seed in seeds:
            try:
                result = train_and_score(task.subset(n), held_out, steps, device, seed)
            except TrainError as error:
                raise SystemExit(f"{task.name}: training on {n} images failed: {error}"
                                 ) from None
            scores.append(result[0])
            seconds.append(result[1])
        print(_row(str(n), f"{EPOCHS} x {steps // EPOCHS}", f"{steps * BATCH / n:.0f}",
                   f"{np.mean(seconds):.1f}", scores, floor), flush=True)


def _numbers(option: str, text: str) -> list[int]:
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"{option} takes whole numbers separated by commas, not {text!r}"
                         ) from None
    if not numbers:
        raise SystemExit(f"{option} needs at least one number")
    return numbers


def _sizes(text: str, largest: int) -> list[int]:
    sizes = _numbers("--sizes", text)
    if any(n < 1 or n > largest for n in sizes):
        raise SystemExit(f"--sizes must be between 1 and {largest} (the training pools), "
                         f"not {text!r}")
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=STEPS,
                        help=f"optimiser steps per row, a multiple of {EPOCHS} (default {STEPS})")
    parser.add_argument("--sizes", default="1,2,4,8", help="training set sizes (default 1,2,4,8)")
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated, of {', '.join(TASKS)} (default all)")
    parser.add_argument("--seeds", default="0",
                        help="initial weights and crops; several (0,1,2) average the rows")
    args = parser.parse_args()
    sizes = _sizes(args.sizes, 8)
    seeds = _numbers("--seeds", args.seeds)
    names = [name.strip() for name in args.tasks.split(",") if name.strip()]
    unknown = [name for name in names if name not in TASKS]
    if unknown or not names:
        raise SystemExit(f"--tasks takes {', '.join(TASKS)}, not {args.tasks!r}")
    if args.steps < EPOCHS or args.steps % EPOCHS:
        raise SystemExit(f"--steps must be a positive multiple of {EPOCHS}, not {args.steps}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible to this torch build")
    print(f"device {args.device} ({torch.get_num_threads()} threads), torch {torch.__version__}; "
          f"U-Net {KWARGS}, batch {BATCH} x 1 x {PATCH} x {PATCH}, lr {LR}, {args.steps} steps "
          f"per row, seeds {seeds}")
    tasks = [TASKS[name]() for name in names]
    warm_up(tasks[0].subset(1), args.device)
    for task in tasks:
        learning_curve(task, sizes, args.steps, args.device, seeds)


if __name__ == "__main__":
    main()
