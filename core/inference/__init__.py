"""Running segmentation models on images: tiling, devices, pre- and postprocessing.

Importing this package does not import torch (the GUI starts without it): the names below are
loaded from their modules on first use.

Public API:
    :class:`InferenceEngine`, :class:`InferenceSettings`, :class:`Prediction` (engine);
    :func:`sliding_window`, :func:`window_grid`, :func:`gaussian_importance_map` (tiling);
    :func:`select_device`, :func:`autocast_context`, :func:`is_out_of_memory` (device);
    the errors of :mod:`core.inference.errors`.
"""

from __future__ import annotations

import importlib
from typing import Any

from core.inference.errors import (
    ChannelMismatchError,
    DeviceUnavailableError,
    InferenceCancelled,
    InferenceError,
    InferenceOutOfMemoryError,
)

_LAZY = {
    "InferenceEngine": "core.inference.engine",
    "InferenceSettings": "core.inference.engine",
    "Prediction": "core.inference.engine",
    "sliding_window": "core.inference.tiling",
    "window_grid": "core.inference.tiling",
    "gaussian_importance_map": "core.inference.tiling",
    "select_device": "core.inference.device",
    "autocast_context": "core.inference.device",
    "is_out_of_memory": "core.inference.device",
}

__all__ = [
    "ChannelMismatchError",
    "DeviceUnavailableError",
    "InferenceCancelled",
    "InferenceError",
    "InferenceOutOfMemoryError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
