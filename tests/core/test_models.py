"""The semantic model zoo: every registered model at odd sizes, and what defines each family."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from core.models import get_model, list_models, model_info
from core.models.blocks import UpsampleBlock, adapt_conv_weight, run_padded

# Small configurations, so the whole file runs in well under a minute and a half on 2 cores.
SMALL: dict[str, dict] = {
    "unet": {"base_channels": 8},
    "attention_unet": {"base_channels": 8},
    "resunet": {"base_channels": 8},
    "transunet": {"base_channels": 8, "dim": 64, "heads": 4, "layers": 2},
    "patch_classifier": {"patch_size": 9, "width": 8, "chunk": 16384},
}
TORCHVISION = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50",
               "deeplabv3_mobilenet_v3_large")
SEMANTIC = list_models("semantic")


@pytest.fixture(autouse=True, scope="module")
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def _build(name: str, num_classes: int, in_channels: int, **kwargs):
    model = get_model(name, num_classes=num_classes, in_channels=in_channels,
                      **{**SMALL.get(name, {}), **kwargs})
    return model.eval()


def _logits(model, shape: tuple[int, ...]):
    with torch.no_grad():
        return model(torch.randn(*shape))


def _size_cases() -> list:
    """Every model at both odd sizes; the big torchvision networks only in RGB, marked slow
    (their grey builds run at a small odd size in test_torchvision_wrapper_with_one_channel)."""
    cases = []
    for name in SEMANTIC:
        if name in TORCHVISION:
            cases.append(pytest.param(name, (1, 3, 375, 500), marks=pytest.mark.slow,
                                      id=f"{name}-rgb-375x500"))
        else:
            cases += [pytest.param(name, (1, 3, 375, 500), id=f"{name}-rgb-375x500"),
                      pytest.param(name, (1, 1, 257, 263), id=f"{name}-grey-257x263")]
    return cases


@pytest.mark.parametrize(("name", "shape"), _size_cases())
def test_every_semantic_model_gives_logits_at_the_input_size(name, shape) -> None:
    model = _build(name, num_classes=4, in_channels=shape[1])

    out = _logits(model, shape)

    assert out.shape == (1, 4, *shape[2:])
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", SEMANTIC)
def test_registry_builds_every_semantic_model_with_its_defaults(name) -> None:
    info = model_info(name)
    assert info.task == "semantic"

    model = info.build(num_classes=3, in_channels=3).eval()
    out = _logits(model, (2, 3, 35, 41))

    assert out.shape == (2, 3, 35, 41)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", SEMANTIC)
def test_published_weights_are_described_without_download(name) -> None:
    info = model_info(name)
    weights = info.weights()
    if info.weights_attr is None:
        assert weights == {}
        return

    assert weights, f"{name} names a weights table but has no entry"
    for key, w in weights.items():
        assert key == w.name and w.name.startswith(f"{name}.")
        assert w.model == name and w.source == "torchvision"
        assert w.url.endswith("/" + w.file_name) and w.file_name.endswith(".pth")
        assert w.sha256 and w.file_name.endswith(f"-{w.sha256}.pth")
        assert w.classes[0] == "__background__" and w.num_classes == 21
        assert len(w.mean) == len(w.std) == w.in_channels == 3
        assert w.metrics and all(isinstance(v, float) for v in w.metrics.values())


def test_fcn_weights_match_torchvision_enum() -> None:
    w = model_info("fcn_resnet50").weights()["fcn_resnet50.coco_voc"]

    assert w.file_name == "fcn_resnet50_coco-1167a1af.pth"
    assert w.sha256 == "1167a1af"
    assert w.metrics == {"COCO-val2017-VOC-labels miou": 60.5,
                         "COCO-val2017-VOC-labels pixel_acc": 91.4}


# --- U-Net and its upsampling modes ---------------------------------------------------------

_UPSAMPLING_LAYER = {"nearest": None, "bilinear": None,
                     "transpose": torch.nn.ConvTranspose2d, "maxunpool": torch.nn.MaxUnpool2d}


@pytest.mark.parametrize("mode", list(_UPSAMPLING_LAYER))
def test_unet_upsampling_modes(mode) -> None:
    model = _build("unet", num_classes=3, in_channels=3, upsampling=mode, depth=3)
    kinds = {type(m) for m in model.modules()}

    out = _logits(model, (2, 3, 67, 45))

    assert out.shape == (2, 3, 67, 45)
    for layer in (torch.nn.ConvTranspose2d, torch.nn.MaxUnpool2d):
        assert (layer in kinds) == (layer is _UPSAMPLING_LAYER[mode])


def test_transposed_convolution_is_3x3_stride_2() -> None:
    up = UpsampleBlock(4, 2, "transpose")
    conv = next(m for m in up.modules() if isinstance(m, torch.nn.ConvTranspose2d))

    assert conv.kernel_size == (3, 3) and conv.stride == (2, 2) and conv.padding == (1, 1)
    assert up(torch.randn(1, 4, 2, 3)).shape == (1, 2, 4, 6)


def test_maxunpool_puts_values_back_where_the_pool_found_its_maximum() -> None:
    up = UpsampleBlock(6, 4, "maxunpool").eval()
    _, indices = F.max_pool2d(torch.randn(1, 4, 8, 10), 2, return_indices=True)
    coarse = torch.randn(1, 6, 4, 5)

    with torch.no_grad():
        out = up(coarse, indices)
        values = up.conv(coarse)

    assert out.shape == (1, 4, 8, 10)
    flat_out, flat_idx = out.flatten(2), indices.flatten(2)
    torch.testing.assert_close(flat_out.gather(2, flat_idx), values.flatten(2))
    elsewhere = torch.ones_like(flat_out, dtype=torch.bool).scatter_(2, flat_idx, False)
    assert (flat_out[elsewhere] == 0).all()
    with pytest.raises(ValueError, match="indices"):
        up(coarse)


def test_maxunpool_unet_uses_the_encoder_pooling_indices() -> None:
    model = _build("unet", num_classes=2, in_channels=1, upsampling="maxunpool", depth=2)
    x = torch.randn(1, 1, 32, 40)
    with torch.no_grad():
        reference = model(x)

    class ShiftedIndices(torch.nn.Module):
        """The same pooling, with every index moved to its right-hand neighbour."""

        def forward(self, t):
            pooled, idx = F.max_pool2d(t, 2, return_indices=True)
            return pooled, (idx // 2) * 2 + (1 - idx % 2)

    model.pool = ShiftedIndices()
    with torch.no_grad():
        changed = model(x)

    assert not torch.allclose(reference, changed)


def test_run_padded_crops_back_to_any_size() -> None:
    seen = []

    def forward(t):
        seen.append(tuple(t.shape[-2:]))
        return t[:, :1] * 2

    x = torch.randn(1, 3, 5, 3)
    out = run_padded(forward, x, 16)

    assert seen == [(16, 16)]  # replicate padding: reflection needs a pad smaller than the image
    torch.testing.assert_close(out, x[:, :1] * 2)


# --- Attention U-Net ------------------------------------------------------------------------

def test_attention_gate_coefficients_in_unit_interval_multiply_the_skip() -> None:
    from core.models.attention_unet import AttentionGate

    gate = AttentionGate(skip_channels=8, gate_channels=16)
    skip, g = torch.randn(2, 8, 12, 10), torch.randn(2, 16, 6, 5)

    with torch.no_grad():
        alpha = gate.coefficients(skip, g)
        gated = gate(skip, g)

    assert alpha.shape == (2, 1, 12, 10)
    assert alpha.min() >= 0 and alpha.max() <= 1
    torch.testing.assert_close(gated, skip * alpha)


def test_attention_unet_gates_every_skip() -> None:
    from core.models.attention_unet import AttentionGate

    model = _build("attention_unet", num_classes=2, in_channels=3, depth=3)

    gates = [m for m in model.modules() if isinstance(m, AttentionGate)]
    assert len(gates) == 3
    assert _logits(model, (1, 3, 33, 47)).shape == (1, 2, 33, 47)


# --- ResUNet-a ------------------------------------------------------------------------------

def test_resunet_uses_parallel_atrous_branches() -> None:
    from core.models.blocks import ResidualBlock

    model = _build("resunet", num_classes=2, in_channels=3)
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    rates = {m.dilation[0] for m in model.stem.modules() if isinstance(m, torch.nn.Conv2d)}

    assert len(blocks) == 1 + 2 * 4  # stem, 4 encoder and 4 decoder levels
    assert rates == {1, 3, 15, 31}


# --- TransUNet ------------------------------------------------------------------------------

def test_transunet_runs_one_set_of_weights_at_two_sizes() -> None:
    model = _build("transunet", num_classes=3, in_channels=3, pos_grid=7)

    small = _logits(model, (1, 3, 112, 112))  # 7x7 tokens: the stored grid
    large = _logits(model, (2, 3, 200, 330))  # 13x21 tokens: resampled embedding

    assert small.shape == (1, 3, 112, 112) and large.shape == (2, 3, 200, 330)
    assert torch.isfinite(large).all()
    assert model.vit.position_embedding(7, 7) is model.vit.pos_embed
    assert model.vit.position_embedding(13, 21).shape == (1, 64, 13, 21)


# --- Sliding-window patch classifier --------------------------------------------------------

@pytest.mark.parametrize("chunk", [7, 10_000])
def test_patch_classifier_classifies_the_patch_around_each_pixel(chunk) -> None:
    from core.models.patch_classifier import PatchClassifier

    model = PatchClassifier(in_channels=3, num_classes=4, patch_size=9, chunk=chunk,
                            width=4).eval()
    x = torch.randn(2, 3, 20, 23)
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")

    with torch.no_grad():
        out = model(x)
        for n, i, j in [(0, 0, 0), (1, 10, 7), (0, 19, 22)]:
            expected = model.classify_patches(padded[n:n + 1, :, i:i + 9, j:j + 9])[0]
            torch.testing.assert_close(out[n, :, i, j], expected, rtol=1e-4, atol=1e-5)

    assert model_info("patch_classifier").fully_convolutional is False


def test_patch_classifier_accepts_images_smaller_than_its_patch() -> None:
    model = _build("patch_classifier", num_classes=2, in_channels=1, patch_size=33)

    assert _logits(model, (1, 1, 5, 4)).shape == (1, 2, 5, 4)
    with pytest.raises(ValueError, match="odd"):
        get_model("patch_classifier", patch_size=32)


# --- torchvision wrappers -------------------------------------------------------------------

@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_wrapper_keeps_torchvision_state_dict_keys(name) -> None:
    from torchvision.models import segmentation

    theirs = getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=3,
                                         aux_loss=True).eval()
    ours = get_model(name, num_classes=3, in_channels=3).eval()

    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, 3, 49, 67)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x)["out"])
        main, aux = ours.forward_with_aux(x)
    assert aux is not None and aux.shape == main.shape == (1, 3, 49, 67)


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_wrapper_with_one_channel(name) -> None:
    model = get_model(name, num_classes=2, in_channels=1).eval()
    state = model.state_dict()

    assert state[model.first_conv_key].shape[1] == 1
    out = _logits(model, (1, 1, 49, 67))
    assert out.shape == (1, 2, 49, 67)
    assert torch.isfinite(out).all()


def test_adapted_first_conv_sees_a_grey_image_as_its_rgb_copy() -> None:
    rgb_kernel = torch.randn(8, 3, 7, 7)
    grey = torch.randn(1, 1, 20, 20)

    grey_kernel = adapt_conv_weight(rgb_kernel, 1)

    torch.testing.assert_close(F.conv2d(grey, grey_kernel),
                               F.conv2d(grey.expand(1, 3, 20, 20), rgb_kernel))
    assert adapt_conv_weight(rgb_kernel, 4).shape == (8, 4, 7, 7)
    assert adapt_conv_weight(rgb_kernel, 3) is rgb_kernel
