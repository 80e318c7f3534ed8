"""core.io.images: round trips on real pixels, EXIF orientation, refusal of bad files."""

from __future__ import annotations

import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from core.errors import CorruptFileError, ImageTooLargeError, SegStudioError, UnsupportedFormatError
from core.io import images
from core.io.images import (
    MAX_PIXELS,
    SUPPORTED_IMAGE_SUFFIXES,
    ImageInfo,
    auto_levels,
    is_image_path,
    load_image,
    read_image_info,
)

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "sample"
RNG = np.random.default_rng(1234)


def random_image(shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
    high = np.iinfo(dtype).max
    return RNG.integers(0, high, size=shape, endpoint=True, dtype=dtype)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(array: np.ndarray, colour_type: int) -> bytes:
    """Encode a PNG by hand (independent of the decoders under test); 16-bit when uint16."""
    height, width = array.shape[:2]
    depth = 16 if array.dtype == np.uint16 else 8
    rows = array.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
    )


def exif_with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[274] = orientation
    return exif


def assert_same(loaded: np.ndarray, expected: np.ndarray) -> None:
    assert loaded.dtype == expected.dtype
    assert loaded.shape == expected.shape
    np.testing.assert_array_equal(loaded, expected)


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "mode"), [((37, 53), "L"), ((37, 53, 3), "RGB"), ((37, 53, 4), "RGBA")]
)
def test_png_8bit_round_trip(tmp_path: Path, shape: tuple[int, ...], mode: str) -> None:
    array = random_image(shape)
    path = tmp_path / "image.png"
    Image.fromarray(array, mode).save(path)
    data = load_image(path)
    assert_same(data.array, array)
    channels = shape[2] if len(shape) == 3 else 1
    assert data.info == ImageInfo(path, "PNG", 53, 37, 1, channels, "uint8", 1)
    assert data.info.shape == data.array.shape
    assert not data.is_stack and data.frames == 1


def test_png_16bit_grey_keeps_16_bits(tmp_path: Path) -> None:
    array = random_image((40, 30), np.uint16)
    path = tmp_path / "grey16.png"
    assert cv2.imwrite(str(path), array)
    data = load_image(path)
    assert_same(data.array, array)
    assert data.array.max() > 255
    assert read_image_info(path).dtype == "uint16"


@pytest.mark.parametrize(("channels", "colour_type"), [(3, 2), (4, 6)])
def test_png_16bit_colour_keeps_16_bits_in_rgb_order(
    tmp_path: Path, channels: int, colour_type: int
) -> None:
    array = random_image((21, 34, channels), np.uint16)
    array[0, 0, :3] = (60000, 300, 7)  # a red pixel: catches BGR swaps
    path = tmp_path / "colour16.png"
    path.write_bytes(png_bytes(array, colour_type))
    data = load_image(path)
    assert_same(data.array, array)
    assert data.info.channels == channels and data.info.dtype == "uint16"
    # Pillow alone would have truncated to 8 bits: make sure we did not go through it.
    assert np.array(Image.open(path)).dtype == np.uint8


def test_png_colour_key_is_ignored_at_any_depth(tmp_path: Path) -> None:
    for dtype in (np.uint8, np.uint16):
        array = random_image((7, 5, 3), dtype)
        encoded = png_bytes(array, 2)
        key = png_chunk(b"tRNS", struct.pack(">HHH", *(int(v) for v in array[0, 0])))
        path = tmp_path / f"keyed_{np.dtype(dtype).name}.png"
        path.write_bytes(encoded[:33] + key + encoded[33:])  # after IHDR, before IDAT
        assert_same(load_image(path).array, array)


def test_png_16bit_grey_alpha_becomes_rgba(tmp_path: Path) -> None:
    array = random_image((9, 11, 2), np.uint16)
    path = tmp_path / "ga16.png"
    path.write_bytes(png_bytes(array, 4))
    grey, alpha = array[..., 0], array[..., 1]
    assert_same(load_image(path).array, np.stack([grey, grey, grey, alpha], axis=-1))


def test_png_palette_and_transparent_palette(tmp_path: Path) -> None:
    indices = RNG.integers(0, 4, size=(12, 15), dtype=np.uint8)
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 250, 250, 10]
    image = Image.fromarray(indices, "P")
    image.putpalette(palette)
    expected = np.array(palette, np.uint8).reshape(-1, 3)[indices]
    image.save(tmp_path / "p.png")
    assert_same(load_image(tmp_path / "p.png").array, expected)

    image.save(tmp_path / "pa.png", transparency=2)
    alpha = np.where(indices == 2, 0, 255).astype(np.uint8)
    data = load_image(tmp_path / "pa.png")
    assert_same(data.array, np.dstack([expected, alpha]))
    assert data.info.channels == 4


def test_png_one_bit_becomes_0_and_255(tmp_path: Path) -> None:
    bits = RNG.integers(0, 2, size=(10, 17)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "bits.png")
    assert_same(load_image(tmp_path / "bits.png").array, bits.astype(np.uint8) * 255)


def test_png_grey_alpha_becomes_rgba(tmp_path: Path) -> None:
    array = random_image((8, 9, 2))
    Image.fromarray(array, "LA").save(tmp_path / "la.png")
    grey, alpha = array[..., 0], array[..., 1]
    assert_same(load_image(tmp_path / "la.png").array, np.stack([grey, grey, grey, alpha], -1))


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_matches_pillow_decode(tmp_path: Path, mode: str) -> None:
    source = np.array(Image.open(SAMPLES / "chelsea.png").convert(mode))
    path = tmp_path / "photo.jpeg"
    Image.fromarray(source).save(path, quality=95)
    data = load_image(path)
    assert_same(data.array, np.array(Image.open(path)))
    assert data.info.format == "JPEG" and data.info.shape == source.shape
    assert np.abs(data.array.astype(int) - source).mean() < 4  # really the photo


@pytest.mark.parametrize(("shape", "mode"), [((13, 22), "L"), ((13, 22, 3), "RGB")])
def test_bmp_round_trip(tmp_path: Path, shape: tuple[int, ...], mode: str) -> None:
    array = random_image(shape)
    Image.fromarray(array, mode).save(tmp_path / "image.bmp")
    data = load_image(tmp_path / "image.bmp")
    assert_same(data.array, array)
    assert data.info.format == "BMP"


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((20, 31), np.uint8), ((20, 31), np.uint16), ((20, 31, 3), np.uint8),
     ((20, 31, 3), np.uint16), ((20, 31, 4), np.uint8)],
)
def test_tiff_round_trip(tmp_path: Path, shape: tuple[int, ...], dtype: type) -> None:
    array = random_image(shape, dtype)
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, array, photometric="rgb" if len(shape) == 3 else "minisblack")
    data = load_image(path)
    assert_same(data.array, array)
    assert data.info.dtype == np.dtype(dtype).name and not data.is_stack


def test_tiff_float_is_float32(tmp_path: Path) -> None:
    array = RNG.normal(size=(16, 9))
    tifffile.imwrite(tmp_path / "f64.tif", array)
    tifffile.imwrite(tmp_path / "f32.tif", array.astype(np.float32))
    assert_same(load_image(tmp_path / "f32.tif").array, array.astype(np.float32))
    assert_same(load_image(tmp_path / "f64.tif").array, array.astype(np.float32))


@pytest.mark.parametrize("shape", [(4, 18, 25), (3, 18, 25, 3)])
def test_multipage_tiff_is_a_stack(tmp_path: Path, shape: tuple[int, ...]) -> None:
    stack = random_image(shape, np.uint16)
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as writer:  # one page per slice, as microscopes write
        for plane in stack:
            writer.write(plane, photometric="rgb" if plane.ndim == 3 else "minisblack")
    data = load_image(path)
    assert_same(data.array, stack)
    assert data.is_stack and data.frames == shape[0] == data.info.frames


def test_tiff_pages_of_different_sizes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(random_image((10, 10)))
        writer.write(random_image((12, 10)))
    with pytest.raises(UnsupportedFormatError, match="different"):
        load_image(path)


def test_tiff_thumbnail_page_is_not_a_slice(tmp_path: Path) -> None:
    image = random_image((20, 30))
    path = tmp_path / "with_thumbnail.tif"
    with tifffile.TiffWriter(path) as writer:
        writer.write(image)
        writer.write(image[::4, ::5], subfiletype=1)  # reduced-resolution copy
    data = load_image(path)
    assert_same(data.array, image)
    assert data.frames == 1


def test_tiff_planar_palette_and_miniswhite(tmp_path: Path) -> None:
    rgb = random_image((3, 6, 7))
    tifffile.imwrite(tmp_path / "planar.tif", rgb, photometric="rgb", planarconfig="separate")
    assert_same(load_image(tmp_path / "planar.tif").array, np.moveaxis(rgb, 0, -1))

    colormap = RNG.integers(0, 65535, size=(3, 256), dtype=np.uint16)
    indices = random_image((6, 7))
    tifffile.imwrite(tmp_path / "pal.tif", indices, photometric="palette", colormap=colormap)
    bits = RNG.integers(0, 2, size=(6, 7)).astype(bool)
    tifffile.imwrite(tmp_path / "bits.tif", bits)  # tifffile stores bilevel as min-is-white
    for name, mode in [("pal.tif", "RGB"), ("bits.tif", "L")]:
        expected = np.array(Image.open(tmp_path / name).convert(mode))
        assert_same(load_image(tmp_path / name).array, expected)


def test_tiff_grey_alpha_and_unsupported_sample_type(tmp_path: Path) -> None:
    grey_alpha = random_image((5, 6, 2), np.uint16)
    path = tmp_path / "ga.tif"
    tifffile.imwrite(path, grey_alpha, photometric="minisblack", extrasamples=[2])
    grey, alpha = grey_alpha[..., 0], grey_alpha[..., 1]
    assert_same(load_image(path).array, np.stack([grey, grey, grey, alpha], axis=-1))
    tifffile.imwrite(tmp_path / "signed.tif", grey.astype(np.int16))
    assert "int16" in refuse(tmp_path / "signed.tif", UnsupportedFormatError)


def test_tiff_lzw_without_imagecodecs(tmp_path: Path) -> None:
    grey = random_image((14, 19))
    Image.fromarray(grey).save(tmp_path / "lzw.tif", compression="tiff_lzw")
    assert_same(load_image(tmp_path / "lzw.tif").array, grey)
    rgb16 = random_image((2, 14, 19, 3), np.uint16)
    options = [cv2.IMWRITE_TIFF_COMPRESSION, 5]
    assert cv2.imwritemulti(str(tmp_path / "lzw16.tif"), [p[..., ::-1] for p in rgb16], options)
    assert_same(load_image(tmp_path / "lzw16.tif").array, rgb16)


def test_format_comes_from_content_not_name(tmp_path: Path) -> None:
    array = random_image((5, 6, 3))
    path = tmp_path / "really_a_png.jpg"
    Image.fromarray(array).save(path, format="PNG")
    data = load_image(path)
    assert data.info.format == "PNG"
    assert_same(data.array, array)


# --- EXIF orientation -----------------------------------------------------------------------

EXPECTED_ORIENTATION = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_png_orientation(tmp_path: Path, orientation: int) -> None:
    array = random_image((5, 8, 3))
    path = tmp_path / "oriented.png"
    Image.fromarray(array).save(path, exif=exif_with_orientation(orientation))
    data = load_image(path)
    assert_same(data.array, np.ascontiguousarray(EXPECTED_ORIENTATION[orientation](array)))
    assert_same(data.array, np.array(ImageOps.exif_transpose(Image.open(path))))
    assert data.info.orientation == orientation
    assert (data.info.height, data.info.width) == data.array.shape[:2]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_orientation(tmp_path: Path, orientation: int) -> None:
    photo = Image.open(SAMPLES / "coffee.jpg").resize((64, 40))
    path = tmp_path / "oriented.jpg"
    photo.save(path, exif=exif_with_orientation(orientation))
    data = load_image(path)
    assert_same(data.array, np.array(ImageOps.exif_transpose(Image.open(path))))
    assert data.array.shape[:2] == ((64, 40) if orientation >= 5 else (40, 64))


def test_png_orientation_after_pixel_data_and_16bit(tmp_path: Path) -> None:
    array = random_image((6, 9), np.uint16)
    encoded = png_bytes(array, 0)
    exif = png_chunk(b"eXIf", exif_with_orientation(6).tobytes())
    path = tmp_path / "late_exif.png"
    path.write_bytes(encoded[:-12] + exif + encoded[-12:])  # eXIf just before IEND
    assert_same(load_image(path).array, np.rot90(array, -1))


def test_tiff_orientation_applies_to_every_page(tmp_path: Path) -> None:
    stack = random_image((3, 4, 7))
    path = tmp_path / "rotated.tif"
    with tifffile.TiffWriter(path) as writer:
        for plane in stack:
            writer.write(plane, extratags=[(274, "H", 1, 8, True)])
    data = load_image(path)
    assert_same(data.array, np.rot90(stack, 1, axes=(1, 2)))
    assert (data.info.width, data.info.height) == (4, 7)


# --- files that must be refused with a clear message ----------------------------------------


def refuse(path: Path, error: type[SegStudioError]) -> str:
    with pytest.raises(error) as caught:
        load_image(path)
    message = str(caught.value)
    assert path.name in message and message.endswith(".")
    return message


def test_zero_byte_files(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "empty.xyz").write_bytes(b"")
    assert "empty" in refuse(tmp_path / "empty.png", CorruptFileError)
    refuse(tmp_path / "empty.xyz", UnsupportedFormatError)


@pytest.mark.parametrize("keep", [0.5, 0.99, -6, -1])
def test_truncated_png(tmp_path: Path, keep: float) -> None:
    encoded = (SAMPLES / "chelsea.png").read_bytes()
    cut = int(len(encoded) * keep) if keep > 0 else len(encoded) + int(keep)
    path = tmp_path / "cut.png"
    path.write_bytes(encoded[:cut])
    refuse(path, CorruptFileError)


@pytest.mark.parametrize("keep", [0.5, 0.9, -2])
def test_truncated_jpeg(tmp_path: Path, keep: float) -> None:
    encoded = (SAMPLES / "coffee.jpg").read_bytes()
    cut = int(len(encoded) * keep) if keep > 0 else len(encoded) + int(keep)
    path = tmp_path / "cut.jpg"
    path.write_bytes(encoded[:cut])
    refuse(path, CorruptFileError)


@pytest.mark.parametrize("keep", [6, 200, -100])
def test_truncated_tiff(tmp_path: Path, keep: int) -> None:
    encoded = (SAMPLES / "camera_stack.tif").read_bytes()
    path = tmp_path / "cut.tif"
    path.write_bytes(encoded[:keep])
    refuse(path, CorruptFileError)
    with pytest.raises(CorruptFileError):  # noticed from the header alone
        read_image_info(path)


def test_text_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    assert "content" in refuse(path, CorruptFileError)


def test_unsupported_formats(tmp_path: Path) -> None:
    Image.fromarray(random_image((4, 4, 3))).save(tmp_path / "anim.gif")
    assert "GIF" in refuse(tmp_path / "anim.gif", UnsupportedFormatError)
    (tmp_path / "noise.xyz").write_bytes(RNG.integers(0, 256, 500, dtype=np.uint8).tobytes())
    refuse(tmp_path / "noise.xyz", UnsupportedFormatError)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    assert "does not exist" in refuse(tmp_path / "gone.png", SegStudioError)
    (tmp_path / "folder.png").mkdir()
    refuse(tmp_path / "folder.png", UnsupportedFormatError)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.png"
    Image.fromarray(random_image((3, 3))).save(path)

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    # Simulated: running as root (as CI does) ignores file permissions.
    monkeypatch.setattr(images, "open", denied, raising=False)
    assert "permission denied" in refuse(path, SegStudioError)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads all")
def test_unreadable_file_for_real(tmp_path: Path) -> None:
    path = tmp_path / "secret.png"
    Image.fromarray(random_image((3, 3))).save(path)
    path.chmod(0)
    assert "permission denied" in refuse(path, SegStudioError)


def test_corrupt_pixel_data(tmp_path: Path) -> None:
    encoded = bytearray((SAMPLES / "camera.png").read_bytes())
    encoded[2000:2400] = bytes(400)  # zeroes inside the compressed stream
    (tmp_path / "damaged.png").write_bytes(bytes(encoded))
    refuse(tmp_path / "damaged.png", CorruptFileError)


# --- oversized headers: refused before any allocation ---------------------------------------


def huge_png(width: int, height: int, complete: bool = False) -> bytes:
    """A PNG header announcing width x height; its pixel data is cut short unless complete."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes(64))
    if complete:
        body = png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")
    else:
        body = struct.pack(">I", 1 << 20) + b"IDAT" + pixels
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + body


def test_huge_png_refused_quickly_without_allocating(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(huge_png(40000, 40000))
    load_image(SAMPLES / "camera.png")  # warm up lazy imports outside the measurement
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError) as caught:
            load_image(path)
        with pytest.raises(ImageTooLargeError):
            read_image_info(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024  # refused from the header: nothing near 1.6 G pixels allocated
    assert "40000 x 40000" in str(caught.value) and "bomb.png" in str(caught.value)


def test_pixel_limit_boundary(tmp_path: Path) -> None:
    side = 16384
    assert side * side == MAX_PIXELS
    (tmp_path / "edge.png").write_bytes(huge_png(side, side, complete=True))
    (tmp_path / "over.png").write_bytes(huge_png(side + 1, side, complete=True))
    assert read_image_info(tmp_path / "edge.png").shape == (side, side, 3)
    with pytest.raises(ImageTooLargeError, match="16385 x 16384"):
        read_image_info(tmp_path / "over.png")


def patched_jpeg(tmp_path: Path, width: int, height: int) -> Path:
    """A real JPEG whose frame header claims another size (its pixels stay small)."""
    encoded = bytearray((SAMPLES / "coffee.jpg").read_bytes())
    sof = encoded.index(b"\xff\xc0")
    encoded[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path = tmp_path / f"claims_{width}x{height}.jpg"
    path.write_bytes(bytes(encoded))
    return path


def test_huge_jpeg_header_refused_with_our_error(tmp_path: Path) -> None:
    path = patched_jpeg(tmp_path, 40000, 40000)
    with pytest.raises(ImageTooLargeError, match="40000 x 40000"):
        load_image(path)


def test_image_between_pillow_limit_and_ours_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pillow_default = 89_478_485  # Pillow refuses outright above twice this
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_default)
    assert 2 * pillow_default < 15000 * 15000 <= MAX_PIXELS
    info = read_image_info(patched_jpeg(tmp_path, 15000, 15000))
    assert (info.width, info.height) == (15000, 15000)


def tiff_entry(tag: int, value: int, short: bool = False) -> bytes:
    packed = struct.pack("<HH", value, 0) if short else struct.pack("<I", value)
    return struct.pack("<HHI", tag, 3 if short else 4, 1) + packed


def test_huge_bmp_and_tiff_headers(tmp_path: Path) -> None:
    bmp = b"BM" + bytes(12) + struct.pack("<Iii", 40, 40000, -40000) + bytes(28)
    (tmp_path / "bomb.bmp").write_bytes(bmp)
    with pytest.raises(ImageTooLargeError, match="40000 x 40000"):
        load_image(tmp_path / "bomb.bmp")
    entries = [
        tiff_entry(256, 40000), tiff_entry(257, 40000), tiff_entry(258, 8, short=True),
        tiff_entry(259, 1, short=True), tiff_entry(262, 1, short=True), tiff_entry(273, 8),
        tiff_entry(277, 1, short=True), tiff_entry(278, 40000), tiff_entry(279, 40000**2),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(entries) + bytes(4)
    (tmp_path / "bomb.tif").write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd)
    with pytest.raises(ImageTooLargeError, match="40000 x 40000"):
        load_image(tmp_path / "bomb.tif")


def test_stack_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tifffile.imwrite(tmp_path / "stack.tif", random_image((3, 8, 8)), photometric="minisblack")
    assert load_image(tmp_path / "stack.tif").frames == 3
    monkeypatch.setattr(images, "MAX_STACK_PIXELS", 3 * 8 * 8 - 1)
    with pytest.raises(ImageTooLargeError, match="3 pages"):
        load_image(tmp_path / "stack.tif")


# --- sample data, suffixes, auto levels ------------------------------------------------------


def test_samples_hold_the_scikit_image_pixels() -> None:
    data = pytest.importorskip("skimage.data")
    assert_same(load_image(SAMPLES / "camera.png").array, data.camera())
    assert_same(load_image(SAMPLES / "chelsea.png").array, data.chelsea())
    cell12 = ((data.cell().astype(np.uint32) * 4095 + 127) // 255).astype(np.uint16)
    assert_same(load_image(SAMPLES / "cell_16bit.tif").array, cell12)
    stack = load_image(SAMPLES / "camera_stack.tif")
    assert_same(stack.array[2], data.camera()[100:260, 108:268])
    coffee = load_image(SAMPLES / "coffee.jpg").array
    assert coffee.shape == (341, 512, 3)
    reference = cv2.resize(data.coffee(), (512, 341), interpolation=cv2.INTER_AREA)
    assert np.abs(coffee.astype(int) - reference).mean() < 6


def test_suffixes() -> None:
    assert {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"} <= SUPPORTED_IMAGE_SUFFIXES
    assert all(suffix == suffix.lower() for suffix in SUPPORTED_IMAGE_SUFFIXES)
    assert is_image_path("a/B.TIF") and is_image_path(Path("x.jpeg"))
    assert not is_image_path("movie.mp4") and not is_image_path("png")


def test_auto_levels_on_known_values() -> None:
    ramp = np.arange(1000, dtype=np.uint16).reshape(20, 50)
    lo, hi = auto_levels(ramp)
    assert lo == pytest.approx(4.995) and hi == pytest.approx(994.005)
    assert auto_levels(ramp, 0, 100) == (0.0, 999.0)
    assert auto_levels(np.full((5, 5), 7, np.uint16)) == (7.0, 8.0)
    with_nan = np.array([np.nan, 1.0, 3.0, np.inf], np.float32)
    assert auto_levels(with_nan, 0, 100) == (1.0, 3.0)
    assert auto_levels(np.full(3, np.nan)) == (0.0, 1.0)
    with pytest.raises(ValueError):
        auto_levels(ramp, 60, 40)


def test_auto_levels_subsamples_large_images(monkeypatch: pytest.MonkeyPatch) -> None:
    big = RNG.integers(0, 4096, size=(4000, 4000), dtype=np.uint16)
    sizes: list[int] = []
    percentile = np.percentile

    def spy(values, *args, **kwargs):
        sizes.append(np.asarray(values).size)
        return percentile(values, *args, **kwargs)

    monkeypatch.setattr(np, "percentile", spy)
    lo, hi = auto_levels(big, 1, 99)
    monkeypatch.undo()
    assert sizes and max(sizes) <= 1_100_000  # a subsample, not the 16 M pixels
    exact = np.percentile(big, [1, 99])
    assert abs(lo - exact[0]) < 8 and abs(hi - exact[1]) < 8
