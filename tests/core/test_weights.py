"""Weights on this machine: SegStudio checkpoints, unsafe files refused, the torch hub cache,
offline errors and ``segstudio-cli models``. Real files, tiny models, no network."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core import cli, cli_models
from core.errors import CorruptFileError, SegStudioError, UnsupportedFormatError
from core.models.loading import (
    ChecksumError,
    OfflineWeightsError,
    UnsafeCheckpointError,
    WeightsMismatchError,
    WeightsNotFoundError,
    cached_weights_path,
    install_weights_file,
    is_segstudio_checkpoint,
    load_model,
    read_checkpoint,
    resolve_weights_file,
    save_checkpoint,
    weights_status,
)
from core.models.registry import TASKS, get_model, list_models, model_info
from core.models.weights import Weights

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = {"base_channels": 8, "depth": 2}
CLASSES = ["background", "cell", "edge"]
TV_MODEL = "deeplabv3_mobilenet_v3_large"  # the smallest torchvision model with weights


@pytest.fixture(autouse=True)
def torch_home(empty_torch_home: Path) -> Path:
    """Every test of this file runs with an empty TORCH_HOME (tests/core/conftest.py)."""
    return empty_torch_home




@pytest.fixture
def tiny_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return get_model("unet", num_classes=3, in_channels=1, **TINY).eval()


@pytest.fixture
def checkpoint(tmp_path: Path, tiny_unet: torch.nn.Module) -> Path:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    return save_checkpoint(folder / "best.pt", "unet", tiny_unet, CLASSES, 1, [0.4], [0.2],
                           model_kwargs=TINY,
                           meta={"epoch": 7, "metrics": {"miou": np.float32(0.5)}})


def tv_record() -> Weights:
    return next(iter(model_info(TV_MODEL).weights().values()))


def image(channels: int = 1, h: int = 37, w: int = 45) -> torch.Tensor:
    return torch.rand(1, channels, h, w, generator=torch.Generator().manual_seed(1))


# -- SegStudio checkpoints -------------------------------------------------------------------------
def test_checkpoint_round_trip(checkpoint: Path, tiny_unet: torch.nn.Module) -> None:
    loaded = load_model("unet", weights=checkpoint)
    x = image()
    with torch.no_grad():
        assert torch.equal(loaded.module(x), tiny_unet(x))
    assert not loaded.module.training
    assert (loaded.model, loaded.classes, loaded.in_channels) == ("unet", tuple(CLASSES), 1)
    assert loaded.mean == pytest.approx((0.4,)) and loaded.std == pytest.approx((0.2,))
    assert loaded.weights_source == "checkpoint" and loaded.weights_path == checkpoint
    assert loaded.model_kwargs == TINY and loaded.meta["epoch"] == 7


def test_checkpoint_is_a_plain_dict_written_atomically(checkpoint: Path) -> None:
    raw = torch.load(checkpoint, weights_only=True)  # readable by anyone, safely
    assert is_segstudio_checkpoint(raw) and raw["version"] == 1
    assert raw["meta"]["metrics"]["miou"] == 0.5 and "created" in raw["meta"]
    assert [p.name for p in checkpoint.parent.iterdir()] == ["best.pt"]  # no temporary left
    read = read_checkpoint(checkpoint)
    assert (read.model, read.classes, read.num_classes, read.model_kwargs) == (
        "unet", CLASSES, 3, TINY)


def test_checkpoint_of_another_architecture_is_refused(checkpoint: Path) -> None:
    with pytest.raises(WeightsMismatchError) as err:
        load_model("attention_unet", weights=checkpoint)
    assert "for unet with 3 classes" in str(err.value)
    assert "asked for attention_unet" in str(err.value)


def test_checkpoint_with_another_class_count_is_refused(checkpoint: Path) -> None:
    with pytest.raises(WeightsMismatchError, match="unet with 3 classes.*unet with 5 classes"):
        load_model("unet", weights=checkpoint, num_classes=5)
    with pytest.raises(WeightsMismatchError, match="1 input channel; asked .* 3 input channels"):
        load_model("unet", weights=checkpoint, in_channels=3)


def test_plain_state_dict_sizes_are_inferred(tmp_path: Path, tiny_unet: torch.nn.Module) -> None:
    path = tmp_path / "weights.pth"
    torch.save(tiny_unet.state_dict(), path)
    loaded = load_model("unet", weights=path, **TINY)
    assert (loaded.classes, loaded.in_channels) == (("class 0", "class 1", "class 2"), 1)
    assert loaded.weights_source == "state_dict"
    x = image()
    with torch.no_grad():
        assert torch.equal(loaded.module(x), tiny_unet(x))


def test_plain_state_dict_of_another_shape_is_a_clear_error(
        tmp_path: Path, tiny_unet: torch.nn.Module) -> None:
    path = tmp_path / "weights.pth"
    torch.save(tiny_unet.state_dict(), path)
    with pytest.raises(WeightsMismatchError, match=r"head.weight: \[3, 8, 1, 1\] in the file"):
        load_model("unet", weights=path, num_classes=4, **TINY)
    with pytest.raises(WeightsMismatchError, match="does not fit the unet model"):
        load_model("unet", weights=path, base_channels=16, depth=2)  # other widths


def test_random_weights(tmp_path: Path) -> None:
    loaded = load_model("unet", num_classes=2, in_channels=3, **TINY)
    assert loaded.weights_source == "random" and loaded.classes == ("class 0", "class 1")
    assert loaded.module(image(3)).shape == (1, 2, 37, 45)
    with pytest.raises(ValueError, match="num_classes"):
        load_model("unet")


# -- files that must not be loaded ---------------------------------------------------------------
class _OpensAFile:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _write_payload(path: Path, marker: Path, how: str) -> None:
    payload = {"state_dict": {"head.weight": torch.zeros(1)}, "evil": _OpensAFile(marker)}
    if how == "torch-zip":
        torch.save(payload, path)
    elif how == "torch-legacy":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(how[-1])))


@pytest.mark.parametrize("how", ["torch-zip", "torch-legacy", "pickle-2", "pickle-5"])
def test_pickle_payload_is_refused_and_never_runs(tmp_path: Path, how: str) -> None:
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    _write_payload(path, marker, how)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match="never executes code from files"):
        load_model("unet", weights=path, **TINY)
    with pytest.raises(UnsafeCheckpointError):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint", bytes(range(256)) * 4,
                                     "truncated"])
def test_unreadable_files_are_corrupt(tmp_path: Path, tiny_unet: torch.nn.Module,
                                      content: bytes | str) -> None:
    path = tmp_path / "broken.pt"
    if content == "truncated":
        torch.save(tiny_unet.state_dict(), path)
        content = path.read_bytes()[:500]
    path.write_bytes(content)
    with pytest.raises(CorruptFileError, match="broken.pt"):
        load_model("unet", weights=path, **TINY)


def test_torch_file_of_other_data_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(UnsupportedFormatError, match="neither a SegStudio checkpoint"):
        load_model("unet", weights=path, **TINY)
    with pytest.raises(UnsupportedFormatError, match="not a SegStudio checkpoint"):
        read_checkpoint(path)


def test_missing_files_and_unknown_names(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(WeightsNotFoundError, match="nope.pt does not exist"):
        load_model("unet", weights=missing, num_classes=3)
    with pytest.raises(WeightsNotFoundError, match="nope.pt does not exist"):
        load_model("unet", weights=str(missing), num_classes=3)
    with pytest.raises(WeightsNotFoundError, match="nope.pth does not exist"):
        resolve_weights_file(tv_record(), explicit=tmp_path / "nope.pth")
    with pytest.raises(WeightsNotFoundError, match="neither a weights file nor a published"):
        load_model("unet", weights="unet.imaginary")
    with pytest.raises(WeightsMismatchError, match=f"are for {TV_MODEL}; asked for unet"):
        load_model("unet", weights=tv_record().name)


# -- published weights: cache, offline, download -----------------------------------------------------
def _torchvision_model() -> torch.nn.Module:
    from torchvision.models import segmentation

    torch.manual_seed(0)
    builder = getattr(segmentation, TV_MODEL)
    return builder(weights=None, weights_backbone=None, num_classes=21, aux_loss=True).eval()


def test_torchvision_weights_found_in_the_cache(torch_home: Path,
                                                no_network: list[object]) -> None:
    record = tv_record()
    assert record.file_name == Path(record.url).name
    reference = _torchvision_model()
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(reference.state_dict(), checkpoints / record.file_name)  # the official layout
    assert weights_status(record) == f"cached: {checkpoints / record.file_name}"

    loaded = load_model(TV_MODEL, weights=record.name)  # the cache is trusted: no hash check
    x = image(3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), reference(x)["out"])
    assert loaded.classes == record.classes and len(loaded.classes) == 21
    assert (loaded.weights_source, loaded.weights_path) == (
        "torchvision", checkpoints / record.file_name)
    assert no_network == []
    without_aux = load_model(TV_MODEL, weights=record.name, aux_loss=False)
    with torch.no_grad():
        torch.testing.assert_close(without_aux.module(x), reference(x)["out"])
    with pytest.raises(ChecksumError, match="not the published"):  # asked to check: it is fake
        resolve_weights_file(record, verify=True)
    with pytest.raises(WeightsMismatchError, match="21 classes.*asked for .* 5 classes"):
        load_model(TV_MODEL, weights=record.name, num_classes=5)


def test_offline_fails_fast_without_touching_the_network(torch_home: Path,
                                                         no_network: list[object]) -> None:
    record = tv_record()
    assert weights_status(record) == "not on this machine"
    with pytest.raises(OfflineWeightsError) as err:  # fast: no connection is even tried
        load_model(TV_MODEL, weights=record.name)
    message = str(err.value)
    assert record.file_name in message and record.name in message
    assert str(torch_home / "hub" / "checkpoints") in message and "--weights FILE" in message
    assert isinstance(err.value, SegStudioError) and no_network == []


def test_download_only_when_allowed_and_checked(torch_home: Path, no_network: list[object],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    record = tv_record()
    calls = []

    def fake_download(url: str, dst: str, hash_prefix: str | None = None,
                      progress: bool = True) -> None:
        calls.append((url, Path(dst), hash_prefix))
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = resolve_weights_file(record, allow_network=True, progress=False)
    assert calls == [(record.url, torch_home / "hub" / "checkpoints" / record.file_name,
                      record.sha256)]
    assert path == cached_weights_path(record)

    def bad_hash(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True):
        raise RuntimeError(f'invalid hash value (expected "{hash_prefix}", got "0000")')

    path.unlink()
    monkeypatch.setattr(torch.hub, "download_url_to_file", bad_hash)
    with pytest.raises(ChecksumError, match="not the published file"):
        resolve_weights_file(record, allow_network=True, progress=False)


def test_download_failure_is_an_offline_error(no_network: list[object]) -> None:
    record = Weights("unet.remote", "unet", "file", "remote.pth",
                     url="http://127.0.0.1:9/remote.pth", classes=("a", "b"))
    with pytest.raises(OfflineWeightsError, match="the download failed"):
        resolve_weights_file(record, allow_network=True, progress=False)
    assert len(no_network) == 1  # tried once, when allowed


def test_users_file_is_checked_and_installed(tmp_path: Path) -> None:
    content = b"published weights"
    import hashlib

    digest = hashlib.sha256(content).hexdigest()
    record = Weights("unet.demo", "unet", "file", f"demo-{digest[:8]}.pth", sha256=digest[:8])
    good, bad = tmp_path / "downloaded.pth", tmp_path / "other.pth"
    good.write_bytes(content)
    bad.write_bytes(b"something else")
    assert resolve_weights_file(record, explicit=good) == good
    with pytest.raises(ChecksumError, match=f"expected {digest[:8]}"):
        resolve_weights_file(record, explicit=bad)
    assert resolve_weights_file(record, explicit=bad, verify=False) == bad
    installed = install_weights_file(record, good)
    assert installed == cached_weights_path(record) and installed.read_bytes() == content


# -- segstudio-cli models ------------------------------------------------------------------------
def run_models_cli(torch_home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TORCH_HOME": str(torch_home)}
    result = subprocess.run([sys.executable, "-m", "core.cli", "models", *args], cwd=REPO_ROOT,
                            env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def test_cli_models_json_marks_weights_available(torch_home: Path) -> None:
    rows = [json.loads(line) for line in run_models_cli(torch_home, "--json").stdout.splitlines()]
    assert [row["name"] for row in rows] == list_models()
    published = [w for row in rows for w in row["weights"]]
    assert published and not any(w["available"] for w in published)
    assert {row["paper"] for row in rows} and all(row["task"] in TASKS for row in rows)

    record = tv_record()
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / record.file_name).write_bytes(b"placed by the user")
    rows = [json.loads(line) for line in run_models_cli(torch_home, "--json").stdout.splitlines()]
    status = {w["name"]: w for row in rows for w in row["weights"]}
    assert status[record.name]["available"] is True
    assert status[record.name]["path"] == str(checkpoints / record.file_name)
    assert sum(w["available"] for w in status.values()) == 1


def test_cli_models_table(torch_home: Path) -> None:
    out = run_models_cli(torch_home).stdout
    for name in list_models():
        assert name in out
    assert "not on this machine" in out and tv_record().file_name in out


def test_cli_models_in_process_touches_no_network(no_network: list[object],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["models", "--task", "semantic", "--params", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["name"] for row in rows] == list_models("semantic")
    assert all(row["params"] > 0 for row in rows)
    assert no_network == [] and cli_models.MODEL_TASKS == TASKS
