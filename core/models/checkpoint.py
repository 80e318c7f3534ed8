"""SegStudio's checkpoint format and safe reading of any torch file.

A checkpoint is a plain dict saved with ``torch.save``: ``{"format": "segstudio-checkpoint",
"version": 1, "model", "model_kwargs", "classes", "in_channels", "mean", "std", "state_dict",
"meta"}``. Every file is read with ``torch.load(..., weights_only=True)``: tensors and plain data
only, so a file can never run code.
"""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import CorruptFileError, SegStudioError, UnsupportedFormatError
from core.fsutil import atomic_write_bytes
from core.models.errors import UnsafeCheckpointError, WeightsNotFoundError
from core.models.registry import model_info

CHECKPOINT_FORMAT = "segstudio-checkpoint"
CHECKPOINT_VERSION = 1


# -- reading files safely ----------------------------------------------------------------------
def safe_torch_load(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with SegStudio's errors.

    Raises:
        WeightsNotFoundError: no such file.
        UnsafeCheckpointError: the file holds objects beyond tensors and plain data.
        CorruptFileError: the file is empty, truncated or not a torch file.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"The weights file {path} does not exist.")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": reported as our error
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, KeyError...
        raise _load_error(path, err) from None


def _load_error(path: Path, err: Exception) -> SegStudioError:
    text = str(err)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found or _looks_like_pickle(path):
        what = f" (it calls {found.group(1)})" if found else ""
        return UnsafeCheckpointError(
            f"{path} holds Python objects that would run code when loaded{what}; SegStudio never "
            f"executes code from files and did not load it. Save only tensors and plain data, "
            f"e.g. torch.save(model.state_dict(), path).")
    return CorruptFileError(f"{path} is not a readable torch weights file (empty, truncated or "
                            f"another format): {type(err).__name__}.")


def _looks_like_pickle(path: Path) -> bool:
    """A torch zip archive, or a bare pickle (protocol 2-5): readable, just not safely."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, "rb") as handle:
        head = handle.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


# -- SegStudio checkpoints -------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A SegStudio checkpoint (see :func:`save_checkpoint` for the stored dict)."""

    model: str
    classes: list[str]
    in_channels: int
    mean: list[float]
    std: list[float]
    state_dict: dict[str, torch.Tensor]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = CHECKPOINT_VERSION
    path: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def is_segstudio_checkpoint(obj: Any) -> bool:
    """True for the dict :func:`save_checkpoint` writes (whatever its version)."""
    return isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT


def save_checkpoint(path: str | Path, model_name: str, model: nn.Module, classes: list[str],
                    in_channels: int, mean: list[float], std: list[float],
                    model_kwargs: dict[str, Any] | None = None,
                    meta: dict[str, Any] | None = None) -> Path:
    """Write a SegStudio checkpoint atomically (a reader never sees half a file).

    The file is a plain dict saved with ``torch.save``, readable with ``weights_only=True``::

        {"format": "segstudio-checkpoint", "version": 1, "model": "unet",
         "model_kwargs": {"base_channels": 32, ...}, "classes": ["background", ...],
         "in_channels": 1, "mean": [...], "std": [...], "state_dict": {...},
         "meta": {"created": "2025-...", "epoch": 12, "metrics": {...}}}

    Args:
        path: File to write (``.pt``).
        model_name: Registered model name.
        model: The module whose ``state_dict`` is saved (moved to the CPU).
        classes: Class names in output-channel order.
        in_channels: Channels the model expects.
        mean, std: Per-channel normalisation applied after scaling pixels to [0, 1].
        model_kwargs: Builder options that shape the architecture (``base_channels``, ...).
        meta: Plain data (numbers, text, lists, dicts) such as epoch and metrics.

    Returns:
        The path written.
    """
    model_info(model_name)  # an unknown name is refused before anything is written
    path = Path(path).expanduser()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model_name,
        "model_kwargs": _plain(dict(model_kwargs or {})),
        "classes": [str(c) for c in classes],
        "in_channels": int(in_channels),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": _plain({"created": created, **(meta or {})}),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _plain(value: Any) -> Any:
    """``value`` as plain Python data that ``weights_only`` loading accepts (numpy scalars too)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy or torch scalar
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"checkpoint data must be plain (numbers, text, lists, dicts), not "
                    f"{type(value).__name__}")


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a SegStudio checkpoint safely.

    Raises:
        WeightsNotFoundError, UnsafeCheckpointError, CorruptFileError: see :func:`safe_torch_load`.
        UnsupportedFormatError: a torch file that is not a SegStudio checkpoint, or a newer one.
    """
    path = Path(path).expanduser()
    obj = safe_torch_load(path)
    if not is_segstudio_checkpoint(obj):
        raise UnsupportedFormatError(f"{path} is not a SegStudio checkpoint.")
    return checkpoint_from_dict(obj, path)


def checkpoint_from_dict(obj: Mapping[str, Any], path: Path) -> Checkpoint:
    version = obj.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise UnsupportedFormatError(f"{path} is a SegStudio checkpoint of version {version}, "
                                     f"newer than this SegStudio reads ({CHECKPOINT_VERSION}).")
    try:
        checkpoint = Checkpoint(
            model=str(obj["model"]), classes=[str(c) for c in obj["classes"]],
            in_channels=int(obj["in_channels"]), mean=[float(v) for v in obj["mean"]],
            std=[float(v) for v in obj["std"]], state_dict=dict(obj["state_dict"]),
            model_kwargs=dict(obj.get("model_kwargs") or {}), meta=dict(obj.get("meta") or {}),
            version=version, path=path)
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptFileError(f"{path}: the SegStudio checkpoint is incomplete ({err!r}).") from err
    if not all(isinstance(v, torch.Tensor) for v in checkpoint.state_dict.values()):
        raise CorruptFileError(f"{path}: the checkpoint's state_dict holds non-tensor values.")
    return checkpoint
