"""The C++/CUDA OCR ops (backends "cpu" and "cuda"): fake and autograd registrations and the
functions the dispatch calls.

The ops live in the ``ocr_kernels`` namespace of the extension (csrc/ops.cpp); the dispatcher
picks the CPU or CUDA kernel from the tensors' device. The forward writes the per-pixel loss map
and a mask of one bit a pixel (the loss is not 0; int32 [B, ceil(N / 32)], csrc/ocr_thread.h
mask_words), saved for the backward and not differentiable; the backward op recovers
σ(s) = 1 − exp(−L) from the loss map and re-reads the logits only where L > 0 (the CUDA kernel
reads the loss map and its gradient only where the mask has a bit). The fused-upsampling op
returns its map alone. The segmentation objective's ops register in ocr_kernels/seg/csrc_ops.py.
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
        return new_map(logits), _new_mask(logits)

    @torch.library.register_fake(lib + "ocr_loss_map_backward")
    def _(grad_map, logits, tags, prior, loss_map, mask, margin, threshold, group_split, pixels):
        check_ocr_args(logits, tags, prior)
        check_map(loss_map, logits)
        check_map(grad_map, logits, "grad_map")
        _check_mask(mask, logits)
        return torch.empty_like(logits)

    def register_autograd(name, first_option):
        # inputs: (logits, tags, prior, *options); the output is the loss map, or (loss map, mask)
        # (the mask is not differentiable); the backward op takes
        # (grad_map, logits, tags, prior, loss_map, [mask,] *inputs[first_option:]).
        backward_op = getattr(torch.ops.ocr_kernels, name + "_backward")

        def setup(ctx, inputs, output):
            outputs = output if isinstance(output, tuple) else (output,)
            if len(outputs) > 1:
                ctx.mark_non_differentiable(*outputs[1:])
            ctx.save_for_backward(*inputs[:3], *outputs)
            ctx.opts, ctx.n_inputs = tuple(inputs[first_option:]), len(inputs)

        @first_order_only("ocr_loss", "cpu/cuda")
        def backward(ctx, grad_map, *_):
            logits, tags, prior, *saved = ctx.saved_tensors
            grad = None
            if ctx.needs_input_grad[0]:
                grad = backward_op(grad_map, logits, tags, prior, *saved, *ctx.opts)
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


def _mask_shape(logits):
    n = 1
    for d in logits.shape[2:]:
        n = n * d
    return (logits.shape[0], (n + 31) // 32)


def _new_mask(logits):
    """ocr_loss_map's mask: int32 [B, ceil(N / 32)], a bit a pixel (csrc/ocr_thread.h)."""
    return logits.new_empty(_mask_shape(logits), dtype=torch.int32)


def _check_mask(mask, logits):
    torch._check(mask.dtype == torch.int32, lambda: f"mask: expected int32, got {mask.dtype}")
    torch._check(mask.dim() == 2, lambda: f"mask: expected [B, ceil(N / 32)], got {mask.shape}")
    want = _mask_shape(logits)
    torch._check(mask.shape[0] == want[0] and mask.shape[1] == want[1],
                 lambda: f"mask: expected {want}, got {tuple(mask.shape)}")


def ops():
    """torch.ops.ocr_kernels, with the extension built/loaded and the Python registrations made."""
    return registered_ops(_register)


def ocr_loss_map_csrc(logits, tags, prior, opts: OCROptions):
    """Per-pixel OCR loss [B, *spatial] (fp32; fp64 for fp64 logits), differentiable in logits."""
    return ops().ocr_loss_map(logits, tags, prior, *opts.codes())[0]


def ocr_loss_map_resized_csrc(logits, tags, prior, opts: OCROptions, size, align_corners: bool):
    """Per-pixel OCR loss [B, H, W] of the logits [B, C+1, h, w] bilinearly upsampled to
    size = (H, W) inside the kernel (CPU and CUDA); differentiable in the low-resolution logits."""
    return ops().ocr_loss_map_resized(logits, tags, prior, list(size), bool(align_corners),
                                      *opts.codes())
