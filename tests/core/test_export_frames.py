"""The "frames" export of video items (index PNGs per frame, decoded frames, frames.json), the
CLI's ``--format frames`` / ``--video-frames``, and the other formats skipping videos."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from dicom_series import run_cli
from PIL import Image
from skimage import data
from video_clips import write_astronaut_pan

from core.annotation.classes import LabelClass
from core.annotation.session import EditSession
from core.annotation.tools import PaintRule
from core.errors import ExportError
from core.export import EXPORT_FORMATS, NOT_FOR_VIDEOS, export_options, export_project
from core.export.frames import NOT_A_VIDEO
from core.export.index_png import classes_json
from core.io.video import open_video
from core.project.store import Project

FRAMES, HEIGHT, WIDTH, FPS = 12, 96, 128, 10.0


def write_clip(path: Path) -> list[np.ndarray]:
    """A lossless (FFV1) clip of the astronaut panning 2 px a frame; returns the RGB frames."""
    return write_astronaut_pan(path, FRAMES, (WIDTH, HEIGHT), fps=FPS)


def read_png(path: Path) -> np.ndarray:
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert array is not None, path
    return array


pytestmark = pytest.mark.usefixtures("restore_opencv_log_env")


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A project with one image (with a mask) and one video with labels on frames 3 and 7."""
    clip = tmp_path / "pan.avi"
    write_clip(clip)
    image = tmp_path / "camera.png"
    Image.fromarray(data.camera()[::4, ::4]).save(image)
    folder = tmp_path / "project"
    with Project.create(folder) as project:
        project.set_classes([LabelClass(0, "background", (0, 0, 0)),
                             LabelClass(1, "person", (200, 30, 30)),
                             LabelClass(2, "rocket", (30, 200, 30))])
        video = project.add_video(clip)
        project.add_items([image])
        session = EditSession(project, video, frame=3)
        session.polygon([(10, 10), (60, 12), (40, 50)], PaintRule(1))
        session.polygon([(70, 40), (120, 45), (100, 90)], PaintRule(2))
        session.close()
        other = EditSession(project, video, frame=7)
        other.polygon([(5, 60), (50, 90), (20, 95)], PaintRule(2))
        other.set_frame_state("propagated", 0.75)
        other.close()
        picture = next(i for i in project.items() if i.kind == "image")
        labels = np.zeros(picture.mask_shape, np.uint8)
        labels[10:40, 20:60] = 1
        project.save_mask(picture.id, labels)
    return folder


def _video(project: Project):
    return next(i for i in project.items() if i.kind == "video")


def test_frames_is_a_registered_format_with_its_options() -> None:
    assert "frames" in EXPORT_FORMATS
    assert export_options("frames") == {"copy_originals": False, "video_frames": "annotated"}


def test_cli_exports_the_annotated_frames(capsys, project_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "export", project_dir, "--format", "frames", "--out", out)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["count"] == 2
    assert summary["skipped"] == [{"name": "camera", "reason": NOT_A_VIDEO}]
    assert err == f"warning: camera: {NOT_A_VIDEO}\n"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "classes.json", "pan/frames.json", "pan/masks/000003.png", "pan/masks/000007.png"]
    with Project.open(project_dir, read_only=True) as project:
        video = _video(project)
        for frame in (3, 7):
            mask = read_png(out / "pan" / "masks" / f"{frame:06d}.png")
            assert mask.dtype == np.uint8 and mask.ndim == 2
            assert np.array_equal(mask, project.load_mask(video, frame))
            assert mask.any()
        assert (out / "classes.json").read_text() == classes_json(project.classes())

    info = json.loads((out / "pan" / "frames.json").read_text())
    assert info["format"] == "segstudio-frames" and info["version"] == 1
    assert (info["name"], info["fps"], info["width"], info["height"], info["frame_count"]) == (
        "pan", FPS, WIDTH, HEIGHT, FRAMES)
    assert info["codec"] == "ffv1" and info["exported"] == "annotated"
    assert info["frames"] == [
        {"frame": 3, "labelled": True, "state": "annotated", "reliability": None,
         "mask": "masks/000003.png"},
        {"frame": 7, "labelled": True, "state": "propagated", "reliability": 0.75,
         "mask": "masks/000007.png"},
    ]


def test_all_frames_and_copied_originals(capsys, project_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, "export", project_dir, "--format", "frames", "--out", out,
                                "--video-frames", "all", "--copy-originals")
    assert code == 0, err
    assert json.loads(stdout)["count"] == FRAMES
    masks = sorted((out / "pan" / "masks").iterdir())
    images = sorted((out / "pan" / "frames").iterdir())
    assert [p.name for p in masks] == [p.name for p in images] == [
        f"{t:06d}.png" for t in range(FRAMES)]
    with Project.open(project_dir, read_only=True) as project:
        video = _video(project)
        source = video.source
        for t, path in enumerate(masks):
            assert np.array_equal(read_png(path), project.load_mask(video, t))
        assert not read_png(masks[0]).any()  # unannotated: zeros
    with open_video(source, prefetch=False) as reader:
        for t, path in enumerate(images):
            assert np.array_equal(np.asarray(Image.open(path)), reader.frame(t))
    info = json.loads((out / "pan" / "frames.json").read_text())
    assert info["exported"] == "all" and len(info["frames"]) == FRAMES
    assert info["frames"][0] == {"frame": 0, "labelled": False, "state": None,
                                 "reliability": None, "mask": "masks/000000.png",
                                 "image": "frames/000000.png"}
    assert [e["frame"] for e in info["frames"] if e["labelled"]] == [3, 7]


def test_copied_frames_are_the_clip(project_dir: Path, tmp_path: Path) -> None:
    """FFV1 is lossless: the exported frames are the very pixels written into the clip."""
    written = write_clip(tmp_path / "again.avi")
    with Project.open(project_dir, read_only=True) as project:
        export_project(project, "frames", tmp_path / "out", copy_originals=True)
    for t in (3, 7):
        image = np.asarray(Image.open(tmp_path / "out" / "pan" / "frames" / f"{t:06d}.png"))
        assert np.array_equal(image, written[t])


def test_labels_above_255_are_16_bit(project_dir: Path, tmp_path: Path) -> None:
    with Project.open(project_dir) as project:
        project.set_classes([*project.classes(), LabelClass(300, "many", (9, 9, 9))])
        video = _video(project)
        labels = np.zeros(video.mask_shape, np.uint16)
        labels[30:80, 30:90] = 300
        labels[50:60, 10:20] = 2
        project.save_mask(video.id, labels, frame=5)
        result = export_project(project, "frames", tmp_path / "out", items=[video])
        assert result.count == 3 and result.skipped == []
        for frame in (3, 5, 7):
            mask = read_png(tmp_path / "out" / "pan" / "masks" / f"{frame:06d}.png")
            assert mask.dtype == np.uint16
            assert np.array_equal(mask, project.load_mask(video, frame))
        assert (read_png(tmp_path / "out" / "pan" / "masks" / "000005.png") == 300).any()


def test_progress_counts_frames_and_bad_option(project_dir: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    with Project.open(project_dir, read_only=True) as project:
        export_project(project, "frames", tmp_path / "a", report=lambda d, t: calls.append((d, t)))
        assert calls == [(0, 2), (1, 2), (2, 2)]
        calls.clear()
        export_project(project, "frames", tmp_path / "b", video_frames="all",
                       report=lambda d, t: calls.append((d, t)))
        assert calls[0] == (0, FRAMES) and calls[-1] == (FRAMES, FRAMES)
        with pytest.raises(ExportError, match="video_frames"):
            export_project(project, "frames", tmp_path / "c", video_frames="some")
    assert not (tmp_path / "c").exists()


def test_a_video_without_annotated_frames(project_dir: Path, tmp_path: Path) -> None:
    clip = tmp_path / "empty.avi"
    write_clip(clip)
    with Project.open(project_dir) as project:
        empty = project.add_video(clip)
        result = export_project(project, "frames", tmp_path / "out", items=[empty])
        assert result.count == 0 and result.skipped == [("empty", "no annotated frame")]
        result = export_project(project, "frames", tmp_path / "all", items=[empty],
                                video_frames="all")
        assert result.count == FRAMES
    assert not (tmp_path / "out" / "empty").exists()


def test_a_folder_of_frames_video(project_dir: Path, tmp_path: Path) -> None:
    frames = write_clip(tmp_path / "ignored.avi")
    folder = tmp_path / "seq"
    folder.mkdir()
    for t, frame in enumerate(frames[:4]):
        Image.fromarray(frame).save(folder / f"f{t}.png")
    with Project.open(project_dir) as project:
        item = project.add_video(folder)
        session = EditSession(project, item, frame=2)
        session.polygon([(10, 10), (60, 12), (40, 50)], PaintRule(1))
        session.close()
        result = export_project(project, "frames", tmp_path / "out", items=[project.item(item.id)],
                                copy_originals=True)
        assert result.count == 1 and result.skipped == []
        assert np.array_equal(read_png(tmp_path / "out" / "seq" / "masks" / "000002.png"),
                              project.load_mask(item, 2))
    image = np.asarray(Image.open(tmp_path / "out" / "seq" / "frames" / "000002.png"))
    assert np.array_equal(image, frames[2])


def test_a_missing_video_exports_its_masks_without_frames(project_dir: Path,
                                                          tmp_path: Path) -> None:
    (tmp_path / "pan.avi").unlink()
    with Project.open(project_dir, read_only=True) as project:
        result = export_project(project, "frames", tmp_path / "out", copy_originals=True)
    assert result.count == 2
    assert ("pan", "source video missing; its masks were exported without the frames") in \
        result.skipped
    assert sorted(p.name for p in (tmp_path / "out" / "pan" / "masks").iterdir()) == [
        "000003.png", "000007.png"]
    assert not (tmp_path / "out" / "pan" / "frames").exists()
    info = json.loads((tmp_path / "out" / "pan" / "frames.json").read_text())
    assert all("image" not in entry for entry in info["frames"])


# -- the other formats and videos ----------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["index", "voc", "nifti", "dicom-seg"])
def test_other_formats_skip_videos_with_a_reason(project_dir: Path, tmp_path: Path,
                                                 fmt: str) -> None:
    with Project.open(project_dir, read_only=True) as project:
        video = _video(project)
        result = export_project(project, fmt, tmp_path / fmt, items=[video])  # named explicitly
        assert result.count == 0 and result.skipped == [("pan", NOT_FOR_VIDEOS)]
        result = export_project(project, fmt, tmp_path / f"{fmt}-default")  # the default choice
        assert ("pan", NOT_FOR_VIDEOS) in result.skipped


def test_index_export_of_a_mixed_project_writes_the_image(capsys, project_dir: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "index"
    code, stdout, err = run_cli(capsys, "export", project_dir, "--format", "index", "--out", out)
    assert code == 0
    summary = json.loads(stdout)
    assert summary["count"] == 1
    assert summary["skipped"] == [{"name": "pan", "reason": NOT_FOR_VIDEOS}]
    assert f"warning: pan: {NOT_FOR_VIDEOS}" in err
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["camera.png"]


def test_cli_item_selection_counts_annotated_frames(capsys, project_dir: Path,
                                                    tmp_path: Path) -> None:
    clip = tmp_path / "empty.avi"
    write_clip(clip)
    with Project.open(project_dir) as project:
        empty = project.add_video(clip)
    code, stdout, _ = run_cli(capsys, "export", project_dir, "--format", "frames", "--out",
                              tmp_path / "all", "--items", "all")
    assert code == 0 and json.loads(stdout)["count"] == 2  # "empty" has no labels: not chosen
    assert not (tmp_path / "all" / "empty").exists()

    code, stdout, _ = run_cli(capsys, "export", project_dir, "--format", "frames", "--out",
                              tmp_path / "done", "--items", "done")
    assert code == 0 and json.loads(stdout)["count"] == 0  # nothing is marked done
    with Project.open(project_dir) as project:
        project.set_state(empty.id, "done")
    code, stdout, _ = run_cli(capsys, "export", project_dir, "--format", "frames", "--out",
                              tmp_path / "done2", "--items", "done", "--video-frames", "all")
    assert code == 0 and json.loads(stdout)["count"] == FRAMES

    code, stdout, _ = run_cli(capsys, "info", project_dir)
    assert json.loads(stdout)["with_mask"] == 2  # the image and the annotated video


def test_video_frames_applies_to_the_frames_format_only(capsys, project_dir: Path,
                                                        tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "export", project_dir, "--format", "index", "--out",
                           tmp_path / "x", "--video-frames", "all")
    assert code == 1 and err.splitlines() == [
        "segstudio-cli: error: --video-frames applies to the frames format only, not index."]
    assert not (tmp_path / "x").exists()
