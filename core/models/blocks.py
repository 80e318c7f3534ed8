"""Building blocks shared by the U-Net family (U-Net, Attention U-Net, ResUNet-a, TransUNet).

The decoder's in-network upsampling follows the lecture's choices (Long et al., CVPR 2015;
Noh et al., ICCV 2015 for max-unpooling with the pooling switches; Badrinarayanan et al.,
TPAMI 2017 (SegNet)): nearest-neighbour or bilinear resampling followed by a convolution, a
learned transposed convolution, or max-unpooling with the indices remembered by the matching
max-pool of the encoder. Residual blocks follow He et al., CVPR 2016 (pre-activation: ECCV 2016)
with the parallel atrous branches of ResUNet-a (Diakogiannis et al., ISPRS J. 2020).

Every encoder-decoder here halves the resolution ``depth`` times, so it needs H and W divisible
by ``2**depth``; :func:`run_padded` pads any input up to that multiple and crops the output back,
so every model accepts any H, W (e.g. 257x263, 375x500).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

UPSAMPLING_MODES = ("nearest", "bilinear", "transpose", "maxunpool")


def pad_mode(size: tuple[int, int], pad: tuple[int, int]) -> str:
    """Border mode for padding an image of ``size`` (H, W) by ``pad`` (rows, cols) per side.

    Reflection avoids an artificial edge but needs the pad to be smaller than the image;
    tiny images fall back to replicating the border.
    """
    return "reflect" if pad[0] < size[0] and pad[1] < size[1] else "replicate"


def run_padded(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
               multiple: int) -> torch.Tensor:
    """Run ``forward`` on ``x`` padded (bottom and right) to a multiple of ``multiple``.

    Args:
        forward: Maps (N, C, H', W') to (N, K, H', W') for H', W' divisible by ``multiple``.
        x: Input (N, C, H, W), any H, W >= 1.
        multiple: Required divisor of the spatial size (``2**depth`` for a U-Net).

    Returns:
        ``forward``'s output cropped back to (N, K, H, W).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return forward(x)
    padded = F.pad(x, (0, pw, 0, ph), mode=pad_mode((h, w), (ph, pw)))
    return forward(padded)[..., :h, :w]


class ConvBNReLU(nn.Sequential):
    """3x3 (or k x k) convolution, batch norm and ReLU, keeping H, W (stride 1).

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, dilation: int = 1, norm: bool = True) -> None:
        padding = dilation * (kernel_size // 2)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                                             padding, dilation, bias=not norm)]
        if norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two :class:`ConvBNReLU`, the U-Net's unit at every level.

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        mid = mid_channels or out_channels
        super().__init__(ConvBNReLU(in_channels, mid), ConvBNReLU(mid, out_channels))


class ResidualBlock(nn.Module):
    """Pre-activation residual block with parallel atrous branches (ResUNet-a's ResBlock-a).

    Each dilation rate ``d`` gives a branch BN-ReLU-conv3x3(d)-BN-ReLU-conv3x3(d); the branches
    and the shortcut (identity, or a 1x1 projection when the width or stride changes) are summed.
    ``dilations=(1,)`` is a plain residual block.

    Shapes: (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, dilations: Sequence[int] = (1,),
                 stride: int = 1) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.BatchNorm2d(in_channels), nn.ReLU(inplace=False),
                nn.Conv2d(in_channels, out_channels, 3, stride, d, d, bias=False),
                nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True),
                nn.Conv2d(out_channels, out_channels, 3, 1, d, d, bias=False),
            )
            for d in dilations
        )
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shortcut(x)
        for branch in self.branches:
            out = out + branch(x)
        return out


class UpsampleBlock(nn.Module):
    """Doubles H and W in one of the lecture's in-network upsampling modes.

    - ``"nearest"`` / ``"bilinear"``: resample 2x, then a 3x3 :class:`ConvBNReLU`
      (in_channels -> out_channels).
    - ``"transpose"``: learned transposed convolution, kernel 3, stride 2, padding 1,
      output_padding 1 (the lecture's 3x3/stride-2/padding-1 example; 2x2 -> 4x4), then BN-ReLU.
    - ``"maxunpool"``: a 3x3 :class:`ConvBNReLU` at the coarse size, then ``MaxUnpool2d(2)``
      that puts each value back where the matching encoder ``MaxPool2d(2, return_indices=True)``
      found its maximum (zeros elsewhere); needs those ``indices`` and ``out_channels`` equal to
      the pooled tensor's channels.

    Shapes: (N, in_channels, h, w) -> (N, out_channels, 2h, 2w); the resampling and unpooling
    modes honour ``output_size`` instead when given (the transposed convolution is always 2x).
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str = "bilinear") -> None:
        super().__init__()
        if mode not in UPSAMPLING_MODES:
            raise ValueError(f"upsampling must be one of {UPSAMPLING_MODES}, not {mode!r}")
        self.mode = mode
        if mode == "transpose":
            self.conv: nn.Module = nn.Sequential(
                nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1,
                                   output_padding=1, bias=False),
                nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
        else:
            self.conv = ConvBNReLU(in_channels, out_channels)
        self.unpool = nn.MaxUnpool2d(2) if mode == "maxunpool" else None

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None,
                output_size: Sequence[int] | None = None) -> torch.Tensor:
        size = tuple(output_size) if output_size is not None else (2 * x.shape[-2], 2 * x.shape[-1])
        if self.mode == "transpose":
            return self.conv(x)
        if self.unpool is not None:
            if indices is None:
                raise ValueError("maxunpool upsampling needs the encoder's pooling indices")
            return self.unpool(self.conv(x), indices, output_size=size)
        align = False if self.mode == "bilinear" else None
        return self.conv(F.interpolate(x, size=size, mode=self.mode, align_corners=align))


BlockFactory = Callable[[int, int], nn.Module]


class DecoderBlock(nn.Module):
    """One U-Net decoder level: upsample, (gate the skip,) concatenate the skip, convolve.

    Args:
        in_channels: Channels of the coarser decoder input.
        skip_channels: Channels of the encoder skip at the target size (0: no skip).
        out_channels: Channels out.
        upsampling: One of :data:`UPSAMPLING_MODES`.
        block: ``block(in, out)`` builds the convolution unit (default :class:`DoubleConv`).
        gate: Optional module ``gate(skip, coarse) -> skip`` (an attention gate).

    Shapes: x (N, in_channels, h, w), skip (N, skip_channels, 2h, 2w)
    -> (N, out_channels, 2h, 2w).
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int,
                 upsampling: str = "bilinear", block: BlockFactory = DoubleConv,
                 gate: nn.Module | None = None) -> None:
        super().__init__()
        # Max-unpooling refills the pooled skip tensor's grid, so it must keep its width.
        up_channels = skip_channels or out_channels
        self.up = UpsampleBlock(in_channels, up_channels, upsampling)
        self.gate = gate
        self.block = block(up_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None,
                indices: torch.Tensor | None = None) -> torch.Tensor:
        if skip is None:
            return self.block(self.up(x, indices))
        up = self.up(x, indices, output_size=skip.shape[-2:])
        if self.gate is not None:
            skip = self.gate(skip, x)
        return self.block(torch.cat([skip, up], dim=1))


def adapt_conv_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-layer kernel trained on RGB to ``in_channels`` inputs.

    One channel: the sum over the RGB kernels (the response to a grey image copied to R, G, B).
    Otherwise the RGB kernels are repeated cyclically and scaled by 3 / in_channels, which keeps
    the response's magnitude.

    Args:
        weight: Kernel (out, c, kh, kw).

    Returns:
        Kernel (out, in_channels, kh, kw).
    """
    c = weight.shape[1]
    if c == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // c)
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (c / in_channels)
