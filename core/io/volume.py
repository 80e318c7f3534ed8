"""The 3-D volume type shared by the DICOM and NIfTI readers.

Arrays are stored (Z, Y, X) = (slice, row, column) so that ``array[k]`` is one slice as it is
displayed. The affine follows nibabel's convention for the transposed array
(``array.transpose(2, 1, 0)``, i.e. index order (x, y, z)) and maps voxel indices to RAS+
millimetres, so a Volume can be written as NIfTI without any reordering of its affine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class Volume:
    """A scalar 3-D image in patient space.

    Attributes:
        array: (Z, Y, X) = (slice, row, column); int16, uint16 or float32 real-world values
            (Hounsfield units for CT).
        affine: 4x4 float64 mapping a voxel index (x=column, y=row, z=slice, 1) to RAS+
            millimetres (nibabel's convention for ``array.transpose(2, 1, 0)``).
        spacing: (z, y, x) voxel size in millimetres.
        modality: "CT", "MR", ... ("" when unknown).
        description: Series description, free text.
        source: The files read, in slice order.
        warnings: Problems found while reading (gaps, duplicates, ...), one sentence each.
        meta: Other facts worth keeping (SeriesInstanceUID, StudyInstanceUID, ...).
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    modality: str = ""
    description: str = ""
    source: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Z, Y, X) = (slices, rows, columns)."""
        z, y, x = self.array.shape
        return int(z), int(y), int(x)

    def to_nifti_array(self) -> np.ndarray:
        """The array in NIfTI index order (x, y, z), a view, to pair with :attr:`affine`."""
        return self.array.transpose(2, 1, 0)

    def voxel_to_ras(self, points: np.ndarray) -> np.ndarray:
        """Map voxel indices (N, 3) given as (x=column, y=row, z=slice) to RAS+ mm (N, 3)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return pts @ self.affine[:3, :3].T + self.affine[:3, 3]

    def ras_to_voxel(self, points: np.ndarray) -> np.ndarray:
        """Map RAS+ mm (N, 3) to fractional voxel indices (x=column, y=row, z=slice)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        inverse = np.linalg.inv(self.affine)
        return pts @ inverse[:3, :3].T + inverse[:3, 3]
