"""The shared epoch runner of instance and action training (core.train.runner): schedules, the
metrics CSV, resume, early stopping, cancel, and a batch that does not fit in memory (also in the
semantic loop), on real data: tiles of scikit-image's coins with their instances, and the pan
clips of astronaut. Tiny models (Mask R-CNN at 64 px with a frozen backbone, a one-block
TimeSformer on 32 px frames), one or two batches per epoch."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from coins_instances import coins_labels, coins_table
from skimage import data
from test_train import project_dir  # noqa: F401 (fixture)
from test_train_instances import LABELS, coins_project, video_project  # noqa: F401 (fixtures)

from core.models.checkpoint import read_checkpoint, save_checkpoint
from core.models.loading import load_model
from core.train.common import TrainError

MASKRCNN = "maskrcnn_resnet50_fpn"
SMALL_RCNN = {"min_size": 64, "max_size": 64, "trainable_backbone_layers": 0,
              "box_detections_per_img": 20}
TINY_VIDEO = {"frames": 4, "image_size": 32, "dim": 32, "depth": 1, "heads": 2}
INSTANCE_HEADER = ("epoch,loss,loss_classifier,loss_box_reg,loss_mask,loss_objectness,"
                   "loss_rpn_box_reg,mask_ap,box_ap,lr,seconds")
ACTION_HEADER = "epoch,train_loss,val_loss,top1,top5,lr,seconds"


@pytest.fixture(autouse=True)
def _seeded(two_torch_threads: None) -> None:
    torch.manual_seed(0)


def _rows(path: Path) -> tuple[str, list[dict[str, str]]]:
    text = path.read_text()
    return text.splitlines()[0], list(csv.DictReader(text.splitlines()))


def _out_of_memory_above(monkeypatch: pytest.MonkeyPatch, cls: type, limit: int,
                         count: Callable) -> list[int]:
    """``cls.forward`` raises torch.OutOfMemoryError for a batch of more than ``limit`` items
    (``count(args)``: the batch's size), as a GPU that is too small would; the training batch
    sizes it was given, in order."""
    original = cls.forward
    seen: list[int] = []

    def forward(self, *args, **kwargs):
        if self.training:
            seen.append(count(args))
            if seen[-1] > limit:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", forward)
    return seen


# -- instances -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coin_tiles():
    """The coins cut in four tiles (each with its coins), scaled to 64 pixels."""
    from core.train.instances import InstanceDataset, InstanceSample, _resized

    labels, image = coins_labels(), data.coins()
    table = coins_table(labels)
    h, w = labels.shape
    samples = []
    for number, (rows, cols) in enumerate(
            [(slice(0, h // 2), slice(0, w // 2)), (slice(0, h // 2), slice(w // 2, None)),
             (slice(h // 2, None), slice(0, w // 2)), (slice(h // 2, None), slice(w // 2, None))]):
        tile = InstanceSample(f"tile{number}", image[rows, cols], labels[rows, cols], table)
        samples.append(_resized(tile, 64))
    return InstanceDataset(["background", "coin", "big coin"], samples, source="coins")


def _instance_config(tmp_path: Path, **kwargs):
    from core.train.instances import InstanceTrainConfig

    options = {"out": tmp_path / "mrcnn.pt", "model_kwargs": dict(SMALL_RCNN), "epochs": 2,
               "batch_size": 1, "steps_per_epoch": 1, "lr": 1e-3, "device": "cpu",
               "val_fraction": 0.0, "warmup": 0}
    options.update(kwargs)
    return InstanceTrainConfig(MASKRCNN, **options)


def test_mask_rcnn_from_random_weights_needs_the_warm_up_and_clipping(coin_tiles,
                                                                      tmp_path: Path) -> None:
    """At the default SGD rate, Mask R-CNN from random weights diverges within two epochs
    without the warm-up and gradient clipping (a clear error); with the defaults the loss
    falls."""
    from core.train.instances import InstanceTrainConfig, train_instances

    defaults = InstanceTrainConfig(MASKRCNN, out=tmp_path / "d.pt")
    assert (defaults.lr, defaults.warmup, defaults.clip_grad) == (0.005, 100, 10.0)
    kwargs = {"model_kwargs": {"min_size": 64, "max_size": 64, "box_detections_per_img": 20},
              "epochs": 3, "batch_size": 2, "steps_per_epoch": 2, "lr": defaults.lr}
    with pytest.raises(TrainError, match="loss is not finite at epoch 2"):
        train_instances(_instance_config(tmp_path, warmup=0, clip_grad=None, **kwargs),
                        coin_tiles)
    torch.manual_seed(0)
    result = train_instances(_instance_config(tmp_path, warmup=100, clip_grad=10.0, **kwargs),
                             coin_tiles)
    losses = [row["loss"] for row in result.history]
    assert all(np.isfinite(losses)) and losses[2] < losses[1] < losses[0]
    # the warm-up covers the first epoch only (as torchvision's recipe): 1/1000 of the rate at
    # its last step, then the schedule's own rate
    assert result.history[0]["lr"] == pytest.approx(defaults.lr * (0.001 + 0.999 / 100))
    assert result.history[1]["lr"] == pytest.approx(defaults.lr * 0.75)  # cosine over 3


def test_warm_up_rises_linearly_and_hands_back_the_base_rate() -> None:
    from core.train.runner import _WarmUp

    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    warmup = _WarmUp(optimizer, 4)
    rates = []
    for _ in range(6):
        warmup.before_step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([0.1 * (0.001 + 0.999 * k / 4) for k in range(4)]
                                  + [0.1, 0.1])
    early = _WarmUp(optimizer, 10)
    early.before_step()
    early.finish()  # the first epoch ended before the warm-up did
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_instance_schedule_log_and_resume(coin_tiles, tmp_path: Path) -> None:
    from core.train.instances import train_instances

    log = tmp_path / "log.csv"
    first = train_instances(_instance_config(tmp_path, optimizer="adamw", schedule="step",
                                             step_size=1, gamma=0.5, log=log), coin_tiles)
    assert first.stopped == "completed" and first.epochs_run == 2 and first.log_path == log
    header, rows = _rows(log)
    assert header == INSTANCE_HEADER and [r["epoch"] for r in rows] == ["1", "2"]
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 5e-4])  # the step schedule
    assert all(np.isfinite(float(r["loss_mask"])) for r in rows)
    saved = torch.load(first.last_path, weights_only=True)
    assert saved["training"]["epoch"] == 2 and saved["meta"]["task"] == "instance"
    assert {s["step"].item() for s in saved["training"]["optimizer"]["state"].values()} == {2}

    resumed = train_instances(_instance_config(
        tmp_path, epochs=3, optimizer="adamw", schedule="step", step_size=1, gamma=0.5,
        resume=first.last_path, out=tmp_path / "again.pt", log=log), coin_tiles)
    assert resumed.epochs_run == 3 and [r["epoch"] for r in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == first.history
    assert resumed.history[2]["lr"] == pytest.approx(2.5e-4)  # the schedule's state kept
    again = torch.load(resumed.last_path, weights_only=True)["training"]
    assert again["epoch"] == 3  # AdamW's step count went on from the saved optimiser
    assert {s["step"].item() for s in again["optimizer"]["state"].values()} == {3}
    assert [r["epoch"] for r in _rows(log)[1]] == ["1", "2", "3"]
    loaded = load_model(MASKRCNN, weights=resumed.last_path)
    assert list(loaded.classes) == coin_tiles.class_names and loaded.meta["epoch"] == 3

    # what resume refuses: another model's checkpoint, a checkpoint without training state
    unet = load_model("unet", num_classes=3, in_channels=1, base_channels=8, depth=2)
    foreign = save_checkpoint(tmp_path / "unet.pt", "unet", unet.module, ["a", "b", "c"], 1,
                              [0.5], [0.5], {"base_channels": 8, "depth": 2})
    with pytest.raises(TrainError, match=f"checkpoint of unet, not {MASKRCNN}"):
        train_instances(_instance_config(tmp_path, resume=foreign), coin_tiles)
    plain = save_checkpoint(tmp_path / "plain.pt", MASKRCNN, resumed.module,
                            coin_tiles.class_names, 3, [0.0] * 3, [1.0] * 3, SMALL_RCNN)
    with pytest.raises(TrainError, match="holds no training state"):
        train_instances(_instance_config(tmp_path, resume=plain), coin_tiles)


def test_instance_early_stopping_on_the_validation_ap(coin_tiles, tmp_path: Path) -> None:
    from core.train.instances import train_instances

    # a learning rate too small to change anything: the mask AP of epoch 2 is no better
    config = _instance_config(tmp_path, epochs=4, lr=1e-12, patience=1, val_fraction=0.25,
                              log=tmp_path / "log.csv")
    result = train_instances(config, coin_tiles)
    assert result.stopped == "early_stopping" and result.epochs_run == 2
    assert result.best_epoch == 1 and result.best_metric == result.history[0]["mask_ap"]
    assert result.val_items and len(_rows(tmp_path / "log.csv")[1]) == 2
    assert read_checkpoint(result.best_path).meta["epoch"] == 1
    assert read_checkpoint(result.last_path).meta["epoch"] == 2


def test_instance_cancel_mid_epoch_leaves_a_loadable_checkpoint(coin_tiles,
                                                                tmp_path: Path) -> None:
    from core.train.instances import train_instances

    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3  # two batches per epoch: cancelled after one batch of epoch 2

    result = train_instances(_instance_config(tmp_path, epochs=3, steps_per_epoch=2),
                             coin_tiles, cancel=cancel)
    assert result.stopped == "cancelled" and result.epochs_run == 1
    loaded = load_model(MASKRCNN, weights=result.last_path)
    assert loaded.meta["epoch"] == 1
    assert torch.load(result.last_path, weights_only=True)["training"]["epoch"] == 1
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_instance_batch_halved_when_out_of_memory(coin_tiles, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models.detection import MaskRCNN

    from core.train.instances import train_instances

    seen = _out_of_memory_above(monkeypatch, MaskRCNN, 2, lambda args: len(args[0]))
    config = _instance_config(tmp_path, epochs=1, batch_size=4, val_fraction=0.0)
    result = train_instances(config, coin_tiles)
    assert seen == [4, 2, 2]  # the batch of 4 failed; its 4 images in two batches of 2
    assert result.warnings[1:] == ["batch size 4 does not fit in cpu memory; reduced to 2 "
                                   "(gradient accumulation x2 keeps the effective batch)"]
    assert result.stopped == "completed" and result.epochs_run == 1
    assert np.isfinite(result.history[0]["loss"])
    assert read_checkpoint(result.last_path).meta["epoch"] == 1


def test_cli_resumes_an_instance_model(coins_project: Path, tmp_path: Path,  # noqa: F811
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import main

    common = ["train", "--project", str(coins_project), "--items", "all", "--model", MASKRCNN,
              "--max-side", "64", "--min-size", "64", "--lr", "0.001", "--steps-per-epoch", "1",
              "--batch-size", "1", "--device", "cpu", "--val-fraction", "0", "--optimizer",
              "adamw", "--schedule", "step", "--out", str(tmp_path / "m.pt"),
              "--log", str(tmp_path / "m.csv")]
    assert main([*common, "--epochs", "1", "--no-eval"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["epochs_run"] == 1 and first["log"] == str(tmp_path / "m.csv")
    assert main([*common, "--epochs", "2", "--patience", "3", "--accumulate", "1",
                 "--resume", str(tmp_path / "m.last.pt")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] == 2 and [r["epoch"] for r in summary["history"]] == [1, 2]
    assert summary["history"][0] == first["history"][0]
    header, rows = _rows(tmp_path / "m.csv")
    assert header == INSTANCE_HEADER and len(rows) == 2
    assert torch.load(tmp_path / "m.last.pt", weights_only=True)["training"]["epoch"] == 2
    # a file that is not a checkpoint of training
    (tmp_path / "x.pt").write_text("not a checkpoint")
    assert main([*common, "--epochs", "2", "--resume", str(tmp_path / "x.pt")]) != 0
    assert "x.pt" in capsys.readouterr().err
    # without --lr / --optimizer / --batch-size: the instance task's defaults (SGD at 0.005)
    assert main(["train", "--project", str(coins_project), "--items", "all", "--model",
                 MASKRCNN, "--max-side", "64", "--min-size", "64", "--steps-per-epoch", "1",
                 "--epochs", "1", "--device", "cpu", "--val-fraction", "0",
                 "--out", str(tmp_path / "d.pt")]) == 0
    capsys.readouterr()
    group = torch.load(tmp_path / "d.last.pt", weights_only=True)["training"]["optimizer"][
        "param_groups"][0]
    assert group["initial_lr"] == pytest.approx(0.005) and "nesterov" in group  # SGD


# -- actions ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clips(video_project: Path):  # noqa: F811
    from core.train.actions import ActionTrainConfig, action_dataset_from_project

    spec = ActionTrainConfig("timesformer", "unused.pt", model_kwargs=TINY_VIDEO).spec()
    assert spec.frames == 4 and spec.size == (32, 32)
    return action_dataset_from_project(video_project, spec, stride=1)


def _action_config(tmp_path: Path, **kwargs):
    from core.train.actions import ActionTrainConfig

    options = {"out": tmp_path / "act.pt", "model_kwargs": dict(TINY_VIDEO), "epochs": 3,
               "batch_size": 2, "steps_per_epoch": 1, "lr": 1e-3, "device": "cpu",
               "val_fraction": 0.34}
    options.update(kwargs)
    return ActionTrainConfig("timesformer", **options)


def test_action_cosine_schedule_in_the_log(clips, tmp_path: Path) -> None:
    from core.train.actions import train_actions

    log = tmp_path / "log.csv"
    result = train_actions(_action_config(tmp_path, schedule="cosine", log=log), clips)
    header, rows = _rows(log)
    assert header == ACTION_HEADER and [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 7.5e-4, 2.5e-4])
    assert all(0 <= float(r["top1"]) <= 1 and float(r["top5"]) == 1.0 for r in rows)
    assert [r["lr"] for r in result.history] == pytest.approx([1e-3, 7.5e-4, 2.5e-4])
    flat = train_actions(_action_config(tmp_path, schedule="none", epochs=2,
                                        out=tmp_path / "flat.pt"), clips)
    assert [r["lr"] for r in flat.history] == [1e-3, 1e-3]


def test_action_resume_continues_the_run(clips, tmp_path: Path) -> None:
    from core.train.actions import ActionTrainConfig, train_actions

    first = train_actions(_action_config(tmp_path, epochs=2, schedule="step", step_size=1),
                          clips)
    saved = torch.load(first.last_path, weights_only=True)["training"]
    assert saved["epoch"] == 2 and {s["step"].item() for s in
                                    saved["optimizer"]["state"].values()} == {2}
    progress = []
    resumed = train_actions(_action_config(tmp_path, epochs=4, schedule="step", step_size=1,
                                           resume=first.last_path, out=tmp_path / "b.pt"),
                            clips, report=lambda d, t: progress.append((d, t)))
    assert progress == [(1, 2), (2, 2)]  # two epochs left
    assert resumed.epochs_run == 4 and resumed.history[:2] == first.history
    assert [r["lr"] for r in resumed.history] == pytest.approx([1e-3, 1e-4, 1e-5, 1e-6])
    state = torch.load(resumed.last_path, weights_only=True)["training"]
    assert {s["step"].item() for s in state["optimizer"]["state"].values()} == {4}
    loaded = load_model("timesformer", weights=resumed.last_path)
    assert list(loaded.classes) == LABELS and loaded.model_kwargs == TINY_VIDEO
    with pytest.raises(TrainError, match="checkpoint of timesformer, not c3d"):
        train_actions(ActionTrainConfig("c3d", tmp_path / "c.pt", resume=first.last_path),
                      clips)


def test_action_early_stopping(clips, tmp_path: Path) -> None:
    from core.train.actions import train_actions

    log = tmp_path / "log.csv"
    result = train_actions(_action_config(tmp_path, epochs=6, lr=1e-12, patience=2, log=log),
                           clips)
    # nothing learns: the validation top-1 of epochs 2 and 3 is no better than epoch 1's
    assert result.stopped == "early_stopping" and result.epochs_run == 3
    assert result.best_epoch == 1 and len(_rows(log)[1]) == 3
    assert [r["top1"] for r in result.history] == [result.best_metric] * 3


def test_action_cancel_mid_epoch(clips, tmp_path: Path) -> None:
    from core.train.actions import train_actions

    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    result = train_actions(_action_config(tmp_path, steps_per_epoch=2), clips, cancel=cancel)
    assert result.stopped == "cancelled" and result.epochs_run == 1
    assert load_model("timesformer", weights=result.last_path).meta["epoch"] == 1
    assert not list(tmp_path.glob(".*"))


def test_action_batch_halved_when_out_of_memory(clips, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from core.models.timesformer import TimeSformer
    from core.train.actions import train_actions

    seen = _out_of_memory_above(monkeypatch, TimeSformer, 2, lambda args: args[0].shape[0])
    result = train_actions(_action_config(tmp_path, epochs=2, batch_size=4), clips)
    assert seen == [4, 2, 2, 2, 2]  # epoch 2 starts at the reduced batch
    assert result.warnings == ["batch size 4 does not fit in cpu memory; reduced to 2 "
                               "(gradient accumulation x2 keeps the effective batch)"]
    assert result.stopped == "completed" and result.epochs_run == 2
    monkeypatch.undo()
    seen = _out_of_memory_above(monkeypatch, TimeSformer, 0, lambda args: args[0].shape[0])
    with pytest.raises(TrainError, match="One item per batch does not fit in cpu memory"):
        train_actions(_action_config(tmp_path, epochs=1, batch_size=2), clips)
    assert seen == [2, 1]


# -- the semantic loop -----------------------------------------------------------------------------
def test_semantic_batch_halved_when_out_of_memory(project_dir: Path,  # noqa: F811
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from core.models.unet import UNet
    from core.train import dataset_from_project
    from core.train.loop import TrainConfig, train

    seen = _out_of_memory_above(monkeypatch, UNet, 2, lambda args: args[0].shape[0])
    config = TrainConfig("unet", tmp_path / "u.pt", model_kwargs={"base_channels": 8,
                                                                   "depth": 2},
                         epochs=2, batch_size=4, steps_per_epoch=2, patch=48, device="cpu",
                         val_fraction=0.25, log=tmp_path / "u.csv")
    result = train(config, dataset_from_project(project_dir, items="all"))
    assert seen == [4] + [2] * 8  # 8 patches an epoch, in batches of 2 after the failure
    assert result.warnings[-1] == ("batch size 4 does not fit in cpu memory; reduced to 2 "
                                   "(gradient accumulation x2 keeps the effective batch)")
    assert result.stopped == "completed" and result.epochs_run == 2
    assert len(_rows(tmp_path / "u.csv")[1]) == 2


def test_cli_trains_an_action_model_on_an_exported_folder(video_project: Path,  # noqa: F811
                                                          tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    from core.cli import main

    assert main(["export", str(video_project), "--format", "actions", "--out",
                 str(tmp_path / "actions")]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(tmp_path / "actions"), "--format", "actions",
                 "--model", "late_fusion_resnet18", "--clip-frames", "4", "--clip-stride", "1",
                 "--epochs", "2", "--steps-per-epoch", "1", "--batch-size", "2", "--device",
                 "cpu", "--val-fraction", "0", "--schedule", "none", "--log",
                 str(tmp_path / "a.csv"), "--out", str(tmp_path / "a.pt")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["classes"] == LABELS and summary["train_clips"] == 7
    assert summary["epochs_run"] == 2 and summary["log"] == str(tmp_path / "a.csv")
    header, rows = _rows(tmp_path / "a.csv")  # schedule none; lr: the action default
    assert header == ACTION_HEADER and [float(r["lr"]) for r in rows] == [1e-4, 1e-4]
