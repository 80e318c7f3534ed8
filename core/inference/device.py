"""Which device runs a model, mixed precision on it, and recognising out-of-memory errors.

torch is imported inside the functions (see tests/test_architecture.py: importing ``core`` must
not load torch).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from core.inference.errors import DeviceUnavailableError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
AMP_DTYPES = ("float16", "bfloat16")

# Substrings of RuntimeError messages that mean "the accelerator ran out of memory": the
# CUDA caching allocator ("CUDA out of memory"), MPS ("MPS backend out of memory"), and cuBLAS /
# cuDNN failing to get their workspace.
_OOM_MESSAGES = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed")


def select_device(preference: str = "auto") -> torch.device:
    """The device to run models on.

    Args:
        preference: ``"auto"`` (a CUDA GPU, else Apple's MPS, else the CPU), ``"cpu"``,
            ``"cuda"`` (or ``"cuda:N"``) or ``"mps"``.

    Returns:
        The torch device.

    Raises:
        DeviceUnavailableError: The device asked for does not exist here, or the name is unknown.
    """
    import torch

    name = (preference or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            why = "this torch was built without CUDA" if torch.version.cuda is None else (
                "no NVIDIA GPU or driver was found")
            raise DeviceUnavailableError(
                f"The CUDA GPU was asked for but is not available ({why}); choose 'auto' or 'cpu'.")
        device = torch.device(name)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceUnavailableError(
                f"GPU {device.index} was asked for but this machine has {count} CUDA GPU(s).")
        return device
    if name == "mps":
        if not _mps_available():
            raise DeviceUnavailableError(
                "Apple's MPS GPU was asked for but is not available on this machine; "
                "choose 'auto' or 'cpu'.")
        return torch.device("mps")
    raise DeviceUnavailableError(
        f"Unknown device {preference!r}; choose one of {', '.join(DEVICE_CHOICES)}.")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def device_label(device: torch.device | str) -> str:
    """A word for messages: ``"GPU"``, ``"CPU"``, ``"MPS GPU"``."""
    kind = getattr(device, "type", str(device).split(":")[0])
    return {"cpu": "CPU", "cuda": "GPU", "mps": "MPS GPU"}.get(kind, kind.upper())


def resolve_amp_dtype(device: torch.device, dtype: Any = None) -> torch.dtype | None:
    """The autocast dtype for ``device``, or None where autocast is not used.

    CUDA: float16 unless bfloat16 is asked for and the GPU supports it. MPS: float16 (bfloat16
    where asked for and torch supports it there). CPU: only bfloat16, and only when asked for
    explicitly (float16 autocast on a CPU is slower than float32). Other devices: None.
    """
    import torch

    wanted = _as_dtype(dtype)
    if device.type == "cuda":
        if wanted == torch.bfloat16 and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16
    if device.type == "mps":
        if wanted == torch.bfloat16 and _autocast_supports("mps", torch.bfloat16):
            return torch.bfloat16
        return torch.float16 if _autocast_supports("mps", torch.float16) else None
    if device.type == "cpu" and wanted == torch.bfloat16:
        return torch.bfloat16
    return None


def autocast_context(device: torch.device, enabled: bool = True,
                     dtype: Any = None) -> contextlib.AbstractContextManager:
    """A context in which the model's forward runs in mixed precision, or a no-op.

    Args:
        device: Where the forward runs.
        enabled: False gives a no-op (full float32).
        dtype: ``None``/``"float16"``/``"bfloat16"`` or a torch dtype; see
            :func:`resolve_amp_dtype` for what each device does with it.
    """
    if not enabled:
        return contextlib.nullcontext()
    import torch

    amp_dtype = resolve_amp_dtype(device, dtype)
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


def _as_dtype(dtype: Any) -> torch.dtype | None:
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    try:
        return names[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown mixed-precision dtype {dtype!r}; use one of {AMP_DTYPES}") from None


def _autocast_supports(device_type: str, dtype: torch.dtype) -> bool:
    import torch

    try:
        if not torch.amp.is_autocast_available(device_type):
            return False
        with torch.autocast(device_type=device_type, dtype=dtype):
            pass
    except (RuntimeError, ValueError, AttributeError):
        return False
    return True


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` says a device ran out of memory (CUDA, MPS, cuBLAS/cuDNN workspaces).

    A CPU allocation failure (``DefaultCPUAllocator: can't allocate memory``) is not counted:
    smaller tiles would not help there, the whole-image buffers are the problem.
    """
    import torch

    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),
                                  getattr(torch.cuda, "OutOfMemoryError", None)) if t is not None)
    if oom_types and isinstance(err, oom_types):
        return True
    if isinstance(err, RuntimeError):
        message = str(err).lower()
        return any(text in message for text in _OOM_MESSAGES)
    return False


def release_cached_memory(device: torch.device) -> None:
    """Give the caching allocator's free blocks back (after an out-of-memory error)."""
    import torch

    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and _mps_available():
        torch.mps.empty_cache()
