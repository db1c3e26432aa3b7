"""Pure-PyTorch OCR loss: the equations of docs/semantics.md §1, written for clarity.

Every fast backend is tested against this function. It runs on any device and layout, uses fp32
math for fp16/bf16/fp32 inputs and fp64 math for fp64 inputs (for gradcheck), and has no
data-dependent shapes (selections are masks, never boolean indexing), so `torch.compile` can
compile it: the benchmarks use `torch.compile(ocr_loss_map_reference)` as the anchor a user would
pick instead of our kernels.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .._options import OCROptions
from .._tensors import math_dtype


def ic_mask_from_tags(tags: torch.Tensor) -> torch.Tensor:
    """[B, C] tags (nonzero = present) -> bool [B, C+1] in-candidate mask; background always in."""
    present = tags != 0
    return torch.cat([torch.ones_like(present[:, :1]), present], dim=1)


def ocr_loss_map_reference(
    logits: torch.Tensor,
    tags: torch.Tensor,
    prior: Optional[torch.Tensor],
    opts: OCROptions,
) -> torch.Tensor:
    """Per-pixel OCR loss [B, *spatial] (fp32, or fp64 for fp64 logits), differentiable in logits."""
    margin, threshold, group_split, pixels = opts.margin, opts.threshold, opts.group_split, opts.pixels
    z = logits.to(math_dtype(logits.dtype))
    B, C1 = z.shape[:2]
    bcast = (B, C1) + (1,) * (z.dim() - 2)
    ic = ic_mask_from_tags(tags).view(bcast)  # [B, C1, 1, ...]
    oc = ~ic
    classes = torch.arange(C1, device=z.device).view((1, C1) + (1,) * (z.dim() - 2))

    # The selections (pixel mask, anchor, IC group) are piecewise constant: no gradient.
    zd = z.detach()
    pred = zd.argmax(dim=1, keepdim=True)  # ties: lowest index
    pred_in_ic = ic.expand_as(zd).gather(1, pred).squeeze(1)  # [B, *spatial]
    oc_nonempty = oc.flatten(1).any(dim=1).view((B,) + (1,) * (z.dim() - 2))

    anchor = zd.masked_fill(oc, float("-inf")).argmax(dim=1, keepdim=True)  # Eq. 8
    is_anchor = classes == anchor
    if group_split == "ada":  # Eq. 9: {A} ∪ {k ∈ IC : P_A − P_k·M[A, k] < t}
        prob = torch.softmax(zd, dim=1)
        p_anchor = prob.gather(1, anchor)
        m_anchor = prior.to(z.dtype)[anchor.squeeze(1)].movedim(-1, 1)  # M[A, :] per pixel
        g_ic = is_anchor | (ic & (p_anchor - prob * m_anchor < threshold))
    elif group_split == "max":
        g_ic = is_anchor
    else:  # "all"
        g_ic = ic.expand_as(zd)

    if pixels == "oc":
        m = ~pred_in_ic  # Eq. 5
    elif pixels == "ic":
        m = pred_in_ic
    else:
        m = torch.ones_like(pred_in_ic)
    # No OC class (every class tagged): the loss is 0. Keep the OC log-sum-exp finite there so
    # its backward never computes 0 * NaN.
    m = m & oc_nonempty

    neg_inf = torch.tensor(float("-inf"), dtype=z.dtype, device=z.device)
    lse_ic = torch.logsumexp(torch.where(g_ic, -z, neg_inf), dim=1)
    z_oc = torch.where(oc, z, neg_inf)
    lse_oc = torch.logsumexp(torch.where(oc_nonempty.unsqueeze(1), z_oc, torch.zeros_like(z)), dim=1)
    s = lse_ic + lse_oc + margin
    # log(1 + e^s) without overflow, smooth everywhere (F.softplus switches to s above 20).
    loss = torch.logaddexp(s, torch.zeros_like(s))
    loss = torch.where(m, loss, torch.zeros_like(loss))
    # A NaN or infinite logit makes the pixel's loss NaN and each of its gradients NaN, whatever
    # the masks say (argmax and the selections above would hide it): 0 elsewhere, NaN there.
    poison = torch.where(torch.isfinite(zd).all(dim=1), 0.0, float("nan")).to(z.dtype)
    return loss + z.sum(dim=1) * poison


def upsample_logits(logits: torch.Tensor, size, align_corners: bool) -> torch.Tensor:
    """The logits bilinearly resized to size (H, W) in the math dtype: the first half of the
    composition that the fused upsampling is defined as (docs/semantics.md §1c). Resizing after
    the cast keeps fp16/bf16 logits' interpolated values in fp32, as the fused kernels do."""
    return F.interpolate(logits.to(math_dtype(logits.dtype)), size=tuple(size), mode="bilinear",
                         align_corners=align_corners)


def ocr_loss_map_resized_reference(
    logits: torch.Tensor,
    tags: torch.Tensor,
    prior: Optional[torch.Tensor],
    opts: OCROptions,
    size,
    align_corners: bool,
) -> torch.Tensor:
    """Per-pixel OCR loss [B, H, W] of the logits [B, C+1, h, w] upsampled to size = (H, W):
    ``F.interpolate`` then ``ocr_loss_map_reference`` (the oracle of the fused kernels)."""
    return ocr_loss_map_reference(upsample_logits(logits, size, align_corners), tags, prior, opts)


def oc_pixel_mask(logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """bool [B, *spatial]: pixels whose argmax over all C+1 classes is not in the tag set (Eq. 5)."""
    from .._validation import validate_ocr_inputs

    validate_ocr_inputs(logits, tags, None, OCROptions(group_split="max"))
    B, C1 = logits.shape[:2]
    ic = ic_mask_from_tags(tags).view((B, C1) + (1,) * (logits.dim() - 2))
    pred = logits.detach().argmax(dim=1, keepdim=True)
    return ~ic.expand_as(logits).gather(1, pred).squeeze(1)


def oc_error_rate(logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Share of images with at least one OC pixel (the paper's Fig. 6a metric), a 0-dim fp32
    tensor on the logits' device (no host synchronisation; call .item() when you want a number)."""
    return oc_pixel_mask(logits, tags).flatten(1).any(dim=1).float().mean()
