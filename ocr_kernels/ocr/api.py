"""The public OCR entry points: ``ocr_loss`` and the ``OCRLoss`` module."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from .._dispatch import resolve_backend, resolve_resized_backend
from .._options import OCROptions
from .._validation import optional_prior_for, validate_ocr_inputs, validate_resize
from .backends import OCR_LOSS_MAP_IMPLS, OCR_LOSS_MAP_RESIZED_IMPLS
from .reference import upsample_logits


def mean_or_zero(t: torch.Tensor) -> torch.Tensor:
    """t.mean(), but 0 with a zero gradient for an empty t (a batch of 0 images or of no pixels)
    where torch's mean gives NaN: an empty batch contributes nothing to a training step."""
    return t.sum() / torch.sym_max(t.numel(), 1)


def reduce_loss_map(loss_map: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":  # Algorithm 1's .mean(): every pixel counts in the denominator
        return mean_or_zero(loss_map)
    if reduction == "sum":
        return loss_map.sum()
    return loss_map


def ocr_loss(
    logits: torch.Tensor,
    tags: torch.Tensor,
    prior: Optional[torch.Tensor] = None,
    *,
    size: Optional[Sequence[int]] = None,
    align_corners: bool = False,
    margin: float = 2.0,
    threshold: float = 0.2,
    group_split: str = "ada",
    pixels: str = "oc",
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """Out-of-Candidate Rectification loss (Cheng et al., CVPR 2023, Eq. 5-19).

    logits [B, C+1, *spatial] (1-3 spatial dims, channel 0 = background; fp16/bf16/fp32 with fp32
    math, fp64 with fp64 math), tags [B, C] (nonzero = present), prior [C+1, C+1] (required for
    group_split="ada"; see ``prior_correlation``). Returns a 0-dim fp32 loss ("mean", "sum") or
    the per-pixel loss [B, *spatial] ("none"); fp64 for fp64 logits. The gradient flows to the
    logits in their dtype. See README "Semantics" for the exact definition.

    size=(H, W): the loss of the logits [B, C+1, h, w] bilinearly upsampled to (H, W), exactly
    ``F.interpolate(logits, size, mode="bilinear", align_corners=align_corners)`` (in the math
    dtype), fused into the kernel on every backend but the reference (cpu, cuda, triton): no
    [B, C+1, H, W] tensor is allocated, and the gradient reaches the low-resolution logits
    (deterministically). "none" then returns [B, H, W]. "auto" on CUDA takes the fused cuda
    kernels, else the fused Triton ones, and interpolates, then runs the fastest loss, only where
    neither can run (docs/semantics.md §1c).
    """
    opts = OCROptions(margin, threshold, group_split, pixels)
    validate_ocr_inputs(logits, tags, prior, opts, reduction=reduction, backend=backend)
    if size is not None:
        size = validate_resize(logits, size, align_corners)
        name = resolve_resized_backend(backend, logits, op="ocr_loss",
                                       implemented=tuple(OCR_LOSS_MAP_RESIZED_IMPLS))
        if name is None:
            logits, backend = upsample_logits(logits, size, align_corners), "auto"
        else:
            opts = opts._replace(margin=float(margin), threshold=float(threshold))
            loss_map = OCR_LOSS_MAP_RESIZED_IMPLS[name](
                logits, tags, optional_prior_for(group_split, prior), opts, size, align_corners)
            return reduce_loss_map(loss_map, reduction)
    name = resolve_backend(backend, logits, op="ocr_loss", implemented=tuple(OCR_LOSS_MAP_IMPLS))
    opts = opts._replace(margin=float(margin), threshold=float(threshold))
    loss_map = OCR_LOSS_MAP_IMPLS[name](logits, tags, optional_prior_for(group_split, prior), opts)
    return reduce_loss_map(loss_map, reduction)
