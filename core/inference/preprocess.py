"""From an image array as loaded to the float tensor a model expects.

Steps (:func:`prepare_input` runs them all):

1. :func:`to_unit_float` scales pixels to float32 in [0, 1]:

   * uint8: / 255;
   * uint16 (and other integer types wider than 8 bits): ``"percentile"`` (default) maps the
     image's own 0.5th-99.5th percentile range to [0, 1] and clips, because 16-bit files from
     microscopes and scientific cameras usually fill only a fraction of the 0-65535 range (12-bit
     sensors, dim signal) and would look black to a model divided by 65535; ``"full"`` divides by
     65535 (uint16) or the type's maximum, for models trained that way. A flat image (no range)
     falls back to ``"full"``;
   * bool: 0 / 1; float: kept when already in [0, 1], otherwise scaled by its own min-max range.

2. :func:`adapt_channels` makes the channel count fit the model: RGBA drops alpha (and grey +
   alpha drops alpha), grey is repeated to 3 channels for an RGB model, RGB becomes its channel
   mean for a 1-channel model.

3. :func:`normalise` subtracts the model's mean and divides by its std, per channel.

4. The result becomes a (1, C, H, W) float32 tensor (torch imported inside the function).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from core.inference.errors import ChannelMismatchError, InferenceError

if TYPE_CHECKING:
    import torch

UINT16_SCALINGS = ("percentile", "full")
PERCENTILE_RANGE = (0.5, 99.5)


def to_unit_float(image: np.ndarray, uint16: str = "percentile") -> np.ndarray:
    """Pixels as float32 in [0, 1], same shape (see the module docstring for each dtype)."""
    if uint16 not in UINT16_SCALINGS:
        raise ValueError(f"unknown uint16 scaling {uint16!r}; use one of {UINT16_SCALINGS}")
    array = np.asarray(image)
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) * np.float32(1 / 255)
    if np.issubdtype(array.dtype, np.integer):
        return _integer_to_unit(array, uint16)
    if np.issubdtype(array.dtype, np.floating):
        return _float_to_unit(array)
    raise InferenceError(f"Images of type {array.dtype} cannot be given to a model.")


def _integer_to_unit(array: np.ndarray, mode: str) -> np.ndarray:
    info = np.iinfo(array.dtype)
    if mode == "percentile":
        lo, hi = np.percentile(_sample(array), PERCENTILE_RANGE)
        if hi > lo:
            scaled = (array.astype(np.float32) - np.float32(lo)) * np.float32(1 / (hi - lo))
            return np.clip(scaled, 0.0, 1.0, out=scaled)
    low = 0 if info.min >= 0 else info.min
    scaled = (array.astype(np.float32) - np.float32(low)) * np.float32(1 / (info.max - low))
    return scaled


def _sample(array: np.ndarray, limit: int = 1 << 20) -> np.ndarray:
    """At most ``limit`` evenly spread pixels (percentiles of a 100 MP image in milliseconds)."""
    flat = array.reshape(-1)
    step = max(1, flat.size // limit)
    return flat[::step]


def _float_to_unit(array: np.ndarray) -> np.ndarray:
    data = array.astype(np.float32)
    finite = np.isfinite(data)
    if not finite.all():
        data = np.where(finite, data, 0.0).astype(np.float32)
    lo, hi = float(data.min()), float(data.max())
    if lo >= 0.0 and hi <= 1.0:
        return data
    if hi > lo:
        return (data - np.float32(lo)) * np.float32(1 / (hi - lo))
    return np.zeros_like(data)


def drop_alpha(image: np.ndarray, in_channels: int) -> np.ndarray:
    """(H, W) or (H, W, C) -> (H, W, C') without an alpha channel the model does not take.

    RGBA -> RGB and grey + alpha -> grey, unless the model expects 4 (or 2) channels. A view.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ChannelMismatchError(
            f"Expected a 2D image (H, W) or (H, W, channels), got shape {image.shape}; run stacks "
            f"one plane at a time.")
    channels = image.shape[2]
    if channels == 4 and in_channels != 4:
        return image[:, :, :3]  # alpha is not image content
    if channels == 2 and in_channels != 2:
        return image[:, :, :1]
    return image


def adapt_channels(image: np.ndarray, in_channels: int) -> np.ndarray:
    """(H, W) or (H, W, C) -> (H, W, in_channels), alpha dropped (see :func:`drop_alpha`).

    Raises:
        ChannelMismatchError: No sensible adaptation exists (e.g. 5 channels for an RGB model).
    """
    image = drop_alpha(image, in_channels)
    channels = image.shape[2]
    if channels == in_channels:
        return image
    if channels == 1:
        return np.repeat(image, in_channels, axis=2)
    if channels == 3 and in_channels == 1:
        return image.mean(axis=2, keepdims=True, dtype=np.float32)
    raise ChannelMismatchError(
        f"The model expects {in_channels} input channel(s) but the image has {image.shape[2]}.")


def normalise(image: np.ndarray, mean: Sequence[float] | None,
              std: Sequence[float] | None) -> np.ndarray:
    """``(image - mean) / std`` per channel of an (H, W, C) float image, in place when possible."""
    if mean is None and std is None:
        return image
    channels = image.shape[2]
    mean_arr = _per_channel(mean, channels, 0.0, "mean")
    std_arr = _per_channel(std, channels, 1.0, "std")
    if np.any(std_arr <= 0):
        raise InferenceError(f"The model's normalisation std {list(std_arr)} must be positive.")
    image -= mean_arr
    image *= 1.0 / std_arr
    return image


def _per_channel(values: Sequence[float] | None, channels: int, default: float,
                 what: str) -> np.ndarray:
    if values is None:
        return np.full(channels, default, np.float32)
    arr = np.asarray(values, np.float32).reshape(-1)
    if arr.size == 1:
        return np.full(channels, arr[0], np.float32)
    if arr.size != channels:
        raise InferenceError(f"The model's normalisation {what} has {arr.size} values for "
                             f"{channels} channels.")
    return arr


def prepare_input(image: np.ndarray, in_channels: int, mean: Sequence[float] | None,
                  std: Sequence[float] | None, uint16: str = "percentile") -> torch.Tensor:
    """An image array as the model's input tensor.

    Args:
        image: (H, W) grey or (H, W, 1|2|3|4); uint8, uint16 (other ints), bool or float.
        in_channels: Channels the model expects.
        mean, std: The model's normalisation after scaling to [0, 1] (None: none).
        uint16: ``"percentile"`` or ``"full"`` (see :func:`to_unit_float`).

    Returns:
        (1, in_channels, H, W) float32 tensor on the CPU.
    """
    import torch

    array = np.asarray(image)
    if array.ndim not in (2, 3) or array.shape[0] < 1 or array.shape[1] < 1:
        raise InferenceError(f"Expected a 2D image (H, W) or (H, W, channels), got shape "
                             f"{array.shape}.")
    # Alpha goes before scaling (it must not widen the percentile range); grey repeat and RGB
    # mean come after it (a float mean of uint8 pixels would look like an unscaled float image).
    unit = to_unit_float(drop_alpha(array, in_channels), uint16)  # always a fresh array
    unit = normalise(adapt_channels(unit, in_channels), mean, std)
    return torch.from_numpy(np.ascontiguousarray(unit.transpose(2, 0, 1)))[None]
