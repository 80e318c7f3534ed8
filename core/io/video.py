"""Reading videos (MP4, AVI, MOV, MKV, WebM) and folders of frame images, one frame at a time.

:func:`open_video` returns a :class:`VideoReader`: random access to any frame as an RGB uint8
array, always the very frame that decoding the file from its start gives, through an LRU
cache bounded in megabytes and a background thread that decodes the next frames while the
current one is shown. A video is never decoded whole into memory.

Containers often say wrong things, so what they say is checked when the file opens, and every
correction becomes one sentence in :attr:`VideoReader.warnings`:

* the frame count (truncated files, headers that lie): a seek to the announced last frame must
  land there and decode, and the next frame must not; otherwise a binary search over seeks
  brackets the last decodable frame and a short forward scan (grab only, nothing converted)
  finds it exactly;
* the frame rate: a missing or absurd rate is replaced; a variable rate is detected from the
  timestamps of the first frames and of the last one.

Seeking: OpenCV turns a frame number into a timestamp, which is exact only when frames are
evenly spaced and the stream's timestamps are sane. A seek is trusted only after checks: one
test seek at open compared with sequential decoding, the position OpenCV reports after every
seek, and, when a frame decoded earlier from the start lies just before the target, that
frame's fingerprint. When a check fails, or the frame rate varies, the reader stops seeking and
decodes forward from the start instead: exact, but slow for far jumps backwards in long files.

OpenCV is imported inside the functions that use it so that ``import core.io`` stays fast.
"""

from __future__ import annotations

import math
import operator
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from core.errors import SegStudioError
from core.io.frame_cache import FrameCache
from core.io.images import SUPPORTED_IMAGE_SUFFIXES, is_image_path, load_image, read_image_info

if TYPE_CHECKING:
    from core.io.video_capture import CaptureSource

PathLike = str | os.PathLike[str]

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm"})
DEFAULT_FPS = 25.0
"""Frame rate assumed for a folder of frames, and for a video that gives none."""

_PREFETCH_DEPTH = 4  # frames decoded ahead of the last one asked for
# Frames decoded on (and shown) that the cache keeps: the last two, for a step back. More
# would cost more than it saves: each is written to memory that has left the CPU's caches by
# the time its buffer comes round again (0.99x a raw read with two, 0.82x with six, measured
# at 1080p on a 16-core Xeon).
_RING_FRAMES = 2
_PREFETCH_DELAY = 0.002  # s without a new request before the prefetcher starts


class VideoError(SegStudioError):
    """A video or folder of frames cannot be opened or decoded."""


class FrameIndexError(VideoError, IndexError):
    """A frame index outside the video."""


def is_video_path(path: PathLike) -> bool:
    """Whether ``path`` names a video file by its suffix (cheap; never raises).

    A folder of frames is not recognised here: only :func:`open_video` treats a folder as a
    video, when asked to.
    """
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def open_video(
    path: PathLike, *, max_cache_mb: float = 256, prefetch: bool = True, fps: float | None = None
) -> VideoReader:
    """Open a video file, or a folder of frame images, for reading.

    Args:
        path: An MP4/AVI/MOV/MKV/WebM file (anything FFmpeg reads is tried), or a folder of
            PNG/JPEG/TIFF/BMP frames of one size, ordered by name naturally (frame2 before
            frame10).
        max_cache_mb: Memory for decoded frames, in MiB; the cache never holds more.
        prefetch: Decode the next few frames in a background thread after each request.
        fps: Frame rate of a folder of frames (default :data:`DEFAULT_FPS`); ignored for
            files, whose rate comes from the file.

    Raises:
        SegStudioError: The path does not exist.
        VideoError: The file cannot be opened or decodes no frame; the folder holds no frame,
            frames of different sizes, or a multi-page TIFF.
        CorruptFileError, UnsupportedFormatError: A frame image of a folder is unreadable.
        ValueError: ``fps`` is not a positive number.
    """
    path = Path(path)
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if not path.exists():
        raise SegStudioError(f"'{path}' does not exist.")
    if path.is_dir():
        source: CaptureSource | _FolderSource = _FolderSource(path, fps or DEFAULT_FPS)
    elif is_image_path(path):
        raise VideoError(f"'{path}' is an image, not a video; open the folder of frames instead.")
    else:
        from core.io.video_capture import CaptureSource  # files: OpenCV + FFmpeg

        source = CaptureSource(path)
    return VideoReader(source, max_cache_mb=max_cache_mb, prefetch=prefetch)


def describe_video(path: PathLike) -> dict[str, Any]:
    """What a video holds, JSON-ready, for ``segstudio-cli info``.

    Returns:
        ``kind`` ("video"), ``frames``, ``fps``, ``width``, ``height``, ``duration`` (s),
        ``codec`` (FourCC, "" for a folder) and ``warnings`` (sentences).

    Raises:
        The errors of :func:`open_video`.
    """
    with open_video(path, max_cache_mb=0, prefetch=False) as reader:
        return {
            "kind": "video",
            "frames": reader.frame_count,
            "fps": round(reader.fps, 6),
            "width": reader.width,
            "height": reader.height,
            "duration": round(reader.duration, 6),
            "codec": reader.codec,
            "warnings": list(reader.warnings),
        }


def downscale(frame: np.ndarray, max_side: int) -> np.ndarray:
    """``frame`` shrunk (area interpolation) so that its longer side is at most ``max_side``;
    the frame itself when it is already that small."""
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    height, width = frame.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return frame
    import cv2

    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


class VideoReader:
    """Random access to the frames of one video; thread-safe; a context manager.

    Frames are RGB uint8 arrays of shape (height, width, 3). They are shared with the cache and
    therefore read-only: copy one to change it. Frames of a video file are channel-reversed
    views of the decoded BGR array (no colour conversion; not C-contiguous): OpenCV and numpy
    take them as they are, ``np.ascontiguousarray`` first where a C-contiguous array is needed
    (``torch.from_numpy``, ``QImage``).

    Attributes:
        source: The file or folder.
        frame_count: Frames that really decode (verified at open, not the container's claim).
        fps: Frames per second (approximate for a variable frame rate).
        width: Pixels per row.
        height: Rows.
        codec: FourCC of the video stream ("" for a folder of frames).
        warnings: What was wrong with the file and how it was worked around, one sentence each
            (grows if a seek misbehaves later).
    """

    def __init__(self, source: CaptureSource | _FolderSource, *, max_cache_mb: float,
                 prefetch: bool) -> None:
        self._source = source
        self.source: Path = source.path
        self.frame_count: int = source.frame_count
        self.fps: float = source.fps
        self.width: int = source.width
        self.height: int = source.height
        self.codec: str = source.codec
        self.warnings: list[str] = source.warnings
        self._lock = threading.Lock()  # guards the decoder
        self._demand_lock = threading.Lock()
        self._demand = 0  # callers waiting for the decoder: the prefetcher then makes way
        self._closed = False
        self._cache = FrameCache(int(max(0.0, max_cache_mb) * 2**20))
        source.on_unreliable = self._cache.clear  # frames decoded after a bad seek may be wrong
        first = source.take_first_frame()
        if first is not None:
            self._cache.put(0, _read_only(first))
        self._decoded = 0  # the frame the source decoded last
        frame_bytes = self.width * self.height * 3
        if not isinstance(source, _FolderSource):  # a capture source decodes into the spares
            self._cache.reserve(_RING_FRAMES, (self.height, self.width, 3))
        depth = min(_PREFETCH_DEPTH, self._cache.max_bytes // frame_bytes - 1)
        self._prefetcher = _Prefetcher(self, depth) if prefetch and depth >= 1 else None
        self._finalizer = weakref.finalize(self, _shut_down, self._prefetcher, source, self._lock)

    # -- properties ----------------------------------------------------------------------
    @property
    def duration(self) -> float:
        """Length in seconds (``frame_count / fps``)."""
        return self.frame_count / self.fps

    @property
    def cache_nbytes(self) -> int:
        """Bytes of decoded frames held in the cache now (never above the limit; one evicted
        frame may be kept besides, as the memory the next decoded frame is written into)."""
        return self._cache.nbytes

    @property
    def cache_limit_bytes(self) -> int:
        """The cache's bound in bytes (``max_cache_mb`` MiB)."""
        return self._cache.max_bytes

    @property
    def prefetch_thread(self) -> threading.Thread | None:
        """The background decoder (None without prefetching); it ends in :meth:`close`."""
        return self._prefetcher.thread if self._prefetcher is not None else None

    def __len__(self) -> int:
        return self.frame_count

    def __repr__(self) -> str:
        return (f"VideoReader('{self.source}', {self.frame_count} frames, "
                f"{self.width}x{self.height}, {self.fps:.3g} fps)")

    # -- reading -------------------------------------------------------------------------
    def frame(self, index: int, *, max_side: int | None = None) -> np.ndarray:
        """The frame at ``index`` (0-based) as RGB uint8 (H, W, 3), read-only.

        Args:
            index: Frame number; reading ``index`` right after ``index - 1`` just decodes on.
            max_side: Shrink the frame so that its longer side is at most this (for analysis);
                the cache keeps the full frame.

        Raises:
            FrameIndexError: ``index`` is outside the video.
            VideoError: The reader is closed, or the frame cannot be decoded.
        """
        index = self._check_index(index)
        frame = self._get(index)
        if self._prefetcher is not None:
            self._prefetcher.request(index + 1, 1)
        return frame if max_side is None else downscale(frame, max_side)

    def iter_frames(self, start: int = 0, stop: int | None = None, step: int = 1, *,
                    max_side: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame)`` for ``range(start, stop, step)`` (stop defaults to the end
        and is clipped to it), e.g. for optical flow on a subsampled, downscaled video.

        Frames in between are decoded without being converted (or jumped over by a seek when
        ``step`` is large), and the prefetcher works ``step`` frames at a time.

        Raises:
            FrameIndexError: ``start`` is outside the video.
            ValueError: ``step`` is below 1.
        """
        if step < 1:
            raise ValueError(f"step must be at least 1, got {step}")
        self._check_index(start)
        stop = self.frame_count if stop is None else min(stop, self.frame_count)
        for index in range(start, stop, step):
            frame = self._get(index)
            if self._prefetcher is not None:
                self._prefetcher.request(index + step, step)
            yield index, (frame if max_side is None else downscale(frame, max_side))

    def step_for_fps(self, target_fps: float) -> int:
        """The frame step that samples the video at about ``target_fps`` (at least 1)."""
        if not target_fps > 0:
            raise ValueError(f"target_fps must be positive, got {target_fps}")
        return max(1, round(self.fps / target_fps))

    def time_of(self, index: int) -> float:
        """Time of frame ``index`` in seconds from the start (approximate at a variable rate)."""
        return index / self.fps

    def index_at(self, seconds: float) -> int:
        """The frame shown at ``seconds``, clipped to the video."""
        return min(self.frame_count - 1, max(0, math.floor(seconds * self.fps + 1e-6)))

    # -- life cycle ----------------------------------------------------------------------
    def close(self) -> None:
        """Stop the prefetcher, release the decoder and drop the cache (idempotent)."""
        self._closed = True
        self._finalizer()
        self._cache.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------
    def _check_index(self, index: int) -> int:
        index = operator.index(index)
        if self._closed:
            raise VideoError(f"The video '{self.source}' is closed.")
        count = self.frame_count
        if index >= count:
            raise FrameIndexError(
                f"frame {index} is past the end: the video has {count} frames (0-{count - 1}).")
        if index < 0:
            raise FrameIndexError(
                f"frame {index} does not exist: the video's frames are numbered 0-{count - 1}.")
        return index

    def _get(self, index: int) -> np.ndarray:
        frame = self._cache.get(index)
        if frame is not None:
            return frame
        with self._demand_lock:
            self._demand += 1
        try:
            self._lock.acquire()
        finally:
            with self._demand_lock:
                self._demand -= 1
        try:
            if self._closed:
                raise VideoError(f"The video '{self.source}' is closed.")
            frame = self._cache.get(index)  # the prefetcher may have decoded it meanwhile
            if frame is None:
                frame = _read_only(self._source.read(index, self._cache.take_spare()))
                self._cache.put(index, frame, sequential=index == self._decoded + 1)
                self._decoded = index
            return frame
        finally:
            self._lock.release()

    def _prefetch(self, index: int) -> bool:
        """Decode ``index`` into the cache if that needs no seek; whether to go on."""
        if self._closed or index >= self.frame_count or self._demand:
            return False
        if self._cache.contains(index):
            return True
        with self._lock:
            if self._closed or self._cache.contains(index):
                return not self._closed
            if not self._source.reachable(index):
                return False  # a seek: left to whoever asks for the frame
            frame = self._source.read(index, self._cache.take_spare())
            self._cache.put(index, _read_only(frame), sequential=index == self._decoded + 1,
                            asked=False)
            self._decoded = index
        return True


def _read_only(frame: np.ndarray) -> np.ndarray:
    frame.flags.writeable = False
    return frame


def _shut_down(prefetcher: _Prefetcher | None, source: Any, lock: threading.Lock) -> None:
    if prefetcher is not None:
        prefetcher.stop()
    with lock:
        source.close()


class _Prefetcher:
    """A thread that decodes the frames after the last one asked for, while nobody waits.

    It starts only when no new request came for ``_PREFETCH_DELAY``: a caller that asks for
    frame after frame without pause (an analysis loop) decodes faster itself than through a
    second thread, while a viewer that shows each frame for a while gets the next ones decoded
    in the meantime. It holds the reader only weakly, so that a reader dropped without
    close() is still collected (its finalizer stops this thread).
    """

    def __init__(self, reader: VideoReader, depth: int) -> None:
        self._reader = weakref.ref(reader)
        self._depth = depth
        self._wake = threading.Condition()
        self._request: tuple[int, int] | None = None
        self._idle = False  # waiting for a request (not in the delay): requests then notify
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name="video-prefetch", daemon=True)
        self.thread.start()

    def request(self, start: int, step: int) -> None:
        with self._wake:
            self._request = (start, step)
            if self._idle:
                self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self.thread is not threading.current_thread():
            self.thread.join()

    def _next_request(self) -> tuple[int, int] | None:
        """The latest request once requests have paused for the delay (None: stopped)."""
        with self._wake:
            self._idle = True
            while self._request is None and not self._stopped:
                self._wake.wait()
            self._idle = False
            while not self._stopped:
                request, self._request = self._request, None
                self._wake.wait(_PREFETCH_DELAY)  # only stop() notifies here
                if self._request is None:
                    return None if self._stopped else request
            return None

    def _superseded(self) -> bool:
        with self._wake:
            return self._stopped or self._request is not None

    def _run(self) -> None:
        while (request := self._next_request()) is not None:
            start, step = request
            for k in range(self._depth):
                if self._superseded():
                    break
                reader = self._reader()
                if reader is None:
                    return
                try:
                    more = reader._prefetch(start + k * step)
                except Exception:  # the caller who asks for that frame gets the error
                    more = False
                del reader
                if not more:
                    break


# --- folders of frames ------------------------------------------------------------------


def _natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: frame2 before frame10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def frame_files(folder: PathLike) -> list[Path]:
    """The frame images of a folder (not hidden, PNG/JPEG/TIFF/BMP by name) in natural order."""
    folder = Path(folder)
    try:
        files = [entry for entry in folder.iterdir()
                 if not entry.name.startswith(".") and entry.is_file()
                 and entry.suffix.lower() in SUPPORTED_IMAGE_SUFFIXES]
    except OSError as err:
        raise VideoError(f"'{folder}' cannot be listed: {err.strerror or err}.") from None
    return sorted(files, key=lambda entry: _natural_key(entry.name))


class _FolderSource:
    """Frames stored as image files; every frame is its own file, so access is exact."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self._files = frame_files(path)
        if not self._files:
            raise VideoError(f"'{path}' holds no frame images (PNG, JPEG, TIFF or BMP files).")
        first = read_image_info(self._files[0])
        for file in self._files:
            info = first if file == self._files[0] else read_image_info(file)
            if info.frames > 1:
                raise VideoError(f"'{file}' is a multi-page TIFF; a folder of frames needs "
                                 "one image per file.")
            if (info.width, info.height) != (first.width, first.height):
                raise VideoError(
                    f"'{file}' is {info.width}x{info.height} but '{self._files[0].name}' is "
                    f"{first.width}x{first.height}: all frames of a folder must have one size.")
        self.frame_count = len(self._files)
        self.width, self.height = first.width, first.height
        self.fps = float(fps)
        self.codec = ""
        self.warnings: list[str] = []
        self.on_unreliable: Callable[[], None] | None = None

    def take_first_frame(self) -> np.ndarray | None:
        return None

    def reachable(self, index: int) -> bool:
        return True

    def read(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        return _to_rgb8(load_image(self._files[index]).array)

    def close(self) -> None:
        pass


def _to_rgb8(array: np.ndarray) -> np.ndarray:
    """RGB uint8 from a decoded image: grey is repeated, alpha dropped, 16-bit reduced to
    its high byte (the same for every frame, so brightness does not flicker)."""
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(np.nan_to_num(array.astype(np.float32)) * 255.0, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])

