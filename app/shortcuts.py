"""Keyboard shortcuts: defaults, user overrides (QSettings group "shortcuts"), help text.

A user changes a shortcut by setting ``shortcuts/<action id>`` in the settings file (the Help >
Keyboard shortcuts dialog names the file and the ids).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.settings import settings


@dataclass(frozen=True)
class ShortcutSpec:
    action_id: str
    keys: tuple[str, ...]
    text: str


DEFAULTS: tuple[ShortcutSpec, ...] = (
    ShortcutSpec("open_images", ("Ctrl+O",), "Open images, volumes, videos or a folder"),
    ShortcutSpec("open_frames", ("Ctrl+Alt+O",), "Open a folder of frames as a video"),
    ShortcutSpec("open_project", ("Ctrl+Shift+O",), "Open a project"),
    ShortcutSpec("add_images", ("Ctrl+Shift+A",), "Add images to the project"),
    ShortcutSpec("import", ("Ctrl+I",), "Import labels (VOC, index PNG)"),
    ShortcutSpec("export", ("Ctrl+E",), "Export labels"),
    ShortcutSpec("train", ("Ctrl+T",), "Train a model on the corrected items"),
    ShortcutSpec("quit", ("Ctrl+Q",), "Quit"),
    ShortcutSpec("undo", ("Ctrl+Z",), "Undo"),
    ShortcutSpec("redo", ("Ctrl+Shift+Z", "Ctrl+Y"), "Redo"),
    ShortcutSpec("tool_brush", ("B",), "Brush"),
    ShortcutSpec("tool_eraser", ("E",), "Eraser"),
    ShortcutSpec("tool_fill", ("F",), "Flood fill"),
    ShortcutSpec("tool_polygon", ("P",), "Polygon (click points; double-click or Enter closes)"),
    ShortcutSpec("tool_pan", ("H",), "Pan"),
    ShortcutSpec("tool_crosshair", ("C",), "Crosshair: click to point every view at a voxel"),
    ShortcutSpec("tool_select", ("S",),
                 "Select: click picks an instance, a drag splits the selected one"),
    ShortcutSpec("instance_mode", ("I",), "Edit instances instead of classes"),
    ShortcutSpec("new_instance", ("N",), "New instance of the selected class"),
    ShortcutSpec("delete_instance", ("Delete",), "Delete the selected instances"),
    ShortcutSpec("brush_smaller", ("[",), "Smaller brush"),
    ShortcutSpec("brush_larger", ("]",), "Larger brush"),
    ShortcutSpec("preserve", ("Ctrl+L",), "Preserve other labels"),
    ShortcutSpec("next_item", ("D", "PgDown"), "Next item"),
    ShortcutSpec("previous_item", ("A", "PgUp"), "Previous item"),
    ShortcutSpec("next_frame", ("Right",), "Next slice of the view (page of a stack)"),
    ShortcutSpec("previous_frame", ("Left",),
                 "Previous slice of the view (page of a stack)"),
    ShortcutSpec("next_frame_10", ("Shift+Right",), "10 frames (slices) forward"),
    ShortcutSpec("previous_frame_10", ("Shift+Left",), "10 frames (slices) back"),
    ShortcutSpec("play", ("K",), "Play/pause a video"),
    ShortcutSpec("accept_frame", ("Ctrl+Return",),
                 "Accept this video frame's labels (reviewed)"),
    ShortcutSpec("view_three", ("Ctrl+3",), "Three views (volumes and stacks)"),
    ShortcutSpec("view_axis_0", ("Alt+1",), "Main view: axial (first axis)"),
    ShortcutSpec("view_axis_1", ("Alt+2",), "Main view: coronal (second axis)"),
    ShortcutSpec("view_axis_2", ("Alt+3",), "Main view: sagittal (third axis)"),
    ShortcutSpec("mark_done", ("Ctrl+D",), "Mark item done"),
    ShortcutSpec("mark_review", ("Ctrl+R",), "Mark item needs review"),
    ShortcutSpec("fit", ("Ctrl+0",), "Fit image in the window"),
    ShortcutSpec("zoom_1to1", ("Ctrl+1",), "Zoom 1:1"),
    ShortcutSpec("toggle_overlay", ("V",), "Show/hide labels"),
    ShortcutSpec("toggle_outline", ("O",), "Outline-only labels"),
    ShortcutSpec("help", ("F1",), "Keyboard shortcuts"),
    *(ShortcutSpec(f"class_{n}", (str(n),), f"Select class {n}") for n in range(1, 10)),
)


def keys_for(action_id: str) -> list[str]:
    """The shortcut(s) for an action: the user's override if set, else the default."""
    override = settings().value(f"shortcuts/{action_id}")
    if override:
        return [k.strip() for k in str(override).split(";") if k.strip()]
    for spec in DEFAULTS:
        if spec.action_id == action_id:
            return list(spec.keys)
    return []
