"""The decoded-frame cache of :class:`core.io.video.VideoReader`: least recently used frames
bounded in bytes, scan-resistant, reusing the memory of frames nobody holds any more."""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict

import numpy as np


class FrameCache:
    """Least-recently-used frames, bounded by their total size in bytes, and scan-resistant.

    Frames decoded on from the previous one (playback, a sequential pass, the prefetcher) enter
    a small ring first: once the ring is full its oldest frame leaves the cache, so a pass over
    a long video does not flush the frames reached by seeking (as a database's buffer ring for
    sequential scans). A ring frame asked for again (a step back, a second look) is kept as
    any other frame. The memory of a frame that leaves and that nobody else references is kept
    as a spare, and the next decoded frame is written into it: the same pages are reused
    instead of fresh ones being faulted in for every frame, which costs more than decoding on
    some machines. :meth:`reserve` allocates the ring's spares up front (at open). Frames the
    prefetcher decoded ahead join the ring when they are first asked for.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._ring: OrderedDict[int, bool] = OrderedDict()  # index -> asked for yet
        self._ring_size = 0
        self._spares: list[np.ndarray] = []
        self._lock = threading.Lock()

    def reserve(self, frames: int, shape: tuple[int, ...]) -> None:
        """Size the ring for ``frames`` frames (within the budget) and allocate their memory:
        spares that the decoder fills (RGB views of BGR arrays, as the capture source reads)."""
        frame_bytes = int(np.prod(shape))
        self._ring_size = max(0, min(frames, self.max_bytes // max(frame_bytes, 1) - 1))
        for _ in range(self._ring_size + 1 - len(self._spares)):
            bgr = np.zeros(shape, np.uint8)  # zeros: the pages are touched now, not per frame
            self._spares.append(bgr[..., ::-1])

    def get(self, index: int) -> np.ndarray | None:
        with self._lock:
            frame = self._frames.get(index)
            if frame is not None:
                self._frames.move_to_end(index)
                if index in self._ring:
                    if self._ring[index]:  # asked for a second time: kept as any other
                        del self._ring[index]
                    else:  # a prefetched frame, now shown
                        self._ring[index] = True
                        self._trim_ring()
            return frame

    def contains(self, index: int) -> bool:
        return index in self._frames

    def put(self, index: int, frame: np.ndarray, *, sequential: bool = False,
            asked: bool = True) -> None:
        """Keep ``frame``; ``sequential``: decoded on from the previous frame (the ring);
        ``asked``: a caller has it (else the prefetcher decoded it ahead)."""
        if frame.nbytes > self.max_bytes:
            return
        with self._lock:
            self._drop(index)
            if sequential and self._ring_size:
                self._ring[index] = asked
                self._trim_ring()
            while self._frames and self.nbytes + frame.nbytes > self.max_bytes:
                self._drop(next(iter(self._frames)), spare=True)
            self._frames[index] = frame
            self.nbytes += frame.nbytes

    def _trim_ring(self) -> None:
        """Drop the oldest ring frames a caller has had beyond the ring's size (frames the
        prefetcher decoded ahead stay until they are asked for)."""
        asked = [index for index, seen in self._ring.items() if seen]
        for index in asked[:max(0, len(asked) - self._ring_size)]:
            self._drop(index, spare=True)

    def _drop(self, index: int, spare: bool = False) -> None:
        self._ring.pop(index, None)
        frame = self._frames.pop(index, None)
        if frame is None:
            return
        self.nbytes -= frame.nbytes
        if spare and len(self._spares) <= self._ring_size and _unshared(frame):
            self._spares.append(frame)

    def take_spare(self) -> np.ndarray | None:
        """A writable frame-sized array nobody uses any more, or None."""
        with self._lock:
            if not self._spares:
                return None
            spare = self._spares.pop()
        spare.flags.writeable = True
        return spare

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._ring.clear()
            self._spares.clear()
            self.nbytes = 0


def _unshared(frame: np.ndarray) -> bool:
    """Whether nobody but the cache holds ``frame`` or its memory, so it can be overwritten.

    A frame is an array of its own or a view of one (RGB frames of a video file are
    channel-reversed views of the decoded BGR array); views a caller took of it have the same
    base array. References counted: the caller's name and getrefcount's argument, plus for the
    base the frame's own reference.
    """
    if sys.getrefcount(frame) != 3:  # frame, the caller's name, getrefcount's argument
        return False
    owner = frame.base
    if owner is None:
        return True
    return isinstance(owner, np.ndarray) and owner.base is None \
        and sys.getrefcount(owner) == 3  # owner, frame.base, getrefcount's argument
