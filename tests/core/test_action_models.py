"""Action recognition models (task "action"): every model on its clip, C3D's table, the call
convention and clip specs, two-stream, fusion, LRCN, divided space-time attention, parameter
counts through the CLI, and offline loading of an official torchvision video weights file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torchvision.models import video as tv_video

from core.models import ClipSpec, clip_spec, get_model, list_models, model_info
from core.models.action_specs import INPUT_LAYOUTS, SPECS, adjust_spec
from core.models.loading import OfflineWeightsError, load_model, save_checkpoint
from tests.dicom_series import run_cli

REPO_ROOT = Path(__file__).resolve().parents[2]
ACTION = ["c3d", "early_fusion_resnet18", "late_fusion_resnet18", "lrcn_resnet18", "mc3_18",
          "mvit_v2_s", "r2plus1d_18", "r3d_18", "s3d", "swin3d_t", "timesformer",
          "two_stream_resnet18"]
TORCHVISION = {  # model -> its official weights enum member
    "r3d_18": tv_video.R3D_18_Weights.KINETICS400_V1,
    "mc3_18": tv_video.MC3_18_Weights.KINETICS400_V1,
    "r2plus1d_18": tv_video.R2Plus1D_18_Weights.KINETICS400_V1,
    "s3d": tv_video.S3D_Weights.KINETICS400_V1,
    "mvit_v2_s": tv_video.MViT_V2_S_Weights.KINETICS400_V1,
    "swin3d_t": tv_video.Swin3D_T_Weights.KINETICS400_V1,
}
HEAVY = {"r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v2_s", "swin3d_t", "c3d"}
# Clips shortened for speed where the model takes any T (the spatial size stays the model's):
# S3D's published clip is 128 frames (>= 14 run), Video Swin's 32.
SHORT_FRAMES = {"s3d": 16, "swin3d_t": 8}
CLASSES = 3


@pytest.fixture(autouse=True, scope="module")
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def _inputs(spec: ClipSpec, batch: int) -> list[torch.Tensor]:
    return [torch.randn(*shape) for shape in spec.layout(batch)]


# -- the registry and the clip specs ----------------------------------------------------------
def test_action_models_are_registered_with_a_clip_spec() -> None:
    assert list_models("action") == ACTION
    for name in ACTION:
        info = model_info(name)
        assert info.task == "action" and info.input_kind == "clip"
        assert isinstance(info.clip, ClipSpec) and info.clip is SPECS[name]
        assert clip_spec(name) == info.clip
        assert info.clip.input in INPUT_LAYOUTS
    assert {n for n in ACTION if model_info(n).weights()} == set(TORCHVISION)
    with pytest.raises(ValueError, match="not an action model"):
        clip_spec("unet")
    assert all(model_info(n).clip is None for n in list_models() if n not in ACTION)


def test_clip_layouts_of_the_call_convention() -> None:
    assert clip_spec("c3d").layout(2) == ((2, 3, 16, 112, 112),)
    assert clip_spec("timesformer").layout(2) == ((2, 8, 3, 112, 112),)
    assert clip_spec("two_stream_resnet18").layout(2) == ((2, 3, 224, 224), (2, 20, 224, 224))
    layouts = {name: clip_spec(name).input for name in ACTION}
    assert {n for n, v in layouts.items() if v == "clip"} == {"c3d", *TORCHVISION}
    assert layouts["two_stream_resnet18"] == "two_stream"


def test_c3d_clip_spec_is_the_paper_preprocessing() -> None:
    spec = clip_spec("c3d")
    assert (spec.frames, spec.size, spec.resize) == (16, (112, 112), (128, 171))
    assert spec.resize_short is None and spec.fixed_frames and spec.fixed_size
    assert spec.resized_size(480, 640) == (128, 171) == spec.resized_size(1080, 1920)


def test_resize_of_short_side_specs() -> None:
    spec = clip_spec("swin3d_t")
    assert spec.resize_short == 256
    assert spec.resized_size(480, 640) == (256, 341)
    assert spec.resized_size(640, 480) == (341, 256)
    assert spec.resized_size(256, 256) == (256, 256)


def test_builder_options_adjust_the_clip_spec() -> None:
    spec = clip_spec("timesformer", frames=16, image_size=224)
    assert (spec.frames, spec.min_frames, spec.size, spec.resize) == (16, 16, (224, 224), (256,))
    two = clip_spec("two_stream_resnet18", flow_frames=5)
    assert (two.flow_frames, two.flow_channels, two.frames) == (5, 10, 6)
    assert clip_spec("early_fusion_resnet18", frames=4).frames == 4
    assert adjust_spec(clip_spec("c3d"), {}) is clip_spec("c3d")
    with pytest.raises(ValueError):
        ClipSpec(frames=8, size=(112, 112), resize=(128,), input="volume")
    with pytest.raises(ValueError):
        ClipSpec(frames=4, size=(112, 112), resize=(128,), input="two_stream", flow_frames=10)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_specs_and_weights_follow_the_official_weights(name: str) -> None:
    member, spec = TORCHVISION[name], clip_spec(name)
    preset = member.transforms()
    assert spec.input == "clip"
    assert spec.size == tuple(preset.crop_size)
    assert spec.resize == tuple(preset.resize_size)
    assert spec.mean == pytest.approx(tuple(preset.mean))
    assert spec.std == pytest.approx(tuple(preset.std))
    docs = member.meta["_docs"]
    assert f"`clip_len={spec.frames}`" in docs
    assert re.search(r"`frame_rate=([\d.]+)`", docs).group(1) == f"{spec.fps:g}"
    assert spec.min_frames == member.meta.get("min_temporal_size", 1)

    (record,) = model_info(name).weights().values()
    assert record.name == f"{name}.kinetics400" and record.source == "torchvision"
    assert record.classes == tuple(member.meta["categories"]) and record.num_classes == 400
    assert member.url.endswith("/" + record.file_name) and record.sha256 in record.file_name
    assert (record.mean, record.std) == (spec.mean, spec.std)


def test_action_specs_import_without_torch() -> None:
    code = ("import sys; from core.models.action_specs import clip_spec; "
            "s = clip_spec('c3d'); print(s.frames, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120, check=True)
    assert result.stdout.split() == ["16", "False"]


# -- every model on its clip ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ACTION)
def test_forward_on_the_spec_clip(name: str) -> None:
    spec = clip_spec(name)
    if name in SHORT_FRAMES:
        spec = replace(spec, frames=SHORT_FRAMES[name])
    batch = 1 if name in HEAVY else 2
    model = get_model(name, num_classes=CLASSES).eval()
    with torch.no_grad():
        scores = model(*_inputs(spec, batch))
    assert scores.shape == (batch, CLASSES)
    assert torch.isfinite(scores).all()


# -- C3D ----------------------------------------------------------------------------------------------
C3D_TABLE = {
    "conv1": (64, 16, 112, 112), "pool1": (64, 16, 56, 56),
    "conv2": (128, 16, 56, 56), "pool2": (128, 8, 28, 28),
    "conv3a": (256, 8, 28, 28), "conv3b": (256, 8, 28, 28), "pool3": (256, 4, 14, 14),
    "conv4a": (512, 4, 14, 14), "conv4b": (512, 4, 14, 14), "pool4": (512, 2, 7, 7),
    "conv5a": (512, 2, 7, 7), "conv5b": (512, 2, 7, 7), "pool5": (512, 1, 3, 3),
    "fc6": (4096,), "fc7": (4096,), "fc8": (CLASSES,),
}


def _c3d_shapes(model: torch.nn.Module, clip: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [model.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
        for name in C3D_TABLE]
    try:
        with torch.no_grad():
            model(clip)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def test_c3d_every_intermediate_shape_is_the_table() -> None:
    model = get_model("c3d", num_classes=CLASSES).eval()
    shapes = _c3d_shapes(model, torch.randn(1, 3, 16, 112, 112))
    assert shapes == C3D_TABLE
    assert list(shapes) == list(C3D_TABLE)  # the layers run in the table's order
    assert model.fc6.in_features == 512 * 3 * 3
    assert all(isinstance(getattr(model, f"conv{i}"), torch.nn.Conv3d)
               and getattr(model, f"conv{i}").kernel_size == (3, 3, 3)
               for i in ("1", "2", "3a", "3b", "4a", "4b", "5a", "5b"))
    assert model.pool1.kernel_size == (1, 2, 2) and model.pool2.kernel_size == 2
    assert model.dropout.p == 0.5


def test_c3d_released_pool5_padding_gives_4x4() -> None:
    model = get_model("c3d", num_classes=CLASSES, pool5_padding=(0, 1, 1)).eval()
    shapes = _c3d_shapes(model, torch.randn(1, 3, 16, 112, 112))
    assert shapes["pool5"] == (512, 1, 4, 4) and model.fc6.in_features == 8192


def test_c3d_dropout_only_in_training() -> None:
    model = get_model("c3d", num_classes=CLASSES)
    clip = torch.randn(1, 3, 16, 112, 112)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(clip), model(clip))
        model.train()
        assert not torch.equal(model(clip), model(clip))


# -- 2D CNN fusion, two-stream, LRCN --------------------------------------------------------------
def test_late_fusion_averages_per_frame_scores() -> None:
    model = get_model("late_fusion_resnet18", num_classes=CLASSES).eval()
    frames = torch.randn(2, 5, 3, 64, 64)
    with torch.no_grad():
        per_frame = torch.stack([model.fc(model.cnn(frames[:, t])) for t in range(5)], dim=1)
        assert torch.allclose(model(frames), per_frame.mean(dim=1), atol=1e-5)
        assert torch.allclose(model.frame_scores(frames), per_frame, atol=1e-5)


def test_early_fusion_stacks_frames_as_channels() -> None:
    model = get_model("early_fusion_resnet18", num_classes=CLASSES, frames=4).eval()
    assert model.cnn.conv1.in_channels == 12
    frames = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        stacked = model.fc(model.cnn(torch.cat([frames[:, t] for t in range(4)], dim=1)))
        assert torch.allclose(model(frames), stacked, atol=1e-5)
    with pytest.raises(ValueError, match="4 frames"):
        model(torch.randn(1, 5, 3, 64, 64))
    assert clip_spec("early_fusion_resnet18").frames == get_model(
        "early_fusion_resnet18", num_classes=CLASSES).cnn.conv1.in_channels // 3


@pytest.mark.parametrize("flow_frames", [10, 3])
def test_two_stream_temporal_input_is_2l_flow_channels(flow_frames: int) -> None:
    model = get_model("two_stream_resnet18", num_classes=CLASSES, flow_frames=flow_frames).eval()
    temporal_conv = model.temporal[0].conv1
    assert temporal_conv.in_channels == 2 * flow_frames == model.flow_channels
    assert model.spatial[0].conv1.in_channels == 3
    spec = clip_spec("two_stream_resnet18", flow_frames=flow_frames)
    assert spec.flow_channels == 2 * flow_frames
    rgb, flow = _inputs(spec, 2)
    with torch.no_grad():
        scores = model(rgb, flow)
        spatial, temporal = model.forward_streams(rgb, flow)
    assert scores.shape == (2, CLASSES)
    # average fusion: the softmax of the output is the mean of the streams' softmax scores
    mean = (spatial.softmax(dim=1) + temporal.softmax(dim=1)) / 2
    assert torch.allclose(scores.softmax(dim=1), mean, atol=1e-6)
    with pytest.raises(ValueError, match=f"{2 * flow_frames} flow channels"):
        model(rgb, flow[:, :-1])


def test_default_two_stream_stacks_ten_flow_fields() -> None:
    assert clip_spec("two_stream_resnet18").flow_frames == 10
    assert clip_spec("two_stream_resnet18").frames == 11


def test_two_stream_learned_linear_fusion() -> None:
    model = get_model("two_stream_resnet18", num_classes=CLASSES, flow_frames=2,
                      fusion="linear").eval()
    rgb, flow = torch.randn(2, 3, 64, 64), torch.randn(2, 4, 64, 64)
    with torch.no_grad():
        spatial, temporal = model.forward_streams(rgb, flow)
        assert torch.allclose(model(rgb, flow), (spatial + temporal) / 2, atol=1e-5)
    assert model.fusion.weight.requires_grad and model.fusion.weight.shape == (CLASSES,
                                                                                2 * CLASSES)
    with pytest.raises(ValueError, match="fusion"):
        get_model("two_stream_resnet18", num_classes=CLASSES, fusion="svm")


def test_lrcn_prediction_from_the_sequence() -> None:
    mean = get_model("lrcn_resnet18", num_classes=CLASSES, hidden=32).eval()
    last = get_model("lrcn_resnet18", num_classes=CLASSES, hidden=32, pooling="last").eval()
    last.load_state_dict(mean.state_dict())
    frames = torch.randn(2, 6, 3, 64, 64)
    with torch.no_grad():
        steps = mean.step_scores(frames)
        assert steps.shape == (2, 6, CLASSES)
        assert torch.allclose(mean(frames), steps.mean(dim=1), atol=1e-5)
        assert torch.allclose(last(frames), steps[:, -1], atol=1e-5)
        # the LSTM runs forward in time: a step never sees later frames
        changed = frames.clone()
        changed[:, 4:] += 1.0
        other = mean.step_scores(changed)
    assert torch.allclose(other[:, :4], steps[:, :4], atol=1e-5)
    assert not torch.allclose(other[:, 4:], steps[:, 4:])


# -- TimeSformer ---------------------------------------------------------------------------------
def test_timesformer_small_config_and_divided_attention_shapes() -> None:
    model = get_model("timesformer", num_classes=CLASSES).eval()
    assert len(model.blocks) == 4 and model.patches == 49
    assert model.pos_embed.shape == (1, 50, 192) and model.time_embed.shape == (1, 8, 1, 192)
    seen: dict[str, tuple[int, ...]] = {}
    block = model.blocks[0]
    for part in ("temporal_attn", "spatial_attn"):
        getattr(block, part).register_forward_hook(
            lambda _m, args, _o, part=part: seen.__setitem__(part, tuple(args[0].shape)))
    with torch.no_grad():
        assert model(torch.randn(2, 8, 3, 112, 112)).shape == (2, CLASSES)
    assert seen["temporal_attn"] == (2 * 49, 8, 192)  # one sequence of T per patch position
    assert seen["spatial_attn"] == (2 * 8, 1 + 49, 192)  # one of N + CLS per frame
    with pytest.raises(ValueError, match="8 frames"):
        model(torch.randn(1, 4, 3, 112, 112))


def _token_changes(block: torch.nn.Module, frames: int, patches: int,
                   where: tuple[int, int]) -> torch.Tensor:
    """(T, N) mask of the patch tokens that change when the token at ``where`` changes."""
    x = torch.randn(1, 1 + frames * patches, block.mlp_norm.normalized_shape[0])
    moved = x.clone()
    # a random change, not a constant: LayerNorm would remove a shift of all channels
    moved[0, 1 + where[0] * patches + where[1]] += torch.randn(x.shape[-1])
    with torch.no_grad():
        diff = (block(moved, frames) - block(x, frames))[0, 1:].abs().sum(dim=-1)
    return (diff > 1e-6).view(frames, patches)


def test_divided_attention_mixes_time_per_position_and_space_per_frame() -> None:
    from core.models.timesformer import DividedSpaceTimeBlock

    frames, patches = 4, 6
    block = DividedSpaceTimeBlock(dim=16, heads=2).eval()
    with torch.no_grad():
        block.mlp[-2].weight.zero_()  # the MLP acts per token: keep it out of the picture
        block.mlp[-2].bias.zero_()
        block.spatial_attn.proj.weight.zero_()  # temporal attention only
        block.spatial_attn.proj.bias.zero_()
        block.temporal_fc.weight.copy_(torch.eye(16))
    changed = _token_changes(block, frames, patches, (0, 3))
    expected = torch.zeros(frames, patches, dtype=torch.bool)
    expected[:, 3] = True  # the same patch position in every frame, nothing else
    assert torch.equal(changed, expected)

    block = DividedSpaceTimeBlock(dim=16, heads=2).eval()  # temporal_fc starts at zero
    with torch.no_grad():
        block.mlp[-2].weight.zero_()
        block.mlp[-2].bias.zero_()
    changed = _token_changes(block, frames, patches, (2, 3))
    expected = torch.zeros(frames, patches, dtype=torch.bool)
    expected[2, :] = True  # every patch of the same frame, nothing else
    assert torch.equal(changed, expected)


# -- parameter counts through the CLI, and loading weights -----------------------------------------
def _c3d_params(num_classes: int) -> int:
    convs = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512),
             (512, 512)]
    conv = sum(i * o * 27 + o for i, o in convs)
    return conv + 4608 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * num_classes + num_classes


def test_cli_models_prints_action_parameter_counts(capsys: pytest.CaptureFixture[str],
                                                   no_network: list[object]) -> None:
    code, out, err = run_cli(capsys, "models", "--task", "action", "--params", "--json")
    assert code == 0, err
    rows = {row["name"]: row for row in map(json.loads, out.splitlines())}
    assert list(rows) == ACTION
    params = {name: row["params"] for name, row in rows.items()}
    assert params["c3d"] == _c3d_params(487)  # the default: Sports-1M's 487 classes
    for name, member in TORCHVISION.items():  # the defaults are the official 400 classes
        assert params[name] == member.meta["num_params"], name
    assert all(p > 0 for p in params.values())
    assert params["timesformer"] < 5_000_000  # the small configuration
    assert params["two_stream_resnet18"] > 2 * params["late_fusion_resnet18"] - 1_000_000
    assert all(len(row["weights"]) == (name in TORCHVISION) for name, row in rows.items())
    assert no_network == []

    code, out, _ = run_cli(capsys, "models", "--task", "action", "--params")
    assert code == 0
    c3d_line = next(line for line in out.splitlines() if line.startswith("c3d "))
    assert f"{_c3d_params(487) / 1e6:7.2f}M" in c3d_line and "Tran et al., ICCV 2015" in c3d_line


WEIGHTS_MODEL = "mc3_18"  # the smallest official video file


def test_official_video_weights_load_offline_from_the_hub_cache(
        empty_torch_home: Path, no_network: list[object]) -> None:
    (record,) = model_info(WEIGHTS_MODEL).weights().values()
    assert record.file_name == Path(TORCHVISION[WEIGHTS_MODEL].url).name == "mc3_18-a90a0ba3.pth"
    with pytest.raises(OfflineWeightsError, match=record.file_name):
        load_model(WEIGHTS_MODEL, weights=record.name)

    untrained = get_model(WEIGHTS_MODEL)  # 400 classes, as the official file
    folder = empty_torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(untrained.state_dict(), folder / record.file_name)
    loaded = load_model(WEIGHTS_MODEL, weights=record.name)
    assert loaded.weights_source == "torchvision" and loaded.weights_name == record.name
    assert loaded.classes == tuple(TORCHVISION[WEIGHTS_MODEL].meta["categories"])
    assert loaded.classes[0] == "abseiling" and loaded.num_classes == 400
    assert (loaded.mean, loaded.std) == (clip_spec(WEIGHTS_MODEL).mean,
                                         clip_spec(WEIGHTS_MODEL).std)
    assert torch.equal(loaded.module.fc.weight, untrained.fc.weight)
    assert no_network == []


def test_own_checkpoint_any_class_count_and_its_clip_spec(tmp_path: Path) -> None:
    model = get_model("two_stream_resnet18", num_classes=7, flow_frames=4)
    path = save_checkpoint(tmp_path / "two.pt", "two_stream_resnet18", model,
                           [f"action {i}" for i in range(7)], 3, [0.5] * 3, [0.25] * 3,
                           model_kwargs={"flow_frames": 4})
    loaded = load_model("two_stream_resnet18", weights=path)
    assert loaded.num_classes == 7 and loaded.module.flow_channels == 8
    spec = clip_spec(loaded.model, **loaded.model_kwargs)
    assert spec.flow_frames == 4 and spec.layout(1)[1] == (1, 8, 224, 224)

    state = tmp_path / "r2plus1d.pth"  # a plain state dict: the class count is read from it
    torch.save(get_model("r2plus1d_18", num_classes=5).state_dict(), state)
    assert load_model("r2plus1d_18", weights=state).num_classes == 5
