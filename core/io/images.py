"""Reading 2-D images and multi-page TIFF stacks into numpy arrays.

The format is found from the file's first bytes, not its name, and the header is checked
before any pixel is decoded: a broken, truncated or hostile file ends in a
:class:`~core.errors.SegStudioError` with a one-sentence message, never in a raw Pillow or
OS traceback nor in a multi-gigabyte allocation.

Decoders: Pillow for 8-bit PNG, JPEG and BMP; OpenCV for 16-bit PNG (Pillow truncates 48- and
64-bit colour PNG to 8 bits) and for TIFF compressions tifffile cannot decode without
imagecodecs (LZW, JPEG); tifffile for everything else in TIFF. Heavy modules are imported
inside the functions that use them so that ``import core.io`` stays fast.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from core.errors import (
    CorruptFileError,
    ImageTooLargeError,
    SegStudioError,
    UnsupportedFormatError,
)

if TYPE_CHECKING:
    from PIL import Image as PILImage

PathLike = str | os.PathLike[str]

MAX_PIXELS = 2**28
"""Largest image plane accepted (16384 x 16384); checked from the header before decoding."""

MAX_STACK_PIXELS = 2**30
"""Largest multi-page TIFF accepted, counting the pixels of all its pages together."""

SUPPORTED_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"})

_SUPPORTED_NAMES = "PNG, JPEG, TIFF and BMP"
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
# Formats recognised only to name them in the refusal.
_KNOWN_UNSUPPORTED = ((b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"%PDF", "PDF"))
_ORIENTATION_TAG = 274
_MAX_EXIF_BYTES = 1 << 20
_LEVEL_SAMPLES = 1_000_000


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says about its image.

    ``width`` and ``height`` are as displayed, i.e. after the EXIF orientation is applied,
    so they always match the array :func:`load_image` returns.

    Attributes:
        path: The file.
        format: "PNG", "JPEG", "TIFF" or "BMP".
        width: Pixels per row.
        height: Rows.
        frames: Pages of a multi-page TIFF, else 1.
        channels: 1 (grey), 3 (RGB) or 4 (RGBA) in the loaded array.
        dtype: "uint8", "uint16" or "float32" in the loaded array.
        orientation: EXIF/TIFF orientation tag, 1 to 8 (1 when absent).
    """

    path: Path
    format: str
    width: int
    height: int
    frames: int = 1
    channels: int = 1
    dtype: str = "uint8"
    orientation: int = 1

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the loaded array: ([frames,] height, width[, channels])."""
        stack = (self.frames,) if self.frames > 1 else ()
        colour = (self.channels,) if self.channels > 1 else ()
        return (*stack, self.height, self.width, *colour)


@dataclass(eq=False)
class ImageData:
    """Decoded pixels and the header they came from.

    Attributes:
        array: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA; a multi-page TIFF is a stack
            (D, H, W) or (D, H, W, C).
        info: The header, with ``info.shape == array.shape``.
    """

    array: np.ndarray
    info: ImageInfo

    @property
    def is_stack(self) -> bool:
        """Whether ``array`` has a leading page axis."""
        return self.info.frames > 1

    @property
    def frames(self) -> int:
        """Number of pages (1 for an ordinary image)."""
        return self.info.frames


def is_image_path(path: PathLike) -> bool:
    """Tell from the name alone whether SegStudio reads this file as an image."""
    return Path(path).suffix.lower() in SUPPORTED_IMAGE_SUFFIXES


def detect_image_format(path: PathLike) -> str | None:
    """Return "PNG", "JPEG", "TIFF" or "BMP" from the file's first bytes, else None.

    Raises:
        SegStudioError: The file is missing, a folder, or cannot be read.
    """
    return _match_magic(_read_head(Path(path)))


def read_image_info(path: PathLike) -> ImageInfo:
    """Read an image's header without decoding its pixels.

    Raises:
        SegStudioError: The file is missing or cannot be read.
        UnsupportedFormatError: Not a PNG, JPEG, TIFF or BMP, or a pixel layout not handled.
        CorruptFileError: Empty, truncated, or not what its name says.
        ImageTooLargeError: More than :data:`MAX_PIXELS` pixels in a plane.
    """
    path = Path(path)
    fmt = _detect_or_refuse(path)
    if fmt == "PNG":
        return _png_info(path)
    if fmt == "TIFF":
        from core.io.tiff import tiff_info

        return tiff_info(path)
    return _pillow_info(path, fmt)


def load_image(path: PathLike) -> ImageData:
    """Decode an image (or multi-page TIFF stack), EXIF orientation applied.

    The header is checked first (:func:`read_image_info`), so an oversized image is refused
    before anything is allocated.

    Raises:
        The errors of :func:`read_image_info`, and CorruptFileError when the pixel data
        cannot be decoded; ImageTooLargeError when memory runs out.
    """
    info = read_image_info(path)
    try:
        if info.format == "TIFF":
            from core.io.tiff import load_tiff

            array = load_tiff(info)
        elif info.format == "PNG" and info.dtype == "uint16":
            array = _load_with_cv2(info.path, info.format, info.channels)
        else:
            array = _load_with_pillow(info.path, info.format)
        array = _apply_orientation(array, info.orientation, stack=info.frames > 1)
    except MemoryError:
        raise ImageTooLargeError(
            f"There is not enough free memory to open '{info.path}' "
            f"({info.width} x {info.height} pixels, {info.frames} page(s))."
        ) from None
    if array.shape != info.shape or array.dtype != np.dtype(info.dtype):
        raise UnsupportedFormatError(
            f"'{info.path}' decodes to a {array.dtype} array of shape {array.shape} instead of "
            f"the {info.dtype} {info.shape} its header announces, which SegStudio cannot use."
        )
    return ImageData(array=array, info=info)


def auto_levels(
    array: np.ndarray, low: float = 0.5, high: float = 99.5
) -> tuple[float, float]:
    """Percentile display range for 16-bit or float images.

    Large arrays are subsampled (every k-th value, at most about a million) because exact
    percentiles of a 100-megapixel image would cost seconds and change nothing visible.
    NaN and infinities are ignored.

    Args:
        array: Any numeric array; colour channels are pooled.
        low: Lower percentile, 0 to 100.
        high: Upper percentile, above ``low``.

    Returns:
        ``(lo, hi)`` with ``hi > lo`` always (a constant image gets ``hi = lo + 1``).
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    array = np.asarray(array)
    step = max(1, math.ceil(array.size / _LEVEL_SAMPLES))
    sample = array.flat[::step].astype(np.float64)  # .flat never copies the whole array
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    if hi <= lo:
        hi = max(lo + 1.0, float(np.nextafter(lo, np.inf)))
    return lo, hi


# --- file access and format detection ---------------------------------------------------


def _os_error(path: Path, err: OSError) -> SegStudioError:
    if isinstance(err, FileNotFoundError):
        return SegStudioError(f"'{path}' does not exist.")
    if isinstance(err, IsADirectoryError):
        return UnsupportedFormatError(f"'{path}' is a folder, not an image file.")
    if isinstance(err, PermissionError):
        return SegStudioError(f"'{path}' cannot be read: permission denied.")
    return SegStudioError(f"'{path}' cannot be read: {err.strerror or err}.")


@contextmanager
def _open(path: Path) -> Iterator[BinaryIO]:
    try:
        with open(path, "rb") as fh:
            yield fh
    except OSError as err:  # opening or reading: either way the file is unreadable
        raise _os_error(path, err) from None


def _read_head(path: Path, size: int = 32) -> bytes:
    if path.is_dir():
        raise _os_error(path, IsADirectoryError())
    with _open(path) as fh:
        return fh.read(size)


def _match_magic(head: bytes) -> str | None:
    return next((fmt for magic, fmt in _MAGIC if head.startswith(magic)), None)


def _detect_or_refuse(path: Path) -> str:
    head = _read_head(path)
    fmt = _match_magic(head)
    if fmt is not None:
        return fmt
    named_as_image = is_image_path(path)
    if not head:
        error = CorruptFileError if named_as_image else UnsupportedFormatError
        raise error(f"'{path}' is empty (0 bytes).")
    other = next((name for magic, name in _KNOWN_UNSUPPORTED if head.startswith(magic)), None)
    if other is not None:
        raise UnsupportedFormatError(
            f"'{path}' is a {other} file; SegStudio reads {_SUPPORTED_NAMES} images."
        )
    if named_as_image:
        raise CorruptFileError(
            f"'{path}' is named like an image but its content is not one "
            f"SegStudio reads ({_SUPPORTED_NAMES})."
        )
    raise UnsupportedFormatError(
        f"'{path}' is not in a format SegStudio reads ({_SUPPORTED_NAMES} images)."
    )


def _check_size(path: Path, width: int, height: int, frames: int = 1) -> None:
    if width <= 0 or height <= 0:
        raise CorruptFileError(f"'{path}' declares an empty image of {width} x {height} pixels.")
    if width * height > MAX_PIXELS:
        side = math.isqrt(MAX_PIXELS)
        raise ImageTooLargeError(
            f"'{path}' is {width} x {height} pixels, more than SegStudio's limit of "
            f"{MAX_PIXELS:,} pixels ({side} x {side})."
        )
    if frames * width * height > MAX_STACK_PIXELS:
        raise ImageTooLargeError(
            f"'{path}' holds {frames} pages of {width} x {height} pixels, more than SegStudio's "
            f"limit of {MAX_STACK_PIXELS:,} pixels for a whole stack."
        )


@contextmanager
def _decode_errors(path: Path, fmt: str) -> Iterator[None]:
    """Turn any failure of a third-party decoder into CorruptFileError.

    Decoders raise a zoo of types for bad data (OSError, ValueError, SyntaxError,
    struct.error, zlib.error, TiffFileError...); all mean "this file cannot be decoded".
    Keep the guarded blocks to decoder calls so that our own bugs still surface.
    """
    try:
        yield
    except (SegStudioError, MemoryError):
        raise
    except Exception as err:
        detail = str(err).strip().rstrip(".") or type(err).__name__
        raise CorruptFileError(
            f"'{path}' could not be decoded as {fmt}: "
            f"the file is damaged or truncated ({detail})."
        ) from err


def _displayed_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    # Orientations 5 to 8 turn the image by a quarter, swapping its sides.
    return (height, width) if orientation >= 5 else (width, height)


def _valid_orientation(value: Any) -> int:
    try:
        value = int(value)
    except (TypeError, ValueError):
        return 1
    return value if 1 <= value <= 8 else 1


# --- PNG -------------------------------------------------------------------------------

# colour type -> allowed bit depths
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def _png_info(path: Path) -> ImageInfo:
    """Walk the PNG chunks (seeking over pixel data) for size, layout, EXIF and IEND.

    Pillow only sees an eXIf chunk placed after the pixel data by decoding everything, and
    silently accepts a file cut off after its last pixel chunk; the walk avoids both.
    """
    with _open(path) as fh:
        fh.seek(8)
        head = fh.read(8 + 13)
        if len(head) < 21 or head[4:8] != b"IHDR":
            raise CorruptFileError(f"'{path}' is not a valid PNG file: its header is missing.")
        width, height, depth, colour = struct.unpack(">IIBB", head[8:18])
        _check_size(path, width, height)
        if depth not in _PNG_DEPTHS.get(colour, ()):
            raise CorruptFileError(
                f"'{path}' is not a valid PNG file: colour type {colour} at {depth} bits."
            )
        fh.seek(4, os.SEEK_CUR)  # IHDR's CRC
        chunks = _walk_png_chunks(fh, os.fstat(fh.fileno()).st_size)
    if b"IEND" not in chunks:
        raise CorruptFileError(f"'{path}' is truncated: the PNG data ends before its last chunk.")
    orientation = _orientation_from_exif(chunks.get(b"eXIf"))
    channels = {0: 1, 2: 3, 3: 4 if b"tRNS" in chunks else 3, 4: 4, 6: 4}[colour]
    width, height = _displayed_size(width, height, orientation)
    dtype = "uint16" if depth == 16 else "uint8"
    return ImageInfo(path, "PNG", width, height, 1, channels, dtype, orientation)


def _walk_png_chunks(fh: BinaryIO, file_size: int) -> dict[bytes, bytes]:
    """Return the chunk types met (with the eXIf payload), stopping at IEND or the end."""
    found: dict[bytes, bytes] = {}
    while True:
        head = fh.read(8)
        if len(head) < 8:
            return found
        length, kind = struct.unpack(">I4s", head)
        end = fh.tell() + length + 4
        if end > file_size:
            return found
        payload = b""
        if kind == b"eXIf" and length <= _MAX_EXIF_BYTES:
            payload = fh.read(length)
        found.setdefault(kind, payload)
        if kind == b"IEND":
            return found
        fh.seek(end)


def _orientation_from_exif(data: bytes | None) -> int:
    if not data:
        return 1
    from PIL import Image

    exif = Image.Exif()
    try:
        exif.load(data)
    except Exception:
        return 1
    return _valid_orientation(exif.get(_ORIENTATION_TAG))


# --- Pillow: JPEG, BMP, 8-bit PNG ------------------------------------------------------

# Pillow mode -> (mode to convert to, or None to keep; channels; dtype)
_PIL_MODES = {
    "1": ("L", 1, "uint8"),
    "L": (None, 1, "uint8"),
    "LA": ("RGBA", 4, "uint8"),
    "La": ("RGBA", 4, "uint8"),
    "P": ("RGB", 3, "uint8"),
    "PA": ("RGBA", 4, "uint8"),
    "RGB": (None, 3, "uint8"),
    "RGBA": (None, 4, "uint8"),
    "RGBa": ("RGBA", 4, "uint8"),
    "RGBX": ("RGB", 3, "uint8"),
    "CMYK": ("RGB", 3, "uint8"),
    "YCbCr": ("RGB", 3, "uint8"),
    "I;16": (None, 1, "uint16"),
    "I;16B": (None, 1, "uint16"),
}


def _pillow_open(path: Path, fmt: str) -> PILImage.Image:
    from PIL import Image

    # Our header check (MAX_PIXELS) replaces Pillow's bomb check, whose default hard limit
    # (~179 Mpx) is below ours; raise Pillow's to ours so it stays a mere safety net.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
        Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    with _decode_errors(path, fmt):
        try:
            return Image.open(path, formats=[fmt])
        except Image.DecompressionBombError:
            raise ImageTooLargeError(
                f"'{path}' is larger than SegStudio's limit of {MAX_PIXELS:,} pixels."
            ) from None


def _pillow_layout(im: PILImage.Image, path: Path) -> tuple[str | None, int, str]:
    if im.mode == "P" and "transparency" in im.info:
        return "RGBA", 4, "uint8"
    if im.mode not in _PIL_MODES:
        raise UnsupportedFormatError(
            f"'{path}' uses the {im.mode} pixel mode, which SegStudio does not read."
        )
    return _PIL_MODES[im.mode]


def _pillow_info(path: Path, fmt: str) -> ImageInfo:
    # Pillow's own open would refuse a huge image with its bomb error: measure it first.
    _check_size(path, *(_jpeg_size(path) if fmt == "JPEG" else _bmp_size(path)))
    with _pillow_open(path, fmt) as im:
        _check_size(path, *im.size)
        _, channels, dtype = _pillow_layout(im, path)
        orientation = 1
        if fmt == "JPEG":
            with _decode_errors(path, fmt):
                orientation = _valid_orientation(im.getexif().get(_ORIENTATION_TAG))
        width, height = _displayed_size(*im.size, orientation)
    return ImageInfo(path, fmt, width, height, 1, channels, dtype, orientation)


def _load_with_pillow(path: Path, fmt: str) -> np.ndarray:
    with _pillow_open(path, fmt) as im:
        convert, _, dtype = _pillow_layout(im, path)
        with _decode_errors(path, fmt):
            im.load()
            pixels = im.convert(convert) if convert else im
            array = np.array(pixels)
    return array.astype(dtype, copy=False)


def _jpeg_size(path: Path) -> tuple[int, int]:
    """Read (width, height) from the first JPEG frame header (SOFn marker), and refuse a file
    cut short: its image data must be followed by the end-of-image marker."""
    standalone = {0x01, *range(0xD0, 0xD9)}
    frame_markers = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
    size: tuple[int, int] | None = None
    with _open(path) as fh:
        fh.seek(2)
        while (byte := fh.read(1)) != b"":
            if byte != b"\xff":
                continue  # tolerate padding between segments, as decoders do
            marker = fh.read(1)
            while marker == b"\xff":
                marker = fh.read(1)
            if marker in (b"", b"\x00") or marker[0] in standalone:
                continue
            if marker[0] == 0xDA and size is not None:
                _check_jpeg_end(path, fh.tell())
                return size
            if marker[0] in (0xD9, 0xDA):
                break  # image data or end reached without a frame header
            segment = fh.read(7)
            if len(segment) < 7:
                break
            length, _precision, height, width = struct.unpack(">HBHH", segment)
            if marker[0] in frame_markers and size is None:
                size = (width, height)
            fh.seek(length - 7, os.SEEK_CUR)
    if size is not None:
        raise CorruptFileError(f"'{path}' is truncated: the JPEG image data is missing.")
    raise CorruptFileError(f"'{path}' is not a valid JPEG file: it has no frame header.")


def _check_jpeg_end(path: Path, scan_start: int) -> None:
    """Entropy-coded data never holds FF D9, so a complete file has it after the first scan.

    Searching backwards from the end finds it at once in a complete file (data appended
    after it, as in motion photos, is allowed).
    """
    import mmap

    with _open(path) as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data.rfind(b"\xff\xd9", scan_start) < 0:
            raise CorruptFileError(
                f"'{path}' is truncated: the JPEG file ends before its image data does.")


def _bmp_size(path: Path) -> tuple[int, int]:
    head = _read_head(path, 26)
    if len(head) < 26:
        raise CorruptFileError(f"'{path}' is not a valid BMP file: its header is truncated.")
    if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 1.x header: 16-bit sides
        width, height = struct.unpack("<HH", head[18:22])
    else:
        width, height = struct.unpack("<ii", head[18:26])
    return abs(width), abs(height)  # negative height means rows stored top-down


# --- OpenCV: 16-bit PNG, TIFF compressions tifffile lacks --------------------------------


def _to_rgb_order(array: np.ndarray) -> np.ndarray:
    """OpenCV decodes to BGR(A); grey+alpha becomes RGBA like everywhere else."""
    if array.ndim == 3 and array.shape[2] == 2:
        grey, alpha = array[..., 0], array[..., 1]
        return np.stack([grey, grey, grey, alpha], axis=-1)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        order = [2, 1, 0, 3][: array.shape[2]]
        return np.ascontiguousarray(array[..., order])
    return array


def _load_with_cv2(path: Path, fmt: str, channels: int) -> np.ndarray:
    import cv2

    with _decode_errors(path, fmt):
        # Decode from memory: cv2.imread cannot open non-ASCII paths on Windows.
        array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise CorruptFileError(f"'{path}' could not be decoded as {fmt}: the file is damaged.")
    if channels == 3 and array.ndim == 3 and array.shape[2] == 4:
        # OpenCV turns a tRNS colour key into alpha; 8-bit RGB (Pillow) ignores it: match.
        array = array[..., :3]
    return _to_rgb_order(array)


# --- orientation -----------------------------------------------------------------------


def _apply_orientation(array: np.ndarray, orientation: int, stack: bool) -> np.ndarray:
    """Turn stored pixels into displayed ones for EXIF orientation 1..8.

    Same result as Pillow's ImageOps.exif_transpose, done on the array so that it works
    for every decoder and for each page of a stack.
    """
    if orientation == 1:
        return array
    y, x = (1, 2) if stack else (0, 1)
    transforms: dict[int, Callable[[np.ndarray], np.ndarray]] = {
        2: lambda a: np.flip(a, x),
        3: lambda a: np.flip(a, (y, x)),
        4: lambda a: np.flip(a, y),
        5: lambda a: np.swapaxes(a, y, x),
        6: lambda a: np.rot90(a, -1, axes=(y, x)),
        7: lambda a: np.flip(np.swapaxes(a, y, x), (y, x)),
        8: lambda a: np.rot90(a, 1, axes=(y, x)),
    }
    return np.ascontiguousarray(transforms[orientation](array))
