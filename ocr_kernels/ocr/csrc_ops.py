"""The C++/CUDA OCR ops (backends "cpu" and "cuda"): fake and autograd registrations and the
functions the dispatch calls.

The ops live in the ``ocr_kernels`` namespace of the extension (csrc/ops.cpp); the dispatcher
picks the CPU or CUDA kernel from the tensors' device. The forward writes only the per-pixel loss
map; the backward op recovers σ(s) = 1 − exp(−L) from it and re-reads the logits only where
L > 0. The segmentation objective's ops register in ocr_kernels/seg/csrc_ops.py.
"""
from __future__ import annotations

import torch

from .._extension import registered_ops
from .._options import OCROptions
from .._tensors import check_map, check_ocr_args, new_map


def _register() -> None:
    lib = "ocr_kernels::"

    @torch.library.register_fake(lib + "ocr_loss_map")
    def _(logits, tags, prior, margin, threshold, group_split, pixels):
        check_ocr_args(logits, tags, prior)
        return new_map(logits)

    @torch.library.register_fake(lib + "ocr_loss_map_backward")
    def _(grad_map, logits, tags, prior, loss_map, margin, threshold, group_split, pixels):
        check_ocr_args(logits, tags, prior)
        check_map(loss_map, logits)
        check_map(grad_map, logits, "grad_map")
        return torch.empty_like(logits)

    def setup_ocr(ctx, inputs, output):
        logits, tags, prior, margin, threshold, group_split, pixels = inputs
        ctx.save_for_backward(logits, tags, prior, output)
        ctx.opts = (margin, threshold, group_split, pixels)

    def backward_ocr(ctx, grad_map):
        logits, tags, prior, loss_map = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0]:
            grad = torch.ops.ocr_kernels.ocr_loss_map_backward(
                grad_map, logits, tags, prior, loss_map, *ctx.opts)
        return (grad,) + (None,) * 6

    torch.library.register_autograd(lib + "ocr_loss_map", backward_ocr, setup_context=setup_ocr)


def ops():
    """torch.ops.ocr_kernels, with the extension built/loaded and the Python registrations made."""
    return registered_ops(_register)


def ocr_loss_map_csrc(logits, tags, prior, opts: OCROptions):
    """Per-pixel OCR loss [B, *spatial] (fp32; fp64 for fp64 logits), differentiable in logits."""
    return ops().ocr_loss_map(logits, tags, prior, *opts.codes())
