"""Which function computes the OCR loss map on each backend.

Each entry takes (logits, tags, prior, opts: OCROptions) -- already validated -- and returns
the per-pixel loss [B, *spatial] in fp32 (fp64 for fp64 logits),
differentiable with respect to the logits. Fast backends are imported only when chosen.
"""
from __future__ import annotations

from .reference import ocr_loss_map_reference, ocr_loss_map_resized_reference


def _triton(*args):
    from .triton_kernel import ocr_loss_map_triton

    return ocr_loss_map_triton(*args)


def _csrc(*args):
    from .csrc_ops import ocr_loss_map_csrc

    return ocr_loss_map_csrc(*args)


OCR_LOSS_MAP_IMPLS = {
    "reference": ocr_loss_map_reference,
    "triton": _triton,
    # one op for both: the dispatcher picks the CPU or CUDA kernel from the logits' device
    "cpu": _csrc,
    "cuda": _csrc,
}


def _csrc_resized(*args):
    from .csrc_ops import ocr_loss_map_resized_csrc

    return ocr_loss_map_resized_csrc(*args)


def _triton_resized(*args):
    from .triton_resize import ocr_loss_map_resized_triton

    return ocr_loss_map_resized_triton(*args)


# With the bilinear upsampling fused in (ocr_loss(size=...)): entries take (logits, tags, prior,
# opts, size, align_corners) and return the map [B, H, W].
OCR_LOSS_MAP_RESIZED_IMPLS = {
    "reference": ocr_loss_map_resized_reference,
    "triton": _triton_resized,
    # one op for both: the dispatcher picks the CPU or CUDA kernel from the logits' device
    "cpu": _csrc_resized,
    "cuda": _csrc_resized,
}
