"""Optical flow for video: dense and sparse flow, a flow cache, pictures of flow, and mask
propagation along flow (carry a mask drawn on one frame to the next ones).

Importing this package does not import torch: only the RAFT methods load it, on first use
(:mod:`core.flow.raft`).

Public API:
    :func:`compute_flow`, :func:`track_points`, :class:`Tracks`, :data:`FLOW_METHODS`,
    :func:`default_params` (methods); :class:`FlowCache`, :class:`FlowKey`, :func:`flow_key`,
    :class:`FlowProvider` (cache); :func:`flow_to_color`, :func:`color_wheel_legend`,
    :func:`flow_arrows`, :func:`flow_magnitude_heat`, :func:`draw_arrows` (visualize);
    :func:`warp_labels`, :func:`consistency_mask`, :func:`propagate`,
    :func:`propagate_between`, :class:`PropagationStep` (propagate); the errors.
"""

from __future__ import annotations

from core.flow.cache import FlowCache, FlowKey, FlowProvider, flow_key, freeze_params
from core.flow.errors import FlowError, PropagationCancelled, UnknownFlowMethodError
from core.flow.methods import (
    FLOW_METHODS,
    Tracks,
    compute_flow,
    default_params,
    track_points,
)
from core.flow.propagate import (
    PropagationStep,
    consistency_mask,
    propagate,
    propagate_between,
    warp_labels,
)
from core.flow.visualize import (
    color_wheel_legend,
    draw_arrows,
    flow_arrows,
    flow_magnitude_heat,
    flow_to_color,
)

__all__ = [
    "FLOW_METHODS", "FlowCache", "FlowError", "FlowKey", "FlowProvider", "PropagationCancelled",
    "PropagationStep", "Tracks", "UnknownFlowMethodError", "color_wheel_legend", "compute_flow",
    "consistency_mask", "default_params", "draw_arrows", "flow_arrows", "flow_key",
    "flow_magnitude_heat", "flow_to_color", "freeze_params", "propagate", "propagate_between",
    "track_points", "warp_labels",
]
