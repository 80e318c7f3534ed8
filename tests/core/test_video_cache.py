"""The video reader's frame cache and prefetcher (core.io.frame_cache, core.io.video): frames
are handed out as views that the cache never overwrites while someone holds them, a sequential
pass goes through a small ring instead of flushing the cache, the bound in bytes holds, and the
prefetcher decodes ahead, stops on close and with a dropped reader; concurrent readers get
exact frames. On clips encoded from real photographs (tests/video_clips.py)."""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from video_clips import FRAMES, SIZE, digest, reference_digests, shuffled, write_clips

from core.io.video import VideoError, open_video


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_clips(tmp_path_factory.mktemp("clips"))


def test_cache_never_overwrites_a_frame_or_view_a_caller_holds(clips) -> None:
    """The cache decodes new frames into the memory of evicted ones (RGB frames are views of
    their BGR arrays): a frame the caller still holds, or a slice of one, must keep its pixels."""
    cap = cv2.VideoCapture(str(clips["mp4"]), cv2.CAP_FFMPEG)
    reference = []
    for _ in range(30):
        reference.append(cap.read()[1][:, :, ::-1].copy())
    cap.release()
    frame_mb = SIZE[0] * SIZE[1] * 3 / 2**20
    with open_video(clips["mp4"], max_cache_mb=frame_mb * 2.5, prefetch=False) as reader:
        held = reader.frame(0)
        corner = reader.frame(1)[:8, :8]  # only a view of frame 1 is kept
        for index in range(2, 30):
            np.testing.assert_array_equal(reader.frame(index), reference[index])
        np.testing.assert_array_equal(held, reference[0])
        np.testing.assert_array_equal(corner, reference[1][:8, :8])
        assert reader.cache_nbytes <= frame_mb * 2.5 * 2**20


def test_a_sequential_pass_keeps_a_ring_and_the_frames_reached_by_seeking(clips) -> None:
    """Frames decoded on (a pass, playback) go through a small ring of reused buffers: a pass
    does not flush the frames a user jumped to, the last few stay for stepping back, and a
    ring frame asked for twice is kept like any other."""
    frame_bytes = SIZE[0] * SIZE[1] * 3
    with open_video(clips["mp4"], prefetch=False) as reader:
        jumped = reader.frame(50).copy()  # reached by a seek
        reader.frame(3)
        for index in range(40):
            reader.frame(index)
        cached = [i for i in range(FRAMES) if reader._cache.contains(i)]
        assert 50 in cached and 3 in cached and 0 in cached  # frame 0: decoded at open
        assert {38, 39} <= set(cached)  # the last frames: a step back is free
        assert 10 not in cached and 25 not in cached
        reader.frame(38)  # a second look: kept
        for index in range(40, 50):
            reader.frame(index)
        cached = [i for i in range(FRAMES) if reader._cache.contains(i)]
        assert 38 in cached and 39 not in cached and {48, 49} <= set(cached)
        assert reader.cache_nbytes <= 12 * frame_bytes
        np.testing.assert_array_equal(reader.frame(50), jumped)


def test_prefetched_frames_wait_in_the_ring_until_shown(clips) -> None:
    """A viewer showing a frame, pausing, then stepping on: the frames the prefetcher decoded
    meanwhile stay cached until they are shown, then pass through the ring."""
    with open_video(clips["mp4"]) as reader:
        reader.frame(10)
        deadline = time.monotonic() + 10
        while not all(reader._cache.contains(i) for i in range(11, 15)):
            assert time.monotonic() < deadline, "the prefetcher decoded nothing"
            time.sleep(0.01)
        ahead = [reader._cache.contains(i) for i in range(11, 15)]
        reader.frame(11)
        reader.frame(12)
        assert ahead == [True] * 4 and reader._cache.contains(13) and reader._cache.contains(14)


def test_cache_never_exceeds_its_bound(clips) -> None:
    frame_bytes = SIZE[0] * SIZE[1] * 3
    with open_video(clips["mp4"], max_cache_mb=2) as reader:  # room for 9 frames
        assert reader.cache_limit_bytes == 2 * 2**20
        seen = []
        for index in [*range(FRAMES), *shuffled(FRAMES), *range(FRAMES)]:
            reader.frame(index)
            seen.append(reader.cache_nbytes)
            assert reader.cache_nbytes <= reader.cache_limit_bytes
        time.sleep(0.05)  # let the prefetcher fill what it can
        assert reader.cache_nbytes <= reader.cache_limit_bytes
        assert max(seen) > reader.cache_limit_bytes - 2 * frame_bytes  # the cache is used
    with open_video(clips["mp4"], max_cache_mb=0) as reader:
        reader.frame(5)
        assert reader.cache_nbytes == 0 and reader.prefetch_thread is None


def test_prefetcher_decodes_ahead_and_stops_on_close(clips) -> None:
    reader = open_video(clips["mp4"])
    thread = reader.prefetch_thread
    assert thread is not None and thread.is_alive()
    reader.frame(10)
    deadline = time.monotonic() + 5
    while not reader._cache.contains(11) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert reader._cache.contains(11)  # decoded by the prefetcher, nobody asked for it

    reader.close()

    assert not thread.is_alive()
    assert reader.cache_nbytes == 0
    with pytest.raises(VideoError, match="is closed"):
        reader.frame(0)
    reader.close()  # idempotent


def test_a_reader_dropped_without_close_stops_its_thread(clips) -> None:
    reader = open_video(clips["mp4"])
    thread = reader.prefetch_thread
    reader.frame(3)
    del reader
    gc.collect()
    thread.join(timeout=5)

    assert not thread.is_alive()


def test_concurrent_readers_get_exact_frames(clips) -> None:
    reference = reference_digests(clips["mp4"])
    errors: list[str] = []
    with open_video(clips["mp4"], max_cache_mb=1) as reader:

        def work(seed: int) -> None:
            for index in shuffled(FRAMES, seed)[:30]:
                if digest(reader.frame(index)) != reference[index]:
                    errors.append(f"frame {index}")

        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert errors == []


# --- analysis helpers ----------------------------------------------------------------------


