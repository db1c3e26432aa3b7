"""The single point that chooses a backend for an op call.

A backend is usable for a call when its runtime is there (process level: triton imports, the C++
extension is built or can be built) and it handles the tensor's device and dtype. "auto" takes the
first usable backend in order of speed; an explicit request that cannot be served raises with the
reason, before any kernel runs.
"""
from __future__ import annotations

import warnings
from typing import Dict, NamedTuple, Optional, Sequence

import torch


_LOW_PRECISION = (torch.float16, torch.bfloat16, torch.float32)
_ALL_FLOAT = _LOW_PRECISION + (torch.float64,)

# dtypes of the *floating* input each backend computes on (fp32 math for fp16/bf16/fp32).
BACKEND_DTYPES = {
    "reference": _ALL_FLOAT,
    "triton": _LOW_PRECISION,
    "cpu": _ALL_FLOAT,
    "cuda": _LOW_PRECISION + (torch.float64,),
}

ALL_IMPLEMENTED = ("reference", "triton", "cpu", "cuda")


class BackendUnavailableError(ValueError):
    """An explicitly requested backend cannot run this call (the message says why)."""


class BackendStatus(NamedTuple):
    available: bool
    reason: str


def _runtime_reason(name: str) -> Optional[str]:
    """Why backend `name` cannot run in this process at all (None when it can)."""
    if name == "reference":
        return None
    if name == "triton":
        from ._triton import triton_unavailable_reason

        return triton_unavailable_reason()
    if name in ("cpu", "cuda"):
        from ._extension import extension_unavailable_reason

        return extension_unavailable_reason(name)
    raise AssertionError(name)


def available_backends() -> Dict[str, BackendStatus]:
    """Every backend with whether it can run in this process and, when it cannot, why.

    "triton" needs the triton package and a CUDA device (or TRITON_INTERPRET=1, which runs the
    kernels slowly on the CPU); "cpu" needs the C++ extension (built on first use); "cuda" needs
    the extension built against a CUDA torch and a CUDA device.
    """
    out = {}
    for name in ALL_IMPLEMENTED:
        reason = _runtime_reason(name)
        if reason is None and name == "cuda" and not torch.cuda.is_available():
            reason = "no CUDA device is available"
        if reason is None and name == "triton" and not torch.cuda.is_available():
            from ._triton import interpreting

            if not interpreting():
                reason = "no CUDA device is available (set TRITON_INTERPRET=1 to run on the CPU)"
        out[name] = BackendStatus(reason is None, "available" if reason is None else reason)
    return out


def unavailable_reason(name: str, x: torch.Tensor) -> Optional[str]:
    """Why backend `name` cannot run on tensor `x` (None when it can): its device, its dtype
    (BACKEND_DTYPES) or its runtime (no toolchain, no interpreter)."""
    dtypes = BACKEND_DTYPES[name]
    dev = x.device.type
    if name == "triton":
        from ._triton import interpreting

        if dev != "cuda" and not (dev == "cpu" and interpreting()):
            return f"it needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1); got {dev}"
        if dev == "cpu" and x.dtype == torch.bfloat16:
            return "the Triton interpreter (TRITON_INTERPRET=1) does not support bfloat16"
    elif name == "cpu" and dev != "cpu":
        return f"it needs CPU tensors; got {dev}"
    elif name == "cuda" and dev != "cuda":
        return f"it needs CUDA tensors; got {dev}"
    if x.dtype not in dtypes:
        return f"it supports {[str(d) for d in dtypes]}; got {x.dtype}"
    return _runtime_reason(name)


def _ensure_loaded(name: str) -> Optional[str]:
    """Build/load what backend `name` needs now (a no-op once loaded); the reason when that fails.

    The C++ extension counts as available while it is buildable, so its build can only fail here:
    resolving it at this point lets "auto" fall back and an explicit request name the failure.
    """
    if name in ("cpu", "cuda"):
        from . import _extension

        try:
            _extension.load()
        except RuntimeError as exc:
            return str(exc)
    return None


def resolve_backend(
    requested: str,
    x: torch.Tensor,
    *,
    op: str,
    implemented: Sequence[str] = ALL_IMPLEMENTED,
) -> str:
    """The backend that runs `op` on tensor `x` (the op's main input)."""
    if requested != "auto":
        if requested not in implemented:
            raise BackendUnavailableError(
                f"backend={requested!r} is not implemented for {op}; choose one of "
                f"{['auto', *implemented]}"
            )
        reason = unavailable_reason(requested, x) or _ensure_loaded(requested)
        if reason is not None:
            raise BackendUnavailableError(
                f"backend={requested!r} cannot run {op} on {x.dtype} {x.device.type} tensors: "
                f"{reason}"
            )
        return requested
    order = ("triton", "cuda", "reference") if x.device.type == "cuda" else ("cpu", "reference")
    return _first_usable(order, implemented, x) or "reference"


def _first_usable(order: Sequence[str], implemented: Sequence[str], x: torch.Tensor) -> Optional[str]:
    """"auto"'s pick: the first backend of `order` that is implemented, can take `x` and loads."""
    for name in order:
        if name in implemented and unavailable_reason(name, x) is None:
            failure = _ensure_loaded(name)
            if failure is None:
                return name
            _warn_fallback_once(name, failure)
    return None


_warned: set = set()


def _warn_fallback_once(name: str, reason: str) -> None:
    """"auto" skipped a backend that counted as available but failed to load (a failed build,
    a timed-out wait for another process's build): say so once per process, with the reason."""
    if name not in _warned:
        _warned.add(name)
        warnings.warn(
            f'ocr_kernels: backend="auto" falls back from {name!r} (slower) because {reason}',
            RuntimeWarning, stacklevel=5)


# "auto"'s order for the fused upsampling on a GPU (see resolve_resized_backend).
RESIZED_GPU_ORDER = ("cuda", "triton")


def resolve_resized_backend(
    requested: str,
    x: torch.Tensor,
    *,
    op: str,
    implemented: Sequence[str],
) -> Optional[str]:
    """The backend that runs `op` with the bilinear upsampling fused in (ocr_loss(size=...),
    seg_ocr_loss(upsample=True)), or None where the caller must compose. "auto" on CUDA takes the
    first usable fused GPU backend in RESIZED_GPU_ORDER: cuda first (both save the memory of the
    full-resolution logits; the static model predicts the CUDA kernels faster than the Triton
    ones, and than F.interpolate + the CUDA loss at C+1 = 81, README "Performance"); only when none can run does it return None, and the caller runs F.interpolate
    and then the loss with backend="auto" (not fused: the full-resolution logits are
    materialised). An explicit backend without the fused path raises."""
    if requested != "auto" and requested not in implemented:
        raise BackendUnavailableError(
            f"backend={requested!r} cannot run {op} with fused upsampling: it is implemented on "
            f"the {', '.join(implemented)} backends only; pass backend='auto' or interpolate the "
            f"logits yourself"
        )
    if requested == "auto" and x.device.type != "cpu":
        return _first_usable(RESIZED_GPU_ORDER, implemented, x)
    return resolve_backend(requested, x, op=op, implemented=implemented)
