"""Pure-PyTorch segmentation objective: cross-entropy + alpha * OCR, as the composition of
torch's ``F.cross_entropy`` and the OCR reference (paper Eq. 4: L = L_seg + alpha * L_rec).

Every fused backend is tested against these functions. Like the OCR reference they run on any
device and layout, use fp32 math for fp16/bf16/fp32 logits and fp64 math for fp64 logits, and
have no data-dependent shapes or host synchronisations (``torch.compile`` can compile them).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .._options import OCROptions
from .._tensors import math_dtype
from .._validation import optional_prior_for
from ..ocr.reference import ocr_loss_map_reference, upsample_logits


def seg_ocr_loss_maps_reference(
    logits: torch.Tensor,
    target: torch.Tensor,
    tags: torch.Tensor,
    prior: Optional[torch.Tensor],
    opts: OCROptions,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(ce_map, ocr_map), both [B, *spatial] in fp32 (fp64 for fp64 logits), differentiable in the
    logits: ce_map = logsumexp(z) - z[target] (0 where target == ignore_index), ocr_map = the
    per-pixel OCR loss. The same contract as the fused ``seg_ocr_loss_maps_<triton|csrc>``."""
    z = logits.to(math_dtype(logits.dtype))
    ce_map = F.cross_entropy(z, target.long(), ignore_index=opts.ignore_index, reduction="none")
    ocr_map = ocr_loss_map_reference(z, tags, prior, opts)
    return ce_map, ocr_map


def seg_ocr_loss_maps_resized_reference(
    logits: torch.Tensor,
    target: torch.Tensor,
    tags: torch.Tensor,
    prior: Optional[torch.Tensor],
    opts: OCROptions,
    align_corners: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(ce_map, ocr_map) [B, H, W] of the logits [B, C+1, h, w] upsampled to the target's [H, W]:
    ``F.interpolate`` then ``seg_ocr_loss_maps_reference`` (the oracle of the fused kernels)."""
    z = upsample_logits(logits, target.shape[-2:], align_corners)
    return seg_ocr_loss_maps_reference(z, target, tags, prior, opts)


def seg_ocr_loss_reference(
    logits: torch.Tensor,
    target: torch.Tensor,
    tags: torch.Tensor,
    prior: Optional[torch.Tensor] = None,
    *,
    alpha: float = 1.0,
    ignore_index: int = 255,
    margin: float = 2.0,
    threshold: float = 0.2,
    group_split: str = "ada",
    pixels: str = "oc",
) -> torch.Tensor:
    """``F.cross_entropy(logits, target, ignore_index=ignore_index) + alpha * ocr_loss(logits, tags,
    prior, ...)`` with mean reductions, written as that composition (no validation: the public
    ``seg_ocr_loss`` validates).

    One difference from torch: when every pixel is ignored, the cross-entropy term is 0 (torch's
    mean gives NaN, 0/0), so a crop that falls entirely into an ignored region does not poison a
    training step. That is why the mean is written as sum / max(count, 1).
    """
    z = logits.to(math_dtype(logits.dtype))
    target = target.long()
    ce_sum = F.cross_entropy(z, target, ignore_index=ignore_index, reduction="sum")
    n_valid = (target != ignore_index).sum().clamp_min(1).to(ce_sum.dtype)
    opts = OCROptions(float(margin), float(threshold), group_split, pixels)
    ocr = ocr_loss_map_reference(z, tags, optional_prior_for(group_split, prior), opts).mean()
    return ce_sum / n_valid + alpha * ocr
