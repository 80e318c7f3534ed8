"""The video commands of ``segstudio-cli``: ``flow`` (optical flow of a video, or of a folder of
frames, into one ``.npz`` file, with optional pictures of it).

Kept apart from :mod:`core.cli` like :mod:`core.cli_models`; the shared output helpers are used
from there (imported inside the functions: core.cli imports this module). OpenCV, the flow
methods and torch (RAFT only) are imported when a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where they are used: --help stays fast
    import zipfile

    import numpy as np

FLOW_CHOICES = ("farneback", "dis", "lk", "raft")
RAFT_MODELS = ("small", "large")
DEVICES = ("auto", "cpu", "cuda", "mps")  # core.inference.device.select_device

FLOW_DESCRIPTION = """\
Optical flow of a video (or of a folder of frame images) into one .npz file (numpy.load).

Pairs: for every frame t of --frames A:B, the flow from frame t to frame t+K (K = --step).
A:B reads like a Python slice: A included, B excluded, either may be left out (default: the
whole video) and negative numbers count from the end (write --frames=-10: then). Pairs whose
frame t+K lies past the end of the video are left out.

Dense methods (farneback, dis, raft) write:
  flow    float32 (N, H, W, 2): (dx, dy) in pixels; the pixel (x, y) of frame t is at
          (x + dx, y + dy) in frame t+K
  pairs   int64 (N, 2): the frames (t, t+K) of each field
lk (Lucas-Kanade tracks of Shi-Tomasi corners, sparse) writes instead:
  points  float32 (P, T, 2): (x, y) of P points in T frames; NaN from the frame a point is
          lost on (points are found in the first frame and never come back)
  frames  int64 (T,): the frames tracked through: A, A+K, A+2K, ... (each step is a pair)
  fb_error float32 (P, T): forward-backward error of each step in pixels (NaN once lost)
Both also hold method (text), fps (float) and step (int).

--viz DIR writes one PNG per pair: the Middlebury colour coding of the flow, scaled to the
pair's largest motion (flow_000002_000004.png for t = 2, t+K = 4), and legend.png, the colour
wheel; for lk, frame t+K with an arrow per point from where it was in frame t
(tracks_000002_000004.png).

RAFT (Teed and Deng, ECCV 2020; torchvision's weights) never uses the network: the published
weights must be in $TORCH_HOME/hub/checkpoints, or be given with --weights FILE."""


def quiet_decoder_logs() -> None:
    """Keep FFmpeg's and OpenCV's own messages ("moov atom not found", "[ WARN:0] ...") off
    stderr, where the CLI explains a failure in one line; values the user set are kept."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")


def add_video_parsers(commands: argparse._SubParsersAction) -> None:
    flow = commands.add_parser(
        "flow", help="optical flow of a video into one .npz (dense fields or point tracks)",
        description=FLOW_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    flow.add_argument("video", metavar="VIDEO", help="a video file or a folder of frame images")
    flow.add_argument("--method", required=True, choices=FLOW_CHOICES,
                      help="farneback, dis (OpenCV, CPU), lk (sparse point tracks) or raft")
    flow.add_argument("--raft-model", choices=RAFT_MODELS, metavar="small|large",
                      help="raft: the network (default: small)")
    flow.add_argument("--frames", metavar="A:B", help="first frames t of the pairs "
                      "(default: the whole video)")
    flow.add_argument("--step", type=int, default=1, metavar="K",
                      help="flow from frame t to frame t+K (default: 1)")
    flow.add_argument("--out", required=True, metavar="FILE.npz", help="the file to write")
    flow.add_argument("--viz", metavar="DIR", help="also write one PNG per pair here")
    flow.add_argument("--weights", metavar="FILE",
                      help="raft: a weights file (default: torchvision's published weights "
                           "from the torch hub cache)")
    flow.add_argument("--device", choices=DEVICES, help="raft: where it runs (default: auto)")
    flow.set_defaults(handler=cmd_flow)


# -- frame ranges ----------------------------------------------------------------------------------
def parse_frames(text: str | None, count: int) -> tuple[int, int]:
    """``(A, B)`` of ``--frames A:B`` for a video of ``count`` frames (Python slice rules,
    except that a bound outside the video is an error instead of being clipped)."""
    from core.cli import CliError

    if text is None:
        return 0, count
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError(text)
        start, stop = (int(p) if p.strip() else None for p in parts)
    except ValueError:
        raise CliError(f"--frames must be A:B (like 0:100, 10: or :-1); got {text!r}.") from None
    last = f"the video has {count} frames (0-{count - 1})"
    resolved = []
    for value, default, name in ((start, 0, "A"), (stop, count, "B")):
        if value is None:
            value = default
        elif value < 0:
            value += count
        if not 0 <= value <= count or (name == "A" and value == count):
            raise CliError(f"--frames {text}: {name} is outside the video; {last}.")
        resolved.append(value)
    if resolved[0] >= resolved[1]:
        raise CliError(f"--frames {text} holds no frame: A must come before B.")
    return resolved[0], resolved[1]


def pair_starts(start: int, stop: int, step: int, count: int, text: str | None) -> range:
    """The frames t of the pairs (t, t+step) for t in ``start:stop`` within the video."""
    from core.cli import CliError

    if step < 1:
        raise CliError(f"--step must be at least 1; got {step}.")
    starts = range(start, min(stop, count - step))
    if not starts:
        where = f"--frames {text}" if text is not None else "the video"
        raise CliError(f"{where} with --step {step} gives no pair: frame {start + step} is past "
                       f"the end (the video has {count} frames, 0-{count - 1}).")
    explicit_stop = text is not None and text.partition(":")[2].strip() != ""
    if explicit_stop and starts.stop < stop:  # B was asked for: say why pairs are missing
        which = (f"frame {starts.stop} has" if starts.stop == stop - 1
                 else f"frames {starts.stop}-{stop - 1} have")
        print(f"warning: {which} no frame {step} later; the last pair is "
              f"({starts[-1]}, {starts[-1] + step})", file=sys.stderr)
    return starts


# -- the command -----------------------------------------------------------------------------------
def cmd_flow(args: argparse.Namespace) -> int:
    """Compute flow over the chosen frames; one .npz (written atomically) and optional PNGs."""
    import numpy as np

    from core import cli as base
    from core.io.video import open_video

    method = _method(args)
    video = base._existing_path(args.video)
    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".npz":
        raise base.CliError(f"--out must name a .npz file; got {out}.")
    if out.is_dir():
        raise base.CliError(f"{out} is a folder; --out names the .npz file to write.")
    if args.weights is not None and not Path(args.weights).expanduser().is_file():
        raise base.CliError(f"The weights file {Path(args.weights).expanduser()} does not exist.")
    with open_video(video, max_cache_mb=64) as reader:
        for warning in reader.warnings:
            print(f"warning: {video.name}: {warning}", file=sys.stderr)
        count = reader.frame_count
        start, stop = parse_frames(args.frames, count)
        starts = pair_starts(start, stop, args.step, count, args.frames)
        out.parent.mkdir(parents=True, exist_ok=True)
        bar = base._ProgressBar(f"flow {method}")
        try:
            with _viz_stage(args.viz) as stage, AtomicNpz(out) as npz:
                if method == "lk":
                    summary = _track(reader, starts, args.step, npz, stage, bar)
                else:
                    summary = _dense(reader, starts, args.step, method, args, npz, stage, bar)
                npz.add("method", np.array(method))
                npz.add("fps", np.array(float(reader.fps)))
                npz.add("step", np.array(args.step, np.int64))
        finally:
            bar.close()
    base._print_json({"out": str(out), "method": method, **summary, "fps": reader.fps,
                      "viz": str(Path(args.viz).expanduser()) if args.viz else None})
    return 0


def _method(args: argparse.Namespace) -> str:
    """The core.flow method name; options that apply to RAFT only are refused for the others."""
    from core.cli import CliError

    if args.method == "raft":
        return f"raft_{args.raft_model or 'small'}"
    for option, value in (("--raft-model", args.raft_model), ("--weights", args.weights),
                          ("--device", args.device)):
        if value is not None:
            raise CliError(f"{option} applies to --method raft only.")
    return args.method


def _dense(reader: Any, starts: range, step: int, method: str, args: argparse.Namespace,
           npz: AtomicNpz, stage: Any, bar: Any) -> dict[str, Any]:
    """Flow of every pair, streamed into ``flow.npy`` (never all in memory)."""
    import numpy as np

    from core.flow import color_wheel_legend, compute_flow, flow_to_color

    shape = (len(starts), reader.height, reader.width, 2)
    options: dict[str, Any] = {}
    if method.startswith("raft"):
        options = {"device": args.device or "auto", "weights": args.weights or "default",
                   "allow_network": False}
    pairs = np.array([(t, t + step) for t in starts], np.int64).reshape(-1, 2)
    held: dict[int, np.ndarray] = {}  # the frames still needed as the first of a pair
    done = 0
    bar(0, len(starts))
    with npz.stream("flow", shape, np.float32) as sink:
        for index, frame in reader.iter_frames(starts[0], starts[-1] + step + 1):
            if index in starts:
                held[index] = frame
            first = held.pop(index - step, None)
            if first is None:
                continue
            if options:  # RAFT: torch wants writable arrays (the reader's frames are read-only)
                first, frame = np.array(first), np.array(frame)
            flow = compute_flow(first, frame, method, **options)
            sink.write(flow)
            if stage is not None:
                stage.write_bytes(f"flow_{index - step:06d}_{index:06d}.png",
                                  encode_rgb_png(flow_to_color(flow)))
            done += 1
            bar(done, len(starts))
    if stage is not None:
        stage.write_bytes("legend.png", encode_rgb_png(color_wheel_legend()))
    npz.add("pairs", pairs)
    return {"pairs": len(starts), "shape": list(shape)}


def _track(reader: Any, starts: range, step: int, npz: AtomicNpz, stage: Any,
           bar: Any) -> dict[str, Any]:
    """Lucas-Kanade tracks through frames A, A+K, ...; frames are held as grey (1 byte/pixel)."""
    import numpy as np

    from core.flow import draw_arrows, track_points
    from core.flow.methods import to_grey

    frames = list(range(starts[0], starts[-1] + step + 1, step))
    total = len(frames) - 1
    greys = []
    bar(0, len(frames))
    for _index, frame in reader.iter_frames(frames[0], frames[-1] + 1, step):
        greys.append(to_grey(frame))
        bar(len(greys), len(frames))
    tracks = track_points(greys)
    if stage is not None:
        for k in range(1, len(frames)):
            both = tracks.alive(k - 1) & tracks.alive(k)
            arrows = np.hstack([tracks.points[both, k - 1], tracks.points[both, k]])
            picture = draw_arrows(greys[k], arrows, color=(255, 40, 40))
            stage.write_bytes(f"tracks_{frames[k - 1]:06d}_{frames[k]:06d}.png",
                              encode_rgb_png(picture))
    npz.add("points", tracks.points.astype(np.float32))
    npz.add("frames", np.asarray(frames, np.int64))
    npz.add("fb_error", tracks.fb_error.astype(np.float32))
    return {"pairs": total, "shape": list(tracks.points.shape), "points": tracks.num_tracks}


def encode_rgb_png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 picture."""
    import cv2
    import numpy as np

    from core.cli import CliError

    ok, data = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise CliError(f"Encoding a {rgb.shape[1]}x{rgb.shape[0]} picture as PNG failed.")
    return data.tobytes()


@contextlib.contextmanager
def _viz_stage(folder: str | None) -> Iterator[Any]:
    """A :class:`~core.fsutil.StagedDir` for ``--viz`` (None without it): all PNGs or none."""
    if folder is None:
        yield None
        return
    from core.fsutil import StagedDir

    with StagedDir(Path(folder).expanduser()) as stage:
        yield stage


# -- writing the .npz ------------------------------------------------------------------------------
class AtomicNpz:
    """An ``.npz`` (what ``numpy.savez`` writes, uncompressed) built array by array, large ones
    streamed; it replaces ``path`` only when the with-block ends without an error.

    The file is written as a hidden temporary file beside ``path``, fsync'ed, then renamed, so
    a reader never sees half of it and an error (or Ctrl+C) leaves ``path`` as it was.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._temp: Path | None = None
        self._file: IO[bytes] | None = None
        self._zip: zipfile.ZipFile | None = None

    def __enter__(self) -> AtomicNpz:
        import secrets
        import zipfile

        # Not mkstemp: its files are private (0600); this one gets the umask's permissions.
        self._temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        self._file = open(self._temp, "xb")
        self._zip = zipfile.ZipFile(self._file, "w", zipfile.ZIP_STORED, allowZip64=True)
        return self

    def add(self, name: str, array: np.ndarray) -> None:
        """Store ``array`` as ``name`` (no pickles: text, numbers and numeric arrays only)."""
        import numpy as np

        assert self._zip is not None
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)

    @contextlib.contextmanager
    def stream(self, name: str, shape: tuple[int, ...], dtype: Any) -> Iterator[_ArraySink]:
        """Store an array of ``shape`` given one leading-axis slice at a time."""
        import numpy as np

        assert self._zip is not None
        dtype = np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                  "shape": tuple(int(s) for s in shape)}
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_2_0(member, header)
            sink = _ArraySink(member, shape, dtype)
            yield sink
            if sink.written != sink.expected:
                raise RuntimeError(f"{name}: wrote {sink.written} of {sink.expected} slices")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        assert self._zip is not None and self._file is not None and self._temp is not None
        try:
            if exc is None:
                self._zip.close()
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                os.replace(self._temp, self.path)
                return
        except BaseException:
            self._discard()
            raise
        self._discard()

    def _discard(self) -> None:
        assert self._zip is not None and self._file is not None and self._temp is not None
        with contextlib.suppress(Exception):
            self._zip.close()
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(OSError):
            self._temp.unlink()


class _ArraySink:
    """Writes the leading-axis slices of one array into an open ``.npy`` member."""

    def __init__(self, member: IO[bytes], shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._member = member
        self._slice_shape = tuple(shape[1:])
        self._dtype = dtype
        self.expected = int(shape[0])
        self.written = 0

    def write(self, values: np.ndarray) -> None:
        import numpy as np

        values = np.ascontiguousarray(values, dtype=self._dtype)
        if values.shape != self._slice_shape or self.written >= self.expected:
            raise RuntimeError(f"slice {self.written} of shape {values.shape}; expected "
                               f"{self.expected} of {self._slice_shape}")
        self._member.write(values.tobytes())
        self.written += 1
