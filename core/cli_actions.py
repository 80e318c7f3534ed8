"""The action commands of ``segstudio-cli``: ``classify`` (an action model's scores for every clip
of a video, into one JSON file).

Kept apart from :mod:`core.cli` like :mod:`core.cli_models` and :mod:`core.cli_video`; the shared
output helpers are used from there (imported inside the functions: core.cli imports this module).
torch, OpenCV and the model families are imported when the command runs, so ``--help`` stays
fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

DEVICES = ("auto", "cpu", "cuda", "mps")  # core.inference.device.select_device
FLOW_METHODS = ("dis", "farneback", "raft_small", "raft_large")  # dense core.flow methods

CLASSIFY_DESCRIPTION = """\
Classify the actions of a video with an action model (segstudio-cli models --task action).

The video is cut into clips of the model's T frames (its clip spec), sampled --stride frames
apart (default: at the frame rate the model's weights were trained at, e.g. every 2nd frame of a
30 fps video for 15 fps Kinetics weights; else consecutive frames); a clip starts every --step
frames (default: the clip's span, clips side by side) and the last clip ends on the last frame,
so every frame is in a clip. A video shorter than one clip repeats its last frame (a note says
so). Each frame is resized and centre-cropped as the model expects.

--out FILE.json holds: video (the path), model, weights, labels, fps, frame_count,
clip_frames, stride, step, device, notes, top_k ([{"label", "score"}] of the video) and scores
(the video's: the mean of the clip scores, in the order of labels), and clips: one per clip,
with start and end (frames, both included), start_s, end_s, frames (the sampled ones), top_k
and scores (the softmax of the model's output). stdout gets a JSON summary with the video's
top_k.

Weights never come from the network: published weights must be in $TORCH_HOME/hub/checkpoints,
or give a checkpoint or state-dict file with --weights FILE. Two-stream models compute optical
flow between the clip's frames with --flow-method (default dis)."""


def add_action_parsers(commands: argparse._SubParsersAction) -> None:
    classify = commands.add_parser(
        "classify", help="action scores of every clip of a video (JSON)",
        description=CLASSIFY_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    classify.add_argument("video", metavar="VIDEO", help="a video file or a folder of frames")
    classify.add_argument("--model", required=True, metavar="NAME",
                          help="an action model (see segstudio-cli models --task action)")
    classify.add_argument("--weights", metavar="FILE|NAME",
                          help="a checkpoint or state-dict file, or published weights by name "
                               "(default: the model's published weights)")
    classify.add_argument("--device", choices=DEVICES, default="auto")
    classify.add_argument("--stride", type=int, metavar="N",
                          help="frames between a clip's sampled frames (default: from the "
                               "model's frame rate)")
    classify.add_argument("--step", type=int, metavar="N",
                          help="frames between clip starts (default: the clip's span)")
    classify.add_argument("--batch-size", type=int, default=8, metavar="N",
                          help="clips per forward pass (default: 8)")
    classify.add_argument("--top-k", type=int, default=5, metavar="K",
                          help="best labels listed per clip and for the video (default: 5)")
    classify.add_argument("--flow-method", choices=FLOW_METHODS, metavar="METHOD",
                          help="two-stream models: the optical flow (dis, farneback, "
                               "raft_small, raft_large; default dis)")
    classify.add_argument("--out", required=True, metavar="FILE.json", help="the file to write")
    classify.set_defaults(handler=cmd_classify)


def cmd_classify(args: argparse.Namespace) -> int:
    """Score every clip of VIDEO; one JSON file (written atomically) and a summary on stdout."""
    from core import cli as base
    from core.inference.clips import classify_video, clip_span, clip_windows, default_stride
    from core.io.video import open_video

    for option, value in (("--stride", args.stride), ("--step", args.step),
                          ("--batch-size", args.batch_size), ("--top-k", args.top_k)):
        if value is not None and value < 1:
            raise base.CliError(f"{option} must be at least 1; got {value}.")
    video = base._existing_path(args.video)
    out = Path(args.out).expanduser()
    if out.is_dir():
        raise base.CliError(f"{out} is a folder; --out names the .json file to write.")
    with open_video(video, max_cache_mb=128) as reader:  # a bad video fails before the model
        loaded, spec = load_action_model(args.model, args.weights, args.device)
        if args.flow_method is not None and spec.input != "two_stream":
            raise base.CliError(f"--flow-method applies to two-stream models only; "
                                f"{args.model} takes {spec.input} input.")
        for warning in reader.warnings:
            print(f"warning: {video.name}: {warning}", file=sys.stderr)
        stride = args.stride or default_stride(spec, reader.fps)
        span = clip_span(spec.frames, stride)
        step = args.step or span
        try:
            clip_windows(reader.frame_count, spec.frames, stride, step)
        except ValueError as err:
            raise base.CliError(f"--step {step}: {err}.") from None
        flow = _flow_provider(reader, args) if spec.input == "two_stream" else None
        bar = base._ProgressBar(f"classify {args.model}")
        try:
            result = classify_video(loaded, reader, spec, stride=stride, step=step,
                                    batch_size=args.batch_size, device=args.device,
                                    report=bar, flow=flow)
        finally:
            bar.close()
    document = {"video": str(video), "model": args.model, "weights": loaded.label,
                "clip_frames": spec.frames, "stride": stride, "step": step,
                **result.to_json(args.top_k)}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomically(out, document)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    top = document["top_k"]
    base._print_json({"out": str(out), "model": args.model, "weights": loaded.label,
                      "clips": len(result.windows), "frames": result.frame_count,
                      "clip_frames": spec.frames, "stride": stride, "step": step,
                      "device": result.device, "top_k": top, "notes": result.notes})
    return 0


def load_action_model(name: str, weights: str | None, device: str) -> tuple[Any, Any]:
    """(LoadedModel, ClipSpec) of an action model; weights default to its published ones."""
    from core import cli as base
    from core.cli_models import _default_weights
    from core.inference.engine import InferenceEngine, InferenceSettings
    from core.models.registry import model_info

    info = model_info(name)
    if info.task != "action":
        raise base.CliError(f"{name} is a {info.task} model; classify needs an action model "
                            "(segstudio-cli models --task action).")
    from core.models.action_specs import clip_spec

    engine = InferenceEngine(InferenceSettings(device=device))
    loaded = engine.load(name, weights=weights or _default_weights(info))
    return loaded, clip_spec(name, **loaded.model_kwargs)


def _flow_provider(reader: Any, args: argparse.Namespace) -> Any:
    from core.flow import FlowCache, FlowProvider

    method = args.flow_method or "dis"
    options: dict[str, Any] = {}
    if method.startswith("raft"):
        options = {"device": args.device, "weights": "default", "allow_network": False}
    return FlowProvider(reader.frame, method, cache=FlowCache(256), source_id=str(reader.source),
                        count=reader.frame_count, **options)


def write_json_atomically(path: Path, data: Any) -> None:
    """Write ``data`` as JSON beside ``path`` then rename it into place: a reader never sees
    half a file, and an error leaves ``path`` as it was."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temp, "x", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
