"""What an action recognition model eats: the clip spec, readable without torch.

Every model of task ``"action"`` in the registry carries a :class:`ClipSpec` (``ModelInfo.clip``):
how many frames a clip holds, at what frame rate they are sampled, how each frame is resized and
centre-cropped, how pixels are normalised, and the tensor layout the module takes. The clip
pipeline (``core.inference.clips``) reads it with :func:`clip_spec` before torch is imported.

The call convention (one for every action model)
-------------------------------------------------
Frames are RGB, scaled to [0, 1], resized as ``resize`` says (:meth:`ClipSpec.resized_size`),
centre-cropped to ``size`` and normalised with ``mean`` / ``std``; a clip is ``frames``
consecutive sampled frames. Then, by ``ClipSpec.input``:

* ``"clip"``: ``module(x)``, x (B, 3, T, H, W) -- 3D CNNs and video transformers (C3D, R3D,
  MC3, R(2+1)D, S3D, MViT, Video Swin);
* ``"frames"``: ``module(x)``, x (B, T, 3, H, W) -- per-frame models (late / early fusion,
  LRCN, TimeSformer); it is the ``"clip"`` tensor with dimensions 1 and 2 swapped;
* ``"two_stream"``: ``module(rgb, flow)``, rgb (B, 3, H, W) the clip's middle frame (index
  ``frames // 2``) and flow (B, 2L, H, W) the L = ``flow_frames`` optical flow fields between
  the clip's ``frames = L + 1`` consecutive frames: field k (from frame k to k + 1) is stored
  horizontal then vertical in channels 2k and 2k + 1 (Simonyan & Zisserman's stacking), in
  pixels of the resized and cropped frame, each component minus its mean over the frame (their
  camera-motion compensation), divided by ``flow_scale``.

Every module returns class scores (B, num_classes): logits whose softmax is the class
probability distribution. The normalisation of published weights or of a checkpoint
(``LoadedModel.mean`` / ``std``) wins over the spec's default where they differ.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from core.models.weights import IMAGENET_MEAN, IMAGENET_STD

INPUT_LAYOUTS = ("clip", "frames", "two_stream")

# torchvision's VideoClassification preset (R3D, MC3, R(2+1)D, S3D weights): Kinetics-400 statistics.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
# PySlowFast / TimeSformer / MViT statistics.
SLOWFAST_MEAN = (0.45, 0.45, 0.45)
SLOWFAST_STD = (0.225, 0.225, 0.225)

RESIZE_RATIO = 8 / 7  # 128 / 112 = 256 / 224: resized short side per crop side


@dataclass(frozen=True)
class ClipSpec:
    """How to turn video frames into the input of one action model.

    Attributes:
        frames: T, frames per clip (two-stream: L + 1 frames give L flow fields).
        size: (H, W) of the centre crop the model sees.
        resize: Before cropping: ``(S,)`` scales the shorter side to S (aspect kept), ``(H, W)``
            resizes to exactly H x W (torchvision's ``resize_size``; C3D's 128 x 171).
        mean, std: Per RGB channel, applied after scaling pixels to [0, 1].
        input: Tensor layout, one of :data:`INPUT_LAYOUTS` (see the module docstring).
        fps: Frame rate the clip's frames are sampled at (the published weights' ``frame_rate``);
            None: consecutive frames at the video's own rate.
        min_frames: Fewest frames the model runs on.
        fixed_frames: The model needs exactly ``frames`` frames (learned per-frame weights).
        fixed_size: The model needs exactly ``size`` (fully connected layers, learned positions).
        flow_frames: L, flow fields of a two-stream model's temporal stream (0 otherwise).
        flow_scale: Two-stream flow is divided by this (pixels; 20 maps +-20 px to +-1).
    """

    frames: int
    size: tuple[int, int]
    resize: tuple[int, ...]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input: str = "clip"
    fps: float | None = None
    min_frames: int = 1
    fixed_frames: bool = False
    fixed_size: bool = False
    flow_frames: int = 0
    flow_scale: float = 20.0

    def __post_init__(self) -> None:
        if self.input not in INPUT_LAYOUTS:
            raise ValueError(f"ClipSpec.input must be one of {INPUT_LAYOUTS}, not {self.input!r}")
        if len(self.resize) not in (1, 2) or len(self.size) != 2:
            raise ValueError(f"ClipSpec: resize {self.resize} must be (S,) or (H, W), size (H, W)")
        if self.frames < self.min_frames or self.min_frames < 1:
            raise ValueError(f"ClipSpec: frames {self.frames} < min_frames {self.min_frames}")
        if (self.input == "two_stream") != (self.flow_frames > 0):
            raise ValueError("ClipSpec: flow_frames > 0 exactly for two_stream input")
        if self.input == "two_stream" and self.frames != self.flow_frames + 1:
            raise ValueError("ClipSpec: a two-stream clip holds flow_frames + 1 frames")

    @property
    def resize_short(self) -> int | None:
        """The shorter side after resizing, when the resize keeps the aspect; else None."""
        return self.resize[0] if len(self.resize) == 1 else None

    @property
    def flow_channels(self) -> int:
        """2L: input channels of the temporal stream (0 without one)."""
        return 2 * self.flow_frames

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of a height x width frame after the resize step (before the centre crop).

        The shorter side becomes S (the longer one is rounded down, as torchvision does),
        or the frame becomes exactly (H, W).
        """
        if len(self.resize) == 2:
            return self.resize[0], self.resize[1]
        short = self.resize[0]
        if height <= width:
            return short, max(1, int(short * width / height))
        return max(1, int(short * height / width)), short

    def layout(self, batch: int = 1) -> tuple[tuple[int, ...], ...]:
        """Shapes of the module's arguments for ``batch`` clips (e.g. ``((1, 3, 16, 112, 112),)``)."""
        h, w = self.size
        if self.input == "clip":
            return ((batch, 3, self.frames, h, w),)
        if self.input == "frames":
            return ((batch, self.frames, 3, h, w),)
        return (batch, 3, h, w), (batch, self.flow_channels, h, w)


def clip_spec(model_name: str, **model_kwargs: Any) -> ClipSpec:
    """The clip spec of a registered action model, adjusted to its builder options.

    Builder options that change the input are applied: ``frames`` (T of a model that fixes it),
    ``flow_frames`` (L of a two-stream model) and ``image_size`` (crop side; the resized short
    side follows in the ratio 8 / 7, as 128 / 112 and 256 / 224). Pass a loaded model's
    ``model_kwargs`` (a checkpoint's options) to get the spec it was trained with.

    Raises:
        UnknownModelError: no model of that name.
        ValueError: the model is not an action model.
    """
    from core.models.registry import model_info  # the registry imports this module

    info = model_info(model_name)
    if info.clip is None:
        raise ValueError(f"{model_name} is a {info.task} model, not an action model: no clip spec")
    return adjust_spec(info.clip, {**info.defaults, **model_kwargs})


def adjust_spec(spec: ClipSpec, model_kwargs: dict[str, Any]) -> ClipSpec:
    """``spec`` with the input-changing builder options of ``model_kwargs`` applied."""
    changes: dict[str, Any] = {}
    if spec.input == "two_stream" and "flow_frames" in model_kwargs:
        flow = int(model_kwargs["flow_frames"])
        changes.update(flow_frames=flow, frames=flow + 1, min_frames=flow + 1)
    elif "frames" in model_kwargs:
        frames = int(model_kwargs["frames"])
        changes.update(frames=frames, min_frames=frames if spec.fixed_frames
                       else min(spec.min_frames, frames))
    if "image_size" in model_kwargs:
        side = model_kwargs["image_size"]
        h, w = (side, side) if isinstance(side, int) else tuple(side)
        changes.update(size=(int(h), int(w)), resize=(round(min(h, w) * RESIZE_RATIO),))
    return replace(spec, **changes) if changes else spec


# -- the specs of the registered action models --------------------------------------------------
# The torchvision ones follow the weights' transforms and the clip_len / frame_rate with which
# their published accuracy was measured (checked against torchvision in the tests).
_VIDEO_RESNET = ClipSpec(frames=16, size=(112, 112), resize=(128, 171), mean=KINETICS_MEAN,
                         std=KINETICS_STD, fps=15.0)
SPECS: dict[str, ClipSpec] = {
    # C3D: 16 consecutive frames resized to 128 x 171, centre crop 112 x 112 (Tran et al.).
    "c3d": ClipSpec(frames=16, size=(112, 112), resize=(128, 171), mean=KINETICS_MEAN,
                    std=KINETICS_STD, min_frames=16, fixed_frames=True, fixed_size=True),
    "r3d_18": _VIDEO_RESNET,
    "mc3_18": _VIDEO_RESNET,
    "r2plus1d_18": _VIDEO_RESNET,
    "s3d": ClipSpec(frames=128, size=(224, 224), resize=(256, 256), mean=KINETICS_MEAN,
                    std=KINETICS_STD, fps=15.0, min_frames=14),
    "mvit_v2_s": ClipSpec(frames=16, size=(224, 224), resize=(256,), mean=SLOWFAST_MEAN,
                          std=SLOWFAST_STD, fps=7.5, min_frames=16, fixed_frames=True,
                          fixed_size=True),
    "swin3d_t": ClipSpec(frames=32, size=(224, 224), resize=(256,), mean=IMAGENET_MEAN,
                         std=IMAGENET_STD, fps=15.0),
    "late_fusion_resnet18": ClipSpec(frames=16, size=(112, 112), resize=(128,),
                                     input="frames"),
    "early_fusion_resnet18": ClipSpec(frames=10, size=(112, 112), resize=(128,), input="frames",
                                      min_frames=10, fixed_frames=True),
    "two_stream_resnet18": ClipSpec(frames=11, size=(224, 224), resize=(256,),
                                    input="two_stream", min_frames=11, fixed_frames=True,
                                    flow_frames=10),
    "lrcn_resnet18": ClipSpec(frames=16, size=(112, 112), resize=(128,), input="frames"),
    "timesformer": ClipSpec(frames=8, size=(112, 112), resize=(128,), mean=SLOWFAST_MEAN,
                            std=SLOWFAST_STD, input="frames", min_frames=8, fixed_frames=True,
                            fixed_size=True),
}

__all__ = ["INPUT_LAYOUTS", "SPECS", "ClipSpec", "adjust_spec", "clip_spec"]
