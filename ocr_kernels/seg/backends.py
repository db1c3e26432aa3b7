"""Which function computes the two per-pixel maps of the segmentation objective on each backend.

Each entry takes (logits, target, tags, prior, opts: OCROptions) -- already validated, target
int64 -- and returns (ce_map, ocr_map), both
[B, *spatial] in fp32 (fp64 for fp64 logits) and differentiable in the logits; ``seg_ocr_loss``
reduces them once in Python. Fast backends are imported only when chosen.
"""
from __future__ import annotations

from .reference import seg_ocr_loss_maps_reference, seg_ocr_loss_maps_resized_reference


def _triton(*args):
    from .triton_kernel import seg_ocr_loss_maps_triton

    return seg_ocr_loss_maps_triton(*args)


def _csrc(*args):
    from .csrc_ops import seg_ocr_loss_maps_csrc

    return seg_ocr_loss_maps_csrc(*args)


SEG_OCR_IMPLS = {
    "reference": seg_ocr_loss_maps_reference,
    "triton": _triton,
    # one op for both: the dispatcher picks the CPU or CUDA kernel from the logits' device
    "cpu": _csrc,
    "cuda": _csrc,
}


def _csrc_resized(*args):
    from .csrc_ops import seg_ocr_loss_maps_resized_csrc

    return seg_ocr_loss_maps_resized_csrc(*args)


def _triton_resized(*args):
    from .triton_resize import seg_ocr_loss_maps_resized_triton

    return seg_ocr_loss_maps_resized_triton(*args)


# With the bilinear upsampling fused in (seg_ocr_loss(upsample=True)): entries take (logits,
# target, tags, prior, opts, align_corners) and return the maps [B, H, W] of the target's size.
SEG_OCR_RESIZED_IMPLS = {
    "reference": seg_ocr_loss_maps_resized_reference,
    "triton": _triton_resized,
    # one op for both: the dispatcher picks the CPU or CUDA kernel from the logits' device
    "cpu": _csrc_resized,
    "cuda": _csrc_resized,
}
