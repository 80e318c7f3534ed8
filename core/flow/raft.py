"""RAFT optical flow (torchvision's ``raft_small`` / ``raft_large``) with SegStudio's weights rules.

Paper: Z. Teed, J. Deng, "RAFT: Recurrent All-Pairs Field Transforms for Optical Flow",
ECCV 2020. torchvision's implementation and its published weights are used as they are.

Weights follow :mod:`core.models.loading`: a file given explicitly, else the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, under torchvision's own file name), else a download only when
the caller allows the network, else :class:`~core.models.errors.OfflineWeightsError` naming the
file and the folder. Files are read with ``torch.load(weights_only=True)``.

Preprocessing is torchvision's ``OpticalFlow`` transform: pixels scaled to [0, 1], then
normalised with mean 0.5 and std 0.5 to [-1, 1]. The network needs sides that are multiples of
8 and at least 128 pixels: frames are padded on the right and bottom by repeating the edge
pixels, and the flow is cropped back.

This module imports torch at the top; :mod:`core.flow.methods` imports it only for RAFT.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torchvision.models import optical_flow as tv_flow

from core.errors import UnsupportedFormatError
from core.flow.errors import FlowError
from core.inference.device import select_device
from core.models.errors import WeightsMismatchError, WeightsNotFoundError
from core.models.loading import is_segstudio_checkpoint, resolve_weights_file, safe_torch_load
from core.models.weights import Weights, torchvision_weights

RAFT_MODELS = ("raft_small", "raft_large")
PAD_MULTIPLE = 8  # the feature encoder works at 1/8 resolution
MIN_SIDE = 128  # torchvision's meta["min_size"]: a 4-level correlation pyramid on 1/8 maps
RAFT_MEAN = (0.5, 0.5, 0.5)
RAFT_STD = (0.5, 0.5, 0.5)

_BUILDERS = {"raft_small": tv_flow.raft_small, "raft_large": tv_flow.raft_large}
_ENUMS = {"raft_small": tv_flow.Raft_Small_Weights, "raft_large": tv_flow.Raft_Large_Weights}
_DATASETS = {"C": "FlyingChairs", "T": "FlyingThings3D", "S": "Sintel", "K": "KITTI",
             "H": "HD1K"}
_FILE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".tar"}
_CACHE_SIZE = 2  # loaded networks kept, per (model, weights, device)


def _record(member: Any, model: str) -> Weights:
    """Describe one torchvision weights enum member (no download)."""
    stages = member.name.rsplit("_", 1)[0].split("_")  # "C_T_SKHT_V2" -> ["C", "T", "SKHT"]
    trained = " then ".join("+".join(_DATASETS.get(c, c) for c in stage) for stage in stages)
    return torchvision_weights(member, f"{model}.{member.name.lower()}", model, classes=(),
                               mean=RAFT_MEAN, std=RAFT_STD,
                               description=f"torchvision {member.name}: trained on {trained}")


RAFT_WEIGHTS: dict[str, Weights] = {
    w.name: w for model, enum in _ENUMS.items() for w in (_record(m, model) for m in enum)}
DEFAULT_WEIGHTS = {model: f"{model}.{enum.DEFAULT.name.lower()}" for model, enum in _ENUMS.items()}

_models: OrderedDict[tuple, nn.Module] = OrderedDict()
_models_lock = threading.Lock()


def raft_weights(model: str | None = None) -> dict[str, Weights]:
    """Published RAFT weights (of one model, if given), by weights name."""
    return {name: w for name, w in RAFT_WEIGHTS.items() if model is None or w.model == model}


def build_raft(model: str) -> nn.Module:
    """An untrained torchvision RAFT network (``"raft_small"`` or ``"raft_large"``), in eval mode."""
    _check_model(model)
    return _BUILDERS[model](weights=None, progress=False).eval()


def load_raft(model: str, weights: str | Path | Weights | None = "default", *,
              allow_network: bool = False, progress: bool = True) -> nn.Module:
    """A RAFT network with weights, in eval mode on the CPU.

    Args:
        model: ``"raft_small"`` or ``"raft_large"``.
        weights: ``"default"`` (torchvision's recommended weights, :data:`DEFAULT_WEIGHTS`), a
            published name (:func:`raft_weights`) or :class:`Weights` record, the path of a
            state dict or SegStudio checkpoint file, or None for an untrained network.
        allow_network: Download published weights missing from the hub cache.
        progress: Show the download progress bar.

    Raises:
        OfflineWeightsError: Published weights not cached and the network not allowed.
        WeightsNotFoundError: A named file does not exist, or an unknown weights name.
        WeightsMismatchError: The file holds another network's weights.
        UnsafeCheckpointError, CorruptFileError, ChecksumError: see :mod:`core.models.loading`.
    """
    _check_model(model)
    if weights is None:
        return build_raft(model)
    path, what = _weights_file(model, weights, allow_network, progress)
    return _load_file(model, path, what)


def _weights_file(model: str, weights: str | Path | Weights, allow_network: bool,
                  progress: bool = True) -> tuple[Path, str]:
    """The file to load and how to name it in messages (explicit file, cache or download)."""
    record = _published(model, weights)
    if record is not None:
        path = resolve_weights_file(record, allow_network=allow_network, progress=progress)
        return path, f"{path.name} ({record.name})"
    path = Path(weights).expanduser()
    return path, path.name


def _load_file(model: str, path: Path, what: str) -> nn.Module:
    module = build_raft(model)
    obj = safe_torch_load(path)
    if is_segstudio_checkpoint(obj):
        obj = obj.get("state_dict")
    _load_state(module, _as_state_dict(obj, path), what, model)
    return module.eval()


def _published(model: str, weights: str | Path | Weights) -> Weights | None:
    """The published record ``weights`` names, or None when it names a file."""
    if isinstance(weights, Weights):
        if weights.model != model:
            raise WeightsMismatchError(f"The weights {weights.name} are for {weights.model}; "
                                       f"asked for {model}.")
        return weights
    if not isinstance(weights, str):
        return None
    name = DEFAULT_WEIGHTS[model] if weights == "default" else weights
    if name in RAFT_WEIGHTS:
        return _published(model, RAFT_WEIGHTS[name])
    path = Path(weights).expanduser()
    if path.exists() or path.suffix.lower() in _FILE_SUFFIXES or len(path.parts) > 1:
        return None  # a file (a missing one is reported by safe_torch_load)
    known = ", ".join(raft_weights(model))
    raise WeightsNotFoundError(f"{weights} is neither a weights file nor a published weights "
                               f"name of {model} (published: {known}).")


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise UnsupportedFormatError(f"{path} is neither a SegStudio checkpoint nor a state dict "
                                     f"(a mapping of parameter names to tensors).")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel
        return {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _load_state(module: nn.Module, state: Mapping[str, torch.Tensor], what: str,
                model: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [k for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or resized:
        example = (resized or missing or unexpected)[0]
        raise WeightsMismatchError(
            f"{what} does not fit the {model} network: {len(resized)} tensors of another shape, "
            f"{len(missing)} missing, {len(unexpected)} unexpected (e.g. {example}).")
    module.load_state_dict(state, strict=True)


def _check_model(model: str) -> None:
    if model not in _BUILDERS:
        raise FlowError(f"Unknown RAFT model {model!r}; choose one of {', '.join(RAFT_MODELS)}.")


# -- running --------------------------------------------------------------------------------------
def raft_flow(rgb0: np.ndarray, rgb1: np.ndarray, model: str = "raft_small",
              num_flow_updates: int = 12, *, device: str = "auto",
              weights: str | Path | Weights | nn.Module | None = "default",
              allow_network: bool = False) -> np.ndarray:
    """Flow from ``rgb0`` to ``rgb1`` (uint8 (H, W, 3) each) as float32 (H, W, 2).

    Args:
        rgb0, rgb1: The frames.
        model: ``"raft_small"`` or ``"raft_large"``.
        num_flow_updates: Recurrent refinement iterations; the last one's flow is returned.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"``.
        weights: As :func:`load_raft`, or an ``nn.Module`` to run as is. Networks loaded from
            published names or files are kept (the last two) for the next call.
        allow_network: Download published weights missing from the hub cache.
    """
    if int(num_flow_updates) < 1:
        raise FlowError(f"num_flow_updates must be at least 1; got {num_flow_updates}.")
    target = select_device(device)
    module = _network(model, weights, target, allow_network)
    height, width = rgb0.shape[:2]
    batch = torch.stack([_to_tensor(rgb0), _to_tensor(rgb1)]).to(target)
    batch = pad_for_raft(batch)
    with torch.inference_mode():
        flows = module(batch[0:1], batch[1:2], num_flow_updates=int(num_flow_updates))
    flow = flows[-1][0, :, :height, :width]
    return np.ascontiguousarray(flow.permute(1, 2, 0).float().cpu().numpy(), dtype=np.float32)


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [-1, 1] (torchvision's OpticalFlow transform)."""
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(RAFT_MEAN).view(3, 1, 1)
    std = torch.tensor(RAFT_STD).view(3, 1, 1)
    return (tensor - mean) / std


def pad_for_raft(batch: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) padded right/bottom with edge pixels to sides that are multiples of
    :data:`PAD_MULTIPLE` and at least :data:`MIN_SIDE`."""
    height, width = batch.shape[-2:]
    pad_h = max(MIN_SIDE, -(-height // PAD_MULTIPLE) * PAD_MULTIPLE) - height
    pad_w = max(MIN_SIDE, -(-width // PAD_MULTIPLE) * PAD_MULTIPLE) - width
    if pad_h == 0 and pad_w == 0:
        return batch
    return F.pad(batch, (0, pad_w, 0, pad_h), mode="replicate")


def _network(model: str, weights: Any, device: torch.device, allow_network: bool) -> nn.Module:
    if isinstance(weights, nn.Module):
        return weights.to(device).eval()
    if weights is None:
        return build_raft(model).to(device)
    path, what = _weights_file(model, weights, allow_network)
    key = (model, *_file_key(path), str(device))
    with _models_lock:
        module = _models.get(key)
        if module is not None:
            _models.move_to_end(key)
            return module
    module = _load_file(model, path, what).to(device)
    with _models_lock:
        _models[key] = module
        while len(_models) > _CACHE_SIZE:
            _models.popitem(last=False)
    return module


def _file_key(path: Path) -> tuple:
    """The file's identity: a file replaced in place is loaded again."""
    resolved = path.resolve()
    try:
        stat = resolved.stat()
    except OSError:
        return (str(resolved),)
    return (str(resolved), stat.st_mtime_ns, stat.st_size)


def clear_network_cache() -> None:
    """Forget the loaded networks (frees their memory)."""
    with _models_lock:
        _models.clear()
