"""Classical helpers on real images, checked against skimage/scipy as references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import data, filters, measure

from core import classical
from core.classical import (
    HINT_BACKGROUND,
    HINT_FOREGROUND,
    ClassicalInputError,
    connected_components,
    fill_holes,
    grabcut,
    instance_classes,
    otsu_threshold,
    remove_small,
    threshold,
    to_gray,
    to_uint8,
    watershed_from_markers,
)
from core.errors import SegStudioError

CUP_BOX = (165, 10, 415, 295)  # the espresso cup in skimage's coffee() (x0, y0, x1, y1)
# Two neighbouring coins of the bottom row of coins(): (row, col) centres, 7 px apart at best.
COIN_A, COIN_B = (263, 244), (263, 301)


@pytest.fixture(scope="module")
def coins() -> np.ndarray:
    return data.coins()


@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    return data.coffee()


def same_partition(ours: np.ndarray, reference: np.ndarray) -> bool:
    """True when two label maps group pixels the same way (ids may differ, 0 matches 0)."""
    if not np.array_equal(ours == 0, reference == 0):
        return False
    pairs = np.unique(np.stack([ours.ravel(), reference.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def coin_mask(coins: np.ndarray, centre: tuple[int, int]) -> np.ndarray:
    """The filled Otsu mask of the single coin at ``centre``."""
    labels = measure.label(ndi.binary_fill_holes(coins > filters.threshold_otsu(coins)))
    return labels == labels[centre]


# ---- grey conversion -------------------------------------------------------------------------


def test_to_gray_shapes_and_dtypes() -> None:
    astronaut = data.astronaut()
    gray = to_gray(astronaut)
    assert gray.shape == astronaut.shape[:2] and gray.dtype == np.uint8
    weighted = astronaut.astype(np.float64) @ [0.299, 0.587, 0.114]
    assert np.abs(gray - weighted).max() <= 1
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 7, np.uint8)])
    assert np.array_equal(to_gray(rgba), gray)
    wide = to_gray(astronaut.astype(np.uint16) * 257)
    assert wide.dtype == np.float32 and np.abs(wide / 257 - weighted).max() < 0.01
    camera = data.camera()
    assert np.array_equal(to_gray(camera), camera) and to_gray(camera) is not camera
    assert np.array_equal(to_gray(camera[..., None]), camera)
    assert to_gray(camera > 100).dtype == np.uint8
    assert to_gray(camera.astype(np.int32)).dtype == np.float32


def test_to_uint8_scales_by_percentiles() -> None:
    camera16 = data.camera().astype(np.uint16) * 257
    scaled = to_uint8(camera16, percentiles=(0, 100))
    assert scaled.dtype == np.uint8 and np.abs(scaled.astype(int) - data.camera()).max() <= 1
    floats = data.camera() / 255.0
    floats[0, 0] = np.nan
    floats[0, 1] = 1e9  # an outlier must not squash the rest
    out = to_uint8(floats)
    assert out[0, 0] == 0 and out[0, 1] == 255 and out.std() > 40
    assert to_uint8(data.astronaut()[..., :3].astype(np.float32)).shape == (512, 512, 3)
    assert not to_uint8(np.full((4, 4), 3.5)).any()


# ---- thresholds ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["coins", "camera"])
def test_otsu_matches_skimage_on_uint8_and_16_bit(name: str) -> None:
    image = getattr(data, name)()
    reference = filters.threshold_otsu(image)
    value, mask = otsu_threshold(image)
    assert value == reference
    assert mask.dtype == bool and np.array_equal(mask, image > reference)

    image16 = image.astype(np.uint16) * 257
    value16, mask16 = otsu_threshold(image16)
    bin_width = (int(image16.max()) - int(image16.min())) / 4096
    assert abs(value16 - reference * 257) <= bin_width
    assert abs(value16 - filters.threshold_otsu(image16)) <= bin_width
    assert np.array_equal(mask16, mask)


def test_otsu_on_float_colour_and_odd_images(coins: np.ndarray) -> None:
    floats = coins / 255.0
    value, mask = otsu_threshold(floats)
    reference = filters.threshold_otsu(coins) / 255.0
    assert abs(value - reference) <= 1 / 255 + 1 / 4096
    assert np.array_equal(mask, floats > value)
    assert np.mean(mask == (coins > filters.threshold_otsu(coins))) > 0.995

    floats[:10, :10] = np.nan
    floats[10, 10] = np.inf
    with_nan, nan_mask = otsu_threshold(floats)
    assert abs(with_nan - value) <= 2 / 255 and not nan_mask[:10, :10].any() and nan_mask[10, 10]

    astronaut = data.astronaut()
    value, mask = otsu_threshold(astronaut)
    assert value == filters.threshold_otsu(to_gray(astronaut)) and mask.shape == (512, 512)

    signed = coins.astype(np.int32) - 1000  # negative values work the same
    assert otsu_threshold(signed)[0] == filters.threshold_otsu(coins) - 1000
    assert otsu_threshold(np.full((5, 5), 7, np.uint16))[0] == 7.0
    assert not otsu_threshold(np.full((5, 5), 7, np.uint16))[1].any()
    with pytest.raises(ClassicalInputError, match="no finite value"):
        otsu_threshold(np.full((3, 3), np.nan))


def test_manual_threshold_is_inclusive(coins: np.ndarray) -> None:
    assert np.array_equal(threshold(coins, 100, 150), (coins >= 100) & (coins <= 150))
    assert np.array_equal(threshold(coins, 150), coins >= 150)
    assert np.array_equal(threshold(coins, 150, 150), coins == 150)
    coins16 = coins.astype(np.uint16) * 257
    assert np.array_equal(threshold(coins16, 100 * 257, 150 * 257), threshold(coins, 100, 150))
    assert threshold(data.astronaut(), 100).shape == (512, 512)
    with pytest.raises(ClassicalInputError, match="above the high"):
        threshold(coins, 150, 100)
    with pytest.raises(ClassicalInputError, match="NaN"):
        threshold(coins, float("nan"))


# ---- watershed -------------------------------------------------------------------------------


def test_watershed_segments_two_neighbouring_coins(coins: np.ndarray) -> None:
    top, left = 225, 205
    image = coins[top:300, left:340]
    markers = np.zeros(image.shape, np.int32)
    seed_a = (COIN_A[0] - top, COIN_A[1] - left)
    seed_b = (COIN_B[0] - top, COIN_B[1] - left)
    markers[seed_a], markers[seed_b], markers[0, 0] = 1, 2, 3  # a coin each, and background
    labels = watershed_from_markers(image, markers)

    assert labels.shape == image.shape and labels.dtype == np.int32
    assert set(np.unique(labels)) == {1, 2, 3}
    assert labels[seed_a] == 1 and labels[seed_b] == 2 and labels[0, 0] == 3
    for value, centre in ((1, COIN_A), (2, COIN_B)):
        assert measure.label(labels == value, connectivity=1).max() == 1
        coin = coin_mask(coins, centre)[top:300, left:340]
        region = labels == value
        assert (coin & region).sum() / (coin | region).sum() > 0.9


def test_watershed_splits_touching_coins_along_a_line(coins: np.ndarray) -> None:
    a, b = coin_mask(coins, COIN_A), coin_mask(coins, COIN_B)
    grown_a, grown_b = ndi.binary_dilation(a, iterations=6), ndi.binary_dilation(b, iterations=6)
    blob = grown_a | grown_b
    assert (grown_a & grown_b).any() and measure.label(blob).max() == 1  # one merged blob
    markers = np.zeros(coins.shape, np.int32)
    markers[COIN_A], markers[COIN_B], markers[~ndi.binary_dilation(blob, iterations=3)] = 1, 2, 3
    labels = watershed_from_markers(blob, markers)  # a bool mask is an image too

    assert set(np.unique(labels)) == {1, 2, 3} and (labels > 0).all()
    assert labels[COIN_A] == 1 and labels[COIN_B] == 2
    assert np.all(labels[a] == 1) and np.all(labels[b] == 2)
    assert np.mean(((labels == 1) | (labels == 2)) == blob) > 0.995
    # Regions 1 and 2 meet along a vertical line in the gap between the two coins' edges.
    rows, cols = np.nonzero((labels == 1)[:, :-1] & (labels == 2)[:, 1:])
    assert rows.max() - rows.min() >= 10 and cols.max() - cols.min() <= 2
    assert np.flatnonzero(a.any(0)).max() < cols.min() <= cols.max() < np.flatnonzero(b.any(0)).min()
    assert not ((labels == 2)[:, :-1] & (labels == 1)[:, 1:]).any()


def test_watershed_labels_the_border_and_colour_and_16_bit_images() -> None:
    astronaut = data.astronaut()
    markers = np.zeros(astronaut.shape[:2], np.int64)
    markers[0, 0], markers[-1, -1], markers[0, -1] = 5, 9, 9  # seeds on the border cv2 overwrites
    for image in (astronaut, astronaut.astype(np.uint16) * 257, to_gray(astronaut) / 255.0):
        labels = watershed_from_markers(image, markers)
        assert set(np.unique(labels)) == {5, 9}
        assert labels[0, 0] == 5 and labels[-1, -1] == 9 and labels[0, -1] == 9


def test_watershed_rejects_bad_markers(coins: np.ndarray) -> None:
    good = np.zeros(coins.shape, np.int32)
    good[10, 10] = 1
    with pytest.raises(ClassicalInputError, match="shape"):
        watershed_from_markers(coins, good[:-1])
    with pytest.raises(ClassicalInputError, match="no seed"):
        watershed_from_markers(coins, np.zeros(coins.shape, np.int32))
    with pytest.raises(ClassicalInputError, match="integer"):
        watershed_from_markers(coins, good.astype(np.float32))
    with pytest.raises(ClassicalInputError, match="positive"):
        watershed_from_markers(coins, good - 1)
    with pytest.raises(ClassicalInputError, match="2\\*\\*31"):
        watershed_from_markers(coins, good.astype(np.int64) << 40)


# ---- GrabCut ---------------------------------------------------------------------------------


def test_grabcut_finds_the_cup(coffee: np.ndarray) -> None:
    x0, y0, x1, y1 = CUP_BOX
    mask = grabcut(coffee, CUP_BOX)
    assert mask.shape == coffee.shape[:2] and mask.dtype == bool
    outside = np.ones_like(mask)
    outside[y0:y1, x0:x1] = False
    assert not mask[outside].any()
    assert 0.2 < mask[y0:y1, x0:x1].mean() < 0.9
    assert mask[140, 290]  # the coffee in the cup
    assert np.array_equal(grabcut(coffee, (x1, y1, x0, y0)), mask)  # corners in any order
    assert np.array_equal(grabcut(coffee, CUP_BOX), mask)  # deterministic


def test_grabcut_on_grey_16_bit_and_clipped_boxes(coffee: np.ndarray) -> None:
    reference = grabcut(coffee, CUP_BOX)
    wide = grabcut(coffee.astype(np.uint16) * 257, CUP_BOX)
    assert (wide & reference).sum() / (wide | reference).sum() > 0.8
    grey = grabcut(to_gray(coffee), CUP_BOX, iterations=2)
    assert 0.1 < grey.mean() < 0.5
    # A box dragged past the image's edges is clipped.
    clipped = grabcut(coffee, (-50.5, 250, 100, 10_000))
    assert not clipped[:250].any() and not clipped[:, 100:].any()


def test_grabcut_honours_hints(coffee: np.ndarray) -> None:
    x0, y0, x1, y1 = CUP_BOX
    hint = np.zeros(coffee.shape[:2], np.uint8)
    hint[y0:y1, 290:x1] = HINT_BACKGROUND
    hint[380:390, 10:20] = HINT_FOREGROUND
    mask = grabcut(coffee, CUP_BOX, mask_hint=hint)
    assert not mask[y0:y1, 290:x1].any() and mask[380:390, 10:20].all()
    assert mask[140, 280]
    with pytest.raises(ClassicalInputError, match="0 \\(none\\), 1"):
        grabcut(coffee, CUP_BOX, mask_hint=hint * 2)
    with pytest.raises(ClassicalInputError, match="shape"):
        grabcut(coffee, CUP_BOX, mask_hint=hint[:-1])
    hint[:] = 0
    hint[y0:y1, x0:x1] = HINT_BACKGROUND
    with pytest.raises(ClassicalInputError, match="whole box"):
        grabcut(coffee, CUP_BOX, mask_hint=hint)


@pytest.mark.parametrize(("box", "message"), [
    ((100, 100, 100, 200), "0 x 100 pixels"),
    ((100, 100, 200, 101), "1 pixels"),
    ((700, 0, 800, 100), "0 x 100"),
    ((-10, -10, 5000, 5000), "whole image"),
    ((1, 2, 3), "four numbers"),
    ("box", "four numbers"),
    ((0, 0, float("inf"), 10), "finite"),
])
def test_grabcut_rejects_degenerate_boxes(coffee: np.ndarray, box: object, message: str) -> None:
    with pytest.raises(ClassicalInputError, match=message):
        grabcut(coffee, box)  # type: ignore[arg-type]


def test_grabcut_rejects_zero_iterations(coffee: np.ndarray) -> None:
    with pytest.raises(ClassicalInputError, match="iteration"):
        grabcut(coffee, CUP_BOX, iterations=0)


# ---- components ------------------------------------------------------------------------------


@pytest.mark.parametrize(("connectivity", "skimage_connectivity"), [(8, 2), (4, 1)])
def test_components_match_skimage_on_coins(coins: np.ndarray, connectivity: int,
                                           skimage_connectivity: int) -> None:
    mask = otsu_threshold(coins)[1]
    instances, count = connected_components(mask, connectivity=connectivity)
    reference = measure.label(mask, connectivity=skimage_connectivity)
    assert instances.dtype == np.uint32 and instances.shape == mask.shape
    assert count == reference.max() == instances.max()
    assert same_partition(instances, reference)
    assert instance_classes(instances, mask) == dict.fromkeys(range(1, count + 1), 1)


def test_components_keep_touching_classes_apart() -> None:
    semantic = np.zeros((6, 8), np.uint8)
    semantic[1:5, 1:4], semantic[1:5, 4:7] = 1, 2  # two classes side by side, touching
    instances, count = connected_components(semantic)
    assert count == 2 and len(np.unique(instances[semantic == 1])) == 1
    assert instances[2, 2] != instances[2, 5]
    assert instance_classes(instances, semantic) == {1: 1, 2: 2}
    no_background = semantic + 1  # every pixel labelled: class 1 (the border ring) counts too
    instances, count = connected_components(no_background)
    assert count == 3 and (instances > 0).all()
    assert instance_classes(instances, no_background) == {1: 1, 2: 2, 3: 3}


def test_components_of_a_real_multi_class_map() -> None:
    semantic = np.digitize(data.camera(), [60, 140]).astype(np.uint16)  # classes 0, 1, 2
    instances, count = connected_components(semantic)
    reference = measure.label(semantic, background=0, connectivity=2)
    assert count == reference.max()
    assert same_partition(instances, reference)
    classes = instance_classes(instances, semantic)
    assert len(classes) == count
    for instance_id in (1, count // 2, count):
        assert np.all(semantic[instances == instance_id] == classes[instance_id])
    # Ids run class by class: all class 1 instances come before class 2's.
    assert max(k for k, v in classes.items() if v == 1) < min(k for k, v in classes.items() if v == 2)
    # Signed labels (a negative class too) take the np.unique path and agree.
    signed = semantic.astype(np.int32) - 1
    assert connected_components(signed)[1] == measure.label(signed, background=0).max()


def test_min_size_drops_small_regions(coins: np.ndarray) -> None:
    mask = otsu_threshold(coins)[1]
    reference = measure.label(mask, connectivity=2)
    areas = np.bincount(reference.ravel())[1:]
    instances, count = connected_components(mask, min_size=50)
    assert count == np.count_nonzero(areas >= 50) < reference.max()
    assert set(np.unique(instances)) == set(range(count + 1))
    assert np.bincount(instances.ravel())[1:].min() >= 50
    kept = np.isin(reference, np.flatnonzero(areas >= 50) + 1)
    assert np.array_equal(instances > 0, kept)
    assert np.array_equal(remove_small(mask, 50), kept)


def test_instance_classes_uses_the_majority() -> None:
    instances = np.array([[1, 1, 1, 2], [0, 0, 3, 3]], np.uint32)
    semantic = np.array([[4, 4, 2, 7], [9, 9, 5, 6]], np.int16)
    assert instance_classes(instances, semantic) == {1: 4, 2: 7, 3: 5}
    assert instance_classes(np.zeros((2, 2), np.uint8), np.ones((2, 2), np.uint8)) == {}
    with pytest.raises(ClassicalInputError, match="shape"):
        instance_classes(instances, semantic[:, :2])


def test_fill_holes_matches_scipy(coins: np.ndarray) -> None:
    mask = otsu_threshold(coins)[1]
    filled = fill_holes(mask)
    assert np.array_equal(filled, ndi.binary_fill_holes(mask))
    assert filled.sum() > mask.sum()
    assert np.array_equal(fill_holes(mask.astype(np.uint8) * 3), filled)


# ---- inputs ----------------------------------------------------------------------------------


def test_inputs_are_never_modified(coins: np.ndarray, coffee: np.ndarray) -> None:
    image, colour = coins.copy(), coffee.copy()
    markers = np.zeros(coins.shape, np.int32)
    markers[COIN_A], markers[COIN_B], markers[0, 0] = 1, 2, 3
    semantic = np.digitize(coins, [100, 160]).astype(np.uint8)
    hint = np.zeros(coffee.shape[:2], np.uint8)
    hint[140, 290] = HINT_FOREGROUND
    saved = [a.copy() for a in (image, colour, markers, semantic, hint)]
    results = [
        to_gray(image), to_gray(colour), to_uint8(image.astype(np.float32)),
        otsu_threshold(image)[1], threshold(image, 50), watershed_from_markers(image, markers),
        grabcut(colour, CUP_BOX, iterations=1, mask_hint=hint), connected_components(semantic)[0],
        fill_holes(semantic), remove_small(semantic, 10),
    ]
    for array, copy in zip((image, colour, markers, semantic, hint), saved, strict=True):
        assert np.array_equal(array, copy)
        assert not any(np.shares_memory(array, result) for result in results)
    assert all(result.shape == image.shape[:2] or result.shape == colour.shape[:2]
               for result in results)


@pytest.mark.parametrize("bad", [
    np.zeros((4, 4, 2), np.uint8),
    np.zeros((2, 4, 4, 3), np.uint8),
    np.zeros((0, 5), np.uint8),
    np.zeros((4, 4), np.complex64),
    np.zeros(16, np.uint8),
    [[1, 2], [3, 4]],
])
def test_bad_images_raise_clear_value_errors(bad: object) -> None:
    for call in (to_gray, otsu_threshold, lambda im: threshold(im, 1),
                 lambda im: grabcut(im, (0, 0, 3, 3)),
                 lambda im: watershed_from_markers(im, np.ones((4, 4), np.int32))):
        with pytest.raises(ValueError, match="image") as caught:
            call(bad)
        assert isinstance(caught.value, SegStudioError)


def test_bad_masks_and_parameters(coins: np.ndarray) -> None:
    with pytest.raises(ClassicalInputError, match="boolean or integer"):
        connected_components(coins.astype(np.float32))
    with pytest.raises(ClassicalInputError, match=r"\(H, W\)"):
        connected_components(np.zeros((3, 3, 3), bool))
    with pytest.raises(ClassicalInputError, match="4 or 8"):
        connected_components(coins > 100, connectivity=6)
    with pytest.raises(ClassicalInputError, match="minimum size"):
        remove_small(coins > 100, -1)
    with pytest.raises(ClassicalInputError, match="numpy array"):
        fill_holes([[True]])  # type: ignore[arg-type]


def test_module_imports_no_cv2_at_import_time() -> None:
    source = classical.__file__
    with open(source, encoding="utf-8") as handle:
        top_level = [line for line in handle if line.startswith(("import ", "from "))]
    assert not any("cv2" in line for line in top_level)
