"""Mask R-CNN: the family (torchvision v1 and v2, built offline), its weights through the hub
cache with no network, and instance inference (tiles merged into whole objects, filters, COCO
results, cancel).

The real networks run with random weights on a small real image (skimage's coffee), only for
shapes and types. What inference does with detections is checked with a fake model of the
same interface whose outputs are known: it "detects" saturated red (class 1) and green
(class 2) discs drawn on a real image, wherever they are visible in the tile it is given.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from scipy import ndimage
from skimage import data, draw, transform
from torchvision.models import detection as tv_detection

from core.inference.errors import InferenceCancelled, InferenceError
from core.inference.instances import (
    InstancePrediction,
    InstanceSettings,
    predict_instances,
    to_coco_results,
)
from core.models import list_models, model_info
from core.models.loading import (
    LoadedModel,
    OfflineWeightsError,
    cached_weights_path,
    load_model,
    save_checkpoint,
)
from core.models.maskrcnn import WEIGHTS
from core.models.weights import IMAGENET_MEAN, IMAGENET_STD

MODELS = ("maskrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn_v2")
# Small and quick on a CPU: no resizing to 800 px, few proposals and detections.
QUICK = {"min_size": 192, "max_size": 256, "rpn_pre_nms_top_n_test": 200,
         "rpn_post_nms_top_n_test": 100, "box_detections_per_img": 20}
CLASSES = ("__background__", "red", "green")


@pytest.fixture(autouse=True, scope="module")
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def torch_home(empty_torch_home: Path) -> Path:
    """Every test of this file runs with an empty TORCH_HOME (tests/core/conftest.py)."""
    return empty_torch_home




@pytest.fixture(scope="module")
def coffee() -> np.ndarray:
    """skimage's coffee (400 x 600) resized to 192 x 256, uint8 RGB."""
    small = transform.resize(data.coffee(), (192, 256), anti_aliasing=True)
    return (small * 255).round().astype(np.uint8)


# -- the family ---------------------------------------------------------------------------------
def test_registered_as_instance_models_with_coco_weights() -> None:
    assert list_models("instance") == list(MODELS)
    for name, member in zip(MODELS, (tv_detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1,
                                     tv_detection.MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1),
                            strict=True):
        info = model_info(name)
        assert info.task == "instance" and info.input_kind == "image"
        (record,) = info.weights().values()
        assert record.url == member.url and record.file_name in member.url
        assert record.classes == tuple(member.meta["categories"]) and record.num_classes == 91
        assert record.classes[1] == "person" and record.sha256 in record.file_name
        assert record.metrics["COCO-val2017 mask_map"] == member.meta["_metrics"][
            "COCO-val2017"]["mask_map"]
        with torch.device("meta"):
            module = info.build()
        assert sum(p.numel() for p in module.parameters()) == member.meta["num_params"]


@pytest.mark.parametrize("name", MODELS)
def test_real_network_on_a_real_image(name: str, coffee: np.ndarray,
                                      no_network: list[object]) -> None:
    torch.manual_seed(0)
    loaded = load_model(name, num_classes=3, **QUICK)  # weights=None, weights_backbone=None
    assert loaded.classes == ("class 0", "class 1", "class 2") and loaded.weights_source == "random"

    image = torch.from_numpy(coffee).permute(2, 0, 1).float() / 255
    with torch.inference_mode():
        (raw,) = loaded.module([image])
    count = raw["scores"].shape[0]
    assert count > 0  # random heads still score a few boxes above torchvision's 0.05 floor
    assert raw["masks"].shape == (count, 1, 192, 256) and raw["masks"].dtype == torch.float32
    assert raw["boxes"].shape == (count, 4) and raw["labels"].dtype == torch.int64
    assert set(raw["labels"].tolist()) <= {1, 2}

    settings = InstanceSettings(score_threshold=0.05, max_detections=20)
    prediction = predict_instances(loaded, coffee, settings)
    n = prediction.num_instances
    assert 0 < n <= count  # the same floors as the raw call: at most its detections
    assert prediction.instance_map.shape == (192, 256)
    assert prediction.instance_map.dtype == np.uint32
    assert set(np.unique(prediction.instance_map)) == set(range(n + 1))
    assert prediction.labels.shape == (n,) and prediction.labels.dtype == np.int64
    assert prediction.scores.dtype == np.float32 and np.all(np.diff(prediction.scores) <= 0)
    assert prediction.boxes.shape == (n, 4) and prediction.boxes.dtype == np.float32
    assert prediction.class_names == list(loaded.classes)
    assert no_network == []


def test_offline_weights_from_the_hub_cache(torch_home: Path, no_network: list[object]) -> None:
    """The official v1 file's layout, saved from an untrained torchvision model, loads offline."""
    member = tv_detection.MaskRCNN_ResNet50_FPN_Weights.COCO_V1
    record = WEIGHTS["maskrcnn_resnet50_fpn.coco"]
    with pytest.raises(OfflineWeightsError) as missing:
        load_model("maskrcnn_resnet50_fpn", weights=record.name)
    message = str(missing.value)
    assert record.file_name in message and str(torch_home / "hub" / "checkpoints") in message
    assert member.url in message and "--weights FILE" in message

    torch.manual_seed(1)
    untrained = tv_detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    # torchvision saved the official file from its model with weights, whose backbone has
    # frozen batch norm: the same tensors without BatchNorm2d's num_batches_tracked counters.
    state = {k: v for k, v in untrained.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / Path(member.url).name)
    assert cached_weights_path(record) == folder / record.file_name

    loaded = load_model("maskrcnn_resnet50_fpn", weights=record.name)
    assert loaded.classes == tuple(member.meta["categories"]) and loaded.num_classes == 91
    assert loaded.weights_source == "torchvision" and loaded.weights_path == folder / record.file_name
    ours = loaded.module.state_dict()
    assert ours.keys() == state.keys()
    for key in ("backbone.body.conv1.weight", "backbone.body.layer1.0.bn1.running_var",
                "roi_heads.mask_predictor.mask_fcn_logits.weight"):
        assert torch.equal(ours[key], state[key])
    assert not loaded.module.training and no_network == []

    with pytest.raises(OfflineWeightsError, match=WEIGHTS["maskrcnn_resnet50_fpn_v2.coco"]
                       .file_name):
        load_model("maskrcnn_resnet50_fpn_v2", weights="maskrcnn_resnet50_fpn_v2.coco")
    assert no_network == []


def test_project_checkpoint_with_its_own_classes(tmp_path: Path) -> None:
    torch.manual_seed(2)
    module = model_info("maskrcnn_resnet50_fpn").build(num_classes=4)
    classes = ["background", "cell", "nucleus", "debris"]
    path = save_checkpoint(tmp_path / "best.pt", "maskrcnn_resnet50_fpn", module, classes, 3,
                           list(IMAGENET_MEAN), list(IMAGENET_STD))
    loaded = load_model("maskrcnn_resnet50_fpn", weights=path)
    assert loaded.classes == tuple(classes) and loaded.weights_source == "checkpoint"
    assert loaded.module.roi_heads.box_predictor.cls_score.out_features == 4
    assert loaded.module.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4


# -- inference with a model of known outputs ------------------------------------------------------
class DiscDetector(torch.nn.Module):
    """torchvision's detection interface; finds saturated red (label 1) / green (label 2) blobs.

    Each connected blob visible in the image it is given is one detection: score = the blob's
    mean blue value, box = its extent, mask probability 0.8 on the blob and 0.3 on a 2-pixel
    ring around it. ``duplicate`` reports every blob a second time at 0.9 times the score.
    """

    def __init__(self, duplicate: bool = False) -> None:
        super().__init__()
        self.duplicate = duplicate
        self.calls: list[tuple[int, int]] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [self._detect(image.detach().float().cpu().numpy()) for image in images]

    def _detect(self, image: np.ndarray) -> dict[str, torch.Tensor]:
        self.calls.append(image.shape[1:])
        red, green, blue = image
        boxes, labels, scores, masks = [], [], [], []
        for label, on, off in ((1, red, green), (2, green, red)):
            blobs, count = ndimage.label((on > 0.95) & (off < 0.05))
            for k in range(1, count + 1):
                blob = blobs == k
                ring = ndimage.binary_dilation(blob, iterations=2) & ~blob
                ys, xs = np.nonzero(blob)
                copies = ((1.0,), (1.0, 0.9))[self.duplicate]
                for factor in copies:
                    boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    labels.append(label)
                    scores.append(float(blue[blob].mean()) * factor)
                    masks.append(np.where(blob, 0.8, np.where(ring, 0.3, 0.0))[None])
        shape = (0, 1, *image.shape[1:])
        return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "masks": torch.from_numpy(np.array(masks, np.float32).reshape(
                    -1, *shape[1:]) if masks else np.zeros(shape, np.float32))}


# (name, label, score, centre row, centre column, radius) on a 320 x 320 image. With 128-pixel
# tiles and overlap 0.25 the windows start at 0, 96 and 192 along both axes.
DISCS = (
    ("A", 1, 0.9, 60, 112, 25),    # cut by the column borders 96 and 128
    ("B", 1, 0.8, 200, 160, 60),   # spans the tiles of all three rows and columns
    ("C", 2, 0.75, 120, 270, 14),  # cut by the row border 128; D just below it, 6 px away
    ("D", 2, 0.65, 150, 270, 11),
    ("E", 2, 0.7, 208, 40, 12),    # E and F straddle the row borders 192/224, 5 px apart
    ("F", 2, 0.6, 208, 68, 12),
)


def disc_mask(row: int, col: int, radius: int, shape: tuple[int, int] = (320, 320)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[draw.disk((row, col), radius, shape=shape)] = True
    return mask


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """Discs of known colour (blue channel = score) on a real photograph (dimmed grey)."""
    grey = transform.resize(data.camera(), (320, 320), anti_aliasing=True)
    image = np.repeat((grey * 0.6 * 255).astype(np.uint8)[..., None], 3, axis=2)
    for _, label, score, row, col, radius in DISCS:
        colour = (255, 0, round(score * 255)) if label == 1 else (0, 255, round(score * 255))
        image[disc_mask(row, col, radius)] = colour
    return image


def fake_model(duplicate: bool = False) -> LoadedModel:
    return LoadedModel(DiscDetector(duplicate), "maskrcnn_resnet50_fpn", CLASSES, 3,
                       IMAGENET_MEAN, IMAGENET_STD)


def run(image: np.ndarray, loaded: LoadedModel | None = None, **settings) -> InstancePrediction:
    return predict_instances(loaded or fake_model(), image,
                             InstanceSettings(device="cpu", **settings))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


def by_name(prediction: InstancePrediction) -> dict[str, int]:
    """Instance index of each disc (the instance whose mask overlaps it most)."""
    found = {}
    for name, *_, row, col, radius in DISCS:
        disc = disc_mask(row, col, radius)
        ids = prediction.instance_map[disc]
        found[name] = int(np.bincount(ids[ids > 0]).argmax()) - 1 if ids.any() else -1
    return found


def test_tiles_merge_cut_objects_into_whole_instances(scene: np.ndarray) -> None:
    reports: list[tuple[int, int]] = []
    loaded = fake_model()
    prediction = predict_instances(loaded, scene, InstanceSettings(tile=128, overlap=0.25,
                                                                   device="cpu"),
                                   report=lambda done, total: reports.append((done, total)))

    assert loaded.module.calls == [(128, 128)] * 9  # really tiled: 3 x 3 windows
    assert reports == [(i, 9) for i in range(10)]
    assert prediction.num_instances == len(DISCS)  # one instance per disc, cut or not
    found = by_name(prediction)
    assert sorted(found.values()) == list(range(len(DISCS)))
    for name, label, score, row, col, radius in DISCS:
        index = found[name]
        assert iou(prediction.mask(index), disc_mask(row, col, radius)) >= 0.95, name
        assert prediction.labels[index] == label
        assert prediction.scores[index] == pytest.approx(round(score * 255) / 255, abs=1e-6)
        x0, y0, x1, y1 = prediction.boxes[index]
        assert (x0, y0) == (col - radius + 1, row - radius + 1)  # draw.disk: |d| < radius
        assert (x1, y1) == (col + radius, row + radius)
    assert list(prediction.scores) == sorted(prediction.scores, reverse=True)
    assert prediction.class_name(found["E"]) == "green" and prediction.notes == []

    whole = run(scene)
    assert np.array_equal(whole.instance_map, prediction.instance_map)
    assert np.array_equal(whole.labels, prediction.labels)


def test_without_overlap_cut_objects_stay_in_pieces(scene: np.ndarray) -> None:
    """The documented limit: no band shared by two tiles, nothing to merge on."""
    image = scene[:256, :256]  # tiles [0, 128) and [128, 256): no overlap at all
    pieces = run(image, tile=128, overlap=0.0)
    whole = run(image)
    assert whole.num_instances == 4  # A, B, E, F (C and D are outside)
    assert pieces.num_instances > whole.num_instances


def test_score_class_and_count_filters(scene: np.ndarray) -> None:
    names = [d[0] for d in DISCS]
    confident = run(scene, tile=128, score_threshold=0.72)  # A, B and C (191 / 255)
    assert sorted(by_name(confident)[n] >= 0 for n in names) == [False] * 3 + [True] * 3
    assert set(confident.labels.tolist()) == {1, 2} and confident.num_instances == 3

    green = run(scene, tile=128, classes={2})
    assert green.num_instances == 4 and set(green.labels.tolist()) == {2}

    top_two = run(scene, tile=128, max_detections=2)
    assert top_two.num_instances == 2
    assert top_two.scores.tolist() == pytest.approx([0.9, 0.8], abs=0.01)


def test_mask_threshold(scene: np.ndarray) -> None:
    _, _, _, row, col, radius = DISCS[0]
    disc = disc_mask(row, col, radius)
    strict = run(scene, mask_threshold=0.5)
    loose = run(scene, mask_threshold=0.25)
    assert np.array_equal(strict.mask(by_name(strict)["A"]), disc)
    assert np.array_equal(loose.mask(by_name(loose)["A"]),
                          ndimage.binary_dilation(disc, iterations=2))
    assert run(scene, mask_threshold=0.9).num_instances == 0  # no pixel above: no instance


def test_nms_removes_duplicates(scene: np.ndarray) -> None:
    single = run(scene, tile=128)
    doubled = run(scene, loaded=fake_model(duplicate=True), tile=128)
    assert np.array_equal(doubled.instance_map, single.instance_map) and doubled.notes == []
    # Without NMS (IoU 1 never exceeded) the copies reach painting, hidden by their originals.
    kept = run(scene, loaded=fake_model(duplicate=True), tile=128, nms_iou=1.0)
    assert np.array_equal(kept.instance_map, single.instance_map)
    assert any("hidden entirely" in note for note in kept.notes)


def test_coco_results_decode_to_the_instances(scene: np.ndarray) -> None:
    prediction = run(scene, tile=128)
    results = to_coco_results(prediction, image_id=7)
    assert len(results) == prediction.num_instances
    for index, result in enumerate(results):
        mask = prediction.mask(index)
        assert isinstance(result["segmentation"]["counts"], str)
        assert result["segmentation"]["size"] == [320, 320]
        assert np.array_equal(mask_utils.decode(result["segmentation"]).astype(bool), mask)
        expected = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert result["segmentation"]["counts"] == expected["counts"].decode()
        assert result["image_id"] == 7 and result["category_id"] == prediction.labels[index]
        assert result["score"] == pytest.approx(float(prediction.scores[index]))
        x0, y0, x1, y1 = prediction.boxes[index]
        assert result["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
    # Masks touching the first and the last pixel (runs of length 0 at the ends).
    corner = np.zeros((5, 4), np.uint32)
    corner[:2, 0] = 1
    corner[3:, 3] = 1
    full = InstancePrediction(corner, np.array([1]), np.array([0.5], np.float32),
                              np.array([[0, 0, 4, 5]], np.float32), list(CLASSES))
    (result,) = to_coco_results(full, 1)
    assert np.array_equal(mask_utils.decode(result["segmentation"]), corner.astype(np.uint8))


def test_cancel_mid_way(scene: np.ndarray) -> None:
    cancel = threading.Event()
    loaded = fake_model()

    def report(done: int, total: int) -> None:
        if done == 2:
            cancel.set()

    with pytest.raises(InferenceCancelled):
        predict_instances(loaded, scene, InstanceSettings(tile=128, device="cpu"),
                          report=report, cancel=cancel)
    assert len(loaded.module.calls) == 2


def test_grey_images_and_wrong_models(scene: np.ndarray) -> None:
    grey = run(scene[..., 0])  # grey is repeated to RGB: no saturated colour, no detection
    assert grey.num_instances == 0 and grey.instance_map.shape == (320, 320)
    assert to_coco_results(grey, 1) == []
    semantic = LoadedModel(DiscDetector(), "unet", CLASSES, 3, IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(InferenceError, match="not an instance segmentation model"):
        run(scene, loaded=semantic)
    broken = LoadedModel(torch.nn.Identity(), "custom", CLASSES, 3, IMAGENET_MEAN, IMAGENET_STD)
    with pytest.raises(InferenceError, match="expected a list with one dict"):
        run(scene, loaded=broken)
    with pytest.raises(ValueError, match="overlap"):
        InstanceSettings(tile=128, overlap=1.0)
