"""The segmentation objective with its gradient written by the forward (GPU backends).

``seg_ocr_loss`` is a scalar: its gradient at the logits is the reduction's coefficients times
the per-pixel gradients of the two maps, and those coefficients (the CE denominator, the pixel
count, ``alpha``, ``global_mean``'s world size) are known before any kernel runs. So when a
gradient will be taken, the fused kernel computes the maps and that gradient in ONE pass over the
logits (``seg_ocr_objective_<backend>``), at an upstream gradient of 1. The backward then scales
it by the real upstream gradient g in place, in a kernel that reads g on the device and returns
at once where g == 1 (a loss summed into the total, ``loss_weight`` 1.0, bf16 AMP): no host
synchronisation, and the logits are read once instead of twice (forward + backward).

Where this does not pay or would be wrong, ``seg_ocr_loss`` takes the maps ops instead
(``use_objective``): no gradient wanted (a no-grad or validation forward), fp16 logits (the
gradient would be rounded to fp16 before GradScaler's scale: small ones underflow), a
``ce_weight`` that requires a gradient, the fused upsampling, and torch.compile (its
functionalisation would copy the buffer that the backward scales in place).
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from .._autograd import first_order_only
from .._options import OCROptions
from .._tensors import math_dtype

Impl = Tuple[Callable, Callable]  # (objective op, in-place scale op) of one backend


def use_objective(logits: torch.Tensor, ce_weight: Optional[torch.Tensor]) -> bool:
    """Whether seg_ocr_loss takes the gradient-in-forward path (see the module's docstring)."""
    return (torch.is_grad_enabled() and logits.requires_grad and logits.numel() > 0
            and logits.dtype != torch.float16 and not torch.compiler.is_compiling()
            and (ce_weight is None or not ce_weight.requires_grad))


def coefficients(den, alpha: float, like: torch.Tensor) -> torch.Tensor:
    """[ce_coef, ocr_coef] in the math dtype on the logits' device: the factors the reduction
    (seg.api.reduce_seg_maps with the denominators `den`) puts on a pixel's CE (times its
    ce_weight) and on its OCR loss. Tensors from the start: no host read, no host-to-device copy."""
    ce_den, ocr_den, world = den
    one = torch.ones((), dtype=math_dtype(like.dtype), device=like.device)
    return torch.stack([one * world / ce_den, one * (world * alpha) / ocr_den])


class _GradientInForward(torch.autograd.Function):
    """loss = reduce(maps); its gradient at the logits comes from the forward's kernel."""

    @staticmethod
    def forward(ctx, logits, target, tags, prior, ce_weight, coef, impl: Impl,
                opts: OCROptions, reduce: Callable):
        ce_map, ocr_map, grad = impl[0](logits, target, tags, prior, ce_weight, coef, opts)
        loss = reduce(ce_map if ce_weight is None else ce_map * ce_weight, ocr_map)
        ctx.save_for_backward(logits, target, tags, prior, ce_weight, coef)
        # An attribute, not a saved tensor: the backward drops it, so that autograd can hand
        # the buffer on (AccumulateGrad steals a gradient no one else holds) without a copy.
        ctx.grad, ctx.impl, ctx.opts = grad, impl, opts
        return loss

    @staticmethod
    @first_order_only("seg_ocr_loss", "triton/cuda")
    def backward(ctx, g):
        grad, ctx.grad = ctx.grad, None
        if grad is None:
            # A second backward through the same graph (retain_graph=True): the first one
            # scaled the buffer and handed it out, so compute it again (one more pass).
            logits, target, tags, prior, ce_weight, coef = ctx.saved_tensors
            grad = ctx.impl[0](logits, target, tags, prior, ce_weight, coef, ctx.opts)[2]
        ctx.impl[1](grad, g.to(math_dtype(grad.dtype)))
        return (grad,) + (None,) * 8


def seg_objective(logits, target, tags, prior, ce_weight, opts: OCROptions, impl: Impl,
                  den, alpha: float, reduce: Callable) -> torch.Tensor:
    """seg_ocr_loss's value, with the gradient written by the forward (inputs validated, target
    int64); den: the reduction's (ce_den, ocr_den, world), reduce(ce_map, ocr_map) -> loss."""
    if ce_weight is not None:
        ce_weight = ce_weight.to(math_dtype(logits.dtype))
    coef = coefficients(den, alpha, logits)
    return _GradientInForward.apply(logits, target, tags, prior, ce_weight, coef, impl, opts,
                                    reduce)
