"""Inputs and float64 references shared by the tests of the segmentation objective."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from helpers import make_ocr_inputs
from ocr_kernels._options import OCROptions
from ocr_kernels.seg.reference import seg_ocr_loss_maps_reference


def make_seg_inputs(
    B: int = 2,
    C1: int = 6,
    spatial: Sequence[int] = (5, 7),
    *,
    dtype: torch.dtype = torch.float32,
    ignore_index: int = 255,
    ignore_p: float = 0.25,
    tag_p: float = 0.4,
    scale: float = 3.0,
    generator: Optional[torch.Generator] = None,
):
    """make_ocr_inputs plus a target [B, *spatial] with about ignore_p of its pixels ignored."""
    logits, tags, prior = make_ocr_inputs(B, C1, spatial, dtype=dtype, tag_p=tag_p, scale=scale,
                                          generator=generator)
    target = torch.randint(0, C1, (B, *spatial), generator=generator)
    ignored = torch.rand((B, *spatial), generator=generator) < ignore_p
    target = torch.where(ignored, torch.full_like(target, ignore_index), target)
    return logits, target, tags, prior


def reference_maps64(logits, target, tags, prior, grad_ce=None, grad_ocr=None, ignore_index=255,
                     upsample=False, align_corners=False, **opts):
    """(ce_map, ocr_map) of the float64 reference and the logits' gradient of
    sum(grad_ce * ce_map + grad_ocr * ocr_map) (ones when not given). upsample: of the composition
    F.interpolate (to the target's size) + reference, the oracle of the fused upsampling."""
    from helpers import upsampled64

    z = logits.detach().to(torch.float64).requires_grad_(True)
    split = opts.get("group_split", "ada")
    ce, oc = seg_ocr_loss_maps_reference(
        upsampled64(z, target.shape[-2:], align_corners) if upsample else z, target.long(), tags, None if prior is None or split != "ada" else prior.to(torch.float64),
        OCROptions(opts.get("margin", 2.0), opts.get("threshold", 0.2), split, opts.get("pixels", "oc"),
        ignore_index),
    )
    gce = torch.ones_like(ce) if grad_ce is None else grad_ce.to(torch.float64)
    goc = torch.ones_like(oc) if grad_ocr is None else grad_ocr.to(torch.float64)
    (grad,) = torch.autograd.grad((gce * ce).sum() + (goc * oc).sum(), z)
    return ce.detach(), oc.detach(), grad


def fp32_term_atol(logits, grad_ce=None, grad_ocr=None, ulps: float = 16.0):
    """Per-element absolute error allowed in a fused fp32 gradient: `ulps` fp32 ulps of the terms
    that meet in it, scaled by the logits' magnitude.

    The gradient of a pixel sums a CE term g_ce·(softmax − onehot) and an OCR term g_ocr·σ·q of
    magnitude up to |g_ce| and |g_ocr|, which can cancel (the target class is often the anchor). A
    kernel that forms softmax as exp(z − lse) with lse held in fp32 has a relative error of about
    (|z| + 1)·2^-24 in each term (torch's log_softmax is more precise), so after cancellation the
    absolute error can exceed a bound relative to the (small) result. Bugs give errors of the size
    of the terms, far above this."""
    z = logits.detach().to(torch.float64)
    B = z.shape[0]
    spatial = z.shape[2:]
    gce = torch.ones((B, *spatial), dtype=torch.float64) if grad_ce is None else grad_ce.to(torch.float64).abs()
    goc = torch.ones((B, *spatial), dtype=torch.float64) if grad_ocr is None else grad_ocr.to(torch.float64).abs()
    scale = (z.abs().amax(dim=1) + 1.0) * (gce + goc)
    return (ulps * 2.0 ** -24 * scale).unsqueeze(1).expand_as(z)


def fp32_map_atol(logits, ulps: float = 16.0):
    """Per-pixel absolute error allowed in a fused fp32 loss map: ce = lse − z[target] is the
    difference of two numbers of size |z| (the OCR softplus argument is a sum of such), so a kernel
    holding lse in fp32 is exact only to about |z|·2^-24 -- which can be a large relative error
    for a tiny loss (a confident correct pixel). torch's log_softmax is more precise there."""
    z = logits.detach().to(torch.float64)
    return ulps * 2.0 ** -24 * (z.abs().amax(dim=1) + 1.0)


def resized_grad_atol(up, low_shape, grad_ce=None, grad_ocr=None) -> float:
    """Absolute error allowed in a fused-upsampling gradient of the low-resolution logits: each
    sums the terms of the output pixels it feeds (up to 4·H·W/(h·w) of them, weighted), each as
    exact as fp32_term_atol of the upsampled logits `up`."""
    import torch.nn.functional as F

    term = fp32_term_atol(up, grad_ce, grad_ocr)[:, :1]
    atol = F.interpolate(term, size=tuple(low_shape), mode="area").amax() * \
        (up.shape[-2] * up.shape[-1]) / (low_shape[0] * low_shape[1])
    return float(atol) * 4
