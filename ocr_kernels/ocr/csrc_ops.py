"""The C++/CUDA OCR ops (backends "cpu" and "cuda"): fake and autograd registrations and the
functions the dispatch calls.

The ops live in the ``ocr_kernels`` namespace of the extension (csrc/ops.cpp); the dispatcher
picks the CPU or CUDA kernel from the tensors' device. The forward writes only the per-pixel loss
map; the backward op recovers σ(s) = 1 − exp(−L) from it and re-reads the logits only where
L > 0. The segmentation objective's ops register in ocr_kernels/seg/csrc_ops.py.
"""
from __future__ import annotations

import torch

from .._autograd import first_order_only
from .._extension import registered_ops
from .._options import OCROptions
from .._tensors import check_map, check_ocr_args, math_dtype, new_map


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

    def register_autograd(name, first_option):
        # inputs: (logits, tags, prior, *options); the backward op takes
        # (grad_map, logits, tags, prior, loss_map, *inputs[first_option:]).
        backward_op = getattr(torch.ops.ocr_kernels, name + "_backward")

        def setup(ctx, inputs, output):
            ctx.save_for_backward(*inputs[:3], output)
            ctx.opts, ctx.n_inputs = tuple(inputs[first_option:]), len(inputs)

        @first_order_only("ocr_loss", "cpu/cuda")
        def backward(ctx, grad_map):
            logits, tags, prior, loss_map = ctx.saved_tensors
            grad = None
            if ctx.needs_input_grad[0]:
                grad = backward_op(grad_map, logits, tags, prior, loss_map, *ctx.opts)
            return (grad,) + (None,) * (ctx.n_inputs - 1)

        torch.library.register_autograd(lib + name, backward, setup_context=setup)

    register_autograd("ocr_loss_map", 3)

    # With the bilinear upsampling fused in: maps [B, *size], gradient of the low-res logits.
    @torch.library.register_fake(lib + "ocr_loss_map_resized")
    def _(logits, tags, prior, size, align_corners, margin, threshold, group_split, pixels):
        check_ocr_args(logits, tags, prior)
        torch._check(logits.dim() == 4 and len(size) == 2, lambda: "expected 2-D logits and size")
        return logits.new_empty((logits.shape[0], *size), dtype=math_dtype(logits.dtype))

    @torch.library.register_fake(lib + "ocr_loss_map_resized_backward")
    def _(grad_map, logits, tags, prior, loss_map, align_corners, margin, threshold, group_split,
          pixels):
        check_ocr_args(logits, tags, prior)
        torch._check(grad_map.shape == loss_map.shape, lambda: "grad_map: shape differs from loss_map's")
        return torch.empty_like(logits)

    register_autograd("ocr_loss_map_resized", 4)  # size is the forward's alone


def ops():
    """torch.ops.ocr_kernels, with the extension built/loaded and the Python registrations made."""
    return registered_ops(_register)


def ocr_loss_map_csrc(logits, tags, prior, opts: OCROptions):
    """Per-pixel OCR loss [B, *spatial] (fp32; fp64 for fp64 logits), differentiable in logits."""
    return ops().ocr_loss_map(logits, tags, prior, *opts.codes())


def ocr_loss_map_resized_csrc(logits, tags, prior, opts: OCROptions, size, align_corners: bool):
    """Per-pixel OCR loss [B, H, W] of the logits [B, C+1, h, w] bilinearly upsampled to
    size = (H, W) inside the kernel (CPU and CUDA); differentiable in the low-resolution logits."""
    return ops().ocr_loss_map_resized(logits, tags, prior, list(size), bool(align_corners),
                                      *opts.codes())
