"""Video files through OpenCV's FFmpeg backend, with what the container claims checked.

Used by :func:`core.io.video.open_video`, whose module explains what is checked and why. A
:class:`CaptureSource` is not thread-safe: the reader calls it with its lock held.

Vocabulary: the *position* is the index of the frame the next ``grab()`` decodes; a frame is
*fingerprinted* when it was decoded forward from frame 0 with no seek in between, which makes
it a reference to check later seeks against.
"""

from __future__ import annotations

import bisect
import math
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.io.video import DEFAULT_FPS, VideoError

_MAX_FPS = 1000.0  # above this a container's rate is nonsense
_SAMPLE_FRAMES = 24  # decoded at open for the timestamps and the test seek
_FORWARD_GRAB = 24  # a jump forward by at most this many frames decodes on instead of seeking
_CHECK_SPAN = 16  # a seek anchors on a fingerprinted frame at most this far before its target
_SCAN_SPAN = 64  # the count's binary search stops at this bracket and scans it
_VFR_SPREAD = 0.25  # frame intervals varying by more than this fraction: variable frame rate
_FINGERPRINT_STRIDE = 16  # pixels between the samples of a fingerprint, both ways


class CaptureSource:
    """One ``cv2.VideoCapture``, its verified metadata, and where it stands.

    Attributes:
        path: The file.
        frame_count, fps, width, height, codec: Verified at open (see the module doc).
        warnings: Sentences for the user; shared with the reader, and grows when a seek
            misbehaves later.
        on_unreliable: Called when seeking turns out to be wrong (frames decoded after earlier
            seeks may be wrong too: the reader drops its cache).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.warnings: list[str] = []
        self.on_unreliable: Callable[[], None] | None = None
        self.width = self.height = 0
        self._cap = _open_capture(path)
        self._pos: int | None = 0
        self._from_start = True
        self._fingerprints: dict[int, int] = {}
        self._fingerprinted: list[int] = []  # the keys of _fingerprints, sorted
        self._buffer: np.ndarray | None = None  # BGR frame reused by retrieve()
        self._last_ms = math.nan  # timestamp of the last frame grabbed while counting
        import cv2

        reported = _finite_int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        claimed_fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.codec = _fourcc(self._cap.get(cv2.CAP_PROP_FOURCC))
        self._seek_limit = reported  # OpenCV clamps seeks to the count the container claims
        self._seekable = reported > 1  # OpenCV does not really seek below two frames
        try:
            first, times, ended = self._sample()
            self._first: np.ndarray | None = first
            self.height, self.width = first.shape[:2]
            self.fps = self._check_rate(claimed_fps, times)
            if self._seekable and not ended:
                self._test_seek()
            if ended:
                self.frame_count = len(times)
            else:
                self.frame_count = self._count_frames(reported, len(times))
                if self._seekable:
                    self.frame_count = self._check_end_time(self.frame_count, times[0])
            if not (self._from_start and self._pos is not None and self._pos <= _FORWARD_GRAB):
                self._rewind()  # reading from the start then fingerprints frames
        except BaseException:
            self.close()
            raise
        self._check_count(reported)

    # -- the reader's interface ----------------------------------------------------------
    def take_first_frame(self) -> np.ndarray | None:
        """Frame 0, decoded at open (once; then None)."""
        first, self._first = self._first, None
        return first

    def reachable(self, index: int) -> bool:
        """Whether ``index`` can be decoded from the current position without a seek."""
        if self._pos is None or index < self._pos:
            return False
        if not self._seekable or index - self._pos <= _FORWARD_GRAB:
            return True
        return min(index, self._seek_limit - 1) <= self._pos  # a seek would land behind us

    def read(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Frame ``index`` as RGB uint8: decoded on from the position, or after a seek.

        Args:
            index: The frame.
            out: A spare array to write the frame into (used when its shape fits).
        """
        if not self.reachable(index):
            self._seek(index)
        while self._pos <= index:
            if not self._grab():
                failed, self._pos = self._pos, None  # the next read starts with a seek
                raise self._undecodable(failed)
        return self._retrieve(out)

    def close(self) -> None:
        self._cap.release()

    # -- decoding ------------------------------------------------------------------------
    def _grab(self) -> bool:
        if not self._cap.grab():
            return False
        self._pos += 1
        return True

    def _retrieve_bgr(self, own: bool = False, into: np.ndarray | None = None) -> np.ndarray:
        """The frame just grabbed as BGR: in the reader's reused buffer, or (``own``) in
        ``into`` or a new array the caller keeps."""
        if own:
            ok, buffer = self._cap.retrieve() if into is None else self._cap.retrieve(into)
        else:
            ok, buffer = self._cap.retrieve(self._buffer)
        index = self._pos - 1
        if not ok or buffer is None:
            raise self._undecodable(index)
        if not own:
            self._buffer = buffer
        if self.width and buffer.shape[:2] != (self.height, self.width):
            raise VideoError(
                f"Frame {index} of '{self.path}' is {buffer.shape[1]}x{buffer.shape[0]} but the "
                f"video is {self.width}x{self.height}; videos that change size are not supported.")
        if self._from_start and index not in self._fingerprints:
            self._fingerprints[index] = _fingerprint(buffer)
            bisect.insort(self._fingerprinted, index)
        return buffer

    def _retrieve(self, out: np.ndarray | None = None) -> np.ndarray:
        """The frame just grabbed as RGB: a channel-reversed view of its own BGR array (no
        colour conversion; ``out``: a spare such view whose array is decoded into)."""
        owner = None
        if out is not None and out.base is not None and out.shape == out.base.shape \
                and out.base.flags.c_contiguous:
            owner = out.base
        return self._retrieve_bgr(own=True, into=owner)[..., ::-1]

    def _undecodable(self, index: int) -> VideoError:
        return VideoError(f"Frame {index} of '{self.path}' cannot be decoded: the file is "
                          "damaged there.")

    # -- seeking -------------------------------------------------------------------------
    def _seek_to(self, target: int) -> int:
        """Ask OpenCV for ``target``; return where it says it landed."""
        import cv2

        self._cap.set(cv2.CAP_PROP_POS_FRAMES, target)
        landed = _finite_int(self._cap.get(cv2.CAP_PROP_POS_FRAMES), default=-1)
        self._from_start = False
        self._pos = target if landed == target else None
        return landed

    def _seek(self, index: int) -> None:
        """Move to a position at or before ``index``, checked; rewind if seeking is unreliable.

        The seek anchors on a fingerprinted frame shortly before the target when there is one,
        and compares it after landing.
        """
        if not self._seekable or index <= _FORWARD_GRAB:
            self._rewind()  # near the start, reopening is cheap and keeps the fingerprints
            return
        target = min(index, self._seek_limit - 1)
        check = self._fingerprinted_before(target)
        anchor = target if check is None else check
        landed = self._seek_to(anchor)
        if landed != anchor:
            self._distrust(f"a seek to frame {anchor} landed on frame {landed}")
        elif check is not None and not self._matches_fingerprint(check):
            self._distrust(f"frame {check} found by seeking differs from frame {check} "
                           "decoded from the start")

    def _fingerprinted_before(self, target: int) -> int | None:
        i = bisect.bisect_left(self._fingerprinted, target)  # keys < target end at i - 1
        if i and self._fingerprinted[i - 1] >= target - _CHECK_SPAN:
            return self._fingerprinted[i - 1]
        return None

    def _matches_fingerprint(self, index: int) -> bool:
        """Decode the frame at the position (``index``) and compare it with its fingerprint."""
        if not self._grab():
            return False
        ok, buffer = self._cap.retrieve(self._buffer)
        return bool(ok) and buffer is not None and _fingerprint(buffer) == self._fingerprints[index]

    def _distrust(self, reason: str) -> None:
        self._seekable = False
        self.warnings.append(
            f"Seeking in '{self.path.name}' is unreliable ({reason}): frames are now found by "
            "decoding from the start, which is slow for jumps backwards in long videos.")
        if self.on_unreliable is not None:
            self.on_unreliable()
        self._rewind()

    def _rewind(self) -> None:
        """Reopen the file: the one way back to frame 0 that no container can get wrong."""
        self._cap.release()
        self._cap = _open_capture(self.path)
        self._pos = 0
        self._from_start = True

    # -- checks at open ------------------------------------------------------------------
    def _sample(self) -> tuple[np.ndarray, list[float], bool]:
        """Decode the first frames: frame 0, their timestamps (ms), whether the video ended."""
        import cv2

        if not self._grab():
            raise VideoError(f"'{self.path}' opens but none of its frames can be decoded: the "
                             "file is damaged or holds no video.")
        first = self._retrieve()
        times = [self._cap.get(cv2.CAP_PROP_POS_MSEC)]
        for index in range(1, _SAMPLE_FRAMES):
            if not self._grab():
                return first, times, True
            if index == _SAMPLE_FRAMES - 1:
                self._retrieve_bgr()  # fingerprinted for the test seek
            times.append(self._cap.get(cv2.CAP_PROP_POS_MSEC))
        return first, times, False

    def _check_rate(self, claimed: float, times: list[float]) -> float:
        """The frame rate to use; detects a variable rate (and then stops seeking)."""
        intervals = np.diff(np.asarray(times, dtype=np.float64))
        regular = len(intervals) >= 2 and bool(np.all(np.isfinite(intervals))) and bool(
            np.all(intervals > 0))
        median = float(np.median(intervals)) if regular else 0.0
        fps = float(claimed)
        if not (math.isfinite(fps) and 0 < fps <= _MAX_FPS):
            measured = 1000.0 / median if regular else 0.0
            fps = measured if 0 < measured <= _MAX_FPS else DEFAULT_FPS
            how = "from its frame times" if fps == measured else "by default"
            self.warnings.append(f"'{self.path.name}' gives no usable frame rate ({claimed:g}): "
                                 f"assuming {fps:.3g} fps ({how}).")
        if regular and len(intervals) >= 3:
            spread = float(intervals.max() - intervals.min())
            if spread > max(_VFR_SPREAD * median, 2.0):
                self._variable_rate(f"frames {intervals.min():.0f} to {intervals.max():.0f} ms "
                                    "apart")
        return fps

    def _variable_rate(self, evidence: str) -> None:
        """Frame numbers cannot be turned into timestamps: stop seeking."""
        self._seekable = False
        self.warnings.append(
            f"variable frame rate: times are approximate ('{self.path.name}' has {evidence}; "
            "frames are found by decoding from the start, which is slow for jumps backwards).")

    def _check_end_time(self, count: int, start_ms: float) -> int:
        """After counting by seeks, compare the last frame's timestamp with the one a constant
        rate gives; if they disagree, the rate varies somewhere and the count is redone by
        decoding from the start. Returns the count."""
        period = 1000.0 / self.fps
        last_ms = self._last_ms - start_ms
        expected = (count - 1) * period
        if not math.isfinite(last_ms) or abs(last_ms - expected) <= period / 2:
            return count
        self._variable_rate(f"its last frame at {last_ms / 1000:.3f} s instead of "
                            f"{expected / 1000:.3f} s")
        self._rewind()
        return self._count_forward()

    def _test_seek(self) -> None:
        """Seek to the last sampled frame and compare it with the same frame decoded in order."""
        check = _SAMPLE_FRAMES - 1
        landed = self._seek_to(check)
        if landed != check:
            self._distrust(f"a test seek to frame {check} landed on frame {landed}")
        elif not self._matches_fingerprint(check):
            self._distrust(f"frame {check} found by seeking differs from frame {check} "
                           "decoded from the start")

    def _count_frames(self, reported: int, sampled: int) -> int:
        """The number of decodable frames, knowing that the first ``sampled`` decode.

        Healthy file: one seek to the claimed last frame, which must decode, and one grab
        after it, which must fail. A shorter file (truncated, or a header that claims too
        much): a binary search by seeks down to a bracket of ``_SCAN_SPAN`` frames, then a
        forward scan. A longer one: a forward scan from the claimed end. Without reliable
        seeking: a forward scan from the start (grab only).
        """
        if self._seekable and reported > sampled:
            if self._probe(reported - 1):
                return reported + self._count_forward()
            good, bad = sampled - 1, reported - 1
            while bad - good > _SCAN_SPAN:
                middle = (good + bad) // 2
                if self._probe(middle):
                    good = middle
                else:
                    bad = middle
            if good >= sampled and self._probe(good):
                return good + 1 + self._count_forward()
        if not (self._from_start and self._pos == sampled):
            self._rewind()
            for _ in range(sampled):
                self._grab()
        return sampled + self._count_forward()

    def _probe(self, index: int) -> bool:
        """Whether a seek to ``index`` lands there and the frame decodes."""
        import cv2

        ok = self._seek_to(index) == index and self._grab() and _finite_int(
            self._cap.get(cv2.CAP_PROP_POS_FRAMES)) == index + 1
        if ok:
            self._last_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        else:
            self._pos = None
        return ok

    def _count_forward(self) -> int:
        """Grab to the end; returns the frames grabbed, and keeps the last one's timestamp."""
        import cv2

        count = 0
        while self._grab():
            count += 1
            self._last_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        return count

    def _check_count(self, reported: int) -> None:
        count, name = self.frame_count, self.path.name
        if count == reported:
            return
        if reported <= 0:
            self.warnings.append(f"'{name}' does not say how many frames it has: "
                                 f"{count} were counted.")
        elif count < reported:
            self.warnings.append(
                f"'{name}' announces {reported} frames but only {count} can be decoded (the "
                f"file is truncated or damaged): frames 0-{count - 1} are readable.")
        else:
            self.warnings.append(f"'{name}' announces {reported} frames but holds {count}.")


def _open_capture(path: Path) -> Any:
    import cv2

    try:
        size = path.stat().st_size
    except OSError as err:
        raise VideoError(f"'{path}' cannot be read: {err.strerror or err}.") from None
    if size == 0:
        raise VideoError(f"'{path}' is empty.")
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise VideoError(
            f"'{path}' cannot be opened as a video: it is damaged, truncated (an MP4 or MOV file "
            "cut before its index) or not a video format FFmpeg reads.")
    return cap


def _fingerprint(bgr: np.ndarray) -> int:
    """CRC of the green values of a sparse grid of pixels: a few microseconds at 1080p, and
    different for any two distinct frames of a real video."""
    stride = _FINGERPRINT_STRIDE
    return zlib.crc32(np.ascontiguousarray(bgr[::stride, ::stride, 1]))


def _finite_int(value: float, default: int = 0) -> int:
    return int(value) if math.isfinite(value) and value >= 0 else default


def _fourcc(value: float) -> str:
    code = _finite_int(value) & 0xFFFFFFFF
    text = code.to_bytes(4, "little").decode("latin-1")
    return "".join(ch for ch in text if ch.isprintable()).strip()
