"""Run a loaded segmentation model on an image: devices, tiling, out-of-memory fallback, caching.

:class:`InferenceEngine` is what the CLI and the GUI use::

    engine = InferenceEngine(InferenceSettings(device="auto", tile_size=512))
    loaded = engine.load("unet", weights="best.pt")        # cached: a second call is free
    prediction = engine.predict(loaded, image, report=report, cancel=cancel)
    prediction.labels, prediction.confidence, prediction.notes

Images that fit in one tile run whole; larger ones go through :func:`sliding_window`. Models
that are not fully convolutional (the patch classifier) go the same way: windows are ordinary
images to them, they are just called on each.

Out of GPU memory, the run is retried with tiles half as large, one at a time, down to
:data:`MIN_TILE` pixels, and then on the CPU; each step is written to ``Prediction.notes``.

torch is imported inside the functions (importing ``core`` must not load torch).
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.inference.device import (
    autocast_context,
    device_label,
    is_out_of_memory,
    release_cached_memory,
    select_device,
)
from core.inference.errors import InferenceCancelled, InferenceError, InferenceOutOfMemoryError
from core.inference.postprocess import decode_logits
from core.inference.preprocess import prepare_input
from core.inference.tiling import BLEND_MODES, CancelToken, ReportFn, sliding_window

if TYPE_CHECKING:
    import torch
    from torch import nn

    from core.models.loading import LoadedModel

MIN_TILE = 128  # out-of-memory retries halve the tile down to this, then move to the CPU
MAX_CACHED_MODULES = 4


@dataclass
class InferenceSettings:
    """How models are run.

    Attributes:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (``"cuda:N"``) or ``"mps"``.
        amp: Mixed precision on the GPU (float16 by default); no effect on the CPU unless
            ``amp_dtype`` is ``"bfloat16"``.
        amp_dtype: ``"float16"`` or ``"bfloat16"``.
        batch_size: Tiles per forward call.
        tile_size: Side of the square tiles; images that fit in one run whole.
        overlap: Fraction of a tile shared with its neighbours, in [0, 1).
        blend: ``"gaussian"`` (centre-weighted, seam-free) or ``"constant"``.
        min_component_size: Connected components smaller than this (pixels) are relabelled to
            their surroundings; 0 keeps everything.
        uint16_scaling: ``"percentile"`` or ``"full"``: how 16-bit images are scaled to [0, 1]
            (see :mod:`core.inference.preprocess`).
    """

    device: str = "auto"
    amp: bool = True
    amp_dtype: str = "float16"
    batch_size: int = 4
    tile_size: int = 512
    overlap: float = 0.25
    blend: str = "gaussian"
    min_component_size: int = 0
    uint16_scaling: str = "percentile"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {self.batch_size}")
        if self.tile_size < 16:
            raise ValueError(f"tile_size must be >= 16 pixels, not {self.tile_size}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), not {self.overlap}")
        if self.blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {BLEND_MODES}, not {self.blend!r}")


@dataclass
class Prediction:
    """What a model made of an image.

    Attributes:
        labels: (H, W) class indices; uint8 (uint16 beyond 256 classes).
        probabilities: (K, H, W) float16 softmax probabilities, or None unless asked for.
        confidence: (H, W) float32, the winning class's probability.
        classes: Class names, index = label (a one-channel sigmoid model's single class
            becomes ``["background", name]``).
        device: The device that produced it (``"cuda"``, ``"cpu"`` after a fallback).
        notes: What happened on the way, in sentences to show (out-of-memory retries...).
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    confidence: np.ndarray
    classes: list[str]
    device: str
    notes: list[str] = field(default_factory=list)


class InferenceEngine:
    """Runs models with one :class:`InferenceSettings`; caches loaded models and device copies.

    Two caches, both keyed by (model name, weights identity, num_classes, ...):

    * :meth:`load` keeps the :class:`LoadedModel` (on the CPU), so running the same model again
      does not read its file again. A file's identity includes its size and modification time:
      a checkpoint rewritten by training is read again.
    * :meth:`predict` keeps the model's copy on each device (on the CPU that is the module
      itself), so a GPU run does not copy the weights to the GPU each time. Random-weight
      models are told apart by their module, as each is a different model.

    At most :data:`MAX_CACHED_MODULES` entries of each are kept (least recently used leave);
    :meth:`clear_cache` drops them all (e.g. after training changed a module in place).
    The engine may be used from a worker thread; the caches are guarded by a lock.
    """

    def __init__(self, settings: InferenceSettings | None = None) -> None:
        self.settings = settings if settings is not None else InferenceSettings()
        self._loaded: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._on_device: OrderedDict[tuple, nn.Module] = OrderedDict()
        self._lock = threading.RLock()

    # -- models -------------------------------------------------------------------------------
    def load(self, name: str, *, weights: str | Path | None = None,
             num_classes: int | None = None, in_channels: int | None = None,
             allow_network: bool = False, **model_kwargs: Any) -> LoadedModel:
        """:func:`core.models.loading.load_model`, cached: the same arguments give the same object.

        See ``load_model`` for the arguments and errors.
        """
        from core.models.loading import load_model

        key = (name, _file_identity(weights), num_classes, in_channels,
               tuple(sorted((k, repr(v)) for k, v in model_kwargs.items())))
        with self._lock:
            cached = self._loaded.get(key)
            if cached is not None:
                self._loaded.move_to_end(key)
                return cached
        loaded = load_model(name, weights=weights, num_classes=num_classes,
                            in_channels=in_channels, allow_network=allow_network, **model_kwargs)
        with self._lock:
            self._loaded[key] = loaded
            _trim(self._loaded)
        return loaded

    def module_on(self, loaded: LoadedModel, device: torch.device) -> nn.Module:
        """The model's module on ``device`` in eval mode (cached; the CPU module is the original)."""
        key = (_model_name(loaded), _weights_identity(loaded), len(loaded.classes), str(device))
        with self._lock:
            module = self._on_device.get(key)
            if module is not None:
                self._on_device.move_to_end(key)
                return module
        module = loaded.module
        if device.type != "cpu" or any(p.device.type != "cpu" for p in module.parameters()):
            # A copy, so the CPU original stays usable for the fallback to the CPU.
            module = copy.deepcopy(module).to(device)
        module.eval()
        with self._lock:
            self._on_device[key] = module
            _trim(self._on_device)
        return module

    def clear_cache(self) -> None:
        """Forget every cached model (GPU memory is given back)."""
        with self._lock:
            devices = {k[-1] for k in self._on_device}
            self._loaded.clear()
            self._on_device.clear()
        import torch

        for device in devices:
            release_cached_memory(torch.device(device))

    # -- running ------------------------------------------------------------------------------
    def predict(self, loaded: LoadedModel, image: np.ndarray, report: ReportFn | None = None,
                cancel: CancelToken | None = None,
                keep_probabilities: bool = False) -> Prediction:
        """Segment ``image`` with ``loaded``.

        Args:
            loaded: A model from :meth:`load` (or ``core.models.loading.load_model``).
            image: (H, W) grey or (H, W, 3|4) RGB(A); uint8, uint16 or float
                (see :mod:`core.inference.preprocess`).
            report: ``report(done, total)`` in tiles (1 for a whole-image run). An
                out-of-memory retry starts counting again.
            cancel: Checked before each batch of tiles.
            keep_probabilities: Also return the (K, H, W) float16 probabilities.

        Returns:
            The :class:`Prediction`.

        Raises:
            InferenceCancelled: ``cancel`` was set.
            DeviceUnavailableError: The device in the settings does not exist here.
            ChannelMismatchError: The image's channels do not fit the model.
            InferenceOutOfMemoryError: Even the CPU ran out of memory.
            InferenceError: The model's output is not (N, K, H, W) logits.
        """
        settings = self.settings
        tensor = prepare_input(image, loaded.in_channels, loaded.mean, loaded.std,
                               settings.uint16_scaling)
        logits, device, notes = self._logits_with_fallback(loaded, tensor, report, cancel)
        classes = list(loaded.classes)
        if logits.shape[1] == 1 and len(classes) == 1:  # sigmoid model: label 1 is its class
            classes = ["background", *classes]
        decoded = decode_logits(logits, keep_probabilities, settings.min_component_size)
        return Prediction(labels=decoded.labels, probabilities=decoded.probabilities,
                          confidence=decoded.confidence, classes=classes,
                          device=str(device), notes=notes)

    def _logits_with_fallback(self, loaded: LoadedModel, tensor: torch.Tensor,
                              report: ReportFn | None, cancel: CancelToken | None
                              ) -> tuple[torch.Tensor, torch.device, list[str]]:
        """Logits (1, K, H, W) on the CPU, retrying out of memory as the module docstring says."""
        import torch

        settings = self.settings
        device = select_device(settings.device)
        tile, batch = settings.tile_size, settings.batch_size
        longest = max(tensor.shape[-2:])
        notes: list[str] = []
        while True:
            try:
                logits = self._logits(loaded, tensor, device, tile, batch, report, cancel)
                return logits, device, notes
            except Exception as err:  # anything but out of memory is re-raised
                if _is_cpu_allocation_failure(err):
                    raise InferenceOutOfMemoryError(
                        f"The computer ran out of memory running {_model_name(loaded)} on a "
                        f"{tensor.shape[-1]}x{tensor.shape[-2]} image; close other programs or "
                        f"use a smaller image.") from err
                if not is_out_of_memory(err):
                    raise
            # Outside the except block: the traceback (and the tensors its frames hold) is gone.
            release_cached_memory(device)
            where = (f"on the whole {tensor.shape[-1]}x{tensor.shape[-2]} image" if tile >= longest
                     else f"with {tile}-pixel tiles")
            what = f"{device_label(device)} out of memory {where}"
            smaller = _smaller_tile(tile, longest)
            if smaller is not None:
                notes.append(f"{what}: retried with {smaller}-pixel tiles, one at a time.")
                tile, batch = smaller, 1
            elif device.type != "cpu":
                notes.append(f"{what}: fell back to the CPU.")
                self._forget_device(device)
                device = torch.device("cpu")
                tile, batch = settings.tile_size, settings.batch_size
            else:
                raise InferenceOutOfMemoryError(
                    f"Out of memory on the CPU even {where}; close other programs or use a "
                    f"smaller image.")

    def _logits(self, loaded: LoadedModel, tensor: torch.Tensor, device: torch.device,
                tile: int, batch: int, report: ReportFn | None,
                cancel: CancelToken | None) -> torch.Tensor:
        import torch

        module = self.module_on(loaded, device)
        forward = _forward_fn(module, device, self.settings)
        height, width = tensor.shape[-2:]
        with torch.inference_mode():
            if height <= tile and width <= tile:
                return _whole_image(forward, tensor, device, report, cancel)
            return sliding_window(tensor, forward, tile, self.settings.overlap, batch, device,
                                  self.settings.blend, report, cancel)

    def _forget_device(self, device: torch.device) -> None:
        with self._lock:
            for key in [k for k in self._on_device if k[-1] == str(device)]:
                del self._on_device[key]
        release_cached_memory(device)


def _forward_fn(module: nn.Module, device: torch.device,
                settings: InferenceSettings) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(batch: torch.Tensor) -> torch.Tensor:
        with autocast_context(device, settings.amp, settings.amp_dtype):
            return _as_logits(module(batch))

    return forward


def _as_logits(output: Any) -> torch.Tensor:
    """The logits of a forward's result: a tensor, torchvision's ``{"out": ...}``, or (logits, ...)."""
    if isinstance(output, Mapping) and "out" in output:
        return output["out"]
    if isinstance(output, Sequence) and not isinstance(output, str) and output:
        return output[0]
    return output


def _whole_image(forward: Callable, tensor: torch.Tensor, device: torch.device,
                 report: ReportFn | None, cancel: CancelToken | None) -> torch.Tensor:
    import torch

    if report is not None:
        report(0, 1)
    if cancel is not None and cancel.is_set():
        raise InferenceCancelled("Inference cancelled.")
    out = forward(tensor.to(device))
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != 1 \
            or tuple(out.shape[-2:]) != tuple(tensor.shape[-2:]):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InferenceError(f"The model turned an image of {tuple(tensor.shape)} into {shape}; "
                             f"expected (1, classes, {tensor.shape[-2]}, {tensor.shape[-1]}).")
    logits = out.float().cpu()
    if report is not None:
        report(1, 1)
    return logits


def _is_cpu_allocation_failure(err: BaseException) -> bool:
    """The CPU allocator (or numpy) could not get memory: no smaller tile would help."""
    if isinstance(err, MemoryError):
        return True
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


def _smaller_tile(tile: int, longest: int) -> int | None:
    """Half the tile, halved again while the image would still fit in one; None below MIN_TILE."""
    smaller = tile // 2
    while smaller >= longest and smaller >= MIN_TILE:
        smaller //= 2
    return smaller if smaller >= MIN_TILE else None


def _model_name(loaded: Any) -> str:
    return str(getattr(loaded, "model", None) or getattr(loaded, "name", "model"))


def _file_identity(weights: str | Path | None) -> Any:
    """A weights argument, plus size and modification time when it names an existing file."""
    if weights is None:
        return None
    path = Path(weights).expanduser()
    try:
        stat = path.stat()
    except OSError:
        return str(weights)  # a published weights name
    if not path.is_file():
        return str(weights)
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def _weights_identity(loaded: Any) -> Any:
    """Which weights a loaded model holds: its file (with size and time), its record, or itself."""
    path = getattr(loaded, "weights_path", None)
    name = getattr(loaded, "weights_name", None)
    if path is not None:
        return _file_identity(path)
    if name is not None:
        return (getattr(loaded, "weights_source", None), name)
    return ("module", id(loaded.module))  # random weights: every module is its own model


def _trim(cache: OrderedDict) -> None:
    while len(cache) > MAX_CACHED_MODULES:
        cache.popitem(last=False)
