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
