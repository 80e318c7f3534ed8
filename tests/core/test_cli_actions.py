"""``segstudio-cli classify``: an action model's scores for every clip of a real video into one
JSON file, the summary on stdout, and one-line errors.

Data: a lossless FFV1 clip of scikit-image's astronaut panning, written with cv2.VideoWriter.
The main test runs a registered action model (R3D-18, untrained, saved as a SegStudio
checkpoint); the others use a tiny stand-in model through a patched loader.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from dicom_series import run_cli
from torch import nn
from video_clips import write_astronaut_pan

from core import cli_actions
from core.inference.clips import classify_video, clip_windows
from core.io.video import open_video
from core.models.loading import LoadedModel

REPO_ROOT = Path(__file__).resolve().parents[2]
FRAMES, HEIGHT, WIDTH, FPS = 40, 120, 160, 30.0
LABELS = ("walk", "run", "jump")


def write_pan(path: Path, frames: int = FRAMES, fps: float = FPS) -> Path:
    write_astronaut_pan(path, frames, (WIDTH, HEIGHT), fps=fps, top=80, left=100)
    return path


pytestmark = pytest.mark.usefixtures("restore_opencv_log_env")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pan(tmp_path_factory.mktemp("classify") / "pan.avi")


def assert_one_error(code: int, err: str, text: str) -> None:
    assert code == 1, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("segstudio-cli: error: "), err
    assert text in lines[0], err


# -- a registered model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def r3d_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    registry = pytest.importorskip("core.models.registry")
    if "r3d_18" not in registry.list_models("action"):
        pytest.skip("the action model families are not registered")
    from core.models.checkpoint import save_checkpoint
    from core.models.loading import load_model

    torch.manual_seed(0)
    loaded = load_model("r3d_18", num_classes=len(LABELS))
    path = tmp_path_factory.mktemp("weights") / "r3d_untrained.pt"
    save_checkpoint(path, "r3d_18", loaded.module, list(LABELS), 3, list(loaded.mean),
                    list(loaded.std))
    return path


def test_classify_a_real_clip_with_r3d_18(capsys, clip: Path, r3d_checkpoint: Path,
                                          tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    code, stdout, err = run_cli(capsys, "classify", clip, "--model", "r3d_18", "--weights",
                                r3d_checkpoint, "--device", "cpu", "--top-k", "2", "--out", out)
    assert code == 0, err
    saved = json.loads(out.read_text())
    # Kinetics weights see 15 fps: every 2nd frame of this 30 fps clip, 16 frames span 31.
    windows = clip_windows(FRAMES, 16, 2)
    assert [(c["start"], c["end"]) for c in saved["clips"]] == [(0, 30), (9, 39)]
    assert [c["frames"] for c in saved["clips"]] == [list(w.frame_indices) for w in windows]
    assert saved["labels"] == list(LABELS) and saved["model"] == "r3d_18"
    assert saved["weights"] == "r3d_18 (checkpoint r3d_untrained.pt)"
    assert (saved["clip_frames"], saved["stride"], saved["step"]) == (16, 2, 31)
    assert saved["frame_count"] == FRAMES and saved["fps"] == FPS and saved["video"] == str(clip)
    scores = np.array([c["scores"] for c in saved["clips"]])
    assert np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(saved["scores"], scores.mean(axis=0), atol=1e-5)
    for entry in saved["clips"]:
        assert len(entry["top_k"]) == 2
        assert entry["top_k"][0]["label"] == LABELS[int(np.argmax(entry["scores"]))]
        assert entry["start_s"] == round(entry["start"] / FPS, 6)
    summary = json.loads(stdout)
    assert summary == {"out": str(out), "model": "r3d_18", "weights": saved["weights"],
                       "clips": 2, "frames": FRAMES, "clip_frames": 16, "stride": 2,
                       "step": 31, "device": "cpu", "top_k": saved["top_k"], "notes": []}
    # the same numbers as the library call
    from core.models.action_specs import clip_spec
    from core.models.loading import load_model

    loaded = load_model("r3d_18", weights=r3d_checkpoint)
    with open_video(clip) as reader:
        direct = classify_video(loaded, reader, clip_spec("r3d_18"), device="cpu")
    assert np.allclose(direct.clip_scores, scores, atol=1e-5)


def test_offline_published_weights_are_one_line(capsys, clip: Path, empty_torch_home: Path,
                                                no_network: list, tmp_path: Path) -> None:
    registry = pytest.importorskip("core.models.registry")
    if "r3d_18" not in registry.list_models("action"):
        pytest.skip("the action model families are not registered")
    code, _, err = run_cli(capsys, "classify", clip, "--model", "r3d_18", "--out",
                           tmp_path / "s.json")
    assert_one_error(code, err, "are not on this machine")
    assert no_network == [] and not (tmp_path / "s.json").exists()


# -- the stand-in ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StandInSpec:
    frames: int = 4
    size: tuple[int, int] = (32, 32)
    resize: tuple[int, ...] = (40,)
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    input: str = "clip"
    fps: float | None = None
    flow_frames: int = 0
    flow_scale: float = 20.0


class MeanColour(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, len(LABELS))
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[3.0, -1, 0], [0, 2, -2], [-1, 0, 3]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.mean(dim=(2, 3, 4)))


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    calls: list[tuple] = []

    def load(name: str, weights: str | None, device: str) -> tuple[LoadedModel, StandInSpec]:
        calls.append((name, weights, device))
        module = MeanColour().eval()
        return LoadedModel(module, name, LABELS, 3, StandInSpec.mean, StandInSpec.std,
                           "stand-in.pt", "checkpoint"), StandInSpec()

    monkeypatch.setattr(cli_actions, "load_action_model", load)
    return calls


def test_stride_step_and_batch_flags(capsys, clip: Path, stand_in: list,
                                     tmp_path: Path) -> None:
    out = tmp_path / "deep" / "scores.json"
    code, stdout, err = run_cli(capsys, "classify", clip, "--model", "any", "--weights", "w.pt",
                                "--stride", "3", "--step", "5", "--batch-size", "2", "--out", out)
    assert code == 0, err
    assert stand_in == [("any", "w.pt", "auto")]
    saved = json.loads(out.read_text())
    windows = clip_windows(FRAMES, 4, 3, 5)
    assert [(c["start"], c["end"]) for c in saved["clips"]] == [(w.start, w.end) for w in windows]
    assert (saved["stride"], saved["step"]) == (3, 5)
    assert len(saved["top_k"]) == 3  # --top-k 5 lists every label of a 3-class model
    assert json.loads(stdout)["clips"] == len(windows)


def test_a_short_video_is_padded_with_a_note(capsys, stand_in: list, tmp_path: Path) -> None:
    short = write_pan(tmp_path / "short.avi", frames=3)
    code, stdout, err = run_cli(capsys, "classify", short, "--model", "any", "--out",
                                tmp_path / "s.json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["clips"] == 1 and "repeated" in summary["notes"][0]
    assert err.startswith("note: The video has 3 frames")
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["clips"][0]["frames"] == [0, 1, 2, 2]


@pytest.mark.parametrize(("args", "text"), [
    (["--step", "100"], "--step 100: step 100 is longer than a clip's span of 4 frames"),
    (["--stride", "0"], "--stride must be at least 1; got 0."),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--flow-method", "dis"], "--flow-method applies to two-stream models only"),
])
def test_bad_flags_are_one_line(capsys, clip: Path, stand_in: list, tmp_path: Path,
                                args: list[str], text: str) -> None:
    code, _, err = run_cli(capsys, "classify", clip, "--model", "any", *args, "--out",
                           tmp_path / "s.json")
    assert_one_error(code, err, text)
    assert not (tmp_path / "s.json").exists()


def test_bad_inputs_are_one_line(capsys, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    code, _, err = run_cli(capsys, "classify", clip, "--model", "nope", "--out", out)
    assert_one_error(code, err, "Unknown model 'nope'")
    code, _, err = run_cli(capsys, "classify", clip, "--model", "unet", "--out", out)
    assert_one_error(code, err, "unet is a semantic model; classify needs an action model")
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    code, _, err = run_cli(capsys, "classify", garbage, "--model", "unet", "--out", out)
    assert_one_error(code, err, "cannot be opened as a video")
    code, _, err = run_cli(capsys, "classify", tmp_path / "missing.mp4", "--model", "unet",
                           "--out", out)
    assert_one_error(code, err, "does not exist")
    code, _, err = run_cli(capsys, "classify", clip, "--model", "unet", "--out", tmp_path)
    assert_one_error(code, err, "is a folder")
    assert not out.exists()


def test_a_model_without_published_weights_needs_weights(capsys, clip: Path,
                                                        tmp_path: Path) -> None:
    registry = pytest.importorskip("core.models.registry")
    if "c3d" not in registry.list_models("action"):
        pytest.skip("the action model families are not registered")
    code, _, err = run_cli(capsys, "classify", clip, "--model", "c3d", "--out",
                           tmp_path / "s.json")
    assert_one_error(code, err, "c3d has no published weights; pass --weights")


def test_help_does_not_import_torch() -> None:
    probe = ("import sys\nfrom core import cli\ntry:\n    cli.main(['classify', '--help'])\n"
             "except SystemExit:\n    pass\nprint('torch' in sys.modules, 'cv2' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120, check=True)
    assert "--flow-method" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "False False"
