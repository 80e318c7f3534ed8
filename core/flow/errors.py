"""Errors of optical flow and mask propagation (all user-facing :class:`SegStudioError`)."""

from __future__ import annotations

from core.errors import SegStudioError


class FlowError(SegStudioError):
    """Optical flow cannot be computed from these inputs (sizes, types, method, parameters)."""


class UnknownFlowMethodError(FlowError):
    """No optical flow method of that name exists."""


class PropagationCancelled(SegStudioError):  # noqa: N818 - named like InferenceCancelled
    """The user cancelled a mask propagation; nothing was applied."""
