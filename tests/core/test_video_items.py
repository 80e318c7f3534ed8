"""Videos in a project: one item per video, labels stored per annotated frame with their own
journal, frame states (drawn, propagated with a reliability, reviewed), and the schema migration
that brought the frame tables."""

from __future__ import annotations

import sqlite3

import cv2
import numpy as np
import pytest
from video_clips import write_astronaut_pan

from core.annotation.session import EditSession
from core.annotation.tools import PaintRule
from core.errors import SegStudioError
from core.project.items import FrameInfo
from core.project.schema import SCHEMA_VERSION
from core.project.store import Project


def write_clip(path, frames: int = 12, size: tuple[int, int] = (96, 128)) -> list[np.ndarray]:
    """An MJPG clip of a real image (the astronaut) panning 2 px a frame; returns RGB frames."""
    height, width = size
    return write_astronaut_pan(path, frames, (width, height), fps=10.0, fourcc="MJPG")


@pytest.fixture
def video_project(tmp_path):
    clip = tmp_path / "pan.avi"
    write_clip(clip)
    project = Project.create(tmp_path / "project")
    item = project.add_video(clip)
    yield project, item
    project.close()


def test_a_video_is_one_item_with_its_frame_count_and_rate(video_project, tmp_path):
    project, item = video_project
    assert item.kind == "video"
    assert (item.frames, item.height, item.width) == (12, 96, 128)
    assert item.extra["fps"] == pytest.approx(10.0)
    assert item.mask_shape == (96, 128)  # one frame's labels
    assert project.add_video(tmp_path / "pan.avi").id == item.id  # added twice: the same item
    assert len(project.items()) == 1


def test_labels_are_stored_per_frame(video_project):
    project, item = video_project
    with pytest.raises(SegStudioError, match="per frame"):
        project.load_mask(item)
    with pytest.raises(SegStudioError, match="no frame 12"):
        project.load_mask(item, 12)
    assert not project.load_mask(item, 3).any() and project.annotated_frames(item.id) == []

    session = EditSession(project, item, frame=3)
    session.polygon([(10, 10), (60, 12), (40, 50)], PaintRule(1))
    other = EditSession(project, item, frame=7)
    other.begin_stroke((20, 20), 4, PaintRule(2))
    other.continue_stroke((90, 40), 4, PaintRule(2))
    other.end_stroke()
    # journaled at once, per frame; the item's own (whole) mask stays empty
    assert project.annotated_frames(item.id) == [3, 7]
    assert np.array_equal(project.load_mask(item, 3), session.labels)
    assert np.array_equal(project.load_mask(item, 7), other.labels)
    assert not project.has_mask(item.id)
    assert project.has_mask(item.id, 3) and not project.has_mask(item.id, 4)
    info = project.frame_info(item.id)
    assert info == {3: FrameInfo("annotated"), 7: FrameInfo("annotated")}
    assert project.item(item.id).state == "in_progress"

    session.checkpoint()  # folded into the frame's mask, its journal dropped
    assert project.journal_length(item.id, 3) == 0 and project.journal_length(item.id, 7) == 1
    session.undo()
    assert not project.load_mask(item, 3).any()
    assert np.array_equal(project.load_mask(item, 7), other.labels)


def test_frame_states_and_reliability(video_project):
    project, item = video_project
    session = EditSession(project, item, frame=5)
    labels = np.zeros(item.mask_shape, np.uint8)
    labels[20:40, 30:70] = 1
    session.replace_plane(labels)
    session.set_frame_state("propagated", 0.82)
    assert project.frame_info(item.id)[5] == FrameInfo("propagated", pytest.approx(0.82))
    reopened = EditSession(project, item, frame=5)
    assert reopened.frame_state == "propagated"
    reopened.begin_stroke((35, 30), 2, PaintRule(2))  # the person corrects it
    reopened.end_stroke()
    assert project.frame_info(item.id)[5].state == "annotated"
    with pytest.raises(SegStudioError, match="frame state"):
        project.set_frame_info(item.id, 5, "maybe")


def test_deleting_a_class_relabels_every_frame(video_project):
    project, item = video_project
    for frame in (1, 4):
        session = EditSession(project, item, frame=frame)
        session.polygon([(5, 5), (50, 5), (50, 40)], PaintRule(1))
    assert project.delete_class(1, 0) == 1
    assert not project.load_mask(item, 1).any() and not project.load_mask(item, 4).any()


def test_a_version_1_project_gains_the_frame_tables(tmp_path):
    project = Project.create(tmp_path / "old")
    project.close()
    db = sqlite3.connect(tmp_path / "old" / "project.sqlite")
    for table in ("frame_info", "frame_journal", "frame_masks",  # version 2
                  "instance_masks", "instance_journal", "instances",  # version 3
                  "instance_predictions", "segments", "action_scores",  # 3, 4
                  "part_predictions"):  # 6 (holds version 5's class_predictions)
        db.execute(f"DROP TABLE {table}")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    clip = tmp_path / "pan.avi"
    write_clip(clip, frames=4)
    with Project.open(tmp_path / "old") as project:
        item = project.add_video(clip)
        session = EditSession(project, item, frame=2)
        session.polygon([(5, 5), (50, 5), (50, 40)], PaintRule(1))
        assert project.annotated_frames(item.id) == [2]
    db = sqlite3.connect(tmp_path / "old" / "project.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 2
    db.close()


def test_a_file_that_is_not_a_video_is_refused(tmp_path):
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(20000))
    with Project.create(tmp_path / "project") as project:
        with pytest.raises(SegStudioError, match="noise.mp4"):
            project.add_video(bad)
        assert project.items() == []


def test_a_folder_of_frames_is_one_video_that_is_found_again(tmp_path):
    frames = write_clip(tmp_path / "clip.avi", frames=5)
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, rgb in enumerate(frames):  # frame10 would sort after frame9: natural order
        cv2.imwrite(str(folder / f"frame{index}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    with Project.create(tmp_path / "project") as project:
        item = project.add_video(folder)
        assert (item.kind, item.frames) == ("video", 5)
    with Project.open(tmp_path / "project") as project:
        (item,) = project.items()
        assert not item.missing and item.source == folder.resolve()
