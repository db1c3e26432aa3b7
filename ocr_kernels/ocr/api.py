"""The public OCR entry points: ``ocr_loss`` and the ``OCRLoss`` module."""
from __future__ import annotations

from typing import Optional

import torch

from .._dispatch import resolve_backend
from .._options import OCROptions
from .._validation import optional_prior_for, validate_ocr_inputs
from .backends import OCR_LOSS_MAP_IMPLS


def reduce_loss_map(loss_map: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":  # Algorithm 1's .mean(): every pixel counts in the denominator
        return loss_map.mean()
    if reduction == "sum":
        return loss_map.sum()
    return loss_map


def ocr_loss(
    logits: torch.Tensor,
    tags: torch.Tensor,
    prior: Optional[torch.Tensor] = None,
    *,
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
    """
    opts = OCROptions(margin, threshold, group_split, pixels)
    validate_ocr_inputs(logits, tags, prior, opts, reduction=reduction, backend=backend)
    name = resolve_backend(backend, logits, op="ocr_loss", implemented=tuple(OCR_LOSS_MAP_IMPLS))
    opts = opts._replace(margin=float(margin), threshold=float(threshold))
    loss_map = OCR_LOSS_MAP_IMPLS[name](logits, tags, optional_prior_for(group_split, prior), opts)
    return reduce_loss_map(loss_map, reduction)
