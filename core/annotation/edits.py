"""Edits of a label array stored as small diffs.

An :class:`Edit` is the bounding box of a change, a boolean mask of the pixels that changed inside it,
and their values before and after. It is the unit of undo, of journaling to disk and of redraw: the
GUI recolours only ``edit.region``. Storing diffs instead of snapshots keeps hundreds of undo steps of
a 4096x4096 mask within a few MB.
"""

from __future__ import annotations

import json
import zlib

import numpy as np

Region = tuple[slice, ...]


class Edit:
    """One undoable change: inside ``region`` the pixels where ``changed`` is True go ``old`` -> ``new``.

    The changed-pixel mask is kept bit-packed (one bit per pixel of the region): a drag across a
    whole 4096x4096 image has a region as large as the image, and a bool mask of it would cost as
    much as a full snapshot of a uint8 label map.

    Attributes:
        region: One slice per array axis (start/stop only), the bounding box of the change.
        changed: bool array of the region's shape (unpacked on access).
        old: 1-D values of the changed pixels before the edit (C order of ``changed``).
        new: 1-D values of the changed pixels after the edit, same length and dtype as ``old``.
    """

    __slots__ = ("_bits", "_shape", "new", "old", "region")

    def __init__(
        self, region: Region, changed: np.ndarray, old: np.ndarray, new: np.ndarray
    ) -> None:
        self.region = region
        self.old = old
        self.new = new
        self._shape = tuple(changed.shape)
        self._bits = np.packbits(np.asarray(changed, dtype=bool).ravel())

    @classmethod
    def _from_bits(
        cls, region: Region, shape: tuple[int, ...], bits: np.ndarray, old: np.ndarray,
        new: np.ndarray,
    ) -> Edit:
        edit = cls.__new__(cls)
        edit.region, edit.old, edit.new, edit._shape, edit._bits = region, old, new, shape, bits
        return edit

    @property
    def changed(self) -> np.ndarray:
        """bool array of the region's shape: True where the edit changes a pixel."""
        count = int(np.prod(self._shape))
        return np.unpackbits(self._bits, count=count).view(bool).reshape(self._shape)

    @property
    def count(self) -> int:
        """Number of pixels the edit changes."""
        return int(self.old.size)

    @property
    def nbytes(self) -> int:
        """Memory held by the diff (what the undo history budget counts)."""
        return int(self._bits.nbytes + self.old.nbytes + self.new.nbytes)

    def apply(self, labels: np.ndarray) -> None:
        """Write the new values into ``labels`` (idempotent)."""
        labels[self.region][self.changed] = self.new

    def revert(self, labels: np.ndarray) -> None:
        """Write the old values back into ``labels``."""
        labels[self.region][self.changed] = self.old

    def inverse(self) -> Edit:
        """The edit that undoes this one."""
        return Edit._from_bits(self.region, self._shape, self._bits, self.new, self.old)

    def transposed(self, axes: tuple[int, ...]) -> Edit:
        """The same change seen in ``array.transpose(axes)`` (axis i of the result is axis
        ``axes[i]`` of the array this edit was made on)."""
        axes = tuple(int(a) for a in axes)
        if sorted(axes) != list(range(len(self.region))):
            raise ValueError(f"axes {axes} are not a permutation of the edit's "
                             f"{len(self.region)} axes")
        if axes == tuple(range(len(axes))):
            return self
        changed = self.changed
        old = np.zeros(changed.shape, self.old.dtype)
        new = np.zeros(changed.shape, self.new.dtype)
        old[changed], new[changed] = self.old, self.new
        moved = changed.transpose(axes)  # C order changes with the axes: re-gather the values
        return Edit(tuple(self.region[a] for a in axes), moved, old.transpose(axes)[moved],
                    new.transpose(axes)[moved])

    def bbox_2d(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the last two axes: what a 2D view must redraw."""
        ys, xs = self.region[-2], self.region[-1]
        return ys.start, ys.stop, xs.start, xs.stop

    def to_record(self) -> dict[str, bytes | str]:
        """Serialise to plain bytes and JSON (no pickle): for the journal."""
        header = {
            "region": [[int(s.start), int(s.stop)] for s in self.region],
            "dtype": self.old.dtype.str,
        }
        return {
            "header": json.dumps(header),
            "changed": zlib.compress(self._bits.tobytes(), 1),
            "values": zlib.compress(self.old.tobytes() + self.new.tobytes(), 1),
        }

    @classmethod
    def from_record(cls, header: str, changed: bytes, values: bytes) -> Edit:
        """Inverse of :meth:`to_record`."""
        meta = json.loads(header)
        region = tuple(slice(int(a), int(b)) for a, b in meta["region"])
        shape = tuple(s.stop - s.start for s in region)
        bits = np.frombuffer(zlib.decompress(changed), dtype=np.uint8).copy()
        both = np.frombuffer(zlib.decompress(values), dtype=np.dtype(meta["dtype"]))
        n = both.size // 2
        return cls._from_bits(region, shape, bits, both[:n].copy(), both[n:].copy())


def diff_region(before: np.ndarray, after: np.ndarray, region: Region) -> Edit | None:
    """Build the edit that turns ``before`` into ``after`` inside ``region``.

    Args:
        before: Values of the region before the change (region-shaped copy).
        after: Values of the region after the change (region-shaped).
        region: Where the region sits in the full label array.

    Returns:
        The edit trimmed to the changed pixels' bounding box, or None if nothing changed.
    """
    changed = before != after
    if not changed.any():
        return None
    trimmed = _trim(changed)
    local = tuple(slice(s.start, s.stop) for s in trimmed)
    full = tuple(
        slice(r.start + t.start, r.start + t.stop) for r, t in zip(region, trimmed, strict=True)
    )
    mask = changed[local]
    return Edit(full, mask, before[local][mask], after[local][mask])


def _trim(mask: np.ndarray) -> Region:
    """Bounding box of the True pixels of ``mask`` (which has at least one)."""
    bounds = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        bounds.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(bounds)


def merge_edits(edits: list[Edit], labels: np.ndarray) -> Edit | None:
    """Fold a sequence of already-applied edits (one drag) into a single edit.

    The merged edit's old values are each pixel's value before its first change and its new
    values are what ``labels`` holds now; pixels that ended where they started drop out.
    """
    if not edits:
        return None
    ndim = labels.ndim
    starts = [min(e.region[a].start for e in edits) for a in range(ndim)]
    stops = [max(e.region[a].stop for e in edits) for a in range(ndim)]
    union = tuple(slice(a, b) for a, b in zip(starts, stops, strict=True))
    after = labels[union]
    before = after.copy()
    # Walk backwards so each pixel ends with the value before its earliest change.
    for edit in reversed(edits):
        local = tuple(
            slice(r.start - u.start, r.stop - u.start)
            for r, u in zip(edit.region, union, strict=True)
        )
        before[local][edit.changed] = edit.old
    return diff_region(before, after, union)
