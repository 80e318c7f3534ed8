"""Optical flow (core.flow): OpenCV methods against direct calls and known sub-pixel motion,
RAFT's code path and weights rules, the flow cache, colour coding and arrows, and mask
propagation on real images moved by known motions. No network; real images from scikit-image.

Frames are made from skimage's photographs: a camera pan is a crop window of the photograph
translated with sub-pixel bilinear interpolation (``cv2.warpAffine``), so every frame is filled
with real content and the true flow is known exactly.
"""

from __future__ import annotations

import colorsys
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import cv2
import numpy as np
import pytest
from flow_frames import (
    BORDER,
    PAN,
    _endpoint_error,
    _grey,
    _image,
    _pan,
    _shifted_pair,
    _textured,
)

from core.errors import SegStudioError
from core.flow import (
    FlowCache,
    FlowError,
    FlowProvider,
    UnknownFlowMethodError,
    color_wheel_legend,
    compute_flow,
    default_params,
    draw_arrows,
    flow_arrows,
    flow_key,
    flow_magnitude_heat,
    flow_to_color,
    track_points,
)
from core.flow.visualize import color_wheel


# -- OpenCV methods ----------------------------------------------------------------------------------
def test_farneback_is_the_direct_cv2_call_on_grey_frames() -> None:
    frame0, frame1 = _shifted_pair("astronaut")
    p = default_params("farneback")
    direct = cv2.calcOpticalFlowFarneback(_grey(frame0), _grey(frame1), None, p["pyr_scale"],
                                          p["levels"], p["winsize"], p["iterations"],
                                          p["poly_n"], p["poly_sigma"], p["flags"])

    ours = compute_flow(frame0, frame1, "farneback")

    assert ours.dtype == np.float32 and ours.shape == frame0.shape[:2] + (2,)
    assert np.array_equal(ours, direct)
    assert np.array_equal(compute_flow(_grey(frame0), _grey(frame1)), direct)
    custom = compute_flow(frame0, frame1, "farneback", {"levels": 1, "winsize": 9})
    assert np.array_equal(custom, cv2.calcOpticalFlowFarneback(
        _grey(frame0), _grey(frame1), None, 0.5, 1, 9, 3, 5, 1.2, 0))


@pytest.mark.parametrize("preset", ["ultrafast", "fast", "medium"])
def test_dis_is_the_direct_cv2_call_on_grey_frames(preset: str) -> None:
    frame0, frame1 = _shifted_pair("coffee")
    code = getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}")
    direct = cv2.DISOpticalFlow_create(code).calc(_grey(frame0), _grey(frame1), None)

    assert np.array_equal(compute_flow(frame0, frame1, "dis", {"preset": preset}), direct)
    # the per-thread DIS object is reused: a second call gives the same field
    assert np.array_equal(compute_flow(frame0, frame1, "dis", {"preset": preset}), direct)


def test_dis_setter_overrides_reach_opencv() -> None:
    frame0, frame1 = _shifted_pair("coffee")
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    dis.setPatchSize(12)
    dis.setVariationalRefinementIterations(2)
    direct = dis.calc(_grey(frame0), _grey(frame1), None)

    ours = compute_flow(frame0, frame1, "dis", {"preset": "fast", "patch_size": 12,
                                                "variational_refinement_iterations": 2})

    assert np.array_equal(ours, direct)


# Measured with the defaults on these three images (mean endpoint error, px):
#   Farneback on textured pixels 0.049 / 0.063 / 0.046; DIS "medium" on all pixels inside the
#   border 0.081 / 0.101 / 0.108 and on textured pixels 0.063 / 0.101 / 0.057.
# Bounds are ~2.5x the worst measurement: far below the 2.86 px of the motion itself and the
# 0.5 px where nearest-pixel label warping starts to pick wrong pixels. Farneback is judged on
# textured pixels only: it returns exactly zero flow in flat areas (measured 10-27% of these
# images), where the motion is unobservable, so its all-pixel error (0.6-1.0 px) measures the
# images' flat areas, not the method.
@pytest.mark.parametrize("name", ["astronaut", "coffee", "camera"])
def test_known_subpixel_shift_is_recovered(name: str) -> None:
    frame0, frame1 = _shifted_pair(name)
    textured = _textured(_grey(frame0))
    inside = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    assert textured.mean() > 0.3

    farneback = _endpoint_error(compute_flow(frame0, frame1, "farneback"))
    dis = _endpoint_error(compute_flow(frame0, frame1, "dis"))

    assert farneback[textured].mean() < 0.15
    assert dis[textured].mean() < 0.25
    assert dis[inside].mean() < 0.25


def test_other_dtypes_are_scaled_jointly() -> None:
    frame0, frame1 = _shifted_pair("astronaut")
    wide0, wide1 = (_grey(f).astype(np.uint16) * 200 + 1000 for f in (frame0, frame1))

    flow = compute_flow(wide0, wide1, "farneback")

    assert _endpoint_error(flow)[_textured(_grey(frame0))].mean() < 0.15


def test_bad_methods_parameters_and_frames_are_refused() -> None:
    frame = _image("coffee")
    with pytest.raises(UnknownFlowMethodError, match="choose one of farneback"):
        compute_flow(frame, frame, "horn_schunck")
    with pytest.raises(FlowError, match="Unknown parameter.*winsiz"):
        compute_flow(frame, frame, "farneback", {"winsiz": 9})
    with pytest.raises(FlowError, match="Unknown DIS preset"):
        compute_flow(frame, frame, "dis", {"preset": "slow"})
    with pytest.raises(FlowError, match="differ in size"):
        compute_flow(frame, frame[:-1])
    with pytest.raises(FlowError, match="grey"):
        compute_flow(frame[..., :2], frame[..., :2])
    assert issubclass(FlowError, SegStudioError)


# -- RAFT -----------------------------------------------------------------------------------------------
@pytest.fixture
def torch_home(empty_torch_home: Path) -> Path:
    """An empty TORCH_HOME and no networks kept from other tests."""
    from core.flow import raft

    home = empty_torch_home
    raft.clear_network_cache()
    yield home
    raft.clear_network_cache()




@pytest.mark.parametrize("size", [(64, 96), (61, 90), (136, 130)])
def test_untrained_raft_small_runs_at_any_size(size: tuple[int, int],
                                               no_network: list[object]) -> None:
    import torch

    torch.manual_seed(0)
    h, w = size
    frame0 = _image("astronaut")[200:200 + h, 150:150 + w]
    frame1 = _image("astronaut")[202:202 + h, 151:151 + w]

    flow = compute_flow(frame0, frame1, "raft_small", {"num_flow_updates": 2}, device="cpu",
                        weights=None)

    assert flow.shape == (h, w, 2) and flow.dtype == np.float32
    assert np.isfinite(flow).all()
    assert no_network == []


def test_raft_input_is_normalised_padded_and_the_last_update_is_returned() -> None:
    import torch
    from torchvision.models.optical_flow import Raft_Small_Weights

    from core.flow import raft

    torch.manual_seed(1)
    module = raft.build_raft("raft_small")
    frame0 = _image("coffee")[100:161, 200:290]  # 61x90: padded to 128x128
    frame1 = _image("coffee")[101:162, 202:292]
    # torchvision's own preprocessing of the official weights gives the same tensors
    reference0, reference1 = Raft_Small_Weights.DEFAULT.transforms()(
        torch.from_numpy(frame0).permute(2, 0, 1)[None], torch.from_numpy(frame1).permute(2, 0, 1)[None])
    ours0 = raft._to_tensor(frame0)
    assert torch.allclose(ours0, reference0[0], atol=1e-6)
    assert float(ours0.min()) >= -1 and float(ours0.max()) <= 1
    padded = raft.pad_for_raft(torch.stack([ours0, raft._to_tensor(frame1)]))
    assert padded.shape[-2:] == (128, 128)
    assert torch.equal(padded[..., :61, :90], torch.stack([ours0, raft._to_tensor(frame1)]))
    assert torch.equal(padded[..., 61:, :90], padded[..., 60:61, :90].expand(-1, -1, 67, -1))
    assert raft.pad_for_raft(torch.zeros(1, 3, 130, 201)).shape[-2:] == (136, 208)
    with torch.inference_mode():
        updates = module(padded[0:1], padded[1:2], num_flow_updates=3)
    expected = updates[-1][0, :, :61, :90].permute(1, 2, 0).numpy()
    assert not np.allclose(expected, updates[-2][0, :, :61, :90].permute(1, 2, 0).numpy())

    flow = compute_flow(frame0, frame1, "raft_small", {"num_flow_updates": 3}, device="cpu",
                        weights=module)

    np.testing.assert_allclose(flow, expected, atol=1e-5)
    assert torch.allclose(raft._to_tensor(frame1), reference1[0], atol=1e-6)


def _official_file(model: str) -> str:
    from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights

    enum = {"raft_small": Raft_Small_Weights, "raft_large": Raft_Large_Weights}[model]
    return PurePosixPath(urlparse(enum.DEFAULT.url).path).name


def test_raft_weights_load_from_the_hub_cache_offline(torch_home: Path,
                                                      no_network: list[object]) -> None:
    import torch

    from core.flow import raft

    torch.manual_seed(2)
    saved = raft.build_raft("raft_small").state_dict()
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(saved, folder / _official_file("raft_small"))

    module = raft.load_raft("raft_small")  # "default": torchvision's recommended weights

    loaded = module.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert not module.training
    frame0, frame1 = (_image("coffee")[100:164, 200:296], _image("coffee")[101:165, 202:298])
    flow = compute_flow(frame0, frame1, "raft_small", {"num_flow_updates": 2}, device="cpu")
    with torch.inference_mode():
        batch = raft.pad_for_raft(torch.stack([raft._to_tensor(frame0), raft._to_tensor(frame1)]))
        expected = module(batch[0:1], batch[1:2], num_flow_updates=2)[-1][0, :, :64, :96]
    np.testing.assert_allclose(flow, expected.permute(1, 2, 0).numpy(), atol=1e-5)
    assert raft.raft_weights("raft_small")["raft_small.c_t_v2"].file_name == _official_file(
        "raft_small")
    assert no_network == []


def test_missing_raft_weights_give_the_offline_error(torch_home: Path,
                                                     no_network: list[object]) -> None:
    from core.flow import raft
    from core.models.errors import OfflineWeightsError

    frame = _image("coffee")[:64, :64]
    with pytest.raises(OfflineWeightsError) as caught:
        compute_flow(frame, frame, "raft_large", device="cpu")

    message = str(caught.value)
    assert _official_file("raft_large") in message
    assert str(torch_home / "hub" / "checkpoints") in message
    assert "https://download.pytorch.org/models/" in message
    assert no_network == []
    with pytest.raises(OfflineWeightsError, match=_official_file("raft_small")):
        raft.load_raft("raft_small", "raft_small.c_t_v2")


def test_raft_weights_of_another_network_or_unknown_names_are_refused(
        torch_home: Path, tmp_path: Path) -> None:
    import torch

    from core.flow import raft
    from core.models.errors import WeightsMismatchError, WeightsNotFoundError

    path = tmp_path / "large.pth"
    torch.save(raft.build_raft("raft_large").state_dict(), path)
    with pytest.raises(WeightsMismatchError, match="does not fit the raft_small network"):
        raft.load_raft("raft_small", path)
    with pytest.raises(WeightsMismatchError, match="are for raft_large"):
        raft.load_raft("raft_small", raft.RAFT_WEIGHTS["raft_large.c_t_v2"])
    with pytest.raises(WeightsNotFoundError, match="published: raft_small.c_t_v1"):
        raft.load_raft("raft_small", "sintel_best")
    with pytest.raises(WeightsNotFoundError):
        raft.load_raft("raft_small", tmp_path / "missing.pth")
    assert isinstance(raft.load_raft("raft_large", path), torch.nn.Module)  # explicit file


# -- sparse tracks -------------------------------------------------------------------------------------
def test_lucas_kanade_tracks_follow_the_known_motion() -> None:
    frames = _pan(6)

    tracks = track_points(frames, max_corners=150)

    assert tracks.points.shape == (tracks.num_tracks, 6, 2) and tracks.num_tracks >= 100
    assert tracks.survival()[-1] > 0.9
    alive = tracks.alive(5)
    moved = tracks.points[alive, 5] - tracks.points[alive, 0]
    assert np.abs(np.median(moved, axis=0) - 5 * np.array(PAN)).max() < 0.1
    assert np.percentile(np.linalg.norm(moved - 5 * np.array(PAN), axis=1), 90) < 0.5
    trails = tracks.polylines(5, history=3)
    assert len(trails) == alive.sum() and all(t.shape == (4, 2) for t in trails)
    assert all(np.isfinite(t).all() for t in trails)


def test_lucas_kanade_drops_points_that_fail_the_forward_backward_check() -> None:
    frames = _pan(4)
    box = (slice(100, 220), slice(100, 220))  # rows, columns replaced from frame 2 on
    other = _image("coffee")[100:220, 150:270]
    for t in (2, 3):
        frames[t][box] = other

    tracks = track_points(frames, max_corners=300)

    start = tracks.points[:, 0]
    inside = ((start[:, 0] > 110) & (start[:, 0] < 210) & (start[:, 1] > 110)
              & (start[:, 1] < 210))
    # Chebyshev distance outside the box: the coarsest pyramid level (1/8) sees the change
    # from up to ~60 px away, so only points well clear of it must survive. Measured: 94%
    # of those 40+ px away survive (98% in the unchanged pan; the rest leave the image).
    away = np.maximum(np.maximum(100 - start, start - 220), 0).max(axis=1) >= 40
    assert inside.sum() >= 10 and away.sum() >= 50
    assert tracks.alive(1)[inside].mean() > 0.9  # fine before the change
    assert tracks.alive(2)[inside].mean() < 0.1  # lost when the content is replaced
    assert tracks.alive(3)[away].mean() > 0.85
    assert np.isnan(tracks.points[~tracks.alive(2), 3]).all()  # lost tracks never come back


# -- the cache -------------------------------------------------------------------------------------------
def test_flow_cache_is_an_lru_bounded_in_megabytes() -> None:
    field = np.zeros((256, 512, 2), np.float32)  # exactly 1 MiB
    cache = FlowCache(max_mb=3)
    keys = [flow_key("video.mp4", "dis", {"preset": "fast"}, t, 1) for t in range(5)]
    for key in keys[:3]:
        cache.put(key, field)
    assert cache.get(keys[0]) is not None  # keys[0] is now the most recent

    cache.put(keys[3], field)

    assert keys[1] not in cache and keys[0] in cache and len(cache) == 3
    assert cache.nbytes == 3 * 2**20
    calls = []
    got = cache.get_or_compute(keys[4], lambda: calls.append(1) or np.ones_like(field))
    again = cache.get_or_compute(keys[4], lambda: calls.append(1) or np.ones_like(field))
    assert calls == [1] and again is got and not got.flags.writeable
    assert flow_key("v", "dis", {"a": 1, "b": [1, 2]}, 3, -1) == flow_key(
        "v", "dis", {"b": (1, 2), "a": 1}, 3, -1)
    assert flow_key("v", "dis", None, 3, -1) != flow_key("v", "dis", None, 3, 1)
    FlowCache(max_mb=0.5).put(keys[0], field)  # larger than the budget: returned, not kept


def test_flow_cache_persists_fields_in_a_folder(tmp_path: Path) -> None:
    frames = _pan(2)
    key = flow_key("pan", "dis", default_params("dis"), 0, 1)
    first = FlowCache(max_mb=16, folder=tmp_path / "flows")
    field = first.get_or_compute(key, lambda: compute_flow(frames[0], frames[1], "dis"))

    fresh = FlowCache(max_mb=16, folder=tmp_path / "flows")
    loaded = fresh.get_or_compute(key, lambda: pytest.fail("read from the folder"))

    assert np.array_equal(loaded, field) and fresh.disk_hits == 1
    path = fresh.path_for(key)
    path.write_bytes(b"truncated")  # a damaged file is recomputed, not an error
    assert FlowCache(folder=tmp_path / "flows").get(key) is None
    fresh.clear(disk=True)
    assert not list((tmp_path / "flows").glob("*.npz")) and len(fresh) == 0


def test_flow_provider_computes_each_field_once_with_a_cache() -> None:
    frames = _pan(3)
    seen: list[int] = []

    def frame(index: int) -> np.ndarray:
        seen.append(index)
        return frames[index]

    provider = FlowProvider(frame, "farneback", count=3, cache=FlowCache(), source_id="pan")
    first = provider(0, 2)
    assert provider(0, 2) is first and seen == [0, 2]
    assert np.array_equal(first, compute_flow(frames[0], frames[2], "farneback"))
    with pytest.raises(FlowError, match="Frame 3 does not exist"):
        provider(2, 1)
    # RAFT fields of other weights are other fields
    small = [FlowProvider(frames, "raft_small", weights=w).key(0, 1)
             for w in ("default", "raft_small.c_t_v1", Path("mine.pth"))]
    assert len(set(small)) == 3


# -- pictures ----------------------------------------------------------------------------------------------
def _hue(rgb: np.ndarray) -> float:
    return 360.0 * colorsys.rgb_to_hsv(*(np.asarray(rgb, float) / 255.0))[0]


def test_colour_wheel_hues_by_direction_and_white_when_still() -> None:
    wheel = color_wheel()
    assert wheel.shape == (55, 3)
    assert tuple(wheel[0]) == (255, 0, 0) and tuple(wheel[15]) == (255, 255, 0)
    assert tuple(wheel[21]) == (0, 255, 0) and tuple(wheel[25]) == (0, 255, 255)
    assert tuple(wheel[36]) == (0, 0, 255) and tuple(wheel[49]) == (255, 0, 255)
    directions = {"right": (1, 0), "down": (0, 1), "left": (-1, 0), "up": (0, -1)}
    flow = np.array([[directions[d] for d in directions]], np.float32)

    rgb = flow_to_color(flow)[0]
    hues = dict(zip(directions, (_hue(c) for c in rgb), strict=True))

    assert hues["right"] < 15 or hues["right"] > 345  # red
    assert 40 < hues["down"] < 65  # orange-yellow
    assert 180 < hues["left"] < 205  # cyan-blue
    assert 245 < hues["up"] < 280  # blue-violet
    assert (flow_to_color(np.zeros((3, 4, 2), np.float32)) == 255).all()


def test_colour_saturation_grows_with_magnitude() -> None:
    angle = np.deg2rad(35)
    lengths = np.linspace(0, 4, 9, dtype=np.float32)
    flow = np.stack([lengths * np.cos(angle), lengths * np.sin(angle)], axis=-1)[None]

    rgb = flow_to_color(flow.astype(np.float32), max_magnitude=4.0)[0]

    saturation = [colorsys.rgb_to_hsv(*(c / 255.0))[1] for c in rgb.astype(float)]
    assert saturation[0] == 0 and all(np.diff(saturation) > 0)
    assert max(abs(_hue(c) - _hue(rgb[-1])) for c in rgb[1:]) < 3  # same direction, same hue
    beyond = flow_to_color(flow.astype(np.float32) * 2, max_magnitude=4.0)[0, -1]
    assert beyond.max() < rgb[-1].max()  # past the maximum: dimmed


def test_colour_coding_matches_the_middlebury_reference_of_torchvision() -> None:
    import torch
    from torchvision.utils import flow_to_image

    flow = compute_flow(*_pan(2, velocity=(3.0, -2.0)), "dis")
    flow[:40] *= -3  # all directions and a wide range of magnitudes

    reference = flow_to_image(torch.from_numpy(flow).permute(2, 0, 1)).permute(1, 2, 0).numpy()

    difference = np.abs(flow_to_color(flow).astype(int) - reference)
    assert difference.max() <= 1  # float rounding order: measured 2 values of 307200 off by 1
    assert (difference > 0).mean() < 1e-4


def test_colour_wheel_legend() -> None:
    legend = color_wheel_legend(101)

    assert legend.shape == (101, 101, 3) and legend.dtype == np.uint8
    assert (legend[50, 50] == 255).all()  # centre: no motion
    assert (legend[0, 0] == 255).all()  # outside the disc
    assert _hue(legend[50, 99]) < 15 or _hue(legend[50, 99]) > 345  # right: red
    assert 245 < _hue(legend[1, 50]) < 280  # up: blue-violet


def test_arrows_start_on_the_grid_and_point_along_the_flow() -> None:
    ys, xs = np.indices((64, 96), dtype=np.float32)
    flow = np.dstack([-(ys - 32) * 0.1, (xs - 48) * 0.1])  # a rotation
    flow[8, 8] = np.nan

    arrows = flow_arrows(flow, step=16, scale=2.0)

    assert arrows.shape == (4 * 6 - 1, 4) and arrows.dtype == np.float32
    assert set(arrows[:, 0]) == {8, 24, 40, 56, 72, 88} and set(arrows[:, 1]) == {8, 24, 40, 56}
    x0, y0 = arrows[:, 0].astype(int), arrows[:, 1].astype(int)
    np.testing.assert_allclose(arrows[:, 2:] - arrows[:, :2], 2.0 * flow[y0, x0], rtol=1e-6)
    slow = flow_arrows(flow, step=16, min_magnitude=2.5)
    assert 0 < len(slow) < len(arrows)


def test_magnitude_heat_map_and_drawn_arrows() -> None:
    flow = np.zeros((40, 60, 2), np.float32)
    flow[10:20, 10:20] = (3.0, 4.0)  # magnitude 5

    heat = flow_magnitude_heat(flow)

    assert heat.shape == (40, 60, 4) and heat.dtype == np.uint8
    assert heat[0, 0, 3] == 0 and heat[15, 15, 3] == 255
    assert (heat[..., 3] == 255).sum() == 100
    assert (flow_magnitude_heat(flow, alpha=128)[..., 3] == 128).all()
    image = _image("coffee")[:40, :60].copy()
    before = image.copy()
    drawn = draw_arrows(image, np.array([[5, 30, 50, 30]], np.float32), color=(0, 255, 0))
    assert np.array_equal(image, before) and drawn.shape == (40, 60, 3)
    line = drawn[30, 10:45].astype(int)  # antialiased: nearly pure green on the line
    assert (line[:, 1] > 200).all() and (line[:, [0, 2]] < 30).all()
    assert draw_arrows(_grey(image), flow_arrows(flow, step=8)).shape == (40, 60, 3)
