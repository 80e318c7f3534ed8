"""Instance and action training under torchrun with DistributedDataParallel: ``segstudio-cli
train --nproc 2`` on the CPU (gloo) for Mask R-CNN and a clip classifier ends with the same
weights on both ranks (BatchNorm statistics included), rank 0 alone writes the checkpoints and
the log and prints the summary, and the validation row is the same for every rank."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from coins_instances import coins_labels, coins_table, make_project, write_images
from PIL import Image
from skimage import data
from test_cli import run_cli
from test_train_instances import LABELS, video_project  # noqa: F401 (fixture)

from core.train.distributed import DUMP_ENV
from core.train.instances import LOSS_KEYS

MASKRCNN = "maskrcnn_resnet50_fpn"


@pytest.fixture(scope="module")
def three_coins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The coins project with two mirrored copies of the coins (3 images with instances: 2 to
    train, one per rank, and 1 to validate)."""
    folder = tmp_path_factory.mktemp("coins3")
    project = make_project(folder / "project", write_images(folder / "images"))
    try:
        extra = folder / "mirrored"
        extra.mkdir()
        labels = coins_labels()
        flips = {"coins_lr": (lambda a: a[:, ::-1]), "coins_ud": (lambda a: a[::-1])}
        for name, flip in flips.items():
            Image.fromarray(np.ascontiguousarray(flip(data.coins()))).save(extra / f"{name}.png")
        assert not project.add_items([extra]).skipped
        items = {item.name: item for item in project.items()}
        for name, flip in flips.items():
            project.save_mask(items[name].id, np.ascontiguousarray(flip(labels)),
                              layer="instances")
            project.set_instances(items[name].id, coins_table(labels).values())
    finally:
        project.close()
    return folder / "project"


def _run_two_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str | Path
                   ) -> tuple[dict, str, list[dict], Path]:
    """``train ... --nproc 2`` with the dump hook: rank 0's summary, stderr, both ranks'
    dumps and the output folder."""
    dumps, run = tmp_path / "dumps", tmp_path / "run"
    dumps.mkdir()
    run.mkdir()
    monkeypatch.setenv(DUMP_ENV, str(dumps))
    result = run_cli("train", *args, "--device", "cpu", "--nproc", "2", "--out",
                     run / "model.pt", "--log", run / "log.csv")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # rank 0's summary only: one JSON document
    ranks = [torch.load(dumps / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    return summary, result.stderr, ranks, run


def _assert_same_weights_and_rank0_files(ranks: list[dict], run: Path) -> dict:
    """Both ranks hold the weights of the last checkpoint, which rank 0 alone wrote."""
    last = torch.load(run / "model.last.pt", weights_only=True)
    assert last["state_dict"].keys() == ranks[0]["state_dict"].keys()
    for name, value in last["state_dict"].items():
        assert torch.equal(value, ranks[0]["state_dict"][name]), name
        assert torch.equal(value, ranks[1]["state_dict"][name]), name
    assert ranks[0]["paths"] == {"best": str(run / "model.pt"),
                                 "last": str(run / "model.last.pt"), "log": str(run / "log.csv")}
    assert ranks[1]["paths"] == {"best": None, "last": None, "log": None}
    assert sorted(p.name for p in run.iterdir()) == ["log.csv", "model.last.pt", "model.pt"]
    return last


def test_mask_rcnn_on_two_processes(three_coins: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    summary, stderr, ranks, run = _run_two_ranks(
        tmp_path, monkeypatch, "--project", three_coins, "--items", "all", "--model", MASKRCNN,
        "--max-side", "64", "--min-size", "64", "--epochs", "2", "--steps-per-epoch", "1",
        "--batch-size", "1", "--lr", "0.001", "--val-fraction", "0.34", "--warmup", "2")
    assert summary["model"] == MASKRCNN and summary["epochs_run"] == 2
    assert summary["train_items"] == 2 and summary["val_items"] == 1
    history = summary["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    for row in history:  # the loss terms averaged over the ranks; rank 0's validation AP
        assert math.isclose(row["loss"], sum(row[k] for k in LOSS_KEYS), abs_tol=1e-5)
        assert row["mask_ap"] is not None and row["box_ap"] is not None
    assert summary["best"] == str(run / "model.pt") and summary["log"] == str(run / "log.csv")
    assert stderr.count("epoch 1: loss") == 1 and stderr.count("epoch 2: loss") == 1
    last = _assert_same_weights_and_rank0_files(ranks, run)
    assert last["training"]["epoch"] == 2 and last["training"]["history"] == history
    assert len((run / "log.csv").read_text().splitlines()) == 3


def test_action_model_on_two_processes(video_project: Path, tmp_path: Path,  # noqa: F811
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 batches of 2 clips per rank and epoch, one optimiser step (accumulation: no_sync)
    summary, stderr, ranks, run = _run_two_ranks(
        tmp_path, monkeypatch, "--project", video_project, "--model", "late_fusion_resnet18",
        "--clip-frames", "4", "--clip-stride", "1", "--epochs", "2", "--steps-per-epoch", "2",
        "--accumulate", "2", "--batch-size", "2", "--lr", "1e-3", "--val-fraction", "0.34",
        "--schedule", "none")
    assert summary["classes"] == LABELS and summary["epochs_run"] == 2
    assert summary["val_clips"] > 0 and summary["train_clips"] > 0
    history = summary["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(row["top1"] is not None and np.isfinite(row["train_loss"]) for row in history)
    assert stderr.count("epoch 1: train_loss") == 1
    last = _assert_same_weights_and_rank0_files(ranks, run)
    # BatchNorm statistics moved with the training clips and were synced over the ranks
    running = [k for k in last["state_dict"] if k.endswith("running_mean")]
    assert running and any(last["state_dict"][k].abs().sum() > 0 for k in running)
    optimizer = last["training"]["optimizer"]["state"]
    assert {int(s["step"]) for s in optimizer.values()} == {2}  # one step per epoch
