"""The "actions" export and import: temporal segments of video items as CSV, ActivityNet-style
JSON, clip training lists and classes.txt, read back by file name or item name; bad entries
named, nothing imported half-way unless skip_bad; the CLI's --format actions.

Data: lossless FFV1 clips of scikit-image's astronaut written with cv2.VideoWriter (10 fps and
29.97 fps), and a Matroska copy whose frame times are made irregular (a variable frame rate the
video reader detects).
"""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from dicom_series import run_cli
from skimage import data
from video_clips import write_astronaut_pan

from core.annotation.segments import Segment
from core.export import EXPORT_FORMATS, IMPORT_FORMATS, export_project, import_dataset
from core.export.actions import (
    BadEntryError,
    export_actions,
    frames_to_seconds,
    import_actions,
    seconds_to_frames,
)
from core.project.store import Project

SIZE = (64, 48)  # width, height
PAN = {"pan": (30, 10.0), "wave": (40, 29.97)}  # name: (frames, fps)
SEGMENTS = {
    "pan": [Segment(0, 9, "walk"), Segment(12, 20, "run", "model", 0.8125)],
    "wave": [Segment(3, 3, "jump"), Segment(5, 39, "wave")],
}
VOCABULARY = ["walk", "run", "jump"]


def write_clip(path: Path, frames: int, fps: float, fourcc: str = "FFV1") -> Path:
    write_astronaut_pan(path, frames, SIZE, fps=fps, shift=3, left=100, fourcc=fourcc)
    return path


pytestmark = pytest.mark.usefixtures("restore_opencv_log_env")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    return {name: write_clip(folder / f"{name}.avi", frames, fps)
            for name, (frames, fps) in PAN.items()}


def new_project(folder: Path, videos: dict[str, Path], image: bool = False) -> Project:
    project = Project.create(folder)
    for path in videos.values():
        project.add_video(path)
    if image:
        picture = folder.parent / f"{folder.name}_camera.png"
        cv2.imwrite(str(picture), data.camera())
        project.add_items([picture])
    return project


def items_by_name(project: Project) -> dict[str, object]:
    return {item.name: item for item in project.items()}


def all_segments(project: Project) -> dict[str, list[Segment]]:
    return {item.name: project.load_segments(item.id) for item in project.items()
            if item.kind == "video"}


@pytest.fixture
def labelled(tmp_path: Path, videos: dict[str, Path]) -> Project:
    project = new_project(tmp_path / "labelled", videos, image=True)
    project.set_action_labels(VOCABULARY)
    for name, item in items_by_name(project).items():
        if name in SEGMENTS:
            project.save_segments(item.id, SEGMENTS[name])
    yield project
    project.close()


@pytest.fixture
def fresh(tmp_path: Path, videos: dict[str, Path]) -> Project:
    project = new_project(tmp_path / "fresh", videos)
    project.save_segments(items_by_name(project)["pan"].id, [Segment(25, 29, "old")])
    project.set_action_labels(["old"])
    yield project
    project.close()


def write_csv(path: Path, rows: list[list[object]],
              header: tuple[str, ...] = ("video", "start_frame", "end_frame", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# -- times --------------------------------------------------------------------------------------
def test_seconds_and_frames_convert_back_exactly() -> None:
    for fps in (10.0, 25.0, 29.97, 30000 / 1001, 59.94, 7.5):
        for start, end in ((0, 0), (3, 3), (5, 39), (1234, 98765)):
            assert seconds_to_frames(*frames_to_seconds(start, end, fps), fps) == (start, end)
    assert frames_to_seconds(12, 20, 10.0) == (1.2, 2.1)
    assert seconds_to_frames(1.0, 1.01, 25.0) == (25, 25)  # shorter than a frame: one frame


# -- export -------------------------------------------------------------------------------------
def test_export_writes_csv_activitynet_lists_and_classes(labelled: Project,
                                                         videos: dict[str, Path],
                                                         tmp_path: Path) -> None:
    result = export_project(labelled, "actions", tmp_path / "out")
    out = tmp_path / "out"
    assert result.count == 4 and result.skipped == []
    assert sorted(p.name for p in out.iterdir()) == [
        "actions.csv", "activitynet.json", "classes.txt", "clips.txt", "mmaction2_clips.txt"]
    assert (out / "classes.txt").read_text() == "walk\nrun\njump\nwave\n"
    rows = list(csv.reader((out / "actions.csv").open()))
    assert rows[0] == ["video", "start_frame", "end_frame", "start_s", "end_s", "label",
                       "source", "score"]
    assert rows[1:] == [
        ["pan", "0", "9", "0.000000", "1.000000", "walk", "person", ""],
        ["pan", "12", "20", "1.200000", "2.100000", "run", "model", "0.8125"],
        ["wave", "3", "3", "0.100100", "0.133467", "jump", "person", ""],
        ["wave", "5", "39", "0.166834", "1.334668", "wave", "person", ""],
    ]
    document = json.loads((out / "activitynet.json").read_text())
    assert document["version"] == "VERSION 1.3"
    pan = document["database"]["pan"]
    assert pan["subset"] == "training" and pan["duration"] == 3.0 and pan["fps"] == 10.0
    assert pan["annotations"] == [
        {"segment": [0.0, 1.0], "label": "walk"},
        {"segment": [1.2, 2.1], "label": "run", "source": "model", "score": 0.8125}]
    assert document["database"]["wave"]["duration"] == round(40 / 29.97, 6)
    assert "note" not in pan
    pan_path, wave_path = videos["pan"].resolve().as_posix(), videos["wave"].resolve().as_posix()
    assert (out / "clips.txt").read_text().splitlines() == [
        f"{pan_path} 0 9 0", f"{pan_path} 12 20 1", f"{wave_path} 3 3 2", f"{wave_path} 5 39 3"]
    assert (out / "mmaction2_clips.txt").read_text().splitlines() == [
        "pan 0 10 0", "pan 12 9 1", "wave 3 1 2", "wave 5 35 3"]


def test_export_skips_images_and_videos_without_segments(labelled: Project,
                                                         tmp_path: Path) -> None:
    items = labelled.items()
    wave = items_by_name(labelled)["wave"]
    labelled.save_segments(wave.id, [])
    result = export_project(labelled, "actions", tmp_path / "out", items=items)
    assert result.count == 2
    assert sorted(result.skipped) == [
        ("labelled_camera", "not a video (the actions format exports the segments of video "
                            "items)"),
        ("wave", "no action segment")]
    default = export_project(labelled, "actions", tmp_path / "default")
    assert default.count == 2 and default.skipped == []


def test_a_path_with_spaces_is_left_out_of_the_lists(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "my clip.avi", 12, 10.0)
    with Project.create(tmp_path / "spaced") as project:
        item = project.add_video(clip)
        project.save_segments(item.id, [Segment(2, 5, "walk")])
        result = export_project(project, "actions", tmp_path / "out")
    assert result.count == 1
    reasons = dict(result.skipped)["my clip frames 2-5"]
    assert "whitespace" in reasons
    assert (tmp_path / "out" / "clips.txt").read_text() == ""
    assert (tmp_path / "out" / "actions.csv").read_text().splitlines()[1].startswith("my clip,2,5")


# -- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("file_name", ["actions.csv", "activitynet.json", ""])
def test_export_then_import_gives_the_same_segments(labelled: Project, fresh: Project,
                                                    tmp_path: Path, file_name: str) -> None:
    export_project(labelled, "actions", tmp_path / "out")
    calls: list[tuple[int, int]] = []
    result = import_dataset(fresh, "actions", tmp_path / "out" / file_name,
                            report=lambda d, t: calls.append((d, t)))
    assert all_segments(fresh) == SEGMENTS
    assert result.imported == 2 and result.segments == 4 and result.skipped == []
    assert result.new_classes == ["walk", "run", "jump", "wave"]
    assert fresh.action_labels() == ["old", "walk", "run", "jump", "wave"]
    assert result.notes == ["added to the action labels: walk, run, jump, wave"]
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)
    assert {item.state for item in fresh.items()} == {"in_progress"}


def test_videos_match_by_file_name(fresh: Project, videos: dict[str, Path],
                                   tmp_path: Path) -> None:
    path = write_csv(tmp_path / "by_file.csv", [
        ["pan.avi", 1, 2, "walk"], [str(videos["wave"]), 4, 6, "wave"],
        ["C:\\clips\\wave.avi", 8, 9, "walk"], ["wave.mp4", 10, 11, "run"]])
    import_actions(fresh, path)
    assert all_segments(fresh) == {
        "pan": [Segment(1, 2, "walk")],
        "wave": [Segment(4, 6, "wave"), Segment(8, 9, "walk"), Segment(10, 11, "run")]}


def test_csv_with_seconds_only(fresh: Project, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "seconds.csv", [["wave", "0.1001", "0.133467", "jump"],
                                                ["pan", "1.2", "2.1", "run"]],
                     header=("video", "start_s", "end_s", "label"))
    import_actions(fresh, path)
    assert all_segments(fresh) == {"pan": [Segment(12, 20, "run")],
                                   "wave": [Segment(3, 3, "jump")]}


# -- bad input -------------------------------------------------------------------------------------
BAD_CSV = [
    ([["pan", 0, 30, "walk"]], "row 2 (pan): it ends at frame 30, past the end of pan "
                               "(30 frames, 0-29)"),
    ([["pan", 0, 4, "walk"], ["pan", 9, 5, "run"]],
     "row 3 (pan): it starts at frame 9, after it ends (frame 5)"),
    ([["pan", -1, 4, "walk"]], "row 2 (pan): it starts at frame -1, before the video"),
    ([["ghost", 0, 4, "walk"]], "row 2 (ghost): the project has no video item named 'ghost'"),
    ([["pan", "a", 4, "walk"]], "row 2 (pan): start_frame must be a number, not 'a'"),
    ([["pan", 1.5, 4, "walk"]], "row 2 (pan): start_frame must be a whole frame number"),
    ([["pan", 0, 4, ""]], "row 2 (pan): the label is empty"),
    ([["pan", 0, 9, "walk"], ["pan", 5, 12, "run"]],
     "row 3 (pan): frames 5-12 overlap row 2 (pan) (frames 0-9)"),
]


@pytest.mark.parametrize(("rows", "message"), BAD_CSV)
def test_a_bad_csv_entry_imports_nothing(fresh: Project, tmp_path: Path, rows: list,
                                         message: str) -> None:
    before, labels = all_segments(fresh), fresh.action_labels()
    path = write_csv(tmp_path / "bad.csv", [*rows, ["wave", 0, 3, "new label"]])
    with pytest.raises(BadEntryError) as caught:
        import_actions(fresh, path)
    assert f"{path}: {message}" in str(caught.value), caught.value
    assert str(caught.value).endswith("; nothing was imported.")
    assert all_segments(fresh) == before and fresh.action_labels() == labels


def test_skip_bad_imports_the_good_entries(fresh: Project, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "mixed.csv", [
        ["pan", 0, 4, "walk"], ["pan", 3, 8, "run"], ["pan", 28, 31, "run"],
        ["ghost", 0, 1, "walk"], ["wave", 7, 2, "jump"], ["wave", 10, 12, "jump"]])
    result = import_actions(fresh, path, skip_bad=True)
    assert all_segments(fresh) == {"pan": [Segment(0, 4, "walk")],
                                   "wave": [Segment(10, 12, "jump")]}
    assert [name for name, _ in result.skipped] == ["row 3 (pan)", "row 4 (pan)",
                                                     "row 5 (ghost)", "row 6 (wave)"]
    assert result.new_classes == ["walk", "jump"]  # "run" came only in bad rows
    assert result.imported == 2 and result.segments == 2


def test_bad_json_entries_are_named(fresh: Project, tmp_path: Path) -> None:
    document = {"version": "VERSION 1.3", "database": {
        "pan": {"annotations": [{"segment": [0.0, 0.5], "label": "walk"},
                                {"segment": [2.0, 1.0], "label": "run"}]},
        "wave": {"annotations": [{"segment": [0.0, 1.4], "label": "wave"}]},
        "ghost": {"annotations": [{"segment": [0, 1], "label": "walk"}]},
        "broken": {"duration": 3}}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(BadEntryError, match=r"bad.json: video broken: a video needs a list "
                                            r"\"annotations\"; nothing was imported"):
        import_actions(fresh, path)
    del document["database"]["broken"]
    path.write_text(json.dumps(document))
    with pytest.raises(BadEntryError, match=r"pan annotation 2: it starts at 2 s, after it ends "
                                            r"\(1 s\); nothing was imported"):
        import_actions(fresh, path)
    document["database"]["broken"] = {"duration": 3}
    path.write_text(json.dumps(document))
    result = import_actions(fresh, path, skip_bad=True)
    assert dict(result.skipped) == {
        "video broken": "a video needs a list \"annotations\"",
        "pan annotation 2": "it starts at 2 s, after it ends (1 s)",
        "wave annotation 1": "it ends at 1.4 s (frame 41), past the end of wave (40 frames, "
                             "0-39)",
        "ghost annotation 1": "the project has no video item named 'ghost'"}
    assert all_segments(fresh)["pan"] == [Segment(0, 4, "walk")]


@pytest.mark.parametrize(("text", "message"), [
    ("video,label\npan,walk\n", "needs a header with the columns video, label and start_frame"),
    ("{\"videos\": []}", "its top level must be an object with a \"database\""),
    ("{not json", "is not valid JSON"),
])
def test_a_file_of_another_kind_is_refused(fresh: Project, tmp_path: Path, text: str,
                                           message: str) -> None:
    path = tmp_path / ("file.json" if text.startswith("{") else "file.csv")
    path.write_text(text)
    with pytest.raises(Exception, match=message):
        import_actions(fresh, path)


def test_unknown_labels_join_the_vocabulary(fresh: Project, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "labels.csv", [["pan", 0, 1, "old"], ["pan", 2, 3, "clap"],
                                               ["wave", 0, 1, "clap"], ["wave", 2, 3, "nod"]])
    result = import_actions(fresh, path)
    assert result.new_classes == ["clap", "nod"]
    assert fresh.action_labels() == ["old", "clap", "nod"]
    assert result.notes == ["added to the action labels: clap, nod"]


# -- variable frame rate ---------------------------------------------------------------------------
def _read_vint(data_: bytes, pos: int, keep_marker: bool = False) -> tuple[int, int]:
    first = data_[pos]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data_[pos + 1:pos + length]:
        value = (value << 8) | byte
    return value, length


def _children(data_: bytes, start: int, end: int):
    pos = start
    while pos < end:
        element, id_len = _read_vint(data_, pos, keep_marker=True)
        size, size_len = _read_vint(data_, pos + id_len)
        body = pos + id_len + size_len
        stop = end if size == (1 << (7 * size_len)) - 1 else body + size
        yield element, body, stop
        pos = stop


def retime_mkv(source: Path, dest: Path, intervals_ms: list[int]) -> Path:
    """A copy of a Matroska file whose frames' timestamps follow ``intervals_ms``."""
    data_ = bytearray(source.read_bytes())
    times = iter(np.cumsum([0, *intervals_ms]).tolist())
    for element, body, stop in _children(data_, 0, len(data_)):
        if element != 0x18538067:  # Segment
            continue
        for child, start, end in _children(data_, body, stop):
            if child != 0x1F43B675:  # Cluster
                continue
            base = 0
            for item, item_start, item_end in _children(data_, start, end):
                if item == 0xE7:  # Timecode
                    base = int.from_bytes(data_[item_start:item_end], "big")
                elif item == 0xA3:  # SimpleBlock
                    _, track_len = _read_vint(data_, item_start)
                    struct.pack_into(">h", data_, item_start + track_len, next(times) - base)
    dest.write_bytes(bytes(data_))
    return dest


def test_variable_frame_rate_times_are_marked_approximate(tmp_path: Path) -> None:
    mkv = write_clip(tmp_path / "even.mkv", 24, 25.0, fourcc="mp4v")
    vfr = retime_mkv(mkv, tmp_path / "vfr.mkv", [40 if k % 3 else 120 for k in range(1, 24)])
    with Project.create(tmp_path / "vfr_project") as project:
        item = project.add_video(vfr)
        assert any("variable frame rate" in w for w in item.extra["warnings"])
        fps = item.extra["fps"]
        project.save_segments(item.id, [Segment(2, 10, "walk")])
        export_project(project, "actions", tmp_path / "out")
        video = json.loads((tmp_path / "out" / "activitynet.json").read_text())["database"]["vfr"]
        assert video["note"] == (f"vfr: variable frame rate: times and frames were converted "
                                 f"at {fps:g} fps and are approximate")
        project.save_segments(item.id, [])
        result = import_actions(project, tmp_path / "out" / "activitynet.json")
        assert project.load_segments(item.id) == [Segment(2, 10, "walk")]
        assert result.notes == [video["note"], "added to the action labels: walk"]
        result = import_actions(project, tmp_path / "out" / "actions.csv")  # exact frames
        assert result.notes == []
        assert project.load_segments(item.id) == [Segment(2, 10, "walk")]


# -- registry and CLI ------------------------------------------------------------------------------
def test_actions_is_registered_both_ways() -> None:
    assert EXPORT_FORMATS["actions"] is export_actions
    assert IMPORT_FORMATS["actions"] is import_actions


def test_cli_export_and_import(capsys, labelled: Project, fresh: Project,
                               tmp_path: Path) -> None:
    labelled_dir, fresh_dir = labelled.folder, fresh.folder
    labelled.close()
    fresh.close()
    code, out, err = run_cli(capsys, "export", labelled_dir, "--format", "actions", "--out",
                             tmp_path / "out")
    assert code == 0, err
    assert json.loads(out) == {"out": str((tmp_path / "out").absolute()), "format": "actions",
                               "count": 4, "skipped": []}
    code, out, err = run_cli(capsys, "import", fresh_dir, "--format", "actions",
                             tmp_path / "out" / "activitynet.json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["imported"] == 2 and summary["segments"] == 4
    assert summary["new_classes"] == ["walk", "run", "jump", "wave"]
    assert err == "note: added to the action labels: walk, run, jump, wave\n"
    with Project.open(fresh_dir, read_only=True) as reopened:
        assert all_segments(reopened) == SEGMENTS


def test_cli_bad_entry_is_one_line_and_skip_bad_warns(capsys, fresh: Project,
                                                      tmp_path: Path) -> None:
    folder = fresh.folder
    fresh.close()
    path = write_csv(tmp_path / "bad.csv", [["pan", 0, 4, "walk"], ["pan", 3, 99, "run"]])
    code, out, err = run_cli(capsys, "import", folder, "--format", "actions", path)
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("segstudio-cli: error: ")
    assert "row 3 (pan): it ends at frame 99" in lines[0] and "--skip-bad" in lines[0]
    code, out, err = run_cli(capsys, "import", folder, "--format", "actions", path, "--skip-bad")
    assert code == 0
    assert json.loads(out)["skipped"][0]["name"] == "row 3 (pan)"
    assert err.startswith("warning: row 3 (pan): it ends at frame 99")
