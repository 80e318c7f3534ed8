"""What the Train dialog needs to know about each kind of model it trains: semantic masks (U-Net
and friends, :mod:`core.train.loop`), instances (Mask R-CNN, :mod:`core.train.instances`) and
actions (clip classifiers, :mod:`core.train.actions`).

:data:`TASKS` holds each task's defaults (those of its core config; a test keeps them equal), the
columns of its per-epoch rows that the live plot draws and the panel that runs its models;
:func:`training_data` says what a project has to train on before a job starts;
:func:`make_training` builds the config (bad options raise at once, on the UI thread) and the
job that loads the data and trains off the UI thread; :func:`offer_checkpoint` selects a trained
checkpoint in a panel's model choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.models import list_models
from core.project.store import Project


@dataclass(frozen=True)
class TrainTask:
    """One kind of model the dialog trains.

    Attributes:
        key: The registry task (``"semantic"``, ``"instance"``, ``"action"``).
        title: What the task selector shows.
        panel: The panel whose model choice runs the trained model.
        epochs, batch_size, lr, optimizer: Defaults (the core config's).
        loss_key, loss_name: The per-epoch row's training loss column and its legend.
        metric_key, metric_name: The validation metric column and its legend.
        checkpoint: Default checkpoint file name in the project's ``models`` folder.
    """

    key: str
    title: str
    panel: str
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    loss_key: str
    loss_name: str
    metric_key: str
    metric_name: str
    checkpoint: str


TASKS: dict[str, TrainTask] = {
    "semantic": TrainTask("semantic", "Semantic masks", "Models", 20, 4, 1e-3, "adamw",
                          "train_loss", "training loss", "mean_dice", "validation Dice",
                          "trained.pt"),
    "instance": TrainTask("instance", "Instances", "Instances", 10, 2, 0.005, "sgd",
                          "loss", "training loss", "mask_ap", "validation mask AP",
                          "trained_instances.pt"),
    "action": TrainTask("action", "Actions", "Actions", 10, 4, 1e-4, "adamw",
                        "train_loss", "training loss", "top1", "validation top-1",
                        "trained_actions.pt"),
}
OPTIMIZERS = ("adamw", "sgd")


def trainable_models(task: str) -> list[str]:
    """The registered models of ``task`` (every one trains, two-stream models on the optical
    flow the training data computes)."""
    return list_models(task)


# -- what there is to train on --------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingData:
    """How much a project holds for one task: ``count`` samples (0: nothing to train on) and a
    sentence for the person."""

    count: int
    text: str


def training_data(project: Project, task: str, items: str) -> TrainingData:
    """What ``project`` has to train a ``task`` model on (``items``: ``"done"`` or ``"all"``;
    action models train on every labelled segment)."""
    if task == "instance":
        images = [i for i in project.items() if i.kind == "image" and i.frames <= 1]
        with_instances = [i for i in images if project.has_instances(i.id)]
        chosen = [i for i in with_instances if items == "all" or i.state == "done"]
        if not with_instances:
            return TrainingData(0, "No image has instances yet: draw them in the Instances "
                                   "panel (Edit instances) or detect and correct them first.")
        if not chosen:
            return TrainingData(0, f"{len(with_instances)} image(s) have instances but none is "
                                   "marked done: mark them done or train on every item.")
        return TrainingData(len(chosen), f"{len(chosen)} image(s) with instances "
                                         f"({len(images)} image item(s) in the project).")
    if task == "action":
        vocabulary = set(project.action_labels())
        segments, videos, labels = 0, 0, set()
        for item in project.items():
            if item.kind != "video":
                continue
            usable = [s for s in project.load_segments(item.id) if s.label in vocabulary]
            segments += len(usable)
            videos += bool(usable)
            labels.update(s.label for s in usable)
        if not segments:
            return TrainingData(0, "No labelled video segment yet: label what happens when on "
                                   "the timeline (Actions panel) first.")
        return TrainingData(segments, f"{segments} labelled segment(s) in {videos} video(s); "
                                      f"{len(labels)} of {len(vocabulary)} action label(s) used.")
    all_items = project.items()
    done = sum(i.state == "done" for i in all_items)
    if items == "done" and not done:
        return TrainingData(0, "No item is marked done: mark the corrected items done or "
                               "train on every item with labels.")
    chosen = done if items == "done" else len(all_items)
    return TrainingData(chosen, f"{done} of {len(all_items)} item(s) marked done.")


# -- the job ----------------------------------------------------------------------------------------
@dataclass
class TrainRequest:
    """What the dialog's form says (``max_side`` 0: images as they are; ``frames`` None: the
    model's; ``stride`` 0: the model's rate; ``steps_per_epoch`` 0: one pass over the data)."""

    task: str
    model: str
    out: Path
    items: str
    epochs: int
    batch_size: int
    lr: float
    optimizer: str
    device: str
    steps_per_epoch: int = 0
    patch: int = 256
    max_side: int = 512
    evaluate: bool = True
    frames: int | None = None
    stride: int = 0


Job = Callable[..., Any]


def make_training(request: TrainRequest, folder: Path,
                  on_epoch: Callable[[dict[str, Any]], None]) -> tuple[Any, Job]:
    """The core config of ``request`` (raises TrainError / ValueError for bad options) and
    ``job(report, cancel)``, which reads the project at ``folder`` and trains (off the UI
    thread: it opens its own read-only connection)."""
    common = dict(model=request.model, out=request.out, epochs=request.epochs,
                  batch_size=request.batch_size, lr=request.lr, optimizer=request.optimizer,
                  device=request.device, steps_per_epoch=request.steps_per_epoch or None)
    if request.task == "instance":
        from core.train.instances import (
            InstanceTrainConfig,
            instance_dataset_from_project,
            train_instances,
        )

        side = request.max_side or None
        # the detector resizes again inside (shorter side to 800 by default): keep the side
        kwargs = {"min_size": side, "max_size": side} if side else {}
        config = InstanceTrainConfig(**common, model_kwargs=kwargs, evaluate=request.evaluate)

        def instance_job(report, cancel):
            dataset = instance_dataset_from_project(folder, request.items, side)
            return train_instances(config, dataset, report=report, cancel=cancel,
                                   on_epoch=on_epoch)

        return config, instance_job
    if request.task == "action":
        from core.train.actions import ActionTrainConfig, action_dataset_from_project, train_actions

        config = ActionTrainConfig(**common, frames=request.frames,
                                   stride=request.stride or None)
        spec = config.spec()  # a frame count the model does not take fails here

        def action_job(report, cancel):
            dataset = action_dataset_from_project(folder, spec, config.stride)
            return train_actions(config, dataset, report=report, cancel=cancel,
                                 on_epoch=on_epoch)

        return config, action_job
    from core.train.loop import TrainConfig

    config = TrainConfig(**common, patch=request.patch, log=request.out.with_suffix(".csv"))

    def semantic_job(report, cancel):
        from core.train.data import dataset_from_project
        from core.train.loop import train

        dataset = dataset_from_project(folder, request.items)
        return train(config, dataset, report=report, cancel=cancel, on_epoch=on_epoch)

    return config, semantic_job


# -- the trained model, offered -------------------------------------------------------------------
def offer_checkpoint(choice: Any, model: str, path: str) -> None:
    """Select ``model`` and the checkpoint ``path`` as its weights in a panel's ModelChoice
    (once: a checkpoint trained again to the same file is selected, not listed twice)."""
    at = choice.model.findData(model)
    if at >= 0:
        choice.model.setCurrentIndex(at)
    choice.fill_weights()
    weights = choice.weights
    found = weights.findData(path)
    if found < 0:
        weights.insertItem(weights.count() - 1, path, path)
        found = weights.count() - 2
    weights.setCurrentIndex(found)
