"""The C++/CUDA ops of the segmentation objective (backends "cpu" and "cuda"): fake and autograd
registrations and the function the dispatch calls. Thin wrappers over the fused OCR kernels
(csrc/cpu/ocr_kernel.cpp, csrc/cuda/ocr_binding.cpp, their cross-entropy variant); the forward
writes (ce_map, ocr_map) from one read of the logits and one fused backward re-reads the logits
only where L > 0 or the cross-entropy has a gradient.
"""
from __future__ import annotations

import torch

from .._autograd import first_order_only
from .._extension import registered_ops
from .._options import OCROptions
from .._tensors import check_map, check_ocr_args, math_dtype, new_map


def _register() -> None:
    lib = "ocr_kernels::"

    @torch.library.register_fake(lib + "seg_ocr_loss_maps")
    def _(logits, target, tags, prior, margin, threshold, group_split, pixels, ignore_index):
        check_ocr_args(logits, tags, prior, target)
        return new_map(logits), new_map(logits)

    @torch.library.register_fake(lib + "seg_ocr_loss_maps_backward")
    def _(grad_ce, grad_ocr, logits, target, tags, prior, ocr_map, margin, threshold, group_split,
          pixels, ignore_index):
        check_ocr_args(logits, tags, prior, target)
        for name, m in (("grad_ce", grad_ce), ("grad_ocr", grad_ocr), ("ocr_map", ocr_map)):
            check_map(m, logits, name)
        return torch.empty_like(logits)

    @torch.library.register_fake(lib + "_pixelwise_seg_ocr")
    def _(logits, target, tags, prior, grad_ce, grad_ocr, margin, threshold, group_split, pixels,
          ignore_index):
        check_ocr_args(logits, tags, prior, target)
        return new_map(logits), new_map(logits), torch.empty_like(logits)

    @torch.library.register_fake(lib + "_pixelwise_seg_ocr_resized")
    def _(logits, target, tags, prior, grad_ce, grad_ocr, size, align_corners, margin, threshold,
          group_split, pixels, ignore_index):
        check_ocr_args(logits, tags, prior)
        maps = logits.new_empty((logits.shape[0], *size), dtype=math_dtype(logits.dtype))
        return maps, torch.empty_like(maps), torch.empty_like(logits)

    def check_objective_args(logits, target, tags, prior, ce_weight, coef):
        check_ocr_args(logits, tags, prior, target)
        acc = math_dtype(logits.dtype)
        torch._check(coef.dim() == 1 and coef.shape[0] == 2,
                     lambda: f"coef: expected 2 values, got {coef.shape}")
        torch._check(coef.dtype == acc, lambda: f"coef: expected {acc}, got {coef.dtype}")
        if ce_weight is not None:
            check_map(ce_weight, logits, "ce_weight")
            torch._check(ce_weight.dtype == acc, lambda: f"ce_weight: expected {acc}, got {ce_weight.dtype}")
        # the gradient: torch::empty_like(logits), the logits' shape, strides and dtype
        return new_map(logits), new_map(logits), torch.empty_like(logits)

    for name in ("seg_ocr_objective", "_pixelwise_seg_objective"):
        torch.library.register_fake(lib + name)(
            lambda logits, target, tags, prior, ce_weight, coef, margin, threshold, group_split,
            pixels, ignore_index: check_objective_args(logits, target, tags, prior, ce_weight, coef))

    @torch.library.register_fake(lib + "scale_grad_")
    def _(grad, g):
        torch._check(g.numel() == 1, lambda: f"g: expected one value, got {g.shape}")
        torch._check(g.dtype == math_dtype(grad.dtype),
                     lambda: f"g: expected {math_dtype(grad.dtype)}, got {g.dtype}")
        return None

    def register_autograd(name):
        # inputs: (logits, target, tags, prior, *options); the backward op takes
        # (grad_ce, grad_ocr, logits, target, tags, prior, ocr_map, *options).
        backward_op = getattr(torch.ops.ocr_kernels, name + "_backward")

        def setup(ctx, inputs, output):
            ctx.save_for_backward(*inputs[:4], output[1])
            ctx.opts, ctx.n_inputs = tuple(inputs[4:]), len(inputs)

        @first_order_only("seg_ocr_loss", "cpu/cuda")
        def backward(ctx, grad_ce, grad_ocr):
            logits, target, tags, prior, ocr_map = ctx.saved_tensors
            grad = None
            if ctx.needs_input_grad[0]:
                grad = backward_op(grad_ce, grad_ocr, logits, target, tags, prior, ocr_map,
                                   *ctx.opts)
            return (grad,) + (None,) * (ctx.n_inputs - 1)

        torch.library.register_autograd(lib + name, backward, setup_context=setup)

    register_autograd("seg_ocr_loss_maps")

    # With the bilinear upsampling fused in: maps of the target's size [B, H, W], gradient of the
    # low-resolution logits.
    @torch.library.register_fake(lib + "seg_ocr_loss_maps_resized")
    def _(logits, target, tags, prior, align_corners, margin, threshold, group_split, pixels,
          ignore_index):
        check_ocr_args(logits, tags, prior)
        torch._check(logits.dim() == 4 and target.dim() == 3, lambda: "expected 2-D maps")
        torch._check(target.dtype == torch.int64, lambda: f"target: expected int64, got {target.dtype}")
        maps = target.new_empty(target.shape, dtype=math_dtype(logits.dtype))
        return maps, torch.empty_like(maps)

    @torch.library.register_fake(lib + "seg_ocr_loss_maps_resized_backward")
    def _(grad_ce, grad_ocr, logits, target, tags, prior, ocr_map, align_corners, margin,
          threshold, group_split, pixels, ignore_index):
        check_ocr_args(logits, tags, prior)
        return torch.empty_like(logits)

    register_autograd("seg_ocr_loss_maps_resized")


def ops():
    """torch.ops.ocr_kernels, with the extension built/loaded and the seg registrations made."""
    return registered_ops(_register)


def seg_ocr_loss_maps_csrc(logits, target, tags, prior, opts: OCROptions):
    """(ce_map, ocr_map), both [B, *spatial] fp32 (fp64 for fp64 logits), from one read of the
    logits; ce_map[p] = logsumexp(z_p) − z_p[target_p] (0 where target_p == ignore_index). Both
    are differentiable in logits through one fused backward."""
    return ops().seg_ocr_loss_maps(logits, target, tags, prior, *opts.codes(), int(opts.ignore_index))


def seg_ocr_loss_maps_resized_csrc(logits, target, tags, prior, opts: OCROptions,
                                   align_corners: bool):
    """(ce_map, ocr_map) [B, H, W] of the logits [B, C+1, h, w] bilinearly upsampled to the
    target's [H, W] inside the kernel (CPU and CUDA); differentiable in the low-resolution logits."""
    return ops().seg_ocr_loss_maps_resized(logits, target, tags, prior, bool(align_corners),
                                           *opts.codes(), int(opts.ignore_index))


def seg_ocr_objective_csrc(logits, target, tags, prior, ce_weight, coef, opts: OCROptions):
    """(ce_map, ocr_map, grad) from one read of the logits (CUDA): the maps as
    seg_ocr_loss_maps_csrc returns them (ce_map not weighted) and grad = d/dlogits of
    coef[0]·Σ ce_weight·ce_map + coef[1]·Σ ocr_map (ce_weight None: 1), shaped like the logits, in
    their dtype. coef: 2 values in the math dtype on the logits' device. Not differentiable: the
    backward scales grad by the upstream gradient (scale_grad_csrc)."""
    return ops().seg_ocr_objective(logits, target, tags, prior, ce_weight, coef, *opts.codes(),
                                   int(opts.ignore_index))


def scale_grad_csrc(grad, g):
    """grad *= g in place unless g == 1 exactly (decided on the device, no host sync); g: one
    value in grad's math dtype on its device."""
    ops().scale_grad_(grad, g)
