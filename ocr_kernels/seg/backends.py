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


def _objective_triton(*args):
    from .triton_kernel import seg_ocr_objective_triton

    return seg_ocr_objective_triton(*args)


def _scale_triton(grad, g):
    from .triton_kernel import scale_grad_triton

    scale_grad_triton(grad, g)


def _objective_csrc(*args):
    from .csrc_ops import seg_ocr_objective_csrc

    return seg_ocr_objective_csrc(*args)


def _scale_csrc(grad, g):
    from .csrc_ops import scale_grad_csrc

    scale_grad_csrc(grad, g)


# The gradient written by the forward (seg/objective.py), on the GPU backends: (objective, scale)
# where objective(logits, target, tags, prior, ce_weight, coef, opts) -> (ce_map, ocr_map, grad)
# and scale(grad, g) multiplies grad by g in place unless g == 1. The CPU backend keeps the maps
# ops: it is not memory-bound, and its fused backward costs what a gradient-writing forward would.
SEG_OBJECTIVE_IMPLS = {
    "triton": (_objective_triton, _scale_triton),
    "cuda": (_objective_csrc, _scale_csrc),
}
