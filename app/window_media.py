"""The main window's instance mode and video handling (frames, flow overlays, propagation
markers, accepting a frame).

A mixin of :class:`app.main_window.MainWindow`.
"""

from __future__ import annotations

import numpy as np

from core.errors import SegStudioError


class InstancesVideoMixin:
    # -- instances --------------------------------------------------------------------------------------
    def _edit_session(self):
        """What the tools edit: the instance map in instance mode, else the class map."""
        if self.instances_panel.active and self.workspace.item is not None:
            return self.workspace.instance_session()
        return self.workspace.session

    def _class_selected(self, index: int) -> None:
        if not self.instances_panel.active:  # in instance mode the brush paints an instance
            self.tools.set_class_index(index)

    def _on_instance_mode(self, on: bool) -> None:
        self.tools.finish_pending()
        if on:
            self._preserve_before = self.tools.preserve_others
            self.tools.set_preserve_others(True)  # the brush paints its own instance only
            self._on_instance_selection()
        else:
            self.tools.set_preserve_others(getattr(self, "_preserve_before", False))
            self.tools.set_class_index(self.classes_panel.selected_index() or 1)
            self.canvas.set_boxes()
            self.canvas.overlay.set_hidden(set())
        self.options_bar.preserve.setChecked(self.tools.preserve_others)
        self._show_plane()
        self._show_instances()

    def _on_instance_selection(self) -> None:
        selected = self.instances_panel.selected
        if self.instances_panel.active:
            self.tools.set_class_index(selected[0] if selected else 0)
        self._show_instances()

    def _show_instances(self) -> None:
        """Redraw the instance map, hide low-score detections, draw boxes and captions."""
        panel = self.instances_panel
        if not panel.active:
            return
        from app.canvas.overlay import display_indices

        hidden = panel.hidden_ids()
        self.canvas.refresh_labels()
        indices = display_indices(np.array(sorted(hidden), np.int64)) if hidden else []
        self.canvas.overlay.set_hidden({int(i) for i in indices})
        self.canvas.set_boxes(panel.boxes(), panel.box_positions(panel.selected))

    def _pick_instance(self, x: float, y: float, add: bool) -> None:
        if self.instances_panel.active:
            self.instances_panel.pick(x, y, add)

    # -- video ------------------------------------------------------------------------------------------
    def _is_video(self) -> bool:
        item = self.workspace.item
        return item is not None and item.kind == "video"

    def _go_to_frame(self, frame: int) -> None:
        self.tools.finish_pending()
        self.workspace.set_position(0, frame)

    def _show_flow(self, overlay) -> None:
        """Draw the Video panel's flow picture, arrows and tracks over the shown frame."""
        if not self._is_video() or overlay.frame != self.workspace.frame:
            return
        self.canvas.set_flow_image(overlay.image, overlay.opacity)
        self.canvas.set_vectors(overlay.arrows, overlay.tracks)

    def _on_propagated(self, frames) -> None:
        self._refresh_markers()
        self._show_plane()  # the shown frame may be one of them, and its hatching changes
        self._update_title()

    def _refresh_markers(self) -> None:
        """The marker strip: which frames have labels, drawn or propagated (and how reliable)."""
        ws = self.workspace
        if ws.project is not None and self._is_video():
            info = ws.project.frame_info(ws.item.id)
            self.video_bar.set_markers(info)

    def accept_frame(self) -> None:
        """Mark the current video frame's labels as reviewed by the person."""
        session = self.workspace.session
        if not self._is_video() or session is None:
            raise SegStudioError("Accepting a frame is for videos: open one first.")
        self.tools.finish_pending()
        session.checkpoint()  # the labels the person accepted are on disk
        session.set_frame_state("reviewed")
        self.video_panel.unreliable.pop(self.workspace.frame, None)
        self.canvas.set_preview(None)
        self._refresh_markers()
        self.statusBar().showMessage(f"Frame {self.workspace.frame + 1} accepted.", 3000)
