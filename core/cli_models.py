"""The model commands of ``segstudio-cli``: ``models`` (the registry and which weights are on
this machine) and ``predict`` (run a model over images or a project's items).

Kept apart from :mod:`core.cli` so that file stays about files and projects; the shared output
helpers are used from there (imported inside the functions: core.cli imports this module).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

MODEL_TASKS = ("semantic", "instance", "flow", "action")  # core.models.registry.TASKS
DEVICES = ("auto", "cpu", "cuda", "mps")


def add_model_parsers(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="list the models and their weights")
    models.add_argument("--task", choices=MODEL_TASKS, help="only the models of this task")
    models.add_argument("--params", action="store_true",
                        help="count parameters (builds every model: slower)")
    models.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    models.set_defaults(handler=cmd_models)

    predict = commands.add_parser(
        "predict", help="segment images with a model (index PNGs, or into a project)")
    predict.add_argument("inputs", metavar="INPUT", nargs="*",
                         help="images or folders (with --project: default all items not done)")
    predict.add_argument("--model", required=True, metavar="NAME", help="see segstudio-cli models")
    predict.add_argument("--weights", metavar="FILE|NAME",
                         help="a checkpoint or state-dict file, or published weights by name "
                              "(default: the model's published weights, if any)")
    predict.add_argument("--device", choices=DEVICES, default="auto")
    predict.add_argument("--tile", type=int, default=512, metavar="N", help="tile side in pixels")
    predict.add_argument("--overlap", type=float, default=0.25, metavar="F",
                         help="fraction of a tile shared with its neighbours")
    predict.add_argument("--batch-size", type=int, default=4, metavar="B")
    predict.add_argument("--min-component", type=int, default=0, metavar="PIXELS",
                         help="relabel smaller connected regions to their surroundings")
    predict.add_argument("--include-done", action="store_true",
                         help="with --project: also overwrite items marked done")
    target = predict.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", metavar="DIR", help="write one index PNG per input here")
    target.add_argument("--project", metavar="DIR", help="write the masks into this project")
    predict.set_defaults(handler=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    """Run a model; one index PNG (input size) per input plus classes.json, or project masks."""
    from core import cli as base
    from core.inference.engine import InferenceEngine, InferenceSettings
    from core.models.registry import model_info
    from core.predict import predict_files, predict_items

    info = model_info(args.model)
    weights = args.weights or _default_weights(info)
    try:
        settings = InferenceSettings(device=args.device, tile_size=args.tile,
                                     overlap=args.overlap, batch_size=args.batch_size,
                                     min_component_size=args.min_component)
    except ValueError as err:
        raise base.CliError(str(err)) from err
    engine = InferenceEngine(settings)
    loaded = engine.load(args.model, weights=weights)
    bar = base._ProgressBar(f"predict {args.model}")
    try:
        if args.out:
            inputs = _expand_inputs(args.inputs, base)
            summary = predict_files(engine, loaded, inputs, Path(args.out), report=bar)
        else:
            with base._open_project(args.project) as project:
                items = _project_items(project, args.inputs, args.include_done)
                summary = predict_items(engine, loaded, project, items,
                                        include_done=args.include_done, report=bar)
    finally:
        bar.close()
    for name, reason in summary.skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    base._print_json({"model": args.model, "weights": loaded.label, "classes": loaded.classes,
                      "written": summary.written, "notes": summary.notes,
                      "skipped": [{"name": n, "reason": r} for n, r in summary.skipped]})
    return 1 if summary.skipped else 0


def _default_weights(info: Any) -> str:
    published = list(info.weights())
    if not published:
        from core import cli as base

        raise base.CliError(f"{info.name} has no published weights; pass --weights CHECKPOINT "
                            "(a model trained in SegStudio or a state-dict file).")
    return published[0]


def _expand_inputs(inputs: list[str], base: Any) -> list[Path]:
    from core.io import is_image_path

    if not inputs:
        raise base.CliError("Name at least one INPUT image or folder.")
    files: list[Path] = []
    for text in inputs:
        path = base._existing_path(text)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and is_image_path(p)))
        else:
            files.append(path)
    return files


def _project_items(project: Any, inputs: list[str], include_done: bool) -> list[Any]:
    """The items named by INPUTs (added to the project when new), or all items."""
    if not inputs:
        return [i for i in project.items() if include_done or i.state != "done"]
    report = project.add_items(inputs)
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    wanted = {Path(p).resolve() for p in inputs}
    return [i for i in project.items()
            if i.source is not None and (i.source in wanted or i.source.parent in wanted)]


def cmd_models(args: argparse.Namespace) -> int:
    """List the registered models and whether their published weights are on this machine."""
    from core import cli as base
    from core.models.registry import list_models, model_info

    rows, failed = [], False
    for name in list_models(args.task):
        info = model_info(name)
        row = {"name": name, "task": info.task, "input_kind": info.input_kind,
               "paper": info.paper, "description": info.description}
        try:
            row["weights"] = [_weights_row(w) for w in info.weights().values()]
            if args.params:
                row["params"] = _count_params(info)
        except ImportError as err:  # a family module that cannot load: report it, list the rest
            print(f"warning: {name}: {err}", file=sys.stderr)
            row.setdefault("weights", [])
            failed = True
        rows.append(row)
    if args.json:
        for row in rows:
            base._print_json(row)
    else:
        _print_models_table(rows)
    return 1 if failed else 0


def _weights_row(weights: Any) -> dict[str, Any]:
    from core.models.loading import cached_weights_path  # torch; looks at the cache only

    path = cached_weights_path(weights)
    return {"name": weights.name, "source": weights.source, "file_name": weights.file_name,
            "classes": weights.num_classes, "metrics": weights.metrics,
            "available": path is not None, "path": str(path) if path else None}


def _count_params(info: Any) -> int:
    """Parameters of the model as built by default (semantic models: 2 classes, 3 channels)."""
    import torch

    kwargs = {"num_classes": 2, "in_channels": 3} if info.task == "semantic" else {}
    try:
        with torch.device("meta"):  # shapes only: no memory, no initialisation time
            module = info.build(**kwargs)
    except Exception:
        module = info.build(**kwargs)
    return sum(p.numel() for p in module.parameters())


def _print_models_table(rows: list[dict[str, Any]]) -> None:
    width = max((len(r["name"]) for r in rows), default=4)
    with_params = any("params" in r for r in rows)
    print(f"{'MODEL':<{width}}  {'TASK':<8}  {'INPUT':<5}  {'PARAMS   ' if with_params else ''}"
          f"PAPER")
    for row in rows:
        params = f"{row.get('params', 0) / 1e6:7.2f}M  " if with_params else ""
        print(f"{row['name']:<{width}}  {row['task']:<8}  {row['input_kind']:<5}  {params}"
              f"{row['paper']}")
        for weights in row["weights"]:
            where = (f"available: {weights['path']}" if weights["available"]
                     else f"not on this machine ({weights['file_name']})")
            print(f"{'':<{width}}    weights {weights['name']}: {where}")


