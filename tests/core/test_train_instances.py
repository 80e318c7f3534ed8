"""Fine-tuning Mask R-CNN on real instances (the coins) and training action models on labelled
video segments: a few steps on the CPU, checkpoints that load back and predict."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from coins_instances import make_project, write_images
from skimage import data

from core.annotation.segments import Segment
from core.project.store import Project

MASKRCNN = "maskrcnn_resnet50_fpn"
SMALL = {"min_size": 128, "max_size": 128}  # the detector's own resize: keep the images small


pytestmark = pytest.mark.usefixtures("two_torch_threads")


@pytest.fixture(scope="module")
def coins_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("coins")
    project = make_project(folder / "project", write_images(folder / "images"))
    project.close()
    return folder / "project"


# -- Mask R-CNN ------------------------------------------------------------------------------------
def test_flip_augmentation_mirrors_image_masks_and_boxes_together(coins_project: Path) -> None:
    """The flipped pair equals the targets computed from the mirrored image and instance map
    (the boxes' pixel edges x0..x1 become W - x1..W - x0)."""
    from core.train.instances import (
        hflip,
        image_tensor,
        instance_dataset_from_project,
        instance_targets,
    )

    sample = instance_dataset_from_project(coins_project, max_side=128).samples[0]
    image, target = hflip(image_tensor(sample.image),
                          instance_targets(sample.instance_map, sample.table, 6))
    mirrored = instance_targets(sample.instance_map[:, ::-1].copy(), sample.table, 6)
    def by_box(boxes: torch.Tensor) -> list[int]:
        return [int(i) for i in np.lexsort(boxes.numpy().T[::-1])]  # x0, then y0, x1, y1

    order, mine = by_box(mirrored["boxes"]), by_box(target["boxes"])
    assert torch.equal(image, image_tensor(sample.image[:, ::-1].copy()))
    assert torch.equal(target["boxes"][mine], mirrored["boxes"][order])
    assert torch.equal(target["masks"][mine], mirrored["masks"][order])
    assert torch.equal(target["labels"][mine], mirrored["labels"][order])


def test_targets_are_what_torchvision_expects(coins_project: Path) -> None:
    from core.train.instances import instance_dataset_from_project, instance_targets

    dataset = instance_dataset_from_project(coins_project, max_side=128)
    assert [s.name for s in dataset.samples] == ["coins"]  # camera has no instance map
    assert dataset.class_names[:3] == ["background", "coin", "big coin"]
    assert dataset.class_names[5] == "dark" and len(dataset.class_names) == 6
    sample = dataset.samples[0]
    assert max(sample.instance_map.shape) == 128
    target = instance_targets(sample.instance_map, sample.table, len(dataset.class_names))
    n = len(target["labels"])
    assert n >= 10 and target["labels"].dtype == torch.int64
    assert set(target["labels"].tolist()) <= {1, 2}
    assert target["boxes"].shape == (n, 4) and target["boxes"].dtype == torch.float32
    assert target["masks"].shape == (n, *sample.instance_map.shape)
    assert target["masks"].dtype == torch.uint8
    boxes = target["boxes"]
    assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
    # each box holds its mask exactly
    mask = target["masks"][0].numpy().astype(bool)
    ys, xs = np.nonzero(mask)
    assert boxes[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_maskrcnn_fine_tunes_and_its_checkpoint_predicts(coins_project: Path,
                                                          tmp_path: Path) -> None:
    from core.inference.instances import InstanceSettings, predict_instances
    from core.models.loading import load_model
    from core.train.instances import (
        LOSS_KEYS,
        InstanceTrainConfig,
        evaluate_instance_model,
        instance_dataset_from_project,
        train_instances,
    )

    dataset = instance_dataset_from_project(coins_project, max_side=128)
    config = InstanceTrainConfig(MASKRCNN, tmp_path / "mrcnn.pt", model_kwargs=SMALL, epochs=1,
                                 steps_per_epoch=2, batch_size=1, lr=1e-3, device="cpu",
                                 val_fraction=0)
    epochs = []
    result = train_instances(config, dataset, on_epoch=epochs.append)
    assert result.stopped == "completed" and result.epochs_run == 1 and len(epochs) == 1
    row = result.history[0]
    for key in ("loss", *LOSS_KEYS):
        assert np.isfinite(row[key]), key
    assert row["loss"] == pytest.approx(sum(row[k] for k in LOSS_KEYS), rel=1e-4)
    assert result.best_path == config.out and config.out.is_file()
    assert config.last_path.is_file()

    loaded = load_model(MASKRCNN, weights=config.out)
    assert list(loaded.classes) == dataset.class_names
    assert loaded.model_kwargs == SMALL and loaded.meta["epoch"] == 1
    prediction = predict_instances(loaded, dataset.samples[0].image,
                                   InstanceSettings(score_threshold=0.0, device="cpu"))
    assert prediction.instance_map.shape == dataset.samples[0].instance_map.shape
    assert prediction.class_names == dataset.class_names
    scores = evaluate_instance_model(loaded, dataset.samples, device="cpu")
    assert scores.mask.ap is not None and 0.0 <= scores.mask.ap <= 1.0


def test_a_coco_folder_gives_the_same_instances(coins_project: Path, tmp_path: Path) -> None:
    from core.cli import main
    from core.train.instances import (
        instance_dataset_from_coco,
        instance_dataset_from_project,
        instance_targets,
    )

    assert main(["export", str(coins_project), "--format", "coco",
                 "--copy-originals", "--out", str(tmp_path / "coco")]) == 0
    coco = instance_dataset_from_coco(tmp_path / "coco", max_side=128)
    project = instance_dataset_from_project(coins_project, max_side=128)
    assert [s.name for s in coco.samples] == ["coins"]
    assert coco.class_names[:3] == project.class_names[:3]
    a = instance_targets(coco.samples[0].instance_map, coco.samples[0].table, 6)
    b = instance_targets(project.samples[0].instance_map, project.samples[0].table, 6)
    assert sorted(a["labels"].tolist()) == sorted(b["labels"].tolist())
    assert a["masks"].sum() == b["masks"].sum()


def test_instance_training_refuses_other_models(coins_project: Path, tmp_path: Path) -> None:
    from core.train.instances import (
        InstanceTrainConfig,
        instance_dataset_from_project,
        train_instances,
    )
    from core.train.loop import TrainError

    dataset = instance_dataset_from_project(coins_project, max_side=64)
    with pytest.raises(TrainError, match="not an instance model"):
        train_instances(InstanceTrainConfig("unet", tmp_path / "x.pt"), dataset)
    with pytest.raises(TrainError, match="optimizer"):
        InstanceTrainConfig(MASKRCNN, tmp_path / "x.pt", optimizer="adam")


# -- actions ---------------------------------------------------------------------------------------
LABELS = ["left", "right", "still"]
SIZE = (64, 48)  # width, height


def write_pan(path: Path, frames: int, direction: int) -> Path:
    source = data.astronaut()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 15.0, SIZE)
    assert writer.isOpened()
    for t in range(frames):
        x = 200 + direction * 4 * t
        rgb = np.ascontiguousarray(source[100:100 + SIZE[1], x:x + SIZE[0]])
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def video_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("actions")
    with Project.create(folder / "project") as project:
        for name, direction in (("a", -1), ("b", 1)):
            project.add_video(write_pan(folder / f"{name}.avi", 12, direction))
        project.set_action_labels(LABELS)
        items = {item.name: item for item in project.items()}
        project.save_segments(items["a"].id, [Segment(0, 5, "left"), Segment(6, 11, "still")])
        project.save_segments(items["b"].id, [Segment(0, 11, "right")])
    return folder / "project"


def test_topk_accuracy_on_hand_made_logits() -> None:
    from core.train.actions import topk_accuracy

    logits = torch.tensor([[0.1, 0.9, 0.0, 0.0, 0.0, 0.0],   # target 1: top-1
                           [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],   # target 4: rank 5 -> top-5 only
                           [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],   # target 5: rank 6 -> missed
                           [0.0, 0.0, 0.9, 0.8, 0.0, 0.0]])  # target 3: rank 2
    targets = torch.tensor([1, 4, 5, 3])
    assert topk_accuracy(logits, targets) == {1: 0.25, 5: 0.75}
    assert topk_accuracy(logits, targets, (2, 6)) == {2: 0.5, 6: 1.0}
    assert topk_accuracy(logits.numpy(), targets.numpy(), (1,)) == {1: 0.25}


def test_clips_follow_the_segments(video_project: Path) -> None:
    from core.train.actions import action_dataset_from_project, model_clip_spec

    spec = model_clip_spec("late_fusion_resnet18", frames=4)
    dataset = action_dataset_from_project(video_project, spec, stride=1)
    assert dataset.labels == LABELS and dataset.groups == 3
    by_label = {}
    for clip in dataset.clips:
        by_label.setdefault(clip.label, []).append(clip.frames)
    # a: 0-5 left (windows at 0 and 2), 6-11 still; b: 0-11 right (windows 0, 4, 8)
    assert by_label[0] == [(0, 1, 2, 3), (2, 3, 4, 5)]
    assert by_label[2] == [(6, 7, 8, 9), (8, 9, 10, 11)]
    assert by_label[1] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)]
    with pytest.raises(Exception, match="exactly 16 frames"):
        model_clip_spec("c3d", frames=4)


def test_action_model_trains_and_scores(video_project: Path, tmp_path: Path) -> None:
    from core.models.loading import load_model
    from core.train.actions import (
        ActionTrainConfig,
        action_dataset_from_project,
        train_actions,
    )

    config = ActionTrainConfig("late_fusion_resnet18", tmp_path / "act.pt", frames=4, stride=1,
                               epochs=2, batch_size=2, steps_per_epoch=1, lr=1e-3,
                               device="cpu", val_fraction=0.34)
    dataset = action_dataset_from_project(video_project, config.spec(), config.stride)
    progress = []
    result = train_actions(config, dataset, report=lambda d, t: progress.append((d, t)))
    assert progress == [(1, 2), (2, 2)]
    assert result.epochs_run == 2 and result.val_clips > 0 and result.train_clips > 0
    assert result.train_clips + result.val_clips == len(dataset)
    for row in result.history:
        assert np.isfinite(row["train_loss"]) and np.isfinite(row["val_loss"])
        assert 0.0 <= row["top1"] <= 1.0
        assert row["top5"] == 1.0  # 3 classes
    loaded = load_model("late_fusion_resnet18", weights=result.best_path)
    assert list(loaded.classes) == LABELS
    with torch.no_grad():
        out = loaded.module(torch.zeros(1, 4, 3, 112, 112))
    assert out.shape == (1, 3)
    meta = json.loads(json.dumps(loaded.meta))
    assert meta["clip_frames"] == 4 and meta["task"] == "action"


def test_one_c3d_step(video_project: Path) -> None:
    from core.models.loading import load_model
    from core.train.actions import (
        ClipLoader,
        action_dataset_from_project,
        action_step,
        model_clip_spec,
    )

    spec = model_clip_spec("c3d")
    dataset = action_dataset_from_project(video_project, spec, stride=1)
    assert all(len(c.frames) == 16 for c in dataset.clips)  # segments shorter: padded
    loaded = load_model("c3d", num_classes=len(LABELS))
    loader = ClipLoader(spec, spec.mean, spec.std)
    try:
        x, y = loader.batch(dataset.clips[:1])
    finally:
        loader.close()
    assert x.shape == (1, 3, 16, 112, 112)
    optimizer = torch.optim.SGD(loaded.module.parameters(), lr=1e-3)
    before = loaded.module.state_dict()["fc8.weight"].clone()
    loss = action_step(loaded.module, optimizer, x, y)
    assert np.isfinite(loss)
    assert not torch.equal(before, loaded.module.state_dict()["fc8.weight"])


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_trains_by_the_models_task(coins_project: Path, video_project: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import main

    common = ["--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "1", "--device", "cpu",
              "--val-fraction", "0"]
    assert main(["train", "--project", str(coins_project), "--items", "all", "--model",
                 MASKRCNN, "--max-side", "96", "--min-size", "96", "--lr", "0.001", *common,
                 "--out", str(tmp_path / "m.pt")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == MASKRCNN and summary["epochs_run"] == 1
    assert summary["best"] == str(tmp_path / "m.pt") and np.isfinite(
        summary["history"][0]["loss"])
    assert main(["train", "--project", str(video_project), "--model", "late_fusion_resnet18",
                 "--clip-frames", "4", "--clip-stride", "1", *common,
                 "--out", str(tmp_path / "a.pt")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["classes"] == LABELS and summary["train_clips"] == 7


def test_cli_refusals(coins_project: Path, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import main

    out = ["--out", str(tmp_path / "m.pt")]
    assert main(["train", "--data", str(tmp_path), "--format", "coco", "--model", "unet",
                 *out]) != 0
    assert "--format coco trains instance models" in capsys.readouterr().err
    assert main(["train", "--data", str(coins_project), "--model", "c3d", *out]) != 0
    assert "labelled video segments" in capsys.readouterr().err
    # --resume: a checkpoint of this model written by training only
    from core.models.loading import load_model, save_checkpoint

    unet = load_model("unet", num_classes=2, in_channels=1, base_channels=8, depth=2)
    foreign = save_checkpoint(tmp_path / "unet.pt", "unet", unet.module, ["a", "b"], 1, [0.5],
                              [0.5], {"base_channels": 8, "depth": 2})
    assert main(["train", "--project", str(coins_project), "--items", "all", "--model",
                 MASKRCNN, "--resume", str(foreign), *out]) != 0
    assert (f"checkpoint of unet, not {MASKRCNN}; resume with --model unet"
            in capsys.readouterr().err)
