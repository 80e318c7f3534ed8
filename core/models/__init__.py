"""Models SegStudio can build and run, in a torchvision-like registry (torch-free to list)."""

from core.models.action_specs import ClipSpec, clip_spec
from core.models.registry import (
    TASKS,
    ModelInfo,
    UnknownModelError,
    get_model,
    list_models,
    model_info,
    register,
)
from core.models.weights import Weights

__all__ = ["TASKS", "ClipSpec", "ModelInfo", "UnknownModelError", "Weights", "clip_spec",
           "get_model", "list_models", "model_info", "register"]
