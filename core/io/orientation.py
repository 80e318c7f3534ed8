"""How to show the slices of a 3-D array along each of its axes, as radiology viewers do.

A (Z, Y, X) array can be cut along any axis. For a volume with a RAS+ affine (see
:mod:`core.io.volume`) every cut is named by the anatomical plane its normal is closest to, and laid
out on screen the way 3D Slicer and ITK-SNAP lay it out (radiological convention): axial with
anterior up and the patient's right on the left of the screen, coronal with superior up and right on
the left, sagittal with superior up and anterior on the left. Each cut also carries the voxel
spacing of its rows and columns, so that a view can draw it with the true aspect ratio.

Nothing here moves pixels: a view shows ``array.transpose(axes)[index]`` and flips its own display
(``rows_up``, ``cols_left``), so image coordinates stay array indices for every tool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# plane name -> (RAS direction of screen-down, RAS direction of screen-right, edge letters)
_LAYOUT = {
    "axial": ((0.0, -1.0, 0.0), (-1.0, 0.0, 0.0), ("A", "P", "R", "L")),
    "coronal": ((0.0, 0.0, -1.0), (-1.0, 0.0, 0.0), ("S", "I", "R", "L")),
    "sagittal": ((0.0, 0.0, -1.0), (0.0, -1.0, 0.0), ("S", "I", "A", "P")),
}
_BY_NORMAL = ("sagittal", "coronal", "axial")  # normal mostly along R, A, S


@dataclass(frozen=True)
class SliceGeometry:
    """One way of cutting a 3-D array into 2-D slices.

    Attributes:
        axis: The array axis held fixed (0, 1 or 2); ``array.shape[axis]`` slices.
        name: "axial", "coronal" or "sagittal" (from the affine), or "XY", "XZ", "YZ" for a stack
            without patient geometry.
        axes: (axis, row axis, column axis): slice ``i`` is ``array.transpose(axes)[i]``.
        row_spacing: Height of a displayed pixel (mm for volumes, 1 for stacks).
        col_spacing: Width of a displayed pixel.
        rows_up: Draw row 0 at the bottom (the row index runs upward on screen).
        cols_left: Draw column 0 at the right (the column index runs leftward on screen).
        edges: Letters for the (top, bottom, left, right) edges of the screen, "" when unknown.
    """

    axis: int
    name: str
    axes: tuple[int, int, int]
    row_spacing: float = 1.0
    col_spacing: float = 1.0
    rows_up: bool = False
    cols_left: bool = False
    edges: tuple[str, str, str, str] = ("", "", "", "")

    @property
    def aspect(self) -> float:
        """Screen width over height of one displayed pixel (col_spacing / row_spacing)."""
        return self.col_spacing / self.row_spacing

    def slice_shape(self, shape: Sequence[int]) -> tuple[int, int]:
        """(rows, columns) of one slice of an array of ``shape``."""
        return int(shape[self.axes[1]]), int(shape[self.axes[2]])


def slice_geometries(
    shape: Sequence[int], affine: np.ndarray | None = None,
    spacing: Sequence[float] | None = None,
) -> tuple[SliceGeometry, SliceGeometry, SliceGeometry]:
    """The three cuts of a (Z, Y, X) array, one per fixed axis (index = that axis).

    Args:
        shape: (Z, Y, X).
        affine: 4x4 voxel (x=column, y=row, z=slice) -> RAS+ mm, as :class:`Volume` keeps it;
            None for a stack without patient geometry (plain layout, no flips).
        spacing: (z, y, x) voxel size; None = the affine's column norms (or 1).
    """
    if len(shape) != 3:
        raise ValueError(f"expected a (Z, Y, X) shape, got {tuple(shape)}")
    if spacing is None:
        spacing = (1.0, 1.0, 1.0) if affine is None else \
            tuple(float(np.linalg.norm(affine[:3, 2 - a])) for a in range(3))
    spacing = tuple(float(s) if s and np.isfinite(s) and s > 0 else 1.0 for s in spacing)
    if affine is None:
        names = ("XY", "XZ", "YZ")
        return tuple(  # type: ignore[return-value]
            SliceGeometry(a, names[a], _plain_axes(a), spacing[_plain_axes(a)[1]],
                          spacing[_plain_axes(a)[2]])
            for a in range(3))
    # unit RAS direction of array axis a: compared between axes, so voxel size must not count
    directions = [_unit(np.asarray(affine, np.float64)[:3, 2 - a]) for a in range(3)]
    return tuple(_oriented(a, directions, spacing) for a in range(3))  # type: ignore[return-value]


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 and np.isfinite(norm) else vector


def _plain_axes(axis: int) -> tuple[int, int, int]:
    rest = [a for a in range(3) if a != axis]
    return axis, rest[0], rest[1]


def _oriented(axis: int, directions: list[np.ndarray], spacing: tuple[float, ...]) -> SliceGeometry:
    name = _BY_NORMAL[int(np.argmax(np.abs(directions[axis])))]
    down, right, edges = _LAYOUT[name]
    first, second = (a for a in range(3) if a != axis)
    # rows run along whichever in-plane axis is closer to the screen's up-down direction
    if abs(np.dot(directions[second], down)) > abs(np.dot(directions[first], down)):
        first, second = second, first
    return SliceGeometry(
        axis=axis, name=name, axes=(axis, first, second),
        row_spacing=spacing[first], col_spacing=spacing[second],
        rows_up=bool(np.dot(directions[first], down) < 0),
        cols_left=bool(np.dot(directions[second], right) < 0),
        edges=edges,
    )
