"""Mask propagation (core.flow): warping labels, the forward-backward check and propagating
masks on real images moved by known motions, one and two keyframes. No network; real
images from scikit-image (frames from tests/flow_frames.py)."""

from __future__ import annotations

import importlib
import threading

import numpy as np
import pytest
from flow_frames import (
    BORDER,
    _disc,
    _image,
    _iou,
    _pan,
)

from core.flow import (
    FlowCache,
    FlowError,
    FlowProvider,
    PropagationCancelled,
    compute_flow,
    consistency_mask,
    propagate,
    propagate_between,
    warp_labels,
)


# -- warping and the forward-backward check ------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.bool_])
def test_warp_labels_is_a_nearest_backward_warp(dtype: type) -> None:
    rng = np.random.default_rng(0)
    high = 2 if dtype is np.bool_ else min(np.iinfo(dtype).max, 2**40)
    labels = rng.integers(0, high, (30, 40)).astype(dtype)
    flow_back = np.zeros((30, 40, 2), np.float32)
    flow_back[...] = (-2.2, 1.3)  # frame t+1 at x reads frame t at x + (-2.2, 1.3)

    warped = warp_labels(labels, flow_back)

    expected = np.zeros_like(labels)
    expected[:-1, 2:] = labels[1:, :-2]  # rounded: (-2, +1)
    assert warped.dtype == labels.dtype and np.array_equal(warped, expected)


def test_consistency_mask_on_exact_flows() -> None:
    fw = np.zeros((20, 30, 2), np.float32)
    fw[...] = (3.0, 0.0)
    bw = -fw

    reliable = consistency_mask(fw, bw)

    assert reliable[:, :27].all() and not reliable[:, 28:].any()  # leaving the image: unknown
    wrong = bw.copy()
    wrong[5:10, 10:20] = (1.0, 0.0)
    reliable = consistency_mask(fw, wrong)
    assert not reliable[5:10, 7:17].any() and reliable[12:, :27].all()


def test_propagation_checks_only_around_the_labels_as_the_full_check_would() -> None:
    propagate_module = importlib.import_module("core.flow.propagate")
    frames = _pan(2, velocity=(4.0, -3.0))
    fw, bw = compute_flow(frames[0], frames[1], "dis"), compute_flow(frames[1], frames[0], "dis")
    region = _disc(0).astype(bool)

    local = propagate_module._consistent_where(fw, bw, 0.01, 0.5, region)

    full = consistency_mask(fw, bw)
    rows, cols = np.nonzero(region)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    assert np.array_equal(local[box], full[box]) and not local.sum() > local[box].sum()


def _occluder_scene(x: int | None) -> np.ndarray:
    """The pan's first frame with a 60x60 piece of skimage's coffee pasted at column x."""
    frame = _pan(1)[0].copy()
    if x is not None:
        frame[180:240, x:x + 60] = _image("coffee")[100:160, 200:260]
    return frame


def _box(x0: int, x1: int, y0: int = 180, y1: int = 240) -> np.ndarray:
    mask = np.zeros((320, 320), bool)
    mask[y0:y1, x0:x1] = True
    return mask


# Measured with DIS: 96% of the occluded strip and 68% of the disoccluded one flagged, none of
# the pixels 20+ px away from the occluder; a patch appearing: 76% of it flagged. (Farneback
# flags only 4-12% of such a strip: it smooths the flow across the occlusion boundary so both
# directions agree there; hence DIS is propagation's default.)
def test_forward_backward_check_flags_occlusions_only() -> None:
    frame0, frame1 = _occluder_scene(20), _occluder_scene(28)  # the occluder moves 8 px right
    fw, bw = compute_flow(frame0, frame1, "dis"), compute_flow(frame1, frame0, "dis")
    far = ~_box(0, 108 + 20, 160, 260)
    far[:BORDER], far[-BORDER:], far[:, :BORDER], far[:, -BORDER:] = False, False, False, False

    reliable0 = consistency_mask(fw, bw)  # on frame 0: background covered in frame 1
    reliable1 = consistency_mask(bw, fw)  # on frame 1: background revealed

    assert (~reliable0[_box(80, 88)]).mean() > 0.7
    assert (~reliable1[_box(20, 28)]).mean() > 0.35
    assert (~reliable0[far]).mean() < 0.01 and (~reliable1[far]).mean() < 0.01
    appear0, appear1 = _occluder_scene(None), _occluder_scene(40)
    fw, bw = compute_flow(appear0, appear1, "dis"), compute_flow(appear1, appear0, "dis")
    assert (~consistency_mask(bw, fw)[_box(40, 100)]).mean() > 0.7


# -- propagation -----------------------------------------------------------------------------------------
# Measured: IoU 0.978-0.996 over the 10 frames (0.95 would allow ~1.2 px of drift of the
# 38 px disc); reliability 1.0 at every frame.
def test_propagation_follows_a_known_motion_over_ten_frames() -> None:
    frames = _pan(11)
    provider = FlowProvider(frames, "farneback", cache=FlowCache(), source_id="pan")

    steps = list(propagate(_disc(0), provider, 0, 10))

    assert [s.frame_index for s in steps] == list(range(1, 11))
    ious = [_iou(s.labels, _disc(s.frame_index)) for s in steps]
    assert min(ious) >= 0.95, ious
    assert all(s.reliability > 0.95 for s in steps)
    assert all(s.labels.dtype == np.uint8 for s in steps)
    # re-rounding the labels at every step instead drifts (measured 0.89 at frame 10)
    chained = list(propagate(_disc(0), provider, 0, 10, accumulate=False))
    assert _iou(chained[-1].labels, _disc(10)) < ious[-1]


def test_propagation_runs_backward_and_on_demand() -> None:
    frames = _pan(6)
    asked: list[tuple[int, int]] = []

    def flow(t: int, k: int) -> np.ndarray:
        asked.append((t, k))
        return compute_flow(frames[t], frames[t + k], "dis")

    steps = propagate(_disc(5), flow, 5, steps=5, direction=-1)
    assert asked == []  # nothing computed before the first step is asked for
    first = next(steps)
    assert first.frame_index == 4 and sorted(asked) == [(4, 1), (5, -1)]
    rest = list(steps)
    assert [s.frame_index for s in rest] == [3, 2, 1, 0]
    assert min(_iou(s.labels, _disc(s.frame_index)) for s in [first, *rest]) >= 0.95

    empty = list(propagate(np.zeros((320, 320), np.int32), frames, 0, 2))
    assert [s.reliability for s in empty] == [1.0, 1.0]
    assert not any(s.labels.any() or s.unreliable.any() for s in empty)
    with pytest.raises(FlowError, match="not all in the source"):
        propagate(_disc(0), frames, 3, 9)
    with pytest.raises(ValueError, match="exactly one of stop and steps"):
        propagate(_disc(0), frames, 0, 2, steps=2)


# Measured: reliability 1.0, 1.0, 0.918, 1.0, 1.0; 242 unreliable pixels on the jump frame,
# all around the occluder; IoU 0.995 of the last frame's labels with the visible part.
def test_reliability_drops_on_the_frame_with_an_occlusion() -> None:
    # the occluder rests beside the patch, jumps 12 px over it at frame 3, then rests again
    positions = [10, 10, 10, 22, 22, 22]
    frames = [_occluder_scene(x) for x in positions]
    patch = _disc(0, circle=(110.0, 205.0, 38.0))

    steps = list(propagate(patch, frames, 0, 5, method="dis"))

    reliability = [s.reliability for s in steps]
    assert all(r > 0.99 for i, r in enumerate(reliability) if i != 2), reliability
    assert reliability[2] < 0.95, reliability
    flagged = steps[2].unreliable
    assert flagged.sum() > 100 and not any(s.unreliable.any() for s in steps[3:])
    near_occluder = _box(positions[2] - 5, positions[3] + 60 + 5, 175, 245)
    assert flagged[near_occluder].sum() > 0.9 * flagged.sum()
    covered = patch.astype(bool) & ~_box(positions[3], positions[3] + 60)
    assert _iou(steps[-1].labels, covered) > 0.95  # the hidden part is no longer labelled


# Measured: IoU 0.978-0.993 at frames 1-9.
def test_two_keyframes_meet_in_the_middle() -> None:
    frames = _pan(11)
    asked: list[tuple[int, int]] = []
    provider = FlowProvider(frames, "farneback")

    def flow(t: int, k: int) -> np.ndarray:
        asked.append((t, k))
        return provider(t, k)

    reports: list[tuple[int, int]] = []
    steps = propagate_between(_disc(0), 0, _disc(10), 10, flow,
                              report=lambda done, total: reports.append((done, total)))

    assert [s.frame_index for s in steps] == list(range(1, 10))
    ious = [_iou(s.labels, _disc(s.frame_index)) for s in steps]
    assert min(ious) >= 0.95, ious
    assert len(asked) == len(set(asked)) == 2 * 10  # every field once, shared by both chains
    assert reports[-1] == (18, 18) and len(reports) == 18


def test_keyframe_blend_follows_the_nearer_keyframe() -> None:
    frames = _pan(7)
    provider = FlowProvider(frames, "dis", cache=FlowCache())
    label_a = _disc(0)
    label_b = _disc(6) * 2  # the same region, another class: the chains disagree everywhere

    steps = propagate_between(label_a, 0, label_b, 6, provider)

    for step in steps:
        values = set(np.unique(step.labels)) - {0}
        assert values == ({1} if step.frame_index <= 3 else {2}), step.frame_index
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(PropagationCancelled):
        propagate_between(label_a, 0, label_b, 6, provider, cancel=cancel)
    assert propagate_between(label_a, 0, label_b, 1, provider) == []


def test_keyframe_flows_beyond_the_memory_budget_are_computed_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the module, not the function core.flow re-exports under the same name
    propagate_module = importlib.import_module("core.flow.propagate")

    frames = _pan(5)
    asked: list[tuple[int, int]] = []
    provider = FlowProvider(frames, "dis")

    def flow(t: int, k: int) -> np.ndarray:
        asked.append((t, k))
        return provider(t, k)

    kept = propagate_between(_disc(0), 0, _disc(4), 4, flow)
    assert len(asked) == 8
    asked.clear()
    monkeypatch.setattr(propagate_module, "MEMO_BYTES", 0)

    recomputed = propagate_between(_disc(0), 0, _disc(4), 4, flow)

    assert len(asked) == 12 and len(set(asked)) == 8  # the 4 shared fields twice
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(kept, recomputed, strict=True))
