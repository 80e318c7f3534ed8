"""NIfTI volumes in, NIfTI label volumes out (nibabel, imported lazily).

Axes: nibabel hands out data as (X, Y, Z[, T]) with ``img.affine`` mapping voxel (i, j, k) to
RAS+ millimetres. SegStudio keeps volumes as (Z, Y, X) = (slice, row, column), so the data is
``transpose(2, 1, 0)`` of nibabel's (a view, not a copy; NIfTI data is Fortran-ordered on disk,
which makes that view C-contiguous) and the affine is nibabel's, unchanged: it still maps
(x=column, y=row, z=slice, 1) to RAS+ mm.

Label volumes are written with both the sform and the qform set to the given affine with code
1 ("scanner anat"): the label file then lines up with its image in every viewer whichever of
the two transforms the viewer prefers, and the code says the coordinates are the scanner's, as
those of a volume read from DICOM are.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import (
    CorruptFileError,
    ExportError,
    ImportFormatError,
    SegStudioError,
    UnsupportedFormatError,
)
from core.fsutil import describe_os_error
from core.io.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
AFFINE_ATOL_MM = 1e-3
_SCANNER_XFORM_CODE = 1
_LABEL_INTENT = "label"


class VolumeIndexRequiredError(SegStudioError):
    """A 4D file holds several volumes and the caller did not say which one to open."""

    def __init__(self, path: Path, volumes: int) -> None:
        super().__init__(
            f"'{path}' has {volumes} volumes; pick one with volume_index (0 to {volumes - 1})."
        )
        self.volumes = volumes


def is_nifti_path(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a NIfTI file (.nii or .nii.gz)."""
    name = Path(path).name.lower()
    return name.endswith(NIFTI_SUFFIXES)


# -- reading -----------------------------------------------------------------------------------
def _open(path: Path) -> Any:
    """The nibabel image of ``path`` (header read, data left on disk)."""
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    if not path.exists():
        raise SegStudioError(f"'{path}' does not exist.")
    try:
        img = nib.load(path)
    except ImageFileError as err:
        raise UnsupportedFormatError(f"'{path}' is not a NIfTI file nibabel can read.") from err
    except (OSError, EOFError, ValueError) as err:
        raise CorruptFileError(f"'{path}' cannot be read as NIfTI: {err}.") from err
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise UnsupportedFormatError(f"'{path}' is a {type(img).__name__}, not a NIfTI file.")
    return img


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[tuple[int, int, int], int]:
    """(X, Y, Z) and the number of volumes of a nibabel data shape; trailing 1s are dropped."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) > 4:
        raise UnsupportedFormatError(
            f"'{path}' has {len(dims)} dimensions {tuple(shape)}; SegStudio opens 3D and 4D files."
        )
    volumes = dims[3] if len(dims) == 4 else 1
    dims = (dims + [1, 1, 1])[:3]
    return (dims[0], dims[1], dims[2]), volumes


def _read_data(path: Path, img: Any, volume_index: int | None) -> np.ndarray:
    """Data of one volume as (X, Y, Z), read from disk once."""
    (nx, ny, nz), volumes = _spatial_shape(path, img.shape)
    if volumes > 1 and volume_index is None:
        raise VolumeIndexRequiredError(path, volumes)
    index = volume_index or 0
    if not -volumes <= index < volumes:
        raise SegStudioError(
            f"'{path}' has {volumes} volume(s); volume_index {index} does not exist."
        )
    try:
        if volumes > 1:  # slice the proxy so only the chosen volume is read
            data = np.asanyarray(img.dataobj[:, :, :, index])
        else:
            data = np.asanyarray(img.dataobj)
    except (OSError, EOFError, ValueError, MemoryError) as err:
        raise CorruptFileError(f"'{path}' has unreadable image data: {err}.") from err
    return data.reshape((nx, ny, nz), order="A")


def _replace_nans(path: Path, data: np.ndarray, warnings: list[str]) -> np.ndarray:
    """Replace NaNs by the smallest finite value, in place; all-NaN is an error."""
    nan_mask = np.isnan(data)
    count = int(np.count_nonzero(nan_mask))
    if count == 0:
        return data
    finite = np.isfinite(data)
    if not finite.any():
        raise CorruptFileError(f"'{path}' holds no finite value (every voxel is NaN or infinite).")
    fill = data.dtype.type(np.min(data, where=finite, initial=np.inf))
    if not data.flags.writeable:
        data = np.array(data)
    data[nan_mask] = fill
    warnings.append(f"'{path.name}' had {count:,} NaN voxels, shown as {float(fill):g}.")
    return data


def load_nifti(path: str | os.PathLike, volume_index: int | None = None) -> Volume:
    """Read a 3D volume, or one volume of a 4D file, from a .nii or .nii.gz file.

    Args:
        path: The NIfTI-1 or NIfTI-2 file.
        volume_index: Which volume of a 4D file to read (required when it holds more than one;
            negative counts from the end).

    Returns:
        A Volume whose array is (Z, Y, X) (a view of nibabel's (X, Y, Z) data), whose affine
        is nibabel's best affine (sform or qform), with integer data kept as stored and float64
        narrowed to float32. NaNs become the smallest finite value, with a warning.

    Raises:
        VolumeIndexRequiredError: A 4D file with several volumes and no ``volume_index``.
        UnsupportedFormatError, CorruptFileError, SegStudioError: Unreadable or missing file.
    """
    path = Path(path)
    img = _open(path)
    data = _read_data(path, img, volume_index)
    if data.dtype == np.float64:
        data = data.astype(np.float32)
    elif not data.dtype.isnative:  # big-endian files: viewers and cv2 expect native order
        data = data.astype(data.dtype.newbyteorder("="))
    elif data.dtype.kind not in "biuf":
        raise UnsupportedFormatError(f"'{path}' holds {data.dtype} data, which SegStudio cannot show.")
    warnings: list[str] = []
    if data.dtype.kind == "f":
        data = _replace_nans(path, data, warnings)
    zooms = [float(z) for z in img.header.get_zooms()[:3]] + [1.0, 1.0, 1.0]
    volumes = _spatial_shape(path, img.shape)[1]
    description = bytes(img.header["descrip"].item()).decode("latin-1", "replace")
    return Volume(
        array=data.transpose(2, 1, 0),
        affine=np.asarray(img.affine, dtype=np.float64),
        spacing=(zooms[2], zooms[1], zooms[0]),
        modality="",
        description=description.strip("\x00 "),
        source=[str(path)],
        warnings=warnings,
        meta={"format": "nifti", "volumes": volumes, "volume_index": volume_index or 0},
    )


def _orientation(affine: np.ndarray) -> str:
    import nibabel as nib

    try:
        return "".join(str(code) for code in nib.aff2axcodes(affine))
    except (ValueError, np.linalg.LinAlgError):
        return "unknown"


def describe_nifti(path: str | os.PathLike) -> dict[str, Any]:
    """Describe a NIfTI file from its header alone (no voxel is read).

    "shape" and "spacing" are in SegStudio's (Z, Y, X) order for one volume; "dtype" is the
    stored type (before any scaling); "orientation" is nibabel's axis codes of the affine
    (e.g. "RAS": the column axis points Right, rows Anterior, slices Superior).
    """
    path = Path(path)
    img = _open(path)
    (nx, ny, nz), volumes = _spatial_shape(path, img.shape)
    zooms = [float(z) for z in img.header.get_zooms()[:3]] + [1.0, 1.0, 1.0]
    affine = np.asarray(img.affine, dtype=np.float64)
    return {
        "path": str(path),
        "kind": "nifti",
        "shape": [nz, ny, nx],
        "spacing": [zooms[2], zooms[1], zooms[0]],
        "dtype": img.get_data_dtype().name,  # "int16", not the byte-order string ">i2"
        "volumes": volumes,
        "orientation": _orientation(affine),
        "affine": affine.tolist(),
    }


# -- label volumes -----------------------------------------------------------------------------
def _label_dtype(labels: np.ndarray) -> type[np.unsignedinteger]:
    if labels.dtype.kind not in "biu":
        raise ExportError(f"Labels must be integers, not {labels.dtype}.")
    if labels.size == 0:
        return np.uint8
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise ExportError(f"Labels must not be negative (found {low}).")
    if high > 65535:
        raise ExportError(f"Labels above 65535 cannot be saved (found {high}).")
    return np.uint8 if high <= 255 else np.uint16


def save_label_nifti(labels: np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> None:
    """Write a (Z, Y, X) label volume as NIfTI-1 (gzipped when ``path`` ends in .gz).

    The file holds uint8 labels (uint16 when a label is above 255), no scaling, intent "label",
    and ``affine`` as both sform and qform with code 1 (scanner). It is written to a temporary
    file in the same folder, fsync'ed and renamed, so ``path`` is never half-written.

    Raises:
        ExportError: Not 3D, not integer, out of range, or the file cannot be written.
    """
    import nibabel as nib

    path = Path(path)
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ExportError(f"A label volume must be 3D (Z, Y, X), not of shape {labels.shape}.")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ExportError(f"The affine must be 4x4, not {affine.shape}.")
    dtype = _label_dtype(labels)
    img = nib.Nifti1Image(labels.astype(dtype, copy=False).transpose(2, 1, 0), affine)
    img.set_data_dtype(dtype)
    img.set_sform(affine, code=_SCANNER_XFORM_CODE)
    img.set_qform(affine, code=_SCANNER_XFORM_CODE)
    img.header.set_xyzt_units("mm")
    img.header.set_intent(_LABEL_INTENT)
    img.header.set_slope_inter(1.0, 0.0)
    suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
    try:
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as err:
        raise ExportError(describe_os_error(err, str(path)) + ".") from err
    os.close(fd)
    try:
        nib.save(img, temp_name)
        _fsync(temp_name)
        os.replace(temp_name, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        if isinstance(err, OSError):
            raise ExportError(describe_os_error(err, str(path)) + ".") from err
        raise


def _fsync(name: str) -> None:
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_label_nifti(path: str | os.PathLike, reference: Volume) -> np.ndarray:
    """Read a label volume that must lie on ``reference``'s voxel grid.

    Returns:
        (Z, Y, X) uint8 labels (uint16 when a label is above 255), C-contiguous.

    Raises:
        ImportFormatError: The shape or the affine (beyond 1e-3 mm) differs from the
            reference's, the file has several volumes, or values are not whole non-negative
            numbers up to 65535. Float files holding whole numbers are accepted.
    """
    path = Path(path)
    try:
        img = _open(path)
    except SegStudioError as err:
        raise ImportFormatError(str(err)) from err
    (nx, ny, nz), volumes = _spatial_shape(path, img.shape)
    if volumes > 1:
        raise ImportFormatError(f"'{path}' has {volumes} volumes; a label file must have one.")
    shape = (nz, ny, nx)
    if shape != tuple(reference.array.shape):
        raise ImportFormatError(
            f"'{path.name}' is {shape} (Z, Y, X) but the volume is "
            f"{tuple(reference.array.shape)}; the labels do not belong to this volume."
        )
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.allclose(affine, reference.affine, rtol=0.0, atol=AFFINE_ATOL_MM):
        raise ImportFormatError(
            f"'{path.name}' is placed differently from the volume: label affine "
            f"{np.round(affine, 4).tolist()} vs volume affine "
            f"{np.round(reference.affine, 4).tolist()}."
        )
    try:
        data = np.asanyarray(img.dataobj).reshape((nx, ny, nz), order="A")
    except (OSError, EOFError, ValueError, MemoryError) as err:
        raise ImportFormatError(f"'{path}' has unreadable image data: {err}.") from err
    return np.ascontiguousarray(_as_labels(path, data).transpose(2, 1, 0))


def _as_labels(path: Path, data: np.ndarray) -> np.ndarray:
    """``data`` as uint8/uint16 labels, or an ImportFormatError saying what is wrong."""
    if data.dtype.kind not in "biuf":
        raise ImportFormatError(f"'{path.name}' holds {data.dtype} data, not labels.")
    if data.dtype.kind == "f":
        if not np.isfinite(data).all() or not np.array_equal(data, np.round(data)):
            raise ImportFormatError(
                f"'{path.name}' holds fractional values; a label file holds whole class numbers."
            )
    if data.size == 0:
        return data.astype(np.uint8)
    low, high = data.min(), data.max()
    if low < 0:
        raise ImportFormatError(f"'{path.name}' holds negative labels (down to {low:g}).")
    if high > 65535:
        raise ImportFormatError(f"'{path.name}' holds labels above 65535 (up to {high:g}).")
    return data.astype(np.uint8 if high <= 255 else np.uint16, copy=False)

