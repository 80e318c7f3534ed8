"""Bounded undo/redo history of :class:`~core.annotation.edits.Edit` diffs."""

from __future__ import annotations

from collections import deque

import numpy as np

from core.annotation.edits import Edit


class History:
    """Undo and redo stacks of edits, bounded by step count and by memory.

    Args:
        max_steps: Most undo steps kept (oldest dropped first).
        max_bytes: Memory budget of the undo stack; the oldest steps are dropped past it, but the
            newest step is always kept however large it is.
    """

    def __init__(self, max_steps: int = 500, max_bytes: int = 512 * 2**20) -> None:
        self.max_steps = max_steps
        self.max_bytes = max_bytes
        self._undo: deque[Edit] = deque()
        self._redo: deque[Edit] = deque()
        self._bytes = 0

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def nbytes(self) -> int:
        """Memory held by the undo steps."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._undo)

    def push(self, edit: Edit) -> None:
        """Record an edit already applied to the labels; clears the redo stack."""
        self._undo.append(edit)
        self._bytes += edit.nbytes
        self._redo.clear()
        while len(self._undo) > 1 and (
            len(self._undo) > self.max_steps or self._bytes > self.max_bytes
        ):
            self._bytes -= self._undo.popleft().nbytes

    def undo(self, labels: np.ndarray) -> Edit | None:
        """Revert the newest edit in ``labels``; return the edit that was applied (the inverse)."""
        if not self._undo:
            return None
        edit = self._undo.pop()
        self._bytes -= edit.nbytes
        edit.revert(labels)
        self._redo.append(edit)
        return edit.inverse()

    def redo(self, labels: np.ndarray) -> Edit | None:
        """Re-apply the newest undone edit; return it."""
        if not self._redo:
            return None
        edit = self._redo.pop()
        edit.apply(labels)
        self._undo.append(edit)
        self._bytes += edit.nbytes
        return edit

    def clear(self) -> None:
        self._undo.clear()
        self._redo.clear()
        self._bytes = 0
