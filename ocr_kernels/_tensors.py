"""Tensor conventions shared by every loss: the math dtype, and the checks the fake (meta)
kernels of the registered ops make before they allocate their outputs."""
from __future__ import annotations

from typing import Optional

import torch

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def math_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp64 math for fp64 inputs, fp32 math for every other floating dtype (csrc/common.h's
    math_dtype is the C++ side of the same rule)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_ocr_args(logits: torch.Tensor, tags: torch.Tensor, prior: Optional[torch.Tensor],
                   target: Optional[torch.Tensor] = None) -> None:
    """What the OCR and segmentation ops assume of their inputs (the public functions validate
    the same with clear errors before any op runs; this keeps a traced graph honest)."""
    torch._check(3 <= logits.dim() <= 5, lambda: f"logits: expected [B, C+1, *spatial], got {logits.shape}")
    torch._check(logits.dtype in _FLOATS, lambda: f"logits: expected a float dtype, got {logits.dtype}")
    torch._check(tags.dim() == 2, lambda: f"tags: expected [B, C], got {tags.shape}")
    torch._check(tags.shape[0] == logits.shape[0], lambda: "tags: batch differs from the logits'")
    torch._check(tags.shape[1] + 1 == logits.shape[1], lambda: "tags: expected C = logits' C+1 - 1")
    if prior is not None:
        C1 = logits.shape[1]
        torch._check(prior.dim() == 2 and prior.shape[0] == C1 and prior.shape[1] == C1,
                     lambda: f"prior: expected [C+1, C+1], got {prior.shape}")
    if target is not None:
        torch._check(target.dtype == torch.int64, lambda: f"target: expected int64, got {target.dtype}")
        torch._check(target.dim() == logits.dim() - 1, lambda: "target: expected [B, *spatial]")
        for i in range(target.dim()):
            torch._check(target.shape[i] == logits.shape[0 if i == 0 else i + 1],
                         lambda: f"target: shape {target.shape} does not match logits {logits.shape}")


def check_map(loss_map: torch.Tensor, logits: torch.Tensor, name: str = "loss_map") -> None:
    """A per-pixel map [B, *spatial] of the logits."""
    torch._check(loss_map.dim() == logits.dim() - 1, lambda: f"{name}: expected [B, *spatial]")
    for i in range(loss_map.dim()):
        torch._check(loss_map.shape[i] == logits.shape[0 if i == 0 else i + 1],
                     lambda: f"{name}: shape {loss_map.shape} does not match logits {logits.shape}")


def new_map(logits: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """An uninitialised per-pixel map [B, *spatial] in the math dtype (or the given one)."""
    return logits.new_empty((logits.shape[0], *logits.shape[2:]),
                            dtype=dtype or math_dtype(logits.dtype))


def check_points(x: torch.Tensor, centroids: torch.Tensor, x_name: str = "x",
                 c_name: str = "centroids") -> None:
    """What the W-OoD distance ops assume: [N, D] points and [K, D] centroids of one float dtype."""
    torch._check(x.dim() == 2, lambda: f"{x_name}: expected [N, D], got {x.shape}")
    torch._check(centroids.dim() == 2, lambda: f"{c_name}: expected [K, D], got {centroids.shape}")
    torch._check(x.shape[1] == centroids.shape[1], lambda: f"{c_name}: D differs from {x_name}'s")
    torch._check(x.dtype in _FLOATS, lambda: f"{x_name}: expected a float dtype, got {x.dtype}")
    torch._check(centroids.dtype == x.dtype, lambda: f"{c_name}: dtype differs from {x_name}'s")
