"""COCO mask and box AP (pycocotools' COCOeval) of instance predictions against instance maps.

The ground truth of an image is its instance map and instance table (the corrected labels); the
predictions are COCO results (``category_id`` = project class index, ``segmentation`` as RLE,
compressed or not, or polygons, optional ``bbox`` [x, y, w, h], ``score``), as
:meth:`~core.project.store.Project.save_predictions` keeps them. AP is COCO's: the mean over the
IoU thresholds 0.50:0.05:0.95 (AP50 and AP75 at one threshold) and over the classes that have
ground truth, with all object sizes and up to ``max(100, most predictions of an image)``
detections per image.

pycocotools prints its progress; it is silenced by redirecting ``sys.stdout`` for the time of the
evaluation (process-wide: another thread's prints meanwhile are lost too).

Example::

    result = evaluate_instances({"a": (instance_map, table)}, {"a": results})
    result.mask.ap, result.box.ap50, result.images["a"].mask.ap75
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import SegStudioError
from core.export.coco import encode_rle, iter_instance_masks, prediction_result
from core.project.items import Instance

IOU_TYPES = ("segm", "bbox")


class EvaluationError(SegStudioError):
    """The predictions or the ground truth cannot be evaluated (named in the message)."""


@dataclass(frozen=True)
class APScores:
    """COCO average precision; None where there is nothing to measure (no ground truth)."""

    ap: float | None  # mean over IoU 0.50:0.95
    ap50: float | None
    ap75: float | None

    def to_json(self) -> dict[str, float | None]:
        return {"ap": _round(self.ap), "ap50": _round(self.ap50), "ap75": _round(self.ap75)}


@dataclass(frozen=True)
class ImageEval:
    """The scores of one image."""

    image_id: Hashable
    ground_truth: int  # instances
    predictions: int
    mask: APScores
    box: APScores

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image_id, "ground_truth": self.ground_truth,
                "predictions": self.predictions, "mask": self.mask.to_json(),
                "box": self.box.to_json()}


@dataclass(frozen=True)
class EvalResult:
    """Overall scores (all images together, as COCO computes them) and each image's."""

    mask: APScores
    box: APScores
    images: dict[Hashable, ImageEval]

    @property
    def ground_truth(self) -> int:
        return sum(i.ground_truth for i in self.images.values())

    @property
    def predictions(self) -> int:
        return sum(i.predictions for i in self.images.values())

    def to_json(self) -> dict[str, Any]:
        return {"images": len(self.images), "ground_truth": self.ground_truth,
                "predictions": self.predictions, "mask": self.mask.to_json(),
                "box": self.box.to_json(),
                "per_image": [i.to_json() for i in self.images.values()]}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def evaluate_instances(
    gt: Mapping[Hashable, tuple[np.ndarray, Mapping[int, Instance]]],
    predictions: Mapping[Hashable, list[dict]],
    *,
    per_image: bool = True,
) -> EvalResult:
    """COCO mask AP and box AP of ``predictions`` against ``gt``, overall and per image.

    Args:
        gt: image id -> (instance map (H, W), instance table). Instances without a row, of
            class 0 or without pixels are not ground truth.
        predictions: image id -> COCO results of that image (their ``image_id`` is ignored). An
            image of ``gt`` without an entry has no predictions (its objects count as missed).
        per_image: Also score each image alone (one more COCOeval run per image).

    Raises:
        EvaluationError: a prediction of an image not in ``gt``, or an unusable prediction.
    """
    unknown = [key for key in predictions if key not in gt]
    if unknown:
        raise EvaluationError(f"Predictions for {unknown[0]!r}, which has no ground truth.")
    keys = list(gt)
    images, annotations, results = [], [], []
    counts: dict[Hashable, tuple[int, int]] = {}
    categories: set[int] = set()
    for number, key in enumerate(keys, 1):
        instance_map, table = gt[key]
        if instance_map.ndim != 2:
            raise EvaluationError(f"The instance map of {key!r} is not 2-D.")
        height, width = instance_map.shape
        images.append({"id": number, "width": width, "height": height})
        classes = {row.class_index for row in table.values() if row.class_index != 0}
        before = len(annotations)
        for entry in iter_instance_masks(instance_map, table, classes):
            annotations.append({
                "id": len(annotations) + 1, "image_id": number,
                "category_id": entry.instance.class_index,
                "segmentation": encode_rle(entry.mask), "area": entry.area,
                "bbox": entry.bbox, "iscrowd": 0,
            })
            categories.add(entry.instance.class_index)
        found = predictions.get(key, [])
        for position, result in enumerate(found, 1):
            try:
                converted = prediction_result(result, number, height, width)
            except ValueError as err:
                raise EvaluationError(f"Prediction {position} of {key!r}: {err}.") from err
            results.append({**converted, "id": len(results) + 1, "iscrowd": 0})
            categories.add(converted["category_id"])
        counts[key] = (len(annotations) - before, len(found))
    most = max((n for _, n in counts.values()), default=0)
    max_dets = [1, 10, max(100, most)]
    ground, detected = _coco(images, annotations, categories), _coco(images, results, categories)
    overall = {kind: _evaluate(ground, detected, kind, None, max_dets) for kind in IOU_TYPES}
    per: dict[Hashable, ImageEval] = {}
    if per_image:
        for number, key in enumerate(keys, 1):
            scores = {kind: _evaluate(ground, detected, kind, number, max_dets)
                      for kind in IOU_TYPES}
            per[key] = ImageEval(key, counts[key][0], counts[key][1], scores["segm"],
                                 scores["bbox"])
    return EvalResult(overall["segm"], overall["bbox"], per)


def _coco(images: list[dict], annotations: list[dict], categories: set[int]) -> Any:
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": c, "name": str(c)} for c in sorted(categories)]}
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its progress
        coco.createIndex()
    return coco


def _evaluate(ground: Any, detected: Any, iou_type: str, image: int | None,
              max_dets: list[int]) -> APScores:
    from pycocotools.cocoeval import COCOeval

    if not ground.dataset["categories"]:
        return APScores(None, None, None)
    evaluator = COCOeval(ground, detected, iou_type)
    if image is not None:
        evaluator.params.imgIds = [image]
    evaluator.params.maxDets = max_dets
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    # precision[T, R, K, A, M]: IoU thresholds, recall points, classes, area ranges, max dets
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    thresholds = evaluator.params.iouThrs
    return APScores(_mean(precision),
                    _mean(precision[np.isclose(thresholds, 0.5)]),
                    _mean(precision[np.isclose(thresholds, 0.75)]))


def _mean(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    if valid.size == 0:
        return None
    mean = float(np.mean(valid))
    return mean if math.isfinite(mean) else None
