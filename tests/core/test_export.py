"""Export and import: VOC and index layouts, round trips, all-or-nothing writing, cancel."""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage import data

from core import fsutil
from core.annotation.classes import LabelClass, voc_color
from core.annotation.tools import PaintRule, fill_polygon, paint_segment
from core.errors import ExportError, ImportFormatError
from core.export import EXPORT_FORMATS, IMPORT_FORMATS, export_project, import_dataset
from core.fsutil import StagedDir, atomic_write_bytes
from core.project.store import Project

CLASSES = [
    LabelClass(0, "background", (0, 0, 0)),
    LabelClass(1, "object", (200, 30, 30)),
    LabelClass(2, "cell", (30, 200, 30)),
    LabelClass(7, "marker", (240, 240, 0)),  # indices 3-6 unused: a deleted class leaves gaps
]
STACK_FRAMES = 3


# -- fixtures ----------------------------------------------------------------------------------
@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """Real images: grey, RGB, 16-bit grey and a 3-frame stack."""
    folder = tmp_path / "images"
    folder.mkdir()
    camera = data.camera()[::2, ::2]
    Image.fromarray(camera).save(folder / "camera.png")
    Image.fromarray(data.coffee()[::2, ::2]).save(folder / "coffee.png")
    cell = (data.cell().astype(np.uint32) * 4095 // 255).astype(np.uint16)[::2, ::2]
    tifffile.imwrite(folder / "cell16.tif", cell)
    stack = np.stack([camera[40 + 8 * i : 140 + 8 * i, 60:180] for i in range(STACK_FRAMES)])
    tifffile.imwrite(folder / "pan.tif", stack, photometric="minisblack")
    return folder


def _draw(labels: np.ndarray, plane: tuple[int, ...] = (), shift: int = 0) -> None:
    """Strokes like a user's: a brush drag, a polygon and a small dab of the gap class."""
    paint_segment(labels, (10 + shift, 12), (70, 50 + shift), 6, PaintRule(1), plane)
    fill_polygon(labels, [(40, 60), (95, 70), (60, 95 - shift)], PaintRule(2), plane)
    paint_segment(labels, (20, 80), (20, 80), 4, PaintRule(7), plane)


def _new_project(folder: Path, classes: list[LabelClass] | None = None) -> Project:
    return Project.create(folder, classes or [LabelClass(0, "background", (0, 0, 0))])


@pytest.fixture
def project(tmp_path: Path, image_dir: Path):
    project = Project.create(tmp_path / "project", CLASSES)
    report = project.add_items([image_dir])
    assert not report.skipped
    for item in project.items():
        labels = np.zeros(item.mask_shape, np.uint8)
        if item.frames > 1:
            for frame in range(item.frames):
                _draw(labels, (frame,), shift=5 * frame)
        else:
            _draw(labels)
        project.save_mask(item.id, labels)
    yield project
    project.close()


def _sample_names(project: Project) -> list[str]:
    names = []
    for item in project.items():
        if item.frames > 1:
            names += [f"{item.name}_{f:04d}" for f in range(item.frames)]
        else:
            names.append(item.name)
    return names


def _sample_masks(project: Project) -> dict[str, np.ndarray]:
    masks = {}
    for item in project.items():
        labels = project.load_mask(item)
        if item.frames > 1:
            masks.update({f"{item.name}_{f:04d}": labels[f] for f in range(item.frames)})
        else:
            masks[item.name] = labels
    return masks


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# -- VOC -----------------------------------------------------------------------------------------
def test_voc_layout(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "voc"
    result = export_project(project, "voc", out)

    names = _sample_names(project)
    assert result.count == len(names) == 3 + STACK_FRAMES and result.skipped == []
    assert (out / "ImageSets/Segmentation/default.txt").read_text().splitlines() == names
    assert (out / "labelmap.txt").read_text() == (
        "# label:color_rgb:parts:actions\n"
        "background:0,0,0::\nobject:200,30,30::\ncell:30,200,30::\n"
        f"_unused_3:{','.join(map(str, voc_color(3)))}::\n"
        f"_unused_4:{','.join(map(str, voc_color(4)))}::\n"
        f"_unused_5:{','.join(map(str, voc_color(5)))}::\n"
        f"_unused_6:{','.join(map(str, voc_color(6)))}::\n"
        "marker:240,240,0::\n"
    )
    for name, labels in _sample_masks(project).items():
        with Image.open(out / "SegmentationClass" / f"{name}.png") as mask:
            assert mask.mode == "P"
            assert np.array_equal(np.array(mask), labels)
            palette = np.array(mask.getpalette()).reshape(-1, 3)
        assert set(np.unique(labels)) == {0, 1, 2, 7}
        assert [tuple(palette[c.index]) for c in CLASSES] == [c.color for c in CLASSES]
        assert tuple(palette[255]) == (224, 224, 192)  # VOC void, the project has no class 255
        with Image.open(out / "JPEGImages" / f"{name}.jpg") as jpeg:
            assert jpeg.format == "JPEG" and jpeg.mode == "RGB"
            assert jpeg.size == (labels.shape[1], labels.shape[0])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging left


class VOCSegmentationLike:
    """Reads a dataset the way torchvision.datasets.VOCSegmentation does (minus the download)."""

    def __init__(self, root: Path, image_set: str = "default") -> None:
        split_file = root / "ImageSets" / "Segmentation" / f"{image_set}.txt"
        with open(split_file) as f:
            file_names = [x.strip() for x in f]
        self.images = [root / "JPEGImages" / f"{x}.jpg" for x in file_names]
        self.targets = [root / "SegmentationClass" / f"{x}.png" for x in file_names]
        assert len(self.images) == len(self.targets)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, Image.Image]:
        img = Image.open(self.images[index]).convert("RGB")
        target = Image.open(self.targets[index])
        return img, target


def test_voc_reads_like_torchvision(project: Project, tmp_path: Path) -> None:
    export_project(project, "voc", tmp_path / "voc", subset="train")
    dataset = VOCSegmentationLike(tmp_path / "voc", "train")
    assert len(dataset) == 3 + STACK_FRAMES
    for index in range(len(dataset)):
        img, target = dataset[index]
        assert img.size == target.size
        assert target.mode == "P" and np.array(target).max() == 7


def test_voc_scales_16_bit_sources(project: Project, tmp_path: Path) -> None:
    export_project(project, "voc", tmp_path / "voc")
    jpeg = np.array(Image.open(tmp_path / "voc/JPEGImages/cell16.jpg"))
    assert jpeg.dtype == np.uint8 and jpeg.ndim == 3
    assert jpeg.std() > 20 and jpeg.min() < 30 and jpeg.max() > 225  # stretched, not truncated


def test_voc_copy_originals(project: Project, image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "voc"
    export_project(project, "voc", out, copy_originals=True)
    assert (out / "JPEGImages/camera.png").read_bytes() == (image_dir / "camera.png").read_bytes()
    assert (out / "JPEGImages/cell16.tif").read_bytes() == (image_dir / "cell16.tif").read_bytes()
    assert (out / "JPEGImages/pan_0002.jpg").is_file()  # a stack's frames are still JPEGs
    assert not (out / "JPEGImages/camera.jpg").exists()


def test_voc_class_255_keeps_its_colour(project: Project, tmp_path: Path) -> None:
    project.set_classes([*CLASSES, LabelClass(255, "edge", (1, 2, 3))])
    export_project(project, "voc", tmp_path / "voc")
    with Image.open(tmp_path / "voc/SegmentationClass/camera.png") as mask:
        assert tuple(mask.getpalette()[3 * 255 : 3 * 256]) == (1, 2, 3)


def test_voc_refuses_class_above_255(project: Project, tmp_path: Path) -> None:
    project.set_classes([*CLASSES, LabelClass(300, "wide", (9, 9, 9))])
    with pytest.raises(ExportError, match=r"'wide' has index 300.*index format"):
        export_project(project, "voc", tmp_path / "voc")
    assert not (tmp_path / "voc").exists()


def test_voc_missing_source_still_exports_the_mask(project: Project, image_dir: Path,
                                                   tmp_path: Path) -> None:
    (image_dir / "coffee.png").unlink()
    out = tmp_path / "voc"
    result = export_project(project, "voc", out)
    assert [name for name, _ in result.skipped] == ["coffee"]
    assert "missing" in result.skipped[0][1]
    assert (out / "SegmentationClass/coffee.png").is_file()
    assert not (out / "JPEGImages/coffee.jpg").exists()
    assert "coffee" not in (out / "ImageSets/Segmentation/default.txt").read_text().split()


# -- index ---------------------------------------------------------------------------------------
def test_index_layout(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "index"
    result = export_project(project, "index", out)
    assert result.count == 3 + STACK_FRAMES
    manifest = json.loads((out / "classes.json").read_text())
    assert manifest["format"] == "segstudio-index" and manifest["version"] == 1
    assert manifest["classes"] == [c.to_json() for c in CLASSES]
    for name, labels in _sample_masks(project).items():
        with Image.open(out / "masks" / f"{name}.png") as mask:
            assert mask.mode == "L"
            assert np.array_equal(np.array(mask), labels)
    assert not (out / "images").exists()


def test_index_uint16_masks(project: Project, tmp_path: Path) -> None:
    project.set_classes([*CLASSES, LabelClass(300, "wide", (9, 9, 9))])
    item = next(i for i in project.items() if i.name == "camera")
    labels = project.load_mask(item).astype(np.uint16)
    paint_segment(labels, (100, 100), (200, 150), 10, PaintRule(300))
    project.save_mask(item.id, labels)

    out = tmp_path / "index"
    export_project(project, "index", out)
    written = cv2.imread(str(out / "masks/camera.png"), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and np.array_equal(written, labels)
    assert 300 in written
    with Image.open(out / "masks/coffee.png") as other:  # every mask is 16-bit in this export
        assert other.mode.startswith("I")

    with _new_project(tmp_path / "fresh") as fresh:  # no images were copied: nothing to add
        assert len(import_dataset(fresh, "index", out).skipped) == 3 + STACK_FRAMES
        assert fresh.items() == []
    with _new_project(tmp_path / "b") as project_b:
        project_b.add_items([item.source])
        import_dataset(project_b, "index", out)
        imported = project_b.load_mask(project_b.items()[0])
    assert imported.dtype == np.uint16 and np.array_equal(imported, labels)


# -- round trips ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["voc", "index"])
def test_round_trip_into_fresh_project(project: Project, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / fmt
    export_project(project, fmt, out, copy_originals=True)
    with _new_project(tmp_path / "fresh") as fresh:
        result = import_dataset(fresh, fmt, out)
        assert result.new_classes == ["object", "cell", "marker"]
        assert fresh.classes() == CLASSES
        assert result.skipped == []
        exported, imported = _sample_masks(project), _sample_masks(fresh)
        assert sorted(imported) == sorted(exported)
        for name, labels in exported.items():
            assert np.array_equal(imported[name], labels), name
        stacks = [item.frames for item in fresh.items() if item.frames > 1]
        assert stacks == ([STACK_FRAMES] if fmt == "index" else [])  # VOC has no stacks


def test_import_into_the_same_items_restores_and_renumbers(project: Project,
                                                           tmp_path: Path) -> None:
    before = _sample_masks(project)
    export_project(project, "index", tmp_path / "index")
    # A second project over the same images where "cell" is class 5 and "object" is missing.
    with _new_project(tmp_path / "other", [CLASSES[0], LabelClass(5, "cell", (1, 1, 1))]) as other:
        other.add_items([item.source for item in project.items()])
        result = import_dataset(other, "index", tmp_path / "index")
        assert result.added_items == 0 and result.imported == 4
        assert [c.name for c in other.classes()] == ["background", "object", "cell", "marker"]
        assert [c.index for c in other.classes()] == [0, 1, 5, 7]
        for name, labels in _sample_masks(other).items():
            expected = before[name].copy()
            expected[before[name] == 2] = 5
            assert np.array_equal(labels, expected), name


def test_import_wrong_shape_changes_nothing(project: Project, tmp_path: Path,
                                            image_dir: Path) -> None:
    export_project(project, "voc", tmp_path / "voc")
    other_images = tmp_path / "other_images"
    other_images.mkdir()
    Image.fromarray(data.camera()[:100, :120]).save(other_images / "camera.png")
    with _new_project(tmp_path / "other") as other:
        other.add_items([other_images])
        item = other.items()[0]
        with pytest.raises(ImportFormatError) as caught:
            import_dataset(other, "voc", tmp_path / "voc")
        message = str(caught.value)
        assert "camera.png" in message and "256x256" in message and "120x100" in message
        assert [c.name for c in other.classes()] == ["background"]
        assert [i.name for i in other.items()] == ["camera"]  # coffee etc. were not added
        assert not other.has_mask(item.id)


def test_import_class_index_clash(project: Project, tmp_path: Path) -> None:
    export_project(project, "index", tmp_path / "index")
    classes = [CLASSES[0], LabelClass(2, "tumour", (5, 5, 5))]
    with (_new_project(tmp_path / "other", classes) as other,
          pytest.raises(ImportFormatError, match=r"'cell' has index 2.*'tumour'")):
        import_dataset(other, "index", tmp_path / "index")


def test_import_rgb_colour_masks(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "voc"
    export_project(project, "voc", out, copy_originals=True)
    masks = _sample_masks(project)
    colours = np.zeros((256, 3), np.uint8)
    for cls in CLASSES:
        colours[cls.index] = cls.color
    # CVAT sometimes writes colour masks instead of palette ones.
    Image.fromarray(colours[masks["camera"]]).save(out / "SegmentationClass/camera.png")
    with _new_project(tmp_path / "fresh") as fresh:
        import_dataset(fresh, "voc", out)
        assert np.array_equal(_sample_masks(fresh)["camera"], masks["camera"])

    rgb = colours[masks["camera"]]
    rgb[5, 5] = (1, 2, 3)
    Image.fromarray(rgb).save(out / "SegmentationClass/camera.png")
    with _new_project(tmp_path / "fresh2") as fresh:
        with pytest.raises(ImportFormatError, match=r"camera.png.*\(1, 2, 3\)"):
            import_dataset(fresh, "voc", out)
        assert fresh.items() == []


# -- all or nothing ------------------------------------------------------------------------------
def _fail_on_write(monkeypatch: pytest.MonkeyPatch, after: int) -> list[Path]:
    written: list[Path] = []
    real = fsutil._write_synced

    def write(path: Path, chunks) -> None:
        if len(written) == after:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        written.append(path)
        real(path, chunks)

    monkeypatch.setattr(fsutil, "_write_synced", write)
    return written


def test_disk_full_leaves_nothing(project: Project, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "voc"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    written = _fail_on_write(monkeypatch, after=5)
    with pytest.raises(ExportError, match="disk full while writing"):
        export_project(project, "voc", out)
    assert len(written) == 5
    assert _files(out) == ["notes.txt"]
    assert list(out.iterdir()) == [out / "notes.txt"]

    with pytest.raises(ExportError, match="disk full"):
        export_project(project, "index", tmp_path / "new_out")
    assert not (tmp_path / "new_out").exists()


def test_cancel_leaves_nothing(project: Project, tmp_path: Path) -> None:
    cancel = threading.Event()
    calls = []

    def report(done: int, total: int) -> None:
        calls.append((done, total))
        if done == 2:
            cancel.set()

    with pytest.raises(ExportError, match="export cancelled"):
        export_project(project, "voc", tmp_path / "voc", report=report, cancel=cancel)
    assert calls == [(0, 6), (1, 6), (2, 6)]
    assert not (tmp_path / "voc").exists()


def test_existing_output_keeps_unrelated_files(project: Project, tmp_path: Path) -> None:
    out = tmp_path / "voc"
    (out / "JPEGImages").mkdir(parents=True)
    (out / "README.txt").write_text("keep me")
    (out / "JPEGImages/extra.jpg").write_bytes(b"not ours")
    (out / "SegmentationClass").mkdir()
    (out / "SegmentationClass/camera.png").write_bytes(b"stale")
    export_project(project, "voc", out)
    assert (out / "README.txt").read_text() == "keep me"
    assert (out / "JPEGImages/extra.jpg").read_bytes() == b"not ours"
    assert Image.open(out / "SegmentationClass/camera.png").mode == "P"  # replaced


def test_failed_commit_restores_replaced_files(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old a")
    real_replace = fsutil.os.replace
    moves = []

    def replace(src, dst) -> None:
        moves.append(dst)
        if Path(dst).name == "list.txt":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(fsutil.os, "replace", replace)
    with (pytest.raises(ExportError, match="disk full while writing list.txt"),
          StagedDir(out) as stage):
        stage.write_bytes("a.txt", b"new a")
        stage.write_bytes("sub/b.txt", b"b")
        stage.write_bytes("list.txt", b"a\nb\n", last=True)
    monkeypatch.undo()
    assert _files(out) == ["a.txt"] and (out / "a.txt").read_text() == "old a"
    assert not (out / "sub").exists()


def test_staged_dir_refuses_duplicates_and_escapes(tmp_path: Path) -> None:
    with (pytest.raises(ExportError, match="both be written as x.png"),
          StagedDir(tmp_path / "out") as stage):
        stage.write_bytes("x.png", b"1")
        stage.write_bytes("x.png", b"2")
    with pytest.raises(ValueError), StagedDir(tmp_path / "out") as stage:
        stage.write_bytes("../evil.txt", b"")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_atomic_write_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "file.json"
    atomic_write_bytes(target, b"one")
    _fail_on_write(monkeypatch, after=0)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"one" and _files(tmp_path) == ["file.json"]


# -- registry ------------------------------------------------------------------------------------
def test_unknown_format_and_option(project: Project, tmp_path: Path) -> None:
    assert set(IMPORT_FORMATS) == {"voc", "index", "coco", "actions"}
    assert set(EXPORT_FORMATS) == {"voc", "index", "nifti", "dicom-seg", "frames", "coco", "yolo",
                                   "actions"}
    with pytest.raises(ExportError, match="known formats: actions, coco, dicom-seg, frames, "
                                          "index, nifti, voc, yolo"):
        export_project(project, "cityscapes", tmp_path / "x")
    with pytest.raises(ImportFormatError, match="known formats: actions, coco, index, voc"):
        import_dataset(project, "yolo", tmp_path)
    with pytest.raises(ExportError, match="no option quality"):
        export_project(project, "index", tmp_path / "x", quality=3)
    assert not (tmp_path / "x").exists()


def test_import_rejects_a_non_dataset(project: Project, tmp_path: Path) -> None:
    with pytest.raises(ImportFormatError, match="not a Pascal VOC dataset"):
        import_dataset(project, "voc", tmp_path)
    with pytest.raises(ImportFormatError, match="not an index-format dataset"):
        import_dataset(project, "index", tmp_path)
