"""A bounded cache of flow fields, and a flow provider ``flow(t, k)`` that uses it.

Flow fields are large (8 bytes a pixel: 2.4 MB for 640x480) and slow to compute (tens of ms
with OpenCV, far more with RAFT on a CPU), and mask propagation asks for the same fields again
(forward and backward chains of :func:`core.flow.propagate.propagate_between`, a user going
back and forth between frames). :class:`FlowCache` keeps the most recently used fields within a
memory budget and, optionally, every field computed in a folder of ``.npz`` files.

Keys are :class:`FlowKey` ``(source_id, method, params, t, k)`` for the flow from frame ``t`` to
frame ``t + k`` (``k < 0``: backward flow) of the frame source ``source_id`` (a video path, an
item id), computed with ``method`` and frozen ``params`` (:func:`freeze_params`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from core.flow.errors import FlowError
from core.flow.methods import compute_flow, resolve_params

FlowFn = Callable[[int, int], np.ndarray]


class FlowKey(NamedTuple):
    """Identity of one flow field: frames ``t`` -> ``t + k`` of ``source_id`` by ``method``."""

    source_id: str
    method: str
    params: tuple
    t: int
    k: int


def freeze_params(params: Mapping[str, Any] | None) -> tuple:
    """``params`` as a hashable, order-independent tuple of ``(name, value)`` pairs."""
    return tuple(sorted((str(k), _freeze(v)) for k, v in (params or {}).items()))


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return freeze_params(value)
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def flow_key(source_id: str, method: str, params: Mapping[str, Any] | None, t: int,
             k: int) -> FlowKey:
    """The :class:`FlowKey` of a flow field (``params`` are frozen)."""
    return FlowKey(str(source_id), method, freeze_params(params), int(t), int(k))


class FlowCache:
    """Least-recently-used flow fields within ``max_mb`` of memory, optionally kept on disk.

    Fields are stored read-only (``flags.writeable`` False) and handed out without copying:
    copy one before changing it. Safe to share between threads (the computation itself runs
    outside the lock, so two threads may compute the same missing field once each).

    Args:
        max_mb: Memory budget in MiB. A field larger than the whole budget is returned but
            not kept in memory.
        folder: When given, every field computed is also written there as ``.npz`` (one file
            per key, never evicted) and read back on a memory miss, across sessions.
    """

    def __init__(self, max_mb: float = 512.0, folder: str | Path | None = None) -> None:
        if max_mb < 0:
            raise ValueError("max_mb must be >= 0")
        self.max_bytes = int(max_mb * 2**20)
        self.folder = Path(folder) if folder is not None else None
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0
        self._fields: OrderedDict[FlowKey, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        """Bytes of the fields held in memory."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, key: object) -> bool:
        return key in self._fields

    def get(self, key: FlowKey) -> np.ndarray | None:
        """The field of ``key`` from memory (or the folder), or None."""
        with self._lock:
            field = self._fields.get(key)
            if field is not None:
                self._fields.move_to_end(key)
                self.hits += 1
                return field
        field = self._read(key)
        with self._lock:
            if field is None:
                self.misses += 1
                return None
            self.disk_hits += 1
            return self._keep(key, field)

    def put(self, key: FlowKey, field: np.ndarray) -> np.ndarray:
        """Keep a read-only float32 copy of ``field`` (also in the folder); returns the copy."""
        return self._store(key, np.array(field, dtype=np.float32, order="C"))

    def get_or_compute(self, key: FlowKey, fn: Callable[[], np.ndarray]) -> np.ndarray:
        """The field of ``key``; computed with ``fn()`` and kept when not cached.

        ``fn``'s result is kept as it is (made read-only) when it is a C-contiguous float32
        array, so ``fn`` must not hold on to it.
        """
        field = self.get(key)
        if field is None:
            field = np.ascontiguousarray(fn(), dtype=np.float32)
            field = self._store(key, field)
        return field

    def _store(self, key: FlowKey, field: np.ndarray) -> np.ndarray:
        field.flags.writeable = False
        self._write(key, field)
        with self._lock:
            return self._keep(key, field)

    def clear(self, disk: bool = False) -> None:
        """Forget the fields in memory (and delete the folder's ``.npz`` files if ``disk``)."""
        with self._lock:
            self._fields.clear()
            self._bytes = 0
        if disk and self.folder is not None and self.folder.is_dir():
            for path in self.folder.glob("flow-*.npz"):
                path.unlink(missing_ok=True)

    def _keep(self, key: FlowKey, field: np.ndarray) -> np.ndarray:
        """Insert under the lock and evict the least recently used fields beyond the budget."""
        old = self._fields.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        if field.nbytes > self.max_bytes:
            return field
        self._fields[key] = field
        self._bytes += field.nbytes
        while self._bytes > self.max_bytes:
            _, evicted = self._fields.popitem(last=False)
            self._bytes -= evicted.nbytes
        return field

    # -- the folder --------------------------------------------------------------------------------
    def path_for(self, key: FlowKey) -> Path | None:
        """The ``.npz`` file of ``key`` in the folder (None without a folder)."""
        if self.folder is None:
            return None
        digest = hashlib.sha256(_key_text(key).encode()).hexdigest()[:32]
        return self.folder / f"flow-{digest}.npz"

    def _read(self, key: FlowKey) -> np.ndarray | None:
        path = self.path_for(key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if str(data["key"]) != _key_text(key):
                    return None  # another key with the same digest prefix: recompute
                field = np.array(data["flow"], dtype=np.float32)
        except (OSError, ValueError, KeyError):  # truncated or foreign file: recompute
            return None
        field.flags.writeable = False
        return field

    def _write(self, key: FlowKey, field: np.ndarray) -> None:
        path = self.path_for(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=".flow-", suffix=".npz", dir=path.parent)
        try:
            with os.fdopen(handle, "wb") as out:
                np.savez(out, flow=field, key=np.array(_key_text(key)))
            os.replace(temp, path)  # readers see the old file or the whole new one
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def _key_text(key: FlowKey) -> str:
    return json.dumps([key.source_id, key.method, _jsonable(key.params), key.t, key.k],
                      sort_keys=True, default=repr)


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


class FlowProvider:
    """``flow(t, k)``: the flow from frame ``t`` to frame ``t + k`` of a frame source.

    Plug it into :func:`core.flow.propagate.propagate` (or call it directly); with a
    :class:`FlowCache` each field is computed once.

    Args:
        frames: A sequence of frames, or a callable ``frame(index)`` with ``count``.
        method, params, device, weights: As :func:`core.flow.methods.compute_flow` (the method
            defaults to DIS, as propagation does: see :mod:`core.flow.propagate`).
        cache: Optional cache; ``source_id`` must then name the frames uniquely.
        source_id: Identity of the frames in cache keys (a video path, an item id).
        count: Number of frames (required when ``frames`` is a callable).
    """

    def __init__(self, frames: Sequence[np.ndarray] | Callable[[int], np.ndarray],
                 method: str = "dis", params: Mapping[str, Any] | None = None, *,
                 cache: FlowCache | None = None, source_id: str = "frames",
                 count: int | None = None, device: str = "auto", weights: Any = "default",
                 allow_network: bool = False) -> None:
        if callable(frames):
            if count is None:
                raise ValueError("count is required when frames is a callable")
            self._frame, self.count = frames, int(count)
        else:
            self._frame, self.count = frames.__getitem__, len(frames)
        self.method = method
        self.params = resolve_params(method, params)  # the key holds the full parameters
        self.cache = cache
        self.source_id = str(source_id)
        self._run = {"device": device, "weights": weights, "allow_network": allow_network}

    def key(self, t: int, k: int) -> FlowKey:
        """The cache key of ``flow(t, k)``; for RAFT the weights are part of it."""
        params = self.params
        if self.method.startswith("raft"):
            params = {**params, "weights": _weights_id(self._run["weights"])}
        return flow_key(self.source_id, self.method, params, t, k)

    def __call__(self, t: int, k: int) -> np.ndarray:
        t, k = int(t), int(k)
        for index in (t, t + k):
            if not 0 <= index < self.count:
                raise FlowError(f"Frame {index} does not exist (the source has {self.count} "
                                f"frames).")

        def compute() -> np.ndarray:
            return compute_flow(self._frame(t), self._frame(t + k), self.method, self.params,
                                **self._run)

        if self.cache is None:
            return compute()
        return self.cache.get_or_compute(self.key(t, k), compute)


def _weights_id(weights: Any) -> str:
    """Names RAFT weights in a cache key: the name or file path; a module by its identity
    (meaningful in this process only)."""
    if weights is None or isinstance(weights, str | os.PathLike):
        return str(weights)
    name = getattr(weights, "name", None)
    if isinstance(name, str):  # a Weights record
        return name
    return f"module@{id(weights):x}"
