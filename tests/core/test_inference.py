"""The inference engine: window grid, blending, seam-free tiling on a real image, progress,
cancel, out-of-memory fallback (simulated), pre/postprocessing and the model cache.

Small models on the CPU: tiny convolution stacks built here (a known, limited receptive field)
and small registered models from core.models.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data
from torch import nn

from core.errors import SegStudioError
from core.inference import engine as engine_module
from core.inference.device import autocast_context, is_out_of_memory, select_device
from core.inference.engine import InferenceEngine, InferenceSettings, Prediction
from core.inference.errors import (
    ChannelMismatchError,
    DeviceUnavailableError,
    InferenceCancelled,
    InferenceError,
    InferenceOutOfMemoryError,
)
from core.inference.postprocess import decode_logits, remove_small_components
from core.inference.preprocess import adapt_channels, prepare_input, to_unit_float
from core.inference.tiling import (
    gaussian_importance_map,
    pad_to_window,
    sliding_window,
    window_grid,
)
from core.models.loading import LoadedModel, load_model

TINY_UNET = {"base_channels": 4, "depth": 2}


# -- helpers ---------------------------------------------------------------------------------
class TinyFCN(nn.Module):
    """``layers`` 3x3 convolutions (receptive field radius = layers), then a 1x1 head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 3, layers: int = 3,
                 width: int = 8) -> None:
        super().__init__()
        convs: list[nn.Module] = []
        channels = in_channels
        for _ in range(layers):
            convs += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
        self.body = nn.Sequential(*convs)
        self.head = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class CallLog(list):
    """Input shapes a model saw; shared by the engine's device copies of the model."""

    def __deepcopy__(self, memo) -> CallLog:
        return self


class FailingModel(nn.Module):
    """Wraps a model; raises CUDA's out-of-memory error while ``should_fail(model, x)`` says so."""

    def __init__(self, inner: nn.Module, should_fail) -> None:
        super().__init__()
        self.inner = inner
        self.should_fail = should_fail
        self.shapes = CallLog()

    @property
    def calls(self) -> int:
        return len(self.shapes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        if self.should_fail(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def loaded_of(module: nn.Module, in_channels: int = 1, num_classes: int = 3,
              name: str = "tiny_fcn") -> LoadedModel:
    module.eval()
    return LoadedModel(module, name, tuple(f"class {i}" for i in range(num_classes)),
                       in_channels, (0.5,) * in_channels, (0.25,) * in_channels)


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return data.camera()  # 512 x 512 uint8


@pytest.fixture(scope="module")
def camera_tensor(camera: np.ndarray) -> torch.Tensor:
    return prepare_input(camera, 1, (0.5,), (0.25,))


@pytest.fixture
def tiny() -> TinyFCN:
    torch.manual_seed(0)
    return TinyFCN().eval()


def cpu_engine(**kwargs) -> InferenceEngine:
    return InferenceEngine(InferenceSettings(device="cpu", **kwargs))


# -- window grid and importance map ------------------------------------------------------------
@pytest.mark.parametrize(("height", "width", "window", "overlap"), [
    (512, 512, 128, 0.25), (1000, 333, 128, 0.5), (129, 128, 128, 0.25), (50, 700, 128, 0.0),
    (300, 301, 64, 0.9), (7, 5, 16, 0.25),
])
def test_window_grid_covers_every_pixel_and_stays_in_bounds(height, width, window, overlap):
    windows = window_grid(height, width, window, overlap)
    covered = np.zeros((height, width), np.int32)
    for w in windows:
        assert 0 <= w.y and w.y + w.height <= height and 0 <= w.x and w.x + w.width <= width
        assert (w.height, w.width) == (min(window, height), min(window, width))
        covered[w.y:w.y + w.height, w.x:w.x + w.width] += 1
    assert covered.min() >= 1
    # The last window of each row and column is flush with the border.
    assert max(w.y + w.height for w in windows) == height
    assert max(w.x + w.width for w in windows) == width
    if overlap > 0 and width > window:  # neighbours share at least the asked-for overlap
        xs = sorted({w.x for w in windows})
        assert all(b - a <= int(window * (1 - overlap)) for a, b in itertools.pairwise(xs))


def test_window_grid_rejects_bad_overlap():
    with pytest.raises(ValueError):
        window_grid(100, 100, 32, 1.0)


@pytest.mark.parametrize("size", [64, 65, (48, 80)])
def test_gaussian_map_is_symmetric_peaks_at_the_centre_and_is_never_zero(size):
    weights = gaussian_importance_map(size)
    height, width = (size, size) if isinstance(size, int) else size
    assert weights.shape == (height, width) and weights.dtype == np.float32
    np.testing.assert_allclose(weights, weights[::-1, :], rtol=1e-6)
    np.testing.assert_allclose(weights, weights[:, ::-1], rtol=1e-6)
    peak = np.unravel_index(np.argmax(weights), weights.shape)
    assert abs(peak[0] - (height - 1) / 2) <= 0.5 and abs(peak[1] - (width - 1) / 2) <= 0.5
    assert weights.max() == pytest.approx(1.0)
    assert weights.min() >= 1e-6  # the floor (1e-3) applies per axis
    assert weights[0, 0] < weights[height // 4, width // 4] < weights[height // 2, width // 2]


# -- tiled inference ---------------------------------------------------------------------------
def test_tiled_equals_whole_image_on_a_real_image(tiny, camera_tensor):
    with torch.inference_mode():
        whole = tiny(camera_tensor)
        tiled = sliding_window(camera_tensor, tiny, window=128, overlap=0.5, batch_size=3)
        plain = sliding_window(camera_tensor, tiny, window=128, overlap=0.5, batch_size=3,
                               blend="constant")
    assert tiled.shape == whole.shape == (1, 3, 512, 512) and tiled.dtype == torch.float32
    error = (tiled - whole).abs()
    # Only pixels within 3 (the receptive field) of a window's inner edge can differ, and the
    # gaussian gives those almost no weight: seam-free to well below the logits' scale.
    assert float(error.max()) < 1e-2 * float(whole.abs().max())
    assert float(error.mean()) < 1e-5
    # A plain mean blends the edge artefacts in: the gaussian is what makes it seam-free.
    assert float((plain - whole).abs().max()) > 5 * float(error.max())


def test_tiled_equals_whole_image_through_the_engine(tiny, camera):
    loaded = loaded_of(tiny)
    whole = cpu_engine(tile_size=512).predict(loaded, camera, keep_probabilities=True)
    ticks: list[tuple[int, int]] = []
    tiled = cpu_engine(tile_size=128, overlap=0.5, batch_size=4).predict(
        loaded, camera, report=lambda d, t: ticks.append((d, t)), keep_probabilities=True)
    assert ticks[-1][0] == ticks[-1][1] == 49  # 7 x 7 windows: it really was tiled
    assert whole.labels.shape == tiled.labels.shape == camera.shape
    np.testing.assert_allclose(tiled.probabilities.astype(np.float32),
                               whole.probabilities.astype(np.float32), atol=2e-3)
    assert np.mean(tiled.labels == whole.labels) > 0.999


def test_image_smaller_than_the_window_is_padded_and_cropped_back(tiny, camera_tensor):
    small = camera_tensor[..., 100:150, 200:270].contiguous()  # 50 x 70, window 128
    with torch.inference_mode():
        out = sliding_window(small, tiny, window=128, overlap=0.25)
        whole = tiny(small)
    assert out.shape == (1, 3, 50, 70)
    # Away from the border (receptive field 3) the padding is invisible.
    torch.testing.assert_close(out[..., 3:-3, 3:-3], whole[..., 3:-3, 3:-3], atol=1e-5, rtol=1e-5)
    # A pointwise model sees no padding at all.
    pointwise = nn.Conv2d(1, 2, 1)
    with torch.inference_mode():
        torch.testing.assert_close(sliding_window(small, pointwise, window=128), pointwise(small))


def test_padding_reflects_when_possible_else_zeros():
    image = torch.arange(20.0).reshape(1, 1, 4, 5)
    padded, (top, left) = pad_to_window(image, 8)
    assert padded.shape == (1, 1, 8, 8) and (top, left) == (2, 1)
    torch.testing.assert_close(padded[..., top:top + 4, left:left + 5], image)
    assert padded[0, 0, 1, 1] == image[0, 0, 1, 0]  # mirrored
    thin, _ = pad_to_window(torch.ones(1, 1, 2, 40), 16)  # 14 rows from 2: cannot reflect
    assert thin.shape == (1, 1, 16, 40) and float(thin[0, 0, 0, 0]) == 0.0


def test_progress_counts_windows_up_to_the_total(tiny, camera_tensor):
    ticks: list[tuple[int, int]] = []
    with torch.inference_mode():
        sliding_window(camera_tensor, tiny, window=128, overlap=0.25, batch_size=4,
                       report=lambda d, t: ticks.append((d, t)))
    total = len(window_grid(512, 512, 128, 0.25))
    assert ticks[0] == (0, total) and ticks[-1] == (total, total)
    assert all(t == total for _, t in ticks)
    done = [d for d, _ in ticks]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert len(ticks) == 1 + -(-total // 4)


def test_cancel_stops_between_batches(tiny, camera_tensor):
    cancel = threading.Event()
    model = FailingModel(tiny, lambda m, x: False)
    total = len(window_grid(512, 512, 128, 0.25))

    def report(done: int, total: int) -> None:
        if done > 0:
            cancel.set()

    with pytest.raises(InferenceCancelled) as caught, torch.inference_mode():
        sliding_window(camera_tensor, model, window=128, overlap=0.25, batch_size=2,
                       report=report, cancel=cancel)
    assert isinstance(caught.value, SegStudioError)
    assert model.calls == 1 and 2 * model.calls < total


def test_cancel_through_the_engine(tiny, camera):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(InferenceCancelled):
        cpu_engine(tile_size=128).predict(loaded_of(tiny), camera, cancel=cancel)
    with pytest.raises(InferenceCancelled):  # a whole-image run checks it too
        cpu_engine(tile_size=512).predict(loaded_of(tiny), camera, cancel=cancel)


def test_bad_model_output_is_a_clear_error(camera):
    class Shrinks(nn.Module):
        def forward(self, x):
            return x[..., ::2, ::2]

    for tile in (128, 512):
        with pytest.raises(InferenceError, match="expected"):
            cpu_engine(tile_size=tile).predict(loaded_of(Shrinks()), camera)


# -- out of memory -----------------------------------------------------------------------------
def test_is_out_of_memory_recognises_cuda_and_mps_messages():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate"))
    assert not is_out_of_memory(RuntimeError("Given groups=1, weight of size [8, 1, 3, 3]"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_first_out_of_memory_retries_with_smaller_tiles(tiny, camera):
    reference = cpu_engine(tile_size=512).predict(loaded_of(tiny), camera)
    model = FailingModel(tiny, lambda m, x: m.calls == 1)
    prediction = cpu_engine(tile_size=512).predict(loaded_of(model), camera)
    assert model.shapes[0] == (1, 1, 512, 512)  # the whole image failed ...
    assert model.shapes[1] == (1, 1, 256, 256)  # ... then 256-pixel tiles, one at a time
    assert prediction.notes == [
        "CPU out of memory on the whole 512x512 image: retried with 256-pixel tiles, one at a "
        "time."]
    assert np.mean(prediction.labels == reference.labels) > 0.999
    np.testing.assert_allclose(prediction.confidence, reference.confidence, atol=2e-3)


def test_out_of_memory_on_every_gpu_attempt_falls_back_to_the_cpu(tiny, camera, monkeypatch):
    # No GPU here: the "GPU" is the meta device (a module and tensors can move there), and the
    # model fails with CUDA's out-of-memory error whenever it runs anywhere but the CPU.
    reference = cpu_engine(tile_size=512).predict(loaded_of(tiny), camera)
    monkeypatch.setattr(engine_module, "select_device", lambda preference: torch.device("meta"))
    model = FailingModel(tiny, lambda m, x: x.device.type != "cpu")
    engine = InferenceEngine(InferenceSettings(device="cuda", tile_size=512))
    prediction = engine.predict(loaded_of(model), camera)
    assert prediction.notes == [
        "META out of memory on the whole 512x512 image: retried with 256-pixel tiles, one at a "
        "time.",
        "META out of memory with 256-pixel tiles: retried with 128-pixel tiles, one at a time.",
        "META out of memory with 128-pixel tiles: fell back to the CPU.",
    ]
    assert prediction.device == "cpu"
    assert [s[-1] for s in model.shapes] == [512, 256, 128, 512]  # the CPU runs with 512 again
    np.testing.assert_array_equal(prediction.labels, reference.labels)


def test_out_of_memory_on_the_cpu_with_the_smallest_tiles_is_an_error(tiny, camera):
    model = FailingModel(tiny, lambda m, x: True)
    with pytest.raises(InferenceOutOfMemoryError, match="CPU even with 128-pixel tiles"):
        cpu_engine(tile_size=256).predict(loaded_of(model), camera)
    assert [s[-1] for s in model.shapes] == [256, 128]


def test_the_cpu_allocator_failing_is_a_clear_error(camera):
    class Hungry(nn.Module):
        calls = 0

        def forward(self, x):
            Hungry.calls += 1
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                               "allocate memory: you tried to allocate 68719476736 bytes.")

    with pytest.raises(InferenceOutOfMemoryError, match="ran out of memory"):
        cpu_engine().predict(loaded_of(Hungry()), camera)
    assert Hungry.calls == 1  # not retried: smaller tiles would not help


def test_other_errors_are_not_retried(tiny, camera):
    class Broken(nn.Module):
        calls = 0

        def forward(self, x):
            Broken.calls += 1
            raise RuntimeError("something else broke")

    with pytest.raises(RuntimeError, match="something else"):
        cpu_engine(tile_size=512).predict(loaded_of(Broken()), camera)
    assert Broken.calls == 1


# -- devices and mixed precision ---------------------------------------------------------------
def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="CUDA"):
            select_device("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(DeviceUnavailableError, match="MPS"):
            select_device("mps")
    with pytest.raises(DeviceUnavailableError, match="Unknown device"):
        select_device("tpu")


def test_autocast_is_a_no_op_on_the_cpu_unless_bfloat16(tiny, camera_tensor):
    with torch.inference_mode():
        with autocast_context(torch.device("cpu"), True):
            assert tiny(camera_tensor).dtype == torch.float32
        with autocast_context(torch.device("cpu"), True, "bfloat16"):
            assert tiny(camera_tensor).dtype == torch.bfloat16


@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
def test_amp_settings_do_not_break_cpu_runs(tiny, camera, amp_dtype):
    loaded = loaded_of(tiny)
    plain = cpu_engine(amp=False, tile_size=256).predict(loaded, camera)
    mixed = cpu_engine(amp=True, amp_dtype=amp_dtype, tile_size=256).predict(loaded, camera)
    assert mixed.labels.dtype == np.uint8 and mixed.confidence.dtype == np.float32
    if amp_dtype == "float16":  # no autocast on a CPU: identical
        np.testing.assert_array_equal(mixed.labels, plain.labels)
    else:
        assert np.mean(mixed.labels == plain.labels) > 0.95
        np.testing.assert_allclose(mixed.confidence, plain.confidence, atol=0.05)


# -- preprocessing -----------------------------------------------------------------------------
def test_grey_is_repeated_for_an_rgb_model(camera):
    tensor = prepare_input(camera, 3, (0.0,) * 3, (1.0,) * 3)
    assert tensor.shape == (1, 3, 512, 512) and tensor.dtype == torch.float32
    torch.testing.assert_close(tensor[0, 0], torch.from_numpy(camera / 255.0).float())
    torch.testing.assert_close(tensor[0, 1], tensor[0, 2])


def test_rgb_becomes_its_mean_for_a_grey_model():
    coffee = data.coffee()
    tensor = prepare_input(coffee, 1, (0.5,), (0.25,))
    expected = (coffee.astype(np.float32).mean(axis=2) / 255 - 0.5) / 0.25
    assert tensor.shape == (1, 1, *coffee.shape[:2])
    np.testing.assert_allclose(tensor[0, 0].numpy(), expected, atol=1e-5)


def test_rgba_drops_alpha():
    coffee = data.coffee()
    rgba = np.dstack([coffee, np.random.default_rng(0).integers(0, 256, coffee.shape[:2],
                                                                dtype=np.uint8)])
    torch.testing.assert_close(prepare_input(rgba, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                               prepare_input(coffee, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    assert prepare_input(rgba, 1, None, None).shape == (1, 1, *coffee.shape[:2])


def test_normalisation_uses_the_model_mean_and_std():
    image = np.full((4, 4, 3), 255, np.uint8)
    tensor = prepare_input(image, 3, (0.5, 0.0, 1.0), (0.5, 2.0, 1.0))
    assert tensor[0, :, 0, 0].tolist() == pytest.approx([1.0, 0.5, 0.0])


def test_uint16_scaling():
    rng = np.random.default_rng(1)
    twelve_bit = rng.integers(100, 4096, (64, 64)).astype(np.uint16)  # a 12-bit camera
    stretched = to_unit_float(twelve_bit)  # default: the image's own percentile range
    assert stretched.dtype == np.float32 and stretched.min() == 0.0 and stretched.max() == 1.0
    assert np.median(stretched) == pytest.approx(0.5, abs=0.05)
    full = to_unit_float(twelve_bit, "full")
    np.testing.assert_allclose(full, twelve_bit / 65535, rtol=1e-6)
    flat = np.full((8, 8), 1000, np.uint16)  # no range: falls back to / 65535
    np.testing.assert_allclose(to_unit_float(flat), 1000 / 65535, rtol=1e-6)
    tensor = prepare_input(twelve_bit, 3, None, None)
    assert tensor.shape == (1, 3, 64, 64) and float(tensor.max()) == 1.0


def test_float_images():
    unit = np.linspace(0, 1, 16, dtype=np.float64).reshape(4, 4)
    np.testing.assert_allclose(to_unit_float(unit), unit, rtol=1e-6)
    wide = unit * 1000 - 200
    np.testing.assert_allclose(to_unit_float(wide), unit, atol=1e-6)


def test_channels_that_cannot_be_adapted_are_a_clear_error():
    with pytest.raises(ChannelMismatchError, match="expects 3"):
        adapt_channels(np.zeros((4, 4, 5), np.float32), 3)
    with pytest.raises(InferenceError, match="2D image"):
        prepare_input(np.zeros((2, 4, 4, 3), np.uint8), 3, None, None)


# -- postprocessing ----------------------------------------------------------------------------
def test_softmax_argmax_and_confidence():
    logits = torch.randn(1, 4, 20, 30, generator=torch.Generator().manual_seed(0))
    expected = torch.softmax(logits[0], 0)
    decoded = decode_logits(logits.clone(), keep_probabilities=True)
    assert decoded.labels.dtype == np.uint8 and decoded.labels.shape == (20, 30)
    np.testing.assert_array_equal(decoded.labels, expected.argmax(0).numpy())
    np.testing.assert_allclose(decoded.confidence, expected.amax(0).numpy(), rtol=1e-5)
    assert decoded.probabilities.dtype == np.float16 and decoded.probabilities.shape == (4, 20, 30)
    np.testing.assert_allclose(decoded.probabilities.astype(np.float32).sum(0), 1.0, atol=5e-3)
    assert decode_logits(logits.clone()).probabilities is None


def test_one_channel_output_is_a_sigmoid_threshold():
    logits = torch.tensor([[[[-2.0, 0.5], [3.0, -0.1]]]])
    decoded = decode_logits(logits, keep_probabilities=True)
    np.testing.assert_array_equal(decoded.labels, [[0, 1], [1, 0]])
    p = torch.sigmoid(torch.tensor([[-2.0, 0.5], [3.0, -0.1]])).numpy()
    np.testing.assert_allclose(decoded.confidence, np.maximum(p, 1 - p), rtol=1e-6)
    np.testing.assert_allclose(decoded.probabilities[1].astype(np.float32), p, atol=1e-3)


def test_many_classes_give_uint16_labels():
    logits = torch.zeros(1, 300, 2, 2)
    logits[0, 299] = 5.0
    decoded = decode_logits(logits)
    assert decoded.labels.dtype == np.uint16 and int(decoded.labels.max()) == 299


def test_small_components_are_relabelled_to_their_surroundings():
    labels = np.zeros((60, 60), np.uint8)
    labels[10:40, 10:40] = 1     # a large object of class 1 ...
    labels[20:22, 20:22] = 0     # ... with a 4-pixel hole
    labels[50:52, 50:53] = 2     # a 6-pixel speck of class 2 on the background
    labels[5:7, 30:32] = 1       # a 4-pixel speck of class 1
    cleaned = remove_small_components(labels, min_size=10)
    expected = np.zeros_like(labels)
    expected[10:40, 10:40] = 1
    np.testing.assert_array_equal(cleaned, expected)
    assert cleaned.dtype == labels.dtype
    np.testing.assert_array_equal(remove_small_components(labels, 0), labels)
    np.testing.assert_array_equal(remove_small_components(labels, 4), labels)  # all >= 4 kept


def test_min_component_size_setting_through_the_engine(camera):
    class Speckle(nn.Module):
        def forward(self, x):
            out = torch.zeros(x.shape[0], 2, *x.shape[-2:])
            out[:, 1, 100:103, 100:103] = 10.0  # a 9-pixel blob of class 1
            out[:, 1, 200:300, 200:300] = 10.0  # a large one
            return out

    loaded = loaded_of(Speckle(), num_classes=2)
    kept = cpu_engine().predict(loaded, camera)
    cleaned = cpu_engine(min_component_size=20).predict(loaded, camera)
    assert kept.labels[101, 101] == 1 and cleaned.labels[101, 101] == 0
    assert int(cleaned.labels.sum()) == 100 * 100


# -- the engine with registered models, and its cache ------------------------------------------
def test_prediction_from_a_registered_unet(camera):
    torch.manual_seed(0)
    engine = cpu_engine(tile_size=128)
    loaded = engine.load("unet", num_classes=3, in_channels=1, **TINY_UNET)
    rgb_image = np.dstack([camera[:300, :257]] * 3)  # RGB to a grey model, tiled, odd size
    prediction = engine.predict(loaded, rgb_image, keep_probabilities=True)
    assert isinstance(prediction, Prediction)
    assert prediction.labels.shape == (300, 257) and prediction.labels.dtype == np.uint8
    assert prediction.confidence.shape == (300, 257) and prediction.confidence.dtype == np.float32
    assert prediction.probabilities.shape == (3, 300, 257)
    assert prediction.classes == list(loaded.classes) and prediction.device == "cpu"
    assert prediction.notes == []
    assert 1 / 3 - 1e-3 <= float(prediction.confidence.min()) <= float(prediction.confidence.max()) <= 1
    # Tiling a U-Net (large receptive field) still agrees with a whole-image run almost everywhere.
    whole = cpu_engine(tile_size=512).predict(loaded, rgb_image, keep_probabilities=True)
    error = np.abs(whole.probabilities.astype(np.float32) - prediction.probabilities.astype(np.float32))
    assert float(error.mean()) < 0.01


def test_model_cache_returns_the_same_module(tmp_path: Path, monkeypatch):
    engine = cpu_engine()
    first = engine.load("unet", num_classes=2, in_channels=1, **TINY_UNET)
    again = engine.load("unet", num_classes=2, in_channels=1, **TINY_UNET)
    assert again is first and again.module is first.module
    other = engine.load("unet", num_classes=3, in_channels=1, **TINY_UNET)
    assert other.module is not first.module
    cpu = torch.device("cpu")
    assert engine.module_on(first, cpu) is engine.module_on(first, cpu) is first.module

    # A checkpoint file is read once, and again when it changes.
    from core.models.loading import save_checkpoint

    path = save_checkpoint(tmp_path / "model.pt", "unet", first.module, ["a", "b"], 1, [0.5],
                           [0.5], model_kwargs=TINY_UNET)
    reads = []
    monkeypatch.setattr("core.models.loading.load_model",
                        lambda *a, **k: reads.append(1) or load_model(*a, **k))
    from_file = engine.load("unet", weights=path)
    assert engine.load("unet", weights=path) is from_file and len(reads) == 1
    save_checkpoint(path, "unet", other.module, ["a", "b", "c"], 1, [0.5], [0.5],
                    model_kwargs=TINY_UNET)
    import os

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert engine.load("unet", weights=path).classes == ("a", "b", "c") and len(reads) == 2


def test_device_copies_are_cached_and_the_cpu_original_is_kept(tiny):
    engine = cpu_engine()
    loaded = loaded_of(tiny)
    meta = torch.device("meta")
    on_meta = engine.module_on(loaded, meta)
    assert on_meta is engine.module_on(loaded, meta) and on_meta is not tiny
    assert next(on_meta.parameters()).device == meta
    assert next(tiny.parameters()).device.type == "cpu"


def test_settings_are_checked():
    with pytest.raises(ValueError):
        InferenceSettings(overlap=1.0)
    with pytest.raises(ValueError):
        InferenceSettings(blend="median")
    with pytest.raises(ValueError):
        InferenceSettings(batch_size=0)


def test_a_one_channel_sigmoid_model_through_the_engine(camera):
    class Bright(nn.Module):
        def forward(self, x):
            return x[:, :1] * 10  # logit > 0 where the normalised pixel is above the mean

    loaded = LoadedModel(Bright(), "bright", ("object",), 1, (0.5,), (0.25,))
    prediction = cpu_engine().predict(loaded, camera, keep_probabilities=True)
    assert prediction.classes == ["background", "object"]
    np.testing.assert_array_equal(prediction.labels, (camera / 255 > 0.5).astype(np.uint8))
    assert prediction.probabilities.shape == (2, 512, 512)


def test_importing_the_engine_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, core.inference, core.inference.engine, core.inference.tiling, "
            "core.inference.device, core.inference.preprocess, core.inference.postprocess; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=120)
    assert out.stdout.strip() == "False"


def test_the_patch_classifier_runs_through_windows_like_any_model(camera):
    pytest.importorskip("core.models.patch_classifier")
    from core.models.registry import get_model, model_info

    assert not model_info("patch_classifier").fully_convolutional
    torch.manual_seed(0)
    module = get_model("patch_classifier", num_classes=2, in_channels=1)
    image = camera[:40, :56]
    prediction = cpu_engine(tile_size=32, overlap=0.25).predict(loaded_of(module, num_classes=2),
                                                                image)
    assert prediction.labels.shape == (40, 56) and prediction.labels.max() <= 1
