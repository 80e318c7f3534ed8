"""Tiled (sliding-window) inference with blending, progress and cancel.

Large images are cut into overlapping square windows; windows are batched and run on the
device, and each result is weighted by an importance map and added into a CPU accumulator
together with the weights (stitching on the CPU keeps the device's memory to one batch). The
output is the weighted mean of the windows covering each pixel.

Like MONAI's ``sliding_window_inference`` (the reference), but ``report(done, total)`` is called
after every batch and a cancel token is checked before each batch.

torch is imported inside the functions (importing ``core`` must not load torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from core.inference.errors import InferenceCancelled, InferenceError

if TYPE_CHECKING:
    import torch

ReportFn = Callable[[int, int], None]
BLEND_MODES = ("gaussian", "constant")
GAUSSIAN_SIGMA_SCALE = 0.125  # sigma = window / 8 (nnU-Net's and MONAI's convention)
GAUSSIAN_FLOOR = 1e-3  # per axis: no weight is 0, so every covered pixel stays defined


class CancelToken(Protocol):
    """Anything with ``is_set()``, such as a :class:`threading.Event`."""

    def is_set(self) -> bool: ...


class Window(NamedTuple):
    """One window of a grid: top-left corner and size, in pixels."""

    y: int
    x: int
    height: int
    width: int


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Start offsets along one axis: every ``stride`` pixels, the last one flush with the end.

    Args:
        size: Length of the axis.
        window: Window length (a window longer than the axis gives the single start 0).
        stride: Step between starts (> 0).
    """
    if size <= window:
        return [0]
    count = -(-(size - window) // stride) + 1  # ceil((size - window) / stride) + 1
    return [min(i * stride, size - window) for i in range(count)]


def stride_for(window: int, overlap: float) -> int:
    """Step between windows for an overlap fraction in [0, 1): at least that much overlap."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    return max(1, int(window * (1.0 - overlap)))


def window_grid(height: int, width: int, window: int, overlap: float) -> list[Window]:
    """Windows covering an image of ``height`` x ``width`` pixels, row by row.

    Windows are ``window`` pixels square (or as large as the image along an axis shorter than
    the window), overlap by at least ``overlap`` of their size, stay inside the image and the
    last of each row/column is flush with the border.
    """
    if window < 1 or height < 1 or width < 1:
        raise ValueError(f"bad grid: {height}x{width} image, window {window}")
    stride = stride_for(window, overlap)
    win_h, win_w = min(window, height), min(window, width)
    return [Window(y, x, win_h, win_w)
            for y in window_starts(height, window, stride)
            for x in window_starts(width, window, stride)]


def gaussian_importance_map(window: int | tuple[int, int],
                            sigma_scale: float = GAUSSIAN_SIGMA_SCALE,
                            floor: float = GAUSSIAN_FLOOR) -> np.ndarray:
    """Weights that favour a window's centre over its borders (where context is missing).

    A separable gaussian centred on the window's middle ((n - 1) / 2, so it is symmetric),
    sigma = ``sigma_scale`` * size, peak 1. The floor is applied to each axis' 1-D factor
    before their product (so the map's minimum is ``floor**2``, never 0). Clipping the 2-D
    product instead (as MONAI does) gives all windows the same floor weight wherever both fall
    below it (window corners inside the overlaps, strips along the image's borders): a window's
    edge pixels, computed without context, then count as much as a neighbour's better ones and
    seams come back there (bench/bench_inference.py measures ~30x larger differences to a
    whole-image run).

    Returns:
        float32 array (height, width).
    """
    height, width = (window, window) if isinstance(window, int) else window
    axes = []
    for n in (height, width):
        offsets = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        sigma = max(sigma_scale * n, 1e-6)
        factor = np.exp(-0.5 * (offsets / sigma) ** 2)
        axes.append(np.maximum(factor / factor.max(), floor))
    return np.outer(axes[0], axes[1]).astype(np.float32)


def importance_map(window: int, blend: str) -> np.ndarray:
    """The weight map of ``blend`` (``"gaussian"`` or ``"constant"``) for square windows."""
    if blend == "gaussian":
        return gaussian_importance_map(window)
    if blend == "constant":
        return np.ones((window, window), np.float32)
    raise ValueError(f"unknown blend {blend!r}; use one of {BLEND_MODES}")


def pad_to_window(image: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad a (1, C, H, W) image to at least ``window`` along both axes, centred.

    Reflection where the image is large enough (mirrors the content, so a model sees something
    image-like at the borders), zeros otherwise (0 is the mean colour after normalisation).

    Returns:
        The padded image (the input itself when no padding is needed) and the (top, left)
        offset of the original pixels in it.
    """
    import torch.nn.functional as F  # noqa: N812

    height, width = image.shape[-2:]
    pad_h, pad_w = max(window - height, 0), max(window - width, 0)
    if pad_h == 0 and pad_w == 0:
        return image, (0, 0)
    top, left = pad_h // 2, pad_w // 2
    pads = (left, pad_w - left, top, pad_h - top)
    reflect_ok = max(top, pad_h - top) < height and max(left, pad_w - left) < width
    mode = "reflect" if reflect_ok else "constant"
    return F.pad(image, pads, mode=mode), (top, left)


def sliding_window(
    image: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor],
    window: int,
    overlap: float = 0.25,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    blend: str = "gaussian",
    report: ReportFn | None = None,
    cancel: CancelToken | None = None,
) -> torch.Tensor:
    """Run ``forward`` over overlapping windows of ``image`` and blend the results.

    Args:
        image: (1, C, H, W) float tensor on the CPU. Images smaller than the window are padded
            (see :func:`pad_to_window`) and the result is cropped back.
        forward: Maps a batch (B, C, window, window) on ``device`` to (B, K, window, window)
            (any float dtype, on any device).
        window: Window side in pixels.
        overlap: Fraction of the window shared by neighbours, in [0, 1).
        batch_size: Windows per forward call.
        device: Where windows are sent for ``forward`` (default: the CPU).
        blend: ``"gaussian"`` (centre-weighted, seam-free) or ``"constant"`` (plain mean).
        report: Called as ``report(done, total)`` in windows: ``(0, total)`` first, then after
            each batch.
        cancel: Checked before each batch.

    Returns:
        (1, K, H, W) float32 tensor on the CPU.

    Raises:
        InferenceCancelled: ``cancel`` was set.
        InferenceError: ``forward`` returned something of the wrong shape.
    """
    import torch

    if image.ndim != 4 or image.shape[0] != 1:
        raise ValueError(f"expected a (1, C, H, W) image, got shape {tuple(image.shape)}")
    if window < 1 or batch_size < 1:
        raise ValueError(f"window ({window}) and batch_size ({batch_size}) must be positive")
    device = torch.device(device) if device is not None else torch.device("cpu")
    height, width = image.shape[-2:]
    padded, (top, left) = pad_to_window(image, window)
    windows = window_grid(padded.shape[-2], padded.shape[-1], window, overlap)
    weight_cpu = torch.from_numpy(importance_map(window, blend))
    weight_dev = weight_cpu.to(device)
    weight_sum = _weight_sum(padded.shape[-2:], windows, weight_cpu)
    total = len(windows)
    if report is not None:
        report(0, total)
    accumulator: torch.Tensor | None = None
    for first in range(0, total, batch_size):
        if cancel is not None and cancel.is_set():
            raise InferenceCancelled("Inference cancelled.")
        chunk = windows[first:first + batch_size]
        batch = torch.cat([padded[:, :, w.y:w.y + window, w.x:w.x + window] for w in chunk])
        out = forward(batch.to(device))
        _check_output(out, len(chunk), window)
        if accumulator is None:
            accumulator = torch.zeros((1, out.shape[1], *padded.shape[-2:]), dtype=torch.float32)
        _accumulate(accumulator, out, chunk, weight_dev, blend, window)
        if report is not None:
            report(first + len(chunk), total)
    assert accumulator is not None
    accumulator.div_(weight_sum)
    if padded is image:
        return accumulator
    return accumulator[:, :, top:top + height, left:left + width].contiguous()


def _weight_sum(shape, windows: list[Window], weight: torch.Tensor) -> torch.Tensor:
    import torch

    total = torch.zeros((1, 1, *shape), dtype=torch.float32)
    for w in windows:
        total[0, 0, w.y:w.y + w.height, w.x:w.x + w.width] += weight
    return total


def _check_output(out: object, count: int, window: int) -> None:
    import torch

    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise InferenceError(f"The model returned {shape} instead of (batch, classes, h, w) logits.")
    if out.shape[0] != count or tuple(out.shape[-2:]) != (window, window):
        raise InferenceError(
            f"The model turned {count} windows of {window}x{window} pixels into an output of "
            f"shape {tuple(out.shape)}; expected ({count}, classes, {window}, {window}).")


def _accumulate(accumulator: torch.Tensor, out: torch.Tensor, chunk: list[Window],
                weight: torch.Tensor, blend: str, window: int) -> None:
    """Add the weighted windows of one batch into the CPU accumulator."""
    if out.device.type == "cpu":
        # No copy: multiply-add straight from the model's output into the accumulator.
        out = out.float()
        for i, w in enumerate(chunk):
            target = accumulator[0, :, w.y:w.y + window, w.x:w.x + window]
            if blend == "constant":
                target.add_(out[i])
            else:
                target.addcmul_(out[i], weight)
        return
    # Weight on the device (fast), then one transfer of the batch to the CPU.
    weighted = out.float() if blend == "constant" else out.float() * weight
    weighted = weighted.cpu()
    for i, w in enumerate(chunk):
        accumulator[0, :, w.y:w.y + window, w.x:w.x + window].add_(weighted[i])
