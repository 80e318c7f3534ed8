"""Training semantic models on corrected labels (core.train, segstudio-cli train / evaluate
--model), on real images of scikit-image with threshold masks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data, filters
from test_cli import assert_one_error_line, run_cli

from core.annotation.classes import LabelClass
from core.export import export_project
from core.models.errors import WeightsMismatchError
from core.models.loading import load_model, read_checkpoint, save_checkpoint
from core.project.store import Project
from core.train import (
    Augmentation,
    TrainDataError,
    TrainDataset,
    TrainSample,
    class_weights,
    dataset_from_folder,
    dataset_from_project,
    segmentation_scores,
    split_dataset,
)
from core.train.loop import TrainConfig, TrainError, evaluate_model, train

CLASSES = [LabelClass(0, "background", (0, 0, 0)), LabelClass(1, "object", (255, 0, 0))]
UNET = {"base_channels": 8, "depth": 2}


def _images() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Real grey images with Otsu foreground masks (bright = object): coins and camera, each
    cut in two halves (four items)."""
    coins = data.coins()[:, :300]
    camera = data.camera()[::4, ::4]
    out = {}
    for name, image in (("coins", coins), ("camera", camera)):
        mask = image > filters.threshold_otsu(image)
        half = image.shape[1] // 2
        for side, cut in (("left", slice(0, half)), ("right", slice(half, None))):
            out[f"{name}_{side}"] = (np.ascontiguousarray(image[:, cut]),
                                     mask[:, cut].astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    images = root / "images"
    images.mkdir()
    samples = _images()
    for name, (image, _) in samples.items():
        Image.fromarray(image).save(images / f"{name}.png")
    with Project.create(root / "project", CLASSES) as project:
        project.add_items([images])
        for item in project.items():
            project.save_mask(item.id, samples[item.name][1])
            project.set_state(item.id, "done" if item.name != "camera_right" else "in_progress")
    return root / "project"


@pytest.fixture(scope="module")
def voc_dir(project_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("voc") / "voc"
    with Project.open(project_dir, read_only=True) as project:
        export_project(project, "voc", out, items=project.items())
    return out


def _config(tmp_path: Path, **kwargs) -> TrainConfig:
    options = {"model": "unet", "out": tmp_path / "best.pt", "model_kwargs": dict(UNET),
               "epochs": 2, "batch_size": 4, "patch": 64, "lr": 1e-2, "device": "cpu",
               "steps_per_epoch": 5, "val_fraction": 0.25, "loss": "ce+dice"}
    options.update(kwargs)
    return TrainConfig(**options)


# -- metrics -----------------------------------------------------------------------------------
def test_dice_and_iou_against_hand_computed_values() -> None:
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, -1]])
    pred = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [2, 2, 0, 1]])
    scores = segmentation_scores(truth, pred, 3, ["bg", "a", "b"])
    # class 0: TP 3, FP 2 (pred 0 at truth 1 and 2), FN 1 -> Dice 6/9, IoU 3/6
    # class 1: TP 3, FP 1, FN 1 -> Dice 6/8, IoU 3/5; class 2: TP 2, FP 0, FN 1 -> 4/5, 2/3
    assert np.allclose(scores.dice, [6 / 9, 6 / 8, 4 / 5])
    assert np.allclose(scores.iou, [3 / 6, 3 / 5, 2 / 3])
    assert scores.mean_dice == pytest.approx((6 / 9 + 6 / 8 + 4 / 5) / 3)
    assert scores.pixels == [4, 4, 3]  # the ignored pixel (-1) counts nowhere
    absent = segmentation_scores(np.zeros((2, 2), int), np.zeros((2, 2), int), 2)
    assert absent.dice[0] == 1.0 and np.isnan(absent.dice[1]) and absent.mean_dice == 1.0
    assert absent.to_json()["per_class"][1]["dice"] is None


# -- data --------------------------------------------------------------------------------------
def test_project_dataset_split_and_weights(project_dir: Path) -> None:
    done = dataset_from_project(project_dir)
    assert sorted(s.name for s in done.samples) == ["camera_left", "coins_left", "coins_right"]
    every = dataset_from_project(project_dir, items="all")
    assert len(every) == 4 and every.class_names == ["background", "object"]
    train_idx, val_idx = split_dataset(every, 0.25, seed=3)
    assert sorted(train_idx + val_idx) == [0, 1, 2, 3] and len(val_idx) >= 1
    assert split_dataset(every, 0.25, seed=3) == (train_idx, val_idx)  # fixed seed
    weights = class_weights([s.labels for s in every.samples], 2)
    fraction = np.mean(np.concatenate([s.labels.ravel() for s in every.samples]))
    assert weights[1] / weights[0] == pytest.approx((1 - fraction) / fraction)


def test_augmentation_moves_image_and_mask_together() -> None:
    rng = np.random.default_rng(0)
    labels = (np.arange(40 * 50).reshape(40, 50) % 7).astype(np.int64)
    image = np.stack([labels, labels * 2]).astype(np.float32)
    augment = Augmentation(32, scale=(1, 1), brightness=0.0, contrast=0.0)
    for _ in range(20):
        out_image, out_labels = augment(image, labels, rng)
        assert out_image.shape == (2, 32, 32) and out_labels.shape == (32, 32)
        assert np.array_equal(out_image[0], out_labels) and np.array_equal(out_image[1],
                                                                           out_labels * 2)
    blocks = np.kron(np.arange(20).reshape(4, 5) % 3, np.ones((10, 10))).astype(np.int64)
    rescaled = Augmentation(32, scale=(0.7, 1.4), brightness=0.0, contrast=0.0)
    for _ in range(10):  # bilinear image, nearest labels: they agree away from block edges
        out_image, out_labels = rescaled(blocks[None].astype(np.float32), blocks, rng)
        inside = out_labels >= 0  # padding: -1
        assert np.mean(np.rint(out_image[0][inside]) == out_labels[inside]) > 0.85
    small = Augmentation(64, flips=False, rotate90=False, scale=(1, 1))(image, labels, rng)
    assert (small[1][40:] == -1).all() and (small[1][:, 50:] == -1).all()  # padding ignored


# -- training --------------------------------------------------------------------------------------
def test_training_lowers_the_loss_and_checkpoints_reload_identically(
        project_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    dataset = dataset_from_project(project_dir, items="all")
    log = tmp_path / "log.csv"
    result = train(_config(tmp_path, epochs=4, log=log), dataset)
    losses = [row["train_loss"] for row in result.history]
    assert result.epochs_run == 4 and result.stopped == "completed"
    assert losses[-1] < 0.8 * losses[0], losses
    assert result.best_path == tmp_path / "best.pt" and result.best_epoch >= 1
    assert result.val_scores["mean_dice"] > 0.5
    lines = log.read_text().splitlines()
    assert lines[0] == "epoch,train_loss,val_loss,mean_dice,mean_iou,lr,seconds"
    assert len(lines) == 5
    # the last checkpoint is the module as it ended: same logits after reloading
    checkpoint = read_checkpoint(result.last_path)
    assert checkpoint.classes == ["background", "object"] and checkpoint.meta["epoch"] == 4
    loaded = load_model("unet", weights=result.last_path)
    x = torch.randn(1, 1, 64, 80)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), result.module(x))
    # inference reads it: the best checkpoint scores the data as evaluate_model says
    best = load_model("unet", weights=result.best_path)
    scores = evaluate_model(best, dataset, device="cpu")
    assert scores.mean_dice > 0.5


def test_resume_continues_from_the_saved_epoch(project_dir: Path, tmp_path: Path) -> None:
    dataset = dataset_from_project(project_dir, items="all")
    first = train(_config(tmp_path, epochs=2, optimizer="sgd", schedule="step", step_size=1),
                  dataset)
    saved = torch.load(first.last_path, weights_only=True)
    assert saved["training"]["epoch"] == 2 and saved["training"]["optimizer"]["state"]
    resumed = train(_config(tmp_path, epochs=3, optimizer="sgd", schedule="step", step_size=1,
                            resume=first.last_path, out=tmp_path / "again.pt"), dataset)
    assert resumed.epochs_run == 3 and [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == first.history
    assert resumed.history[2]["lr"] == pytest.approx(1e-2 * 0.1 ** 2)  # schedule state kept
    tuned = train(_config(tmp_path, epochs=1, weights=first.best_path,
                          out=tmp_path / "tuned.pt"), dataset)  # fine-tune: starts at epoch 1
    assert [r["epoch"] for r in tuned.history] == [1] and tuned.classes == first.classes
    other = _config(tmp_path, model="attention_unet", resume=first.last_path)
    with pytest.raises(TrainError, match="checkpoint of unet, not attention_unet"):
        train(other, dataset)


def test_cancel_mid_epoch_leaves_the_last_checkpoint_valid(project_dir: Path,
                                                            tmp_path: Path) -> None:
    dataset = dataset_from_project(project_dir, items="all")
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 7  # epoch 1 has 5 steps: cancel in the middle of epoch 2

    result = train(_config(tmp_path, epochs=3), dataset, cancel=cancel)
    assert result.stopped == "cancelled" and result.epochs_run == 1
    assert read_checkpoint(result.last_path).meta["epoch"] == 1
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_bad_inputs(project_dir: Path, tmp_path: Path) -> None:
    dataset = dataset_from_project(project_dir, items="all")
    with pytest.raises(TrainDataError, match="No training data"):
        train(_config(tmp_path), TrainDataset(CLASSES, [], [("x", "no mask")]))
    # classes the model does not know (fine-tuning a model of other classes)
    other = load_model("unet", num_classes=2, in_channels=1, **UNET)
    foreign = save_checkpoint(tmp_path / "foreign.pt", "unet", other.module, ["sky", "road"], 1,
                              [0.5], [0.5], UNET)
    with pytest.raises(TrainDataError, match=r"classes the model does not know: \['background'"):
        train(_config(tmp_path, weights=foreign), dataset)
    # a checkpoint of another architecture
    with pytest.raises(WeightsMismatchError, match="for unet"):
        train(_config(tmp_path, model="attention_unet", weights=foreign), dataset)
    # one class only: trains, with a warning
    image, labels = _images()["coins_left"]
    single = TrainDataset(CLASSES, [TrainSample("a", image, np.zeros_like(labels))])
    result = train(_config(tmp_path, epochs=1, steps_per_epoch=1), single)
    assert any("one class only" in w for w in result.warnings)
    # label values outside the classes
    bad = TrainDataset(CLASSES, [TrainSample("a", image, labels * 3)])
    with pytest.raises(TrainDataError, match=r"label values \[3\]"):
        train(_config(tmp_path), bad)
    with pytest.raises(TrainError, match="loss must be"):
        _config(tmp_path, loss="focal")


def test_folder_dataset_skips_a_mask_of_another_size(voc_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "voc"
    shutil.copytree(voc_dir, copy)
    mask = copy / "SegmentationClass" / "coins_left.png"
    Image.open(mask).crop((0, 0, 20, 20)).save(mask)
    found = dataset_from_folder(copy, "voc")
    assert len(found) == 3 and found.class_names == ["background", "object"]
    assert found.skipped[0][0] == "coins_left" and "20x20" in found.skipped[0][1]


# -- CLI ---------------------------------------------------------------------------------------------
def test_cli_train_and_evaluate_on_an_exported_voc_folder(voc_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    result = run_cli("train", "--data", voc_dir, "--format", "voc", "--model", "unet",
                     "--base-channels", "8", "--epochs", "2", "--batch-size", "2", "--patch",
                     "64", "--device", "cpu", "--steps-per-epoch", "2", "--out", out, "--log",
                     tmp_path / "log.csv")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["epochs_run"] == 2 and summary["best"] == str(out)
    assert summary["last"] == str(tmp_path / "model.last.pt") and summary["best_epoch"] >= 1
    assert "epoch 2: train loss" in result.stderr
    evaluated = run_cli("evaluate", "--model", "unet", "--weights", out, "--data", voc_dir,
                        "--device", "cpu", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    scores = json.loads(evaluated.stdout)
    assert [row["class"] for row in scores["per_class"]] == ["background", "object"]
    assert scores["samples"] == 4 and 0 <= scores["mean_dice"] <= 1
    table = run_cli("evaluate", "--model", "unet", "--weights", out, "--data", voc_dir,
                    "--device", "cpu")
    assert table.stdout.splitlines()[0].split() == ["class", "Dice", "IoU", "pixels"]


def test_cli_errors(voc_dir: Path, tmp_path: Path) -> None:
    assert_one_error_line(run_cli("evaluate"), 1, "evaluate needs a PROJECT")
    assert_one_error_line(run_cli("evaluate", "--data", voc_dir), 1, "need --model")
    empty = tmp_path / "empty"
    (empty / "SegmentationClass").mkdir(parents=True)
    result = run_cli("train", "--data", empty, "--model", "unet", "--out", tmp_path / "m.pt")
    assert_one_error_line(result, 1, "No training data")
    result = run_cli("train", "--data", voc_dir, "--model", "maskrcnn_resnet50_fpn", "--out",
                     tmp_path / "m.pt")
    assert_one_error_line(result, 1, "instances or --format coco, not voc")
    missing: subprocess.CompletedProcess[str] = run_cli("train", "--model", "unet", "--out", "x")
    assert missing.returncode == 2
