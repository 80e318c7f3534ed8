"""COCO export and import of instances on real data (the coins of scikit-image), checked with
pycocotools: exact RLE, polygons, COCOeval of the export against itself, lossless round trips,
kept predictions, and every kind of bad input."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from coins_instances import (
    CLASSES,
    UNUSED_ROW,
    camera_classes,
    canonical,
    coins_labels,
    coins_table,
    make_project,
    write_images,
)
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from test_cli import assert_one_error_line, run_cli

from core.annotation.instances import split_components
from core.errors import ImportFormatError
from core.export import export_project, import_dataset
from core.export.coco import (
    NO_INSTANCES,
    BadEntryError,
    compressed_rle_total,
    decode_segmentation,
    encode_rle,
    mask_polygons,
)
from core.project.items import Instance
from core.project.store import Project

# pycocotools' decode under NumPy 2 (harmless)
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    return write_images(tmp_path / "images")


@pytest.fixture
def project(tmp_path: Path, image_dir: Path):
    project = make_project(tmp_path / "project", image_dir)
    yield project
    project.close()


def _item(project: Project, name: str):
    return next(item for item in project.items() if item.name == name)


def _load(out: Path, name: str = "instances.json") -> dict:
    return json.loads((out / "annotations" / name).read_text())


def _export(project: Project, out: Path, **options) -> dict:
    export_project(project, "coco", out, **options)
    return _load(out)


def _quiet_coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# -- export ------------------------------------------------------------------------------------
def test_rle_export_decodes_to_exactly_the_instances(project: Project, tmp_path: Path) -> None:
    result = export_project(project, "coco", tmp_path / "out")
    assert result.count == 1  # coins; camera has no instance map
    assert result.skipped == [("camera", NO_INSTANCES)]
    dataset = _load(tmp_path / "out")
    assert dataset["images"] == [{"id": 1, "file_name": "coins.png", "width": 384,
                                  "height": 303}]
    assert dataset["categories"] == [
        {"id": c.index, "name": c.name, "supercategory": "", "color": list(c.color)}
        for c in CLASSES if c.index != 0]
    labels = coins_labels()
    table = coins_table(labels)
    ids = [i for i in np.unique(labels).tolist() if i]  # the row without pixels is left out
    annotations = dataset["annotations"]
    assert len(annotations) == len(ids) == 25
    assert UNUSED_ROW not in [a["id"] for a in annotations]
    for ident, annotation in zip(ids, annotations, strict=True):
        expected = labels == ident
        rle = annotation["segmentation"]
        assert isinstance(rle["counts"], str) and rle["size"] == [303, 384]
        decoded = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), expected)
        assert annotation["area"] == int(expected.sum())
        assert annotation["bbox"] == coco_mask.toBbox(rle).tolist()
        assert annotation["category_id"] == table[ident].class_index
        assert annotation["iscrowd"] == 0 and annotation["image_id"] == 1
        attributes = annotation["attributes"]
        assert attributes["source"] == table[ident].source
        assert attributes.get("score") == table[ident].score
    assert len({a["id"] for a in annotations}) == len(annotations)
    assert {a["category_id"] for a in annotations} == {1, 2}  # small and big coins
    assert not (tmp_path / "out" / "images").exists()  # no copies unless asked


def test_polygon_export(project: Project, tmp_path: Path) -> None:
    dataset = _export(project, tmp_path / "out", polygons=True)
    labels = coins_labels()
    ids = [i for i in np.unique(labels).tolist() if i]
    for ident, annotation in zip(ids, dataset["annotations"], strict=True):
        polygons = annotation["segmentation"]
        assert isinstance(polygons, list) and polygons
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
        rles = coco_mask.frPyObjects(polygons, 303, 384)
        decoded = coco_mask.decode(coco_mask.merge(rles)).astype(bool)
        expected = labels == ident
        iou = (decoded & expected).sum() / (decoded | expected).sum()
        assert iou >= 0.9, (ident, iou)
        # the polygons trace pixel edges: a coin (holes filled) comes back exactly
        np.testing.assert_array_equal(decoded, expected)
        assert annotation["area"] == int(expected.sum())  # from the mask, not the polygon


def test_polygons_of_odd_shapes() -> None:
    """Parts touching diagonally, single pixels, lines and the image border."""
    mask = np.zeros((9, 12), bool)
    mask[0, 0] = True  # a lone pixel in the corner
    mask[2:5, 3] = True  # a vertical line
    mask[5, 4] = mask[6, 5] = True  # touching the line diagonally
    mask[8, 6:12] = True  # along the bottom border
    mask[3:6, 8:11] = True
    mask[4, 9] = False  # a hole: filled by polygons
    polygons = mask_polygons(mask)
    assert all(len(p) >= 8 for p in polygons)
    decoded = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, 9, 12)))
    filled = mask.copy()
    filled[4, 9] = True
    np.testing.assert_array_equal(decoded.astype(bool), filled)
    assert mask_polygons(np.zeros((3, 3), bool)) == []


def test_export_against_itself_scores_ap_one(project: Project, tmp_path: Path) -> None:
    for polygons in (False, True):
        dataset = _export(project, tmp_path / f"out{polygons}", polygons=polygons)
        ground = _quiet_coco(dataset)
        results = [{"image_id": a["image_id"], "category_id": a["category_id"],
                    "segmentation": a["segmentation"], "bbox": a["bbox"], "score": 1.0}
                   for a in dataset["annotations"]]
        with contextlib.redirect_stdout(io.StringIO()):
            detected = ground.loadRes(copy.deepcopy(results))
            for iou_type in ("segm", "bbox"):
                evaluator = COCOeval(ground, detected, iou_type)
                evaluator.evaluate()
                evaluator.accumulate()
                evaluator.summarize()
                assert evaluator.stats[0] == pytest.approx(1.0), (polygons, iou_type)
                assert evaluator.stats[1] == pytest.approx(1.0)
                assert evaluator.stats[2] == pytest.approx(1.0)


def test_from_classes_and_copy_originals(project: Project, tmp_path: Path) -> None:
    result = export_project(project, "coco", tmp_path / "out", from_classes=True,
                            copy_originals=True)
    assert result.count == 2 and result.skipped == []
    dataset = _load(tmp_path / "out")
    by_name = {image["file_name"]: image["id"] for image in dataset["images"]}
    assert set(by_name) == {"coins.png", "camera.png"}
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == \
        ["camera.png", "coins.png"]
    expected, rows = split_components(camera_classes())
    camera = [a for a in dataset["annotations"] if a["image_id"] == by_name["camera.png"]]
    assert len(camera) == len(rows) > 10
    for row, annotation in zip(rows, camera, strict=True):
        decoded = coco_mask.decode({**annotation["segmentation"],
                                    "counts": annotation["segmentation"]["counts"].encode()})
        np.testing.assert_array_equal(decoded.astype(bool), expected == row.id)
        assert annotation["category_id"] == 5


def test_pixels_without_a_usable_row_are_left_out(project: Project, tmp_path: Path) -> None:
    coins = _item(project, "coins")
    labels = coins_labels()
    project.delete_instances(coins.id, [1])  # pixels of 1 keep no row
    project.set_instances(coins.id, [Instance(2, 0)])  # 2 is "background"
    result = export_project(project, "coco", tmp_path / "out", items=[coins])
    reasons = [reason for name, reason in result.skipped if name == "coins"]
    assert any("instance 1 has pixels but no row" in r for r in reasons)
    assert any("instance 2 belongs to the background" in r for r in reasons)
    assert len(_load(tmp_path / "out")["annotations"]) == len(np.unique(labels)) - 1 - 2


def test_kept_predictions_are_exported(project: Project, tmp_path: Path) -> None:
    coins = _item(project, "coins")
    labels = coins_labels()
    ids = [i for i in np.unique(labels).tolist() if i]
    predictions = [{"category_id": coins_table(labels)[i].class_index,
                    "segmentation": encode_rle(labels == i), "score": 0.5 + i / 100}
                   for i in ids]
    predictions.append({"category_id": 4, "segmentation": encode_rle(labels == 1),
                        "score": 0.9})  # a class the project does not have
    project.save_predictions(coins.id, "maskrcnn", predictions)
    result = export_project(project, "coco", tmp_path / "out")
    assert any("kept prediction 26" in reason for _, reason in result.skipped)
    results = _load(tmp_path / "out", "predictions.json")
    assert len(results) == len(ids)
    assert all(r["image_id"] == 1 and 0 < r["score"] < 1 for r in results)
    ground = _quiet_coco(_load(tmp_path / "out"))
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(ground, ground.loadRes(results), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


# -- import ------------------------------------------------------------------------------------
def _fresh(folder: Path) -> Project:
    return Project.create(folder, [CLASSES[0]])


def _instance_maps(project: Project) -> dict[str, tuple[np.ndarray, dict]]:
    maps = {}
    for item in project.items():
        if project.has_instances(item.id):
            table = project.instances(item.id)
            instance_map = project.load_mask(item, layer="instances")
            maps[item.name] = (canonical(instance_map), instance_map, table)
    return maps


def _attributes(instance_map: np.ndarray, table: dict) -> list[tuple]:
    """(class, score, source, reviewed) of each instance with pixels, in raster order."""
    order = canonical(instance_map)
    rows = []
    for number in range(1, int(order.max()) + 1):
        ident = int(instance_map[order == number][0])
        row = table[ident]
        rows.append((row.class_index, row.score, row.source, row.reviewed))
    return rows


def test_import_export_import_is_lossless(project: Project, tmp_path: Path) -> None:
    export_project(project, "coco", tmp_path / "a", copy_originals=True, from_classes=True)
    with _fresh(tmp_path / "p1") as first:
        result = import_dataset(first, "coco", tmp_path / "a")
        assert (result.imported, result.added_items) == (2, 2)
        assert result.new_classes == ["coin", "big coin", "dark"]
        assert result.skipped == []
        assert first.classes() == CLASSES
        maps1 = _instance_maps(first)
        assert all(item.state == "in_progress" for item in first.items())
        export_project(first, "coco", tmp_path / "b", copy_originals=True, polygons=True)
    with _fresh(tmp_path / "p2") as second:
        import_dataset(second, "coco", tmp_path / "b" / "annotations" / "instances.json")
        assert second.classes() == CLASSES
        maps2 = _instance_maps(second)
    labels = coins_labels()
    np.testing.assert_array_equal(maps1["coins"][0], canonical(labels))
    np.testing.assert_array_equal(maps1["camera"][0], canonical(split_components(
        camera_classes())[0]))
    for name in ("coins", "camera"):
        if name == "coins":  # polygons: the coins have no holes, so the export is exact
            np.testing.assert_array_equal(maps2[name][0], maps1[name][0])
        assert _attributes(*maps2[name][1:]) == _attributes(*maps1[name][1:])
    original = {ident: row for ident, row in coins_table(labels).items() if ident != UNUSED_ROW}
    assert _attributes(*maps1["coins"][1:]) == _attributes(labels, original)


def test_import_into_the_project_it_came_from(project: Project, tmp_path: Path) -> None:
    export_project(project, "coco", tmp_path / "out")
    coins = _item(project, "coins")
    project.save_mask(coins.id, np.zeros((303, 384), np.uint32), layer="instances")
    project.delete_instances(coins.id)
    result = import_dataset(project, "coco", tmp_path / "out")
    assert (result.imported, result.added_items, result.new_classes) == (1, 0, [])
    assert len(project.items()) == 2
    restored = project.load_mask(coins, layer="instances")
    np.testing.assert_array_equal(canonical(restored), canonical(coins_labels()))
    assert len(project.instances(coins.id)) == 25  # the row without pixels is not back


def test_uncompressed_rle_and_overlaps(project: Project, tmp_path: Path) -> None:
    export_project(project, "coco", tmp_path / "out")
    dataset = _load(tmp_path / "out")
    first = dataset["annotations"][0]
    mask = decode_segmentation(first["segmentation"], 303, 384)
    flat = mask.reshape(-1, order="F").astype(np.int8)  # column-major, as COCO runs go
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    first["segmentation"] = {"size": [303, 384], "counts": counts}
    # a box over the first coin, bigger than every coin: where they overlap the coins stay on
    # top, and the box keeps the rest
    x, y, w, h = first["bbox"]
    x0, y0, x1, y1 = max(x - 30, 0), max(y - 30, 0), min(x + w + 30, 384), min(y + h + 30, 303)
    box = [x0, y0, x1, y0, x1, y1, x0, y1]
    dataset["annotations"].append({**dataset["annotations"][1], "id": 1000,
                                   "segmentation": [box]})
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(dataset))
    with _fresh(tmp_path / "p") as fresh:
        shutil.copy(_item(project, "coins").source, tmp_path / "coins.png")
        result = import_dataset(fresh, "coco", path)
        assert result.imported == 1 and result.added_items == 1
        item = _item(fresh, "coins")
        instance_map = fresh.load_mask(item, layer="instances")
        assert len(fresh.instances(item.id)) == 26
        np.testing.assert_array_equal(instance_map == 1, mask)  # ids in file order
        box_pixels = np.zeros(mask.shape, bool)
        box_pixels[int(y0):int(y1), int(x0):int(x1)] = True
        assert (instance_map == 26).sum() == (box_pixels & (coins_labels() == 0)).sum()
        coins_only = np.where(instance_map == 26, 0, instance_map)
        np.testing.assert_array_equal(canonical(coins_only), canonical(coins_labels()))


def _base_dataset(project: Project, tmp_path: Path) -> Path:
    export_project(project, "coco", tmp_path / "out")
    return tmp_path / "out" / "annotations" / "instances.json"


def _segmentation_of_size(height: int, width: int) -> dict:
    mask = np.zeros((height, width), bool)
    mask[5:20, 5:30] = True
    return encode_rle(mask)


BAD_CASES = {
    "missing image": (lambda d: d["images"].append(
        {"id": 7, "file_name": "nowhere.png", "width": 10, "height": 10})
        or d["annotations"].append({**d["annotations"][0], "id": 500, "image_id": 7,
                                    "segmentation": _segmentation_of_size(10, 10)}),
        "image 7 (nowhere.png)", "no item named 'nowhere'"),
    "image_id not among the images": (
        lambda d: d["annotations"].__setitem__(2, {**d["annotations"][2], "image_id": 42}),
        "annotation 3", "image_id 42 is not among the images"),
    "mask of the wrong size": (
        lambda d: d["annotations"][4].__setitem__("segmentation",
                                                  _segmentation_of_size(300, 384)),
        "annotation 5", "its mask is 384x300 but the image is 384x303"),
    "polygon with 2 points": (
        lambda d: d["annotations"][5].__setitem__("segmentation",
                                                  [[10, 10, 50, 10, 50, 40], [1, 1, 5, 5]]),
        "annotation 6", "polygon 2 has 2 point(s); a polygon needs at least 3"),
    "duplicate annotation id": (
        lambda d: d["annotations"][7].__setitem__("id", 3),
        "annotation 3", "the annotation id 3 is used twice"),
    "unknown category": (
        lambda d: d["annotations"][8].__setitem__("category_id", 77),
        "annotation 9", "category_id 77 is not among the categories"),
    "garbage RLE": (
        lambda d: d["annotations"][9]["segmentation"].__setitem__("counts", "PPPPPP"),
        "annotation 10", "not a valid compressed RLE"),
    "RLE of the wrong length": (
        lambda d: d["annotations"][10]["segmentation"].__setitem__("counts", [5, 10, 7]),
        "annotation 11", "its RLE covers 22 pixels, not 116352"),
    "polygon far outside": (
        lambda d: d["annotations"][11].__setitem__("segmentation",
                                                   [[10, 10, 1e9, 10, 50, 40]]),
        "annotation 12", "outside the 384x303 image"),
    "image of another size": (
        lambda d: d["images"][0].__setitem__("width", 380),
        "image 1 (coins.png)", "it is 380x303 but the item 'coins' is 384x303"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_names_the_entry(project: Project, tmp_path: Path, case: str) -> None:
    edit, entry, reason = BAD_CASES[case]
    path = _base_dataset(project, tmp_path)
    dataset = json.loads(path.read_text())
    edit(dataset)
    path.write_text(json.dumps(dataset))
    with _fresh(tmp_path / "p") as fresh:
        fresh.add_items([project.items()[0].source, project.items()[1].source])
        before = (fresh.classes(), len(fresh.items()))
        with pytest.raises(BadEntryError) as caught:
            import_dataset(fresh, "coco", path)
        assert caught.value.entry == entry and reason in caught.value.reason, str(caught.value)
        assert f"{entry}: " in str(caught.value) and "nothing was imported" in str(caught.value)
        assert (fresh.classes(), len(fresh.items())) == before  # nothing written
        assert not any(fresh.has_instances(item.id) for item in fresh.items())

        result = import_dataset(fresh, "coco", path, skip_bad=True)
        assert (entry, caught.value.reason) in result.skipped
        assert len(result.skipped) == 1
        if case != "image of another size":  # the only image: nothing left to import
            coins = _item(fresh, "coins")
            assert result.imported == 1
            expected = 25 if case == "missing image" else 24  # 25 coins, one bad
            assert len(fresh.instances(coins.id)) == expected
        assert fresh.classes() == CLASSES


@pytest.mark.parametrize(("content", "message"), [
    ("{\"images\": [", "is not valid JSON: Expecting value at line 1, column 13"),
    ("[1, 2]", "its top level must be an object"),
    ("{\"images\": [], \"annotations\": []}", "it needs a list \"categories\""),
    ("{\"images\": [], \"annotations\": [], \"categories\": [{\"id\": 1}]}",
     "category 1 needs a non-empty \"name\""),
    ("{\"images\": [], \"annotations\": [], \"categories\": [{\"id\": 1, \"name\": \"a\"}, "
     "{\"id\": 1, \"name\": \"b\"}]}", "gives the index 1 to two classes"),
])
def test_malformed_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with _fresh(tmp_path / "p") as fresh, pytest.raises(ImportFormatError, match=message):
        import_dataset(fresh, "coco", path, skip_bad=True)


def test_dataset_folder_lookup(tmp_path: Path) -> None:
    with _fresh(tmp_path / "p") as fresh:
        with pytest.raises(ImportFormatError, match="is not a COCO dataset"):
            import_dataset(fresh, "coco", tmp_path)
        with pytest.raises(ImportFormatError, match="does not exist"):
            import_dataset(fresh, "coco", tmp_path / "missing.json")
        with pytest.raises(ImportFormatError, match="has no option skip"):
            import_dataset(fresh, "voc", tmp_path, skip=True)


def test_class_clash_and_crowds(project: Project, tmp_path: Path) -> None:
    path = _base_dataset(project, tmp_path)
    dataset = json.loads(path.read_text())
    dataset["annotations"][0]["iscrowd"] = 1
    dataset["categories"].append({"id": 9, "name": "extra"})
    path.write_text(json.dumps(dataset))
    result = import_dataset(project, "coco", path)  # into the project it came from
    assert result.skipped == [("annotation 1", "a crowd region (iscrowd 1), not an instance: "
                                               "left out")]
    assert result.new_classes == ["extra"]
    assert len(project.instances(_item(project, "coins").id)) == 24
    dataset["categories"][0]["name"] = "penny"
    path.write_text(json.dumps(dataset))
    with pytest.raises(ImportFormatError, match="'penny' has index 1, which the project uses "
                                                "for 'coin'"):
        import_dataset(project, "coco", path)


def test_compressed_rle_check() -> None:
    rle = encode_rle(coins_labels() == 3)
    assert compressed_rle_total(rle["counts"]) == 303 * 384
    assert compressed_rle_total("") == 0
    assert compressed_rle_total("PPPP") is None  # a run that continues past the end
    assert compressed_rle_total("0 ") is None  # not a code
    with pytest.raises(ValueError, match="neither an RLE object nor a list of polygons"):
        decode_segmentation("abc", 3, 3)


# -- command line ------------------------------------------------------------------------------
def test_cli_export_and_import(project: Project, tmp_path: Path) -> None:
    folder = project.folder
    project.close()
    out = tmp_path / "out"
    result = run_cli("export", folder, "--format", "coco", "--out", out, "--polygons",
                     "--from-classes", "--copy-originals")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["format"] == "coco" and summary["count"] == 2 and summary["skipped"] == []
    assert len(_load(out)["annotations"]) > 25
    result = run_cli("export", folder, "--format", "yolo", "--out", tmp_path / "y",
                     "--polygons")
    assert_one_error_line(result, 1, "--polygons applies to the coco format only, not yolo")
    result = run_cli("export", folder, "--format", "voc", "--out", tmp_path / "v",
                     "--from-classes")
    assert_one_error_line(result, 1, "--from-classes applies to the coco and yolo formats only")

    fresh = tmp_path / "fresh"
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps([CLASSES[0].to_json()]))
    assert run_cli("project", "create", fresh, "--classes", classes).returncode == 0
    dataset = _load(out)
    dataset["annotations"][3]["category_id"] = 77
    (out / "annotations" / "instances.json").write_text(json.dumps(dataset))
    result = run_cli("import", fresh, "--format", "coco", out)
    assert_one_error_line(result, 1, "annotation 4: its category_id 77 is not among the "
                                     "categories; nothing was imported. (--skip-bad imports "
                                     "the other entries)")
    result = run_cli("import", fresh, "--format", "coco", out / "annotations" /
                     "instances.json", "--skip-bad")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["imported"] == 2 and summary["added_items"] == 2
    assert summary["skipped"] == [{"name": "annotation 4", "reason":
                                   "its category_id 77 is not among the categories"}]
    assert "warning: annotation 4" in result.stderr
    result = run_cli("import", fresh, "--format", "voc", out, "--skip-bad")
    assert_one_error_line(result, 1, "--skip-bad applies to the coco format only")
