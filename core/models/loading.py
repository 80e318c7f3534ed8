"""Weights on this machine: finding the file, reading it safely, building a model with it.

Three kinds of weights can be given to :func:`load_model`:

* none: random initialisation (to train);
* the name of a published :class:`~core.models.weights.Weights` record
  (``"fcn_resnet50.coco_voc"``): the file is looked up in the torch hub cache
  (``$TORCH_HOME/hub/checkpoints``) and downloaded only when the caller allows the network;
* a path: a SegStudio checkpoint (:func:`save_checkpoint`) or a plain ``state_dict``.

Every file is read with ``torch.load(..., weights_only=True)``: tensors and plain data only, so
a file can never run code. Published files are checked against their sha256 when downloaded or
imported from a user's file; a file already in the cache is trusted, as torchvision does (the
cache is the user's own folder and hashing 100-200 MB on every start would cost seconds).

This module imports torch at the top; import it lazily (the GUI starts without torch).
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import CorruptFileError, UnsupportedFormatError
from core.models.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    Checkpoint,
    checkpoint_from_dict,
    is_segstudio_checkpoint,
    read_checkpoint,
    safe_torch_load,
    save_checkpoint,
)
from core.models.errors import (
    ChecksumError,
    OfflineWeightsError,
    UnsafeCheckpointError,
    WeightsMismatchError,
    WeightsNotFoundError,
)
from core.models.registry import ModelInfo, list_models, model_info
from core.models.weights import IMAGENET_MEAN, IMAGENET_STD, Weights

_HASH_CHUNK = 1 << 20
_FILE_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".tar"}

# -- finding published weights ------------------------------------------------------------------
def hub_checkpoints_dir() -> Path:
    """The torch hub cache folder of weights files (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def cached_weights_path(weights: Weights) -> Path | None:
    """The file of ``weights`` in the torch hub cache, or None when it is not there."""
    path = hub_checkpoints_dir() / weights.file_name
    return path if path.is_file() else None


def weights_status(weights: Weights) -> str:
    """``"cached: PATH"`` or ``"not on this machine"`` (for menus and ``segstudio-cli models``)."""
    path = cached_weights_path(weights)
    return f"cached: {path}" if path is not None else "not on this machine"


def all_weights() -> dict[str, Weights]:
    """Every published weights record of every registered model, by weights name."""
    table: dict[str, Weights] = {}
    for name in list_models():
        table.update(model_info(name).weights())
    return table


def resolve_weights_file(weights: Weights, explicit: Path | None = None,
                         allow_network: bool = False, progress: bool = True,
                         verify: bool | None = None) -> Path:
    """The local file of ``weights``: the explicit file, else the hub cache, else a download.

    Args:
        weights: The published weights wanted.
        explicit: A file the user points at (``--weights FILE``); it must exist.
        allow_network: Download into the hub cache when the file is not there. When False,
            nothing touches the network and a missing file fails at once.
        progress: Show torch's download progress bar on stderr.
        verify: Check the sha256 (when the record has one). None: check explicit files and
            downloads, trust the cache; True: check the cached file too; False: never.

    Returns:
        The path of the file to load.

    Raises:
        WeightsNotFoundError: ``explicit`` does not exist.
        OfflineWeightsError: not cached, and the network is not allowed (or the download failed).
        ChecksumError: the file is not the published one.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsNotFoundError(f"The weights file {path} does not exist.")
        if verify is not False:
            verify_sha256(path, weights)
        return path
    cached = cached_weights_path(weights)
    if cached is not None:
        if verify:
            verify_sha256(cached, weights)
        return cached
    if not allow_network or not weights.url:
        raise OfflineWeightsError(_offline_message(weights))
    return _download(weights, progress)


def _offline_message(weights: Weights, reason: str = "") -> str:
    folder = hub_checkpoints_dir()
    where = f" (download it from {weights.url})" if weights.url else ""
    why = f": {reason}" if reason else " and SegStudio does not use the network unless allowed"
    return (f"The weights {weights.name} are not on this machine{why}. Place the file "
            f"{weights.file_name}{where} in {folder} ($TORCH_HOME/hub/checkpoints), "
            f"or pass it with --weights FILE.")


def _download(weights: Weights, progress: bool) -> Path:
    dst = hub_checkpoints_dir() / weights.file_name
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:  # writes a temporary file, checks the hash, then moves it into place
        torch.hub.download_url_to_file(weights.url, str(dst), hash_prefix=weights.sha256,
                                       progress=progress)
    except RuntimeError as err:
        if "hash" in str(err).lower():
            raise ChecksumError(f"The download of {weights.name} from {weights.url} is not the "
                                f"published file (sha256 mismatch); it was not kept.") from err
        raise OfflineWeightsError(_offline_message(weights, f"the download failed ({err})")) from err
    except OSError as err:  # URLError, HTTPError, timeouts, disk full
        raise OfflineWeightsError(_offline_message(weights, f"the download failed ({err})")) from err
    return dst


def file_sha256(path: Path) -> str:
    """Hex sha256 digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, weights: Weights) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the digest (or prefix) of ``weights``."""
    if not weights.sha256:
        return
    expected = weights.sha256.lower()
    actual = file_sha256(path)
    if not actual.startswith(expected):
        raise ChecksumError(
            f"{path} is not the published {weights.name} file (its sha256 starts with "
            f"{actual[:len(expected)]}, expected {expected}). To use your own weights, load the "
            f"file as a checkpoint instead of as {weights.name}.")


def install_weights_file(weights: Weights, source: Path, verify: bool = True) -> Path:
    """Copy a user's file of ``weights`` into the hub cache (checked first); returns its path."""
    path = resolve_weights_file(weights, explicit=source, verify=verify)
    dst = hub_checkpoints_dir() / weights.file_name
    dst.parent.mkdir(parents=True, exist_ok=True)
    if path.resolve() != dst.resolve():
        temp = dst.with_name(f".{dst.name}.part")
        shutil.copyfile(path, temp)
        temp.replace(dst)
    return dst


# -- building a model with weights -------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A model ready to run, with what inference and the GUI need to know about it.

    Attributes:
        module: The ``nn.Module`` in eval mode, on the CPU.
        model: Registered model name.
        classes: Class names in output-channel order.
        in_channels: Channels the model expects.
        mean, std: Per-channel normalisation applied after scaling pixels to [0, 1].
        weights_name: The weights record name, or the file name; None for random weights.
        weights_source: ``"random"``, a record's source (``"torchvision"``...), ``"checkpoint"``
            (a SegStudio checkpoint) or ``"state_dict"`` (a plain state dict file).
        weights_path: The file the weights came from, if any.
        model_kwargs: Builder options used.
        meta: The checkpoint's meta data (epoch, metrics, ...), if any.
    """

    module: nn.Module
    model: str
    classes: tuple[str, ...]
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_name: str | None = None
    weights_source: str = "random"
    weights_path: Path | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def label(self) -> str:
        """One line for the GUI: ``"unet (checkpoint best.pt)"``."""
        if self.weights_name is None:
            return f"{self.model} (random weights)"
        return f"{self.model} ({self.weights_source} {self.weights_name})"


def default_normalisation(in_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet statistics for RGB input; otherwise 0.5 / 0.5 per channel (maps [0, 1] to [-1, 1])."""
    if in_channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.5,) * in_channels, (0.5,) * in_channels


def load_model(name: str, *, weights: str | Path | None = None, num_classes: int | None = None,
               in_channels: int | None = None, allow_network: bool = False, progress: bool = True,
               **model_kwargs: Any) -> LoadedModel:
    """Build the registered model ``name`` and load weights into it.

    Args:
        name: Registered model name.
        weights: None (random weights: ``num_classes`` required), a published weights name
            (``"fcn_resnet50.coco_voc"``), or the path of a SegStudio checkpoint or state dict.
        num_classes: Output classes; checked against the weights when they fix it.
        in_channels: Input channels (default 3); checked against the weights when they fix it.
        allow_network: Allow downloading published weights missing from the cache.
        progress: Show the download progress bar.
        **model_kwargs: Builder options (a checkpoint's own options are used unless overridden).

    Returns:
        The module in eval mode with its classes and normalisation.

    Raises:
        UnknownModelError, WeightsNotFoundError, OfflineWeightsError, WeightsMismatchError,
        UnsafeCheckpointError, CorruptFileError, ChecksumError.
    """
    info = model_info(name)
    if weights is None:
        if num_classes is None:
            raise ValueError(f"{name}: random weights need num_classes")
        channels = 3 if in_channels is None else in_channels
        module = info.build(num_classes=num_classes, in_channels=channels, **model_kwargs)
        mean, std = default_normalisation(channels)
        return _ready(module, name, [f"class {i}" for i in range(num_classes)], channels,
                      mean, std, model_kwargs=model_kwargs)
    record = _published(info, weights)
    if record is not None:
        return _load_published(info, record, num_classes, in_channels, allow_network, progress,
                               model_kwargs)
    path = Path(weights).expanduser()
    obj = safe_torch_load(path)
    if is_segstudio_checkpoint(obj):
        return _load_checkpoint(info, checkpoint_from_dict(obj, path), num_classes,
                                in_channels, model_kwargs)
    return _load_state_dict_file(info, path, obj, num_classes, in_channels, model_kwargs)


def _published(info: ModelInfo, weights: str | Path) -> Weights | None:
    """The record named ``weights``: None when it names a file; a mismatch if for another model."""
    if not isinstance(weights, str):
        return None
    own = info.weights()
    if weights in own:
        return own[weights]
    path = Path(weights).expanduser()
    if path.exists() or path.suffix.lower() in _FILE_SUFFIXES or len(path.parts) > 1:
        return None  # a file (missing ones are reported by safe_torch_load)
    other = all_weights().get(weights)
    if other is not None:
        raise WeightsMismatchError(f"The weights {weights} are for {other.model}; asked for "
                                   f"{info.name}.")
    known = ", ".join(own) or "none"
    raise WeightsNotFoundError(f"{weights} is neither a weights file nor a published weights "
                               f"name of {info.name} (published: {known}).")


def _load_published(info: ModelInfo, record: Weights, num_classes: int | None,
                    in_channels: int | None, allow_network: bool, progress: bool,
                    model_kwargs: dict[str, Any]) -> LoadedModel:
    _check_fixed(f"the weights {record.name} are", info.name, record.num_classes,
                 record.in_channels, num_classes, in_channels, info.name)
    path = resolve_weights_file(record, allow_network=allow_network, progress=progress)
    state = safe_torch_load(path)
    if is_segstudio_checkpoint(state):  # a "trained" record points at a SegStudio checkpoint
        state = state.get("state_dict")
    module = info.build(num_classes=record.num_classes, in_channels=record.in_channels,
                        **model_kwargs)
    state = _as_state_dict(state, path)
    own = module.state_dict()  # built with aux_loss=False: the official aux head is not needed
    state = {k: v for k, v in state.items() if k in own or not k.startswith("aux_classifier.")}
    _load_state(module, state, f"{path.name} ({record.name})", info.name)
    return _ready(module, info.name, list(record.classes), record.in_channels, record.mean,
                  record.std, record.name, record.source, path, model_kwargs)


def _load_checkpoint(info: ModelInfo, checkpoint: Checkpoint, num_classes: int | None,
                     in_channels: int | None, model_kwargs: dict[str, Any]) -> LoadedModel:
    path = checkpoint.path
    _check_fixed(f"{path} is a checkpoint", checkpoint.model, checkpoint.num_classes,
                 checkpoint.in_channels, num_classes, in_channels, info.name)
    kwargs = {**checkpoint.model_kwargs, **model_kwargs}
    module = info.build(num_classes=checkpoint.num_classes, in_channels=checkpoint.in_channels,
                        **kwargs)
    _load_state(module, checkpoint.state_dict, path.name, info.name)
    return _ready(module, info.name, checkpoint.classes, checkpoint.in_channels, checkpoint.mean,
                  checkpoint.std, path.name, "checkpoint", path, kwargs, checkpoint.meta)


def _check_fixed(what: str, model: str, classes: int, channels: int, num_classes: int | None,
                 in_channels: int | None, asked_model: str) -> None:
    """Refuse weights fixed for (model, classes, channels) when another was asked for."""
    wrong_model = model != asked_model
    wrong_classes = num_classes is not None and num_classes != classes
    wrong_channels = in_channels is not None and in_channels != channels
    if wrong_model or wrong_classes or wrong_channels:
        have = f"{model} with {_sizes(classes, channels)}"
        asked = f"{asked_model} with " + _sizes(
            classes if num_classes is None else num_classes,
            channels if in_channels is None else in_channels)
        raise WeightsMismatchError(f"{what} for {have}; asked for {asked}.")


def _sizes(classes: int, channels: int) -> str:
    return (f"{classes} class{'es' if classes != 1 else ''} and {channels} input "
            f"channel{'s' if channels != 1 else ''}")


def _load_state_dict_file(info: ModelInfo, path: Path, obj: Any, num_classes: int | None,
                          in_channels: int | None, model_kwargs: dict[str, Any]) -> LoadedModel:
    state = _as_state_dict(obj, path)
    inferred_classes, inferred_channels = infer_sizes(info, state, model_kwargs)
    classes = num_classes if num_classes is not None else inferred_classes
    channels = in_channels if in_channels is not None else (inferred_channels or 3)
    if classes is None:
        raise WeightsMismatchError(f"The number of classes of {path} cannot be found from its "
                                   f"tensors; give num_classes.")
    module = info.build(num_classes=classes, in_channels=channels, **model_kwargs)
    _load_state(module, state, path.name, info.name)
    mean, std = default_normalisation(channels)
    return _ready(module, info.name, [f"class {i}" for i in range(classes)], channels, mean, std,
                  path.name, "state_dict", path, model_kwargs)


def _as_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A mapping of names to tensors; a ``module.`` prefix (DataParallel) is dropped."""
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise UnsupportedFormatError(f"{path} is neither a SegStudio checkpoint nor a state dict "
                                     f"(a mapping of parameter names to tensors).")
    if all(k.startswith("module.") for k in obj):
        return {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def infer_sizes(info: ModelInfo, state: Mapping[str, torch.Tensor],
                model_kwargs: dict[str, Any]) -> tuple[int | None, int | None]:
    """(num_classes, in_channels) that ``state`` was trained with, read from its tensor shapes.

    Builds the model twice on the meta device (no memory, no time) with sizes 1 and 2 and finds
    the tensors whose shapes follow each size; None for a size no tensor reveals.
    """
    found = []
    for key in ("num_classes", "in_channels"):
        base = {"num_classes": 2, "in_channels": 3}
        shapes = [_shapes(info, {**base, key: size}, model_kwargs) for size in (1, 2)]
        values = set()
        for name, shape_1 in shapes[0].items():
            shape_2 = shapes[1].get(name)
            if shape_2 is None or shape_1 == shape_2 or name not in state:
                continue
            if len(shape_1) != len(shape_2) or len(shape_1) != state[name].dim():
                continue
            for a, b, theirs in zip(shape_1, shape_2, state[name].shape, strict=True):
                step, offset = b - a, 2 * a - b  # the dimension holds step * size + offset
                if step > 0 and (theirs - offset) % step == 0:
                    values.add((theirs - offset) // step)
        found.append(values.pop() if len(values) == 1 else None)
    return found[0], found[1]


def _shapes(info: ModelInfo, sizes: dict[str, int],
            model_kwargs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    try:
        with torch.device("meta"):
            module = info.build(**sizes, **model_kwargs)
    except Exception:  # a builder that computes on tensors at build time: build it for real
        module = info.build(**sizes, **model_kwargs)
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _load_state(module: nn.Module, state: Mapping[str, torch.Tensor], what: str,
                model: str) -> None:
    """``load_state_dict(strict=True)``, with a readable :class:`WeightsMismatchError`."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    resized = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
               if k in state and state[k].shape != v.shape]
    problems = []
    if resized:
        key, theirs, ours = resized[0]
        problems.append(f"{len(resized)} tensors of another shape (e.g. {key}: {list(theirs)} in "
                        f"the file, {list(ours)} in the model)")
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if problems:
        raise WeightsMismatchError(f"{what} does not fit the {model} model built here: "
                                   f"{'; '.join(problems)}.")
    module.load_state_dict(state, strict=True)


def _ready(module: nn.Module, name: str, classes: list[str], in_channels: int,
           mean: tuple[float, ...] | list[float], std: tuple[float, ...] | list[float],
           weights_name: str | None = None, source: str = "random", path: Path | None = None,
           model_kwargs: dict[str, Any] | None = None,
           meta: dict[str, Any] | None = None) -> LoadedModel:
    module.eval()
    if len(mean) != in_channels or len(std) != in_channels or not all(
            math.isfinite(s) and s > 0 for s in std):
        raise CorruptFileError(f"{name}: normalisation {list(mean)} / {list(std)} does not fit "
                               f"{in_channels} input channels.")
    return LoadedModel(module, name, tuple(classes), in_channels, tuple(mean), tuple(std),
                       weights_name, source, path, dict(model_kwargs or {}), dict(meta or {}))


__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "Checkpoint", "ChecksumError", "LoadedModel",
    "OfflineWeightsError", "UnsafeCheckpointError", "WeightsMismatchError",
    "WeightsNotFoundError", "all_weights", "cached_weights_path", "default_normalisation",
    "file_sha256", "hub_checkpoints_dir", "infer_sizes", "install_weights_file",
    "is_segstudio_checkpoint", "load_model", "read_checkpoint", "resolve_weights_file",
    "safe_torch_load", "save_checkpoint", "verify_sha256", "weights_status",
]
