"""Run an instance segmentation model (Mask R-CNN) on an image, whole or in tiles.

::

    loaded = load_model("maskrcnn_resnet50_fpn", weights="maskrcnn_resnet50_fpn.coco")
    prediction = predict_instances(loaded, image, InstanceSettings(score_threshold=0.5))
    prediction.instance_map      # (H, W) uint32: 0 background, k + 1 = instance k
    prediction.labels, prediction.scores, prediction.boxes, prediction.class_names
    to_coco_results(prediction, image_id=1)   # COCO "results" dicts with RLE masks

The model is anything with torchvision's detection interface: called with a list of (C, H, W)
float images in [0, 1], it returns one dict per image with ``boxes`` (N, 4) x0, y0, x1, y1,
``labels`` (N,), ``scores`` (N,) and ``masks`` (N, 1, H, W) mask probabilities.

Result, memory-sane for large images: one uint32 instance map instead of N full-size masks.
Instance ids are 1..N in decreasing score; where masks overlap, the higher score wins (the
lower one keeps only its visible pixels, and an instance left with no pixel is dropped).
While merging, each detection keeps only its mask cropped to its own extent.

Per detection, in this order: the score filter (``score >= score_threshold``), the class filter
(``labels in classes``), the mask threshold (``probability >= mask_threshold``; an empty mask
drops the detection). The model's own floors (torchvision: ``box_score_thresh`` 0.05 and
``box_detections_per_img`` 100 per image or tile) are lowered/raised for the run when the
settings go beyond them.

Tiled inference (``tile`` set and the image larger than one tile): windows of ``tile`` pixels
overlapping by ``overlap`` of a tile (:func:`core.inference.tiling.window_grid`) run one at a
time; their detections are shifted to image coordinates and then merged:

1. **Mask merge across tiles.** Two detections of the same class from different tiles are one
   object when, inside the band both tiles saw (the intersection of the two windows), their
   masks have an IoU >= ``merge_iou``. In that band both tiles looked at the same pixels, so
   two views of one object agree there, while two neighbouring objects do not overlap at all.
   Merging is transitive (an object across three tiles becomes one); the merged instance has
   the union of the masks, the union of the boxes and the highest score. IoU rather than
   "overlap over the smaller area": the latter would also swallow a small object whose mask
   lies inside a larger one's (occlusion). With ``overlap=0`` there is no band and nothing is
   merged: an object cut by a tile border comes out in pieces.
2. **Box NMS.** ``torchvision.ops.batched_nms`` (per class, IoU ``nms_iou``) over all the
   (merged) detections, which removes the duplicates the mask merge did not join.
3. Sorted by score, at most ``max_detections`` kept, painted into the instance map.

A whole-image run goes through the same steps (step 1 then has nothing to merge). Note that
torchvision's detection models resize every image or tile themselves (``min_size`` 800,
``max_size`` 1333 by default): a 512-pixel tile is enlarged to 800 pixels before it is seen, so
with the COCO weights tiles of 800-1333 pixels keep objects at the scale they were trained on.

Device and precision as in the semantic engine: ``"auto"`` picks a CUDA GPU, else MPS, else the
CPU, with autocast on the GPU (:func:`core.inference.device.autocast_context`). Out of GPU
memory, the run is redone on the CPU (written to ``notes``). ``report(done, total)`` counts
tiles; ``cancel`` is checked before each tile.

torch is imported inside the functions (importing ``core`` must not load torch).
"""

from __future__ import annotations

import contextlib
import copy
import threading
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from core.inference.device import (
    AMP_DTYPES,
    autocast_context,
    device_label,
    is_out_of_memory,
    release_cached_memory,
    select_device,
)
from core.inference.errors import InferenceCancelled, InferenceError, InferenceOutOfMemoryError
from core.inference.preprocess import UINT16_SCALINGS, prepare_input
from core.inference.tiling import CancelToken, ReportFn, Window, window_grid

if TYPE_CHECKING:
    import torch
    from torch import nn

    from core.inference.engine import InferenceEngine
    from core.models.loading import LoadedModel

MIN_TILE = 32


@dataclass
class InstanceSettings:
    """How instance models are run and their detections kept.

    Attributes:
        score_threshold: Detections scoring below this are dropped.
        mask_threshold: A pixel belongs to a detection where its mask probability is >= this.
        max_detections: At most this many instances (the highest scores).
        classes: Labels to keep (None: all).
        tile: Side of the square tiles in pixels; None (or an image that fits) runs whole.
        overlap: Fraction of a tile shared with its neighbours, in [0, 1); objects cut by a
            tile border are merged inside that band (see the module docstring).
        nms_iou: Box IoU above which the lower-scoring detection of a class is removed.
        merge_iou: Mask IoU, inside the band two tiles share, from which two detections of the
            same class are merged into one instance.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (``"cuda:N"``) or ``"mps"``.
        amp: Mixed precision on the GPU.
        amp_dtype: ``"float16"`` or ``"bfloat16"``.
        uint16_scaling: ``"percentile"`` or ``"full"`` (see :mod:`core.inference.preprocess`).
    """

    score_threshold: float = 0.5
    mask_threshold: float = 0.5
    max_detections: int = 100
    classes: set[int] | None = None
    tile: int | None = None
    overlap: float = 0.25
    nms_iou: float = 0.5
    merge_iou: float = 0.5
    device: str = "auto"
    amp: bool = True
    amp_dtype: str = "float16"
    uint16_scaling: str = "percentile"

    def __post_init__(self) -> None:
        for name in ("score_threshold", "mask_threshold", "nms_iou", "merge_iou"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {value}")
        if self.max_detections < 1:
            raise ValueError(f"max_detections must be >= 1, not {self.max_detections}")
        if self.tile is not None and self.tile < MIN_TILE:
            raise ValueError(f"tile must be >= {MIN_TILE} pixels (or None), not {self.tile}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), not {self.overlap}")
        if self.amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {AMP_DTYPES}, not {self.amp_dtype!r}")
        if self.uint16_scaling not in UINT16_SCALINGS:
            raise ValueError(f"uint16_scaling must be one of {UINT16_SCALINGS}, "
                             f"not {self.uint16_scaling!r}")
        if self.classes is not None:
            self.classes = {int(c) for c in self.classes}


@dataclass
class InstancePrediction:
    """The instances a model found in an image.

    Attributes:
        instance_map: (H, W) uint32; 0 is background, ``k + 1`` is instance ``k``. Where
            instances overlap, the higher score (lower id) owns the pixel.
        labels: (N,) int64 class labels (indices into ``class_names``).
        scores: (N,) float32, decreasing.
        boxes: (N, 4) float32 ``x0, y0, x1, y1`` in image pixels (the model's boxes; the union
            of them for an instance merged across tiles).
        class_names: The model's class names, index = label.
        device: The device that produced it.
        notes: What happened on the way, in sentences to show.
    """

    instance_map: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    class_names: list[str]
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)

    @property
    def num_instances(self) -> int:
        return int(self.labels.shape[0])

    def mask(self, index: int) -> np.ndarray:
        """(H, W) bool pixels of instance ``index`` (0-based; id ``index + 1`` in the map)."""
        if not 0 <= index < self.num_instances:
            raise IndexError(f"instance {index} of {self.num_instances}")
        return self.instance_map == index + 1

    def masks(self) -> np.ndarray:
        """(N, H, W) bool, one mask per instance (N full-size masks: for small images)."""
        ids = np.arange(1, self.num_instances + 1, dtype=np.uint32)
        return self.instance_map[None] == ids[:, None, None]

    def class_name(self, index: int) -> str:
        label = int(self.labels[index])
        return self.class_names[label] if 0 <= label < len(self.class_names) else str(label)


@dataclass
class _Detection:
    """One detection in image coordinates, its mask kept as a crop at (y0, x0)."""

    label: int
    score: float
    box: np.ndarray  # (4,) float32 x0, y0, x1, y1
    window: int  # index of the tile it came from (-1 once merged)
    y0: int
    x0: int
    crop: np.ndarray  # (h, w) bool, tight around the mask

    @property
    def y1(self) -> int:
        return self.y0 + self.crop.shape[0]

    @property
    def x1(self) -> int:
        return self.x0 + self.crop.shape[1]


# -- running ------------------------------------------------------------------------------------
def predict_instances(loaded_model: LoadedModel, image: np.ndarray,
                      settings: InstanceSettings | None = None, report: ReportFn | None = None,
                      cancel: CancelToken | None = None,
                      engine: InferenceEngine | None = None) -> InstancePrediction:
    """Find the instances in ``image`` with an instance segmentation model.

    Args:
        loaded_model: A :class:`~core.models.loading.LoadedModel` of an instance model (or any
            object with ``module``, ``classes``, ``in_channels``, ``mean`` and ``std`` whose
            module has torchvision's detection interface).
        image: (H, W) grey or (H, W, 3|4) RGB(A); uint8, uint16 or float (see
            :mod:`core.inference.preprocess`; grey is repeated to RGB).
        settings: Thresholds, filters, tiling and device (defaults: :class:`InstanceSettings`).
        report: ``report(done, total)`` in tiles: ``(0, total)`` first, then after each tile.
        cancel: Checked before each tile.
        engine: An :class:`~core.inference.engine.InferenceEngine` whose cache of modules on
            devices to use (a GPU run then does not copy the weights every time).

    Returns:
        The :class:`InstancePrediction`.

    Raises:
        InferenceCancelled: ``cancel`` was set.
        DeviceUnavailableError: The device in the settings does not exist here.
        ChannelMismatchError: The image's channels do not fit the model.
        InferenceOutOfMemoryError: Even the CPU ran out of memory.
        InferenceError: Not an instance model, or its output is not torchvision's.
    """
    settings = settings if settings is not None else InstanceSettings()
    _check_instance_model(loaded_model)
    tensor = prepare_input(image, loaded_model.in_channels, None, None, settings.uint16_scaling)
    tensor = _match_module_normalisation(tensor[0], loaded_model)
    height, width = tensor.shape[-2:]
    if settings.tile is None or (height <= settings.tile and width <= settings.tile):
        windows = [Window(0, 0, height, width)]
    else:
        windows = window_grid(height, width, settings.tile, settings.overlap)

    device = select_device(settings.device)
    notes: list[str] = []
    while True:
        try:
            detections = _detect(loaded_model, tensor, windows, device, settings, report,
                                 cancel, engine)
            break
        except Exception as err:  # anything but a device out of memory is re-raised
            if isinstance(err, MemoryError) or (
                    isinstance(err, RuntimeError) and "can't allocate memory" in str(err)):
                raise InferenceOutOfMemoryError(
                    f"The computer ran out of memory finding instances in a {width}x{height} "
                    f"image; close other programs or use tiles.") from err
            if device.type == "cpu" or not is_out_of_memory(err):
                raise
        release_cached_memory(device)
        notes.append(f"{device_label(device)} out of memory: fell back to the CPU.")
        device = _cpu()
    merged = merge_tile_detections(detections, windows, settings.merge_iou)
    kept = _nms(merged, settings.nms_iou)
    return _paint(kept[:settings.max_detections], (height, width), list(loaded_model.classes),
                  str(device), notes)


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


def _check_instance_model(loaded: Any) -> None:
    from core.models.registry import UnknownModelError, model_info

    name = getattr(loaded, "model", None)
    try:
        task = model_info(str(name)).task
    except UnknownModelError:
        return  # a model built outside the registry: its output is checked instead
    if task != "instance":
        raise InferenceError(f"{name} is a {task} model, not an instance segmentation model.")


def _match_module_normalisation(image: torch.Tensor, loaded: Any) -> torch.Tensor:
    """(C, H, W) pixels in [0, 1], changed so the module's own normalisation gives the model's.

    torchvision's detection models normalise inside (``module.transform``: ``image_mean``,
    ``image_std``). When the loaded model's normalisation (a checkpoint's) differs, the pixels
    become ``(x - mean) / std * image_std + image_mean``, which the module turns back into
    ``(x - mean) / std``.
    """
    import torch

    transform = getattr(loaded.module, "transform", None)
    inner_mean = getattr(transform, "image_mean", None)
    inner_std = getattr(transform, "image_std", None)
    if inner_mean is None or inner_std is None:
        return image
    channels = image.shape[0]
    mean, std, inner_mean, inner_std = (
        torch.as_tensor(np.broadcast_to(np.asarray(v, np.float32).reshape(-1), (channels,)).copy())
        for v in (loaded.mean, loaded.std, inner_mean, inner_std))
    if torch.equal(mean, inner_mean) and torch.equal(std, inner_std):
        return image
    scale = (inner_std / std)[:, None, None]
    return image.sub_(mean[:, None, None]).mul_(scale).add_(inner_mean[:, None, None])


def _module_on(loaded: Any, device: torch.device, engine: InferenceEngine | None) -> nn.Module:
    if engine is not None:
        return engine.module_on(loaded, device)
    module = loaded.module
    on_cpu = all(p.device.type == "cpu" for p in module.parameters())
    if device.type != "cpu" or not on_cpu:
        module = copy.deepcopy(module).to(device)  # the CPU original stays usable
    return module.eval()


_LIMIT_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LIMIT_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def _model_limits(module: Any, settings: InstanceSettings) -> Iterator[None]:
    """Lower the model's score floor and raise its per-image cap to the settings', for a run."""
    heads = getattr(module, "roi_heads", None)
    if heads is None or not hasattr(heads, "score_thresh") or not hasattr(
            heads, "detections_per_img"):
        yield
        return
    with _LIMIT_LOCKS_GUARD:
        lock = _LIMIT_LOCKS.setdefault(module, threading.Lock())
    with lock:
        saved = heads.score_thresh, heads.detections_per_img
        heads.score_thresh = min(saved[0], settings.score_threshold)
        heads.detections_per_img = max(saved[1], settings.max_detections)
        try:
            yield
        finally:
            heads.score_thresh, heads.detections_per_img = saved


def _detect(loaded: Any, image: torch.Tensor, windows: list[Window], device: torch.device,
            settings: InstanceSettings, report: ReportFn | None, cancel: CancelToken | None,
            engine: InferenceEngine | None) -> list[_Detection]:
    import torch

    module = _module_on(loaded, device, engine)
    total = len(windows)
    if report is not None:
        report(0, total)
    detections: list[_Detection] = []
    with _model_limits(module, settings), torch.inference_mode():
        for index, window in enumerate(windows):
            if cancel is not None and cancel.is_set():
                raise InferenceCancelled("Inference cancelled.")
            tile = image[:, window.y:window.y + window.height, window.x:window.x + window.width]
            with autocast_context(device, settings.amp, settings.amp_dtype):
                outputs = module([tile.to(device)])
            detections += _tile_detections(outputs, window, index, settings)
            if report is not None:
                report(index + 1, total)
    return detections


def _tile_detections(outputs: Any, window: Window, index: int,
                     settings: InstanceSettings) -> list[_Detection]:
    """The kept detections of one tile's model output, in image coordinates."""
    import torch

    out = _check_output(outputs, window)
    scores = out["scores"].float()
    labels = out["labels"].long()
    keep = scores >= settings.score_threshold
    if settings.classes is not None:
        wanted = torch.tensor(sorted(settings.classes), dtype=labels.dtype, device=labels.device)
        keep &= torch.isin(labels, wanted)
    keep_idx = torch.nonzero(keep).flatten()
    if keep_idx.numel() == 0:
        return []
    masks = (out["masks"][keep_idx, 0] >= settings.mask_threshold).cpu().numpy()
    scores_np = scores[keep_idx].cpu().numpy()
    labels_np = labels[keep_idx].cpu().numpy()
    boxes_np = out["boxes"][keep_idx].float().cpu().numpy()
    shift = np.array([window.x, window.y, window.x, window.y], np.float32)
    found = []
    for mask, score, label, box in zip(masks, scores_np, labels_np, boxes_np, strict=True):
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            continue  # nothing above the mask threshold: no instance to draw
        cols = np.flatnonzero(mask.any(axis=0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        found.append(_Detection(int(label), float(score), box.astype(np.float32) + shift, index,
                                int(y0 + window.y), int(x0 + window.x),
                                np.ascontiguousarray(mask[y0:y1, x0:x1])))
    return found


def _check_output(outputs: Any, window: Window) -> dict[str, torch.Tensor]:
    import torch

    expected = f"a list with one dict of boxes, labels, scores and masks (n, 1, {window.height}, " \
               f"{window.width})"
    if not isinstance(outputs, Sequence) or len(outputs) != 1 or not isinstance(outputs[0], dict):
        raise InferenceError(f"The model returned {type(outputs).__name__}; expected {expected}.")
    out = outputs[0]
    if not all(isinstance(out.get(k), torch.Tensor)
               for k in ("boxes", "labels", "scores", "masks")):
        raise InferenceError(f"The model returned a dict of {sorted(out)}; expected {expected}.")
    count = out["scores"].shape[0]
    masks = out["masks"]
    if (masks.ndim != 4 or masks.shape[0] != count or masks.shape[1] != 1
            or tuple(masks.shape[-2:]) != (window.height, window.width)
            or tuple(out["boxes"].shape) != (count, 4) or out["labels"].shape[0] != count):
        raise InferenceError(f"The model returned masks of shape {tuple(masks.shape)} for {count} "
                             f"detections; expected {expected}.")
    return out


# -- merging across tiles -------------------------------------------------------------------------
def merge_tile_detections(detections: list[_Detection], windows: Sequence[Window],
                          merge_iou: float = 0.5) -> list[_Detection]:
    """Join the detections of one object seen by several tiles (rule: the module docstring).

    Two detections are joined when they come from different tiles, have the same label, and
    their masks' IoU inside the intersection of the two tiles is >= ``merge_iou``. Joined groups
    (transitively) become one detection: union of the masks and boxes, highest score.
    """
    count = len(detections)
    if count < 2:
        return list(detections)
    parent = list(range(count))
    labels = np.array([d.label for d in detections])
    tiles = np.array([d.window for d in detections])
    extents = np.array([(d.y0, d.x0, d.y1, d.x1) for d in detections])

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a in range(count - 1):
        da = detections[a]
        y0, x0, y1, x1 = extents[a]
        rest = extents[a + 1:]
        # Candidates: same label, another tile, and mask extents that meet (vectorised, so a
        # large image's thousands of detections do not cost a Python loop over every pair).
        candidates = np.flatnonzero(
            (labels[a + 1:] == da.label) & (tiles[a + 1:] != da.window)
            & (rest[:, 0] < y1) & (rest[:, 2] > y0) & (rest[:, 1] < x1) & (rest[:, 3] > x0))
        for b in (candidates + a + 1).tolist():
            db = detections[b]
            if find(a) == find(b):
                continue
            iou = _band_iou(da, db, windows[da.window], windows[db.window])
            if iou > 0 and iou >= merge_iou:
                parent[find(b)] = find(a)
    groups: dict[int, list[_Detection]] = {}
    for i, det in enumerate(detections):
        groups.setdefault(find(i), []).append(det)
    return [group[0] if len(group) == 1 else _union(group) for group in groups.values()]


def _band_iou(a: _Detection, b: _Detection, wa: Window, wb: Window) -> float:
    """IoU of two masks inside the intersection of their windows (0 when they do not meet)."""
    # The band, cut down to where either mask has pixels (the rest counts for neither).
    y0 = max(wa.y, wb.y, min(a.y0, b.y0))
    x0 = max(wa.x, wb.x, min(a.x0, b.x0))
    y1 = min(wa.y + wa.height, wb.y + wb.height, max(a.y1, b.y1))
    x1 = min(wa.x + wa.width, wb.x + wb.width, max(a.x1, b.x1))
    if y1 <= y0 or x1 <= x0 or max(a.y0, b.y0) >= min(a.y1, b.y1) \
            or max(a.x0, b.x0) >= min(a.x1, b.x1):
        return 0.0  # no band, or the masks' extents do not even meet
    ma = _paste(a, y0, x0, y1, x1)
    mb = _paste(b, y0, x0, y1, x1)
    union = np.count_nonzero(ma | mb)
    return np.count_nonzero(ma & mb) / union if union else 0.0


def _paste(det: _Detection, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    """``det``'s mask on the rectangle [y0, y1) x [x0, x1) of the image."""
    out = np.zeros((y1 - y0, x1 - x0), bool)
    ty0, tx0 = max(y0, det.y0), max(x0, det.x0)
    ty1, tx1 = min(y1, det.y1), min(x1, det.x1)
    if ty1 > ty0 and tx1 > tx0:
        out[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0] = \
            det.crop[ty0 - det.y0:ty1 - det.y0, tx0 - det.x0:tx1 - det.x0]
    return out


def _union(group: list[_Detection]) -> _Detection:
    y0, x0 = min(d.y0 for d in group), min(d.x0 for d in group)
    y1, x1 = max(d.y1 for d in group), max(d.x1 for d in group)
    crop = np.zeros((y1 - y0, x1 - x0), bool)
    for d in group:
        crop[d.y0 - y0:d.y1 - y0, d.x0 - x0:d.x1 - x0] |= d.crop
    boxes = np.stack([d.box for d in group])
    box = np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)]).astype(np.float32)
    return _Detection(group[0].label, max(d.score for d in group), box, -1, y0, x0, crop)


def _nms(detections: list[_Detection], iou: float) -> list[_Detection]:
    """Per-class box NMS (``torchvision.ops.batched_nms``); the kept ones by decreasing score."""
    if not detections:
        return []
    import torch
    from torchvision.ops import batched_nms

    boxes = torch.from_numpy(np.stack([d.box for d in detections]).astype(np.float32))
    scores = torch.tensor([d.score for d in detections], dtype=torch.float32)
    labels = torch.tensor([d.label for d in detections], dtype=torch.int64)
    keep = batched_nms(boxes, scores, labels, iou)  # sorted by decreasing score
    return [detections[i] for i in keep.tolist()]


def _paint(detections: list[_Detection], shape: tuple[int, int], class_names: list[str],
           device: str, notes: list[str]) -> InstancePrediction:
    """The instance map, higher scores first; instances left without a pixel are dropped."""
    instance_map = np.zeros(shape, np.uint32)
    kept: list[_Detection] = []
    for det in detections:
        region = instance_map[det.y0:det.y1, det.x0:det.x1]
        free = det.crop & (region == 0)
        if not free.any():
            continue
        kept.append(det)
        region[free] = len(kept)
    if len(kept) < len(detections):
        notes.append(f"{len(detections) - len(kept)} detection(s) hidden entirely by "
                     f"higher-scoring ones were dropped.")
    return InstancePrediction(
        instance_map=instance_map,
        labels=np.array([d.label for d in kept], np.int64),
        scores=np.array([d.score for d in kept], np.float32),
        boxes=np.array([d.box for d in kept], np.float32).reshape(-1, 4),
        class_names=class_names, device=device, notes=notes)


# -- COCO results --------------------------------------------------------------------------------
def to_coco_results(prediction: InstancePrediction, image_id: int) -> list[dict[str, Any]]:
    """The instances as COCO detection results (the list ``COCO.loadRes`` reads).

    Each: ``{"image_id", "category_id": label, "segmentation": {"size": [H, W], "counts": str}
    (compressed RLE, as ``pycocotools.mask.encode`` makes it), "bbox": [x, y, w, h], "score"}``,
    in instance order. The RLE of each instance is built from its own extent in the instance
    map (no full-size mask per instance), then compressed by pycocotools.
    """
    from pycocotools import mask as mask_utils
    from scipy import ndimage

    height, width = prediction.instance_map.shape
    slices = ndimage.find_objects(prediction.instance_map, max_label=prediction.num_instances)
    results = []
    for index in range(prediction.num_instances):
        where = slices[index]
        if where is None:
            counts = [height * width]
        else:
            crop = prediction.instance_map[where] == index + 1
            counts = _column_major_runs(crop, where[0].start, where[1].start, height, width)
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        x0, y0, x1, y1 = (float(v) for v in prediction.boxes[index])
        results.append({
            "image_id": int(image_id),
            "category_id": int(prediction.labels[index]),
            "segmentation": {"size": [int(height), int(width)],
                             "counts": rle["counts"].decode("ascii")},
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "score": float(prediction.scores[index]),
        })
    return results


def _column_major_runs(crop: np.ndarray, y0: int, x0: int, height: int,
                       width: int) -> list[int]:
    """COCO's uncompressed RLE counts (column-major runs: zeros, ones, zeros...) of a
    ``height`` x ``width`` mask whose only foreground is ``crop`` at (y0, x0), exactly as
    ``pycocotools.mask.encode`` counts them (first run of zeros possibly 0, the last run up to
    the last pixel)."""
    crop_h = crop.shape[0]
    flat = np.flatnonzero(crop.T)  # the crop's pixels in column-major order
    cols, rows = np.divmod(flat, crop_h)
    index = (cols + x0).astype(np.int64) * height + (rows + y0)
    breaks = np.flatnonzero(np.diff(index) != 1)
    starts = np.concatenate([index[:1], index[breaks + 1]])
    ends = np.concatenate([index[breaks], index[-1:]]) + 1
    gaps = starts - np.concatenate([[0], ends[:-1]])
    counts = np.empty(2 * starts.size, np.int64)
    counts[0::2], counts[1::2] = gaps, ends - starts
    tail = height * width - int(ends[-1])
    return counts.tolist() + ([tail] if tail else [])
