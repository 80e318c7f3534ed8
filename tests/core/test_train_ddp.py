"""Semantic training under torchrun with DistributedDataParallel: ``segstudio-cli train
--nproc 2`` on the CPU (gloo) ends with the same weights on both ranks, and only rank 0 writes
the checkpoints and the log."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from test_cli import assert_one_error_line, run_cli
from test_train import project_dir, voc_dir  # noqa: F401 (fixtures)

from core.train.distributed import DUMP_ENV, strip_nproc

ARGS = ("--model", "unet", "--base-channels", "8", "--epochs", "2", "--batch-size", "2",
        "--patch", "48", "--device", "cpu", "--steps-per-epoch", "3", "--val-fraction", "0.5")


def test_two_processes_end_with_identical_weights(voc_dir: Path,  # noqa: F811
                                                  tmp_path: Path, monkeypatch) -> None:
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    monkeypatch.setenv(DUMP_ENV, str(dumps))
    out, log = tmp_path / "run" / "model.pt", tmp_path / "run" / "log.csv"
    out.parent.mkdir()
    result = run_cli("train", "--data", voc_dir, *ARGS, "--nproc", "2", "--out", out,
                     "--log", log)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)  # rank 0's summary only
    assert summary["epochs_run"] == 2 and summary["best"] == str(out)
    assert summary["val_items"] == 2 and summary["validation"]["mean_dice"] is not None
    assert "epoch 2: train loss" in result.stderr
    assert result.stderr.count("epoch 1: train loss") == 1
    ranks = [torch.load(dumps / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    last = torch.load(tmp_path / "run" / "model.last.pt", weights_only=True)
    assert last["state_dict"].keys() == ranks[1]["state_dict"].keys()
    for name, value in last["state_dict"].items():
        assert torch.equal(value, ranks[0]["state_dict"][name]), name
        assert torch.equal(value, ranks[1]["state_dict"][name]), name
    # only rank 0 wrote files: rank 1 reports none, and no stray file is left
    assert ranks[0]["paths"]["last"] == str(out.with_name("model.last.pt"))
    assert ranks[1]["paths"] == {"best": None, "last": None, "log": None}
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "log.csv", "model.last.pt", "model.pt"]
    assert len(log.read_text().splitlines()) == 3


def test_a_failing_child_gives_one_error_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "SegmentationClass").mkdir(parents=True)
    result = run_cli("train", "--data", empty, *ARGS, "--nproc", "2", "--out", tmp_path / "m.pt")
    assert_one_error_line(result, 1, "No training data")
    assert not os.path.exists(tmp_path / "m.pt")


def test_strip_nproc() -> None:
    assert strip_nproc(["train", "--nproc", "2", "--out", "x", "--nproc=3"]) == [
        "train", "--out", "x"]
