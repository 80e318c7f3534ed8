"""``segstudio-cli predict`` and core.predict: index PNGs per input, or masks into a project."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.inference.engine import InferenceEngine, InferenceSettings
from core.models import get_model
from core.models.loading import load_model, save_checkpoint
from core.project.store import Project

KWARGS = {"base_channels": 8, "depth": 2}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small U-Net in SegStudio's checkpoint format, with three named classes."""
    torch.manual_seed(3)
    model = get_model("unet", num_classes=3, in_channels=3, **KWARGS)
    path = tmp_path_factory.mktemp("ckpt") / "unet_small.pt"
    save_checkpoint(path, "unet", model, ["background", "cat", "cup"], 3,
                    (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), model_kwargs=KWARGS)
    return path


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def expected_labels(checkpoint: Path, image: np.ndarray, tile: int = 128) -> np.ndarray:
    engine = InferenceEngine(InferenceSettings(device="cpu", tile_size=tile))
    return engine.predict(load_model("unet", weights=checkpoint), image).labels


def test_predict_writes_index_pngs_of_the_input_size(tmp_path, sample_dir, checkpoint):
    out = tmp_path / "pred"
    result = run_cli("predict", "--model", "unet", "--weights", checkpoint, "--device", "cpu",
                     "--tile", 128, "--overlap", 0.25, sample_dir / "coffee.jpg",
                     sample_dir / "camera.png", "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["classes"] == ["background", "cat", "cup"]
    assert sorted(Path(p).name for p in summary["written"]) == ["camera.png", "coffee.png"]
    for name, source in (("coffee", "coffee.jpg"), ("camera", "camera.png")):
        image = np.array(Image.open(sample_dir / source))
        written = np.array(Image.open(out / f"{name}.png"))
        assert written.shape == image.shape[:2]
        assert np.array_equal(written, expected_labels(checkpoint, image))
    classes = json.loads((out / "classes.json").read_text())
    assert [c["name"] for c in classes["classes"]] == ["background", "cat", "cup"]


def test_predict_a_stack_writes_one_png_per_page(tmp_path, sample_dir, checkpoint):
    out = tmp_path / "pred"
    result = run_cli("predict", "--model", "unet", "--weights", checkpoint, "--device", "cpu",
                     sample_dir / "camera_stack.tif", "--out", out)
    assert result.returncode == 0, result.stderr
    pages = sorted(p.name for p in out.glob("camera_stack_*.png"))
    assert pages == [f"camera_stack_{i:04d}.png" for i in range(5)]
    assert np.array(Image.open(out / pages[0])).shape == (160, 160)


def test_predict_into_a_project_skips_done_items(tmp_path, sample_dir, checkpoint):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("camera.png", "chelsea.png"):
        shutil.copy(sample_dir / name, images)
    with Project.create(tmp_path / "proj") as project:
        project.add_items([images])
        chelsea = next(i for i in project.items() if i.name == "chelsea")
        project.set_state(chelsea.id, "done")
    result = run_cli("predict", "--model", "unet", "--weights", checkpoint, "--device", "cpu",
                     "--tile", 256, "--project", tmp_path / "proj")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["written"] == ["camera"]
    with Project.open(tmp_path / "proj") as project:
        camera = next(i for i in project.items() if i.name == "camera")
        assert camera.state == "needs_review"
        image = np.array(Image.open(images / "camera.png"))
        assert np.array_equal(project.load_mask(camera), expected_labels(checkpoint, image, 256))
        assert not project.has_mask(chelsea.id)


def test_predict_user_errors_are_one_line(tmp_path, sample_dir, checkpoint):
    result = run_cli("predict", "--model", "unet", sample_dir / "camera.png", "--out", tmp_path)
    assert result.returncode == 1
    assert "unet has no published weights" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1

    result = run_cli("predict", "--model", "nonet", "--weights", checkpoint,
                     sample_dir / "camera.png", "--out", tmp_path)
    assert result.returncode == 1 and "Unknown model 'nonet'" in result.stderr

    result = run_cli("predict", "--model", "attention_unet", "--weights", checkpoint,
                     sample_dir / "camera.png", "--out", tmp_path)
    assert result.returncode == 1 and "checkpoint for unet" in result.stderr

    result = run_cli("predict", "--model", "fcn_resnet50", sample_dir / "camera.png",
                     "--out", tmp_path)
    assert result.returncode == 1 and "fcn_resnet50_coco" in result.stderr  # offline: names file

    result = run_cli("predict", "--model", "unet", "--weights", checkpoint, "--tile", 4,
                     sample_dir / "camera.png", "--out", tmp_path)
    assert result.returncode == 1 and "tile" in result.stderr
