"""Triton op of the segmentation objective: the (ce_map, ocr_map) pair from one read of the
logits, with one fused backward. A thin registration over the shared fused kernels of
ocr_kernels/ocr/triton_kernel.py (their WITH_CE variant); see that module for the design."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .._autograd import first_order_only
from .._op_names import triton_op_name
from .._options import OCROptions
from .._tensors import check_map, check_ocr_args, new_map
from ..ocr.triton_kernel import (_classes_like, _flags_like, _forward, _maps_bwd_op, _objective,
                                 _scale, _stats_like)


@torch.library.custom_op(triton_op_name("seg_ocr_loss_maps_triton"), mutates_args=())
def _seg_maps_op(logits: torch.Tensor, target: torch.Tensor, tags: torch.Tensor,
                 prior: Optional[torch.Tensor], margin: float, threshold: float, group_split: str,
                 pixels: str, ignore_index: int
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # (ce_map, ocr_map, OC statistics, per-pixel flags, class lists): the last three, not
    # differentiable, are what the backward op reuses.
    loss, ce, stats, flags, classes = _forward(logits, target, tags, prior, margin, threshold,
                                               group_split, pixels, ignore_index)
    return ce, loss, stats, flags, classes


@_seg_maps_op.register_fake
def _(logits, target, tags, prior, margin, threshold, group_split, pixels, ignore_index):
    check_ocr_args(logits, tags, prior, target)
    return (new_map(logits, torch.float32), new_map(logits, torch.float32), _stats_like(logits, True),
            _flags_like(logits), _classes_like(logits))


def _seg_setup(ctx, inputs, output):
    logits, target, tags, prior, margin, threshold, group_split, pixels, ignore_index = inputs
    _, _, stats, flags, classes = output
    ctx.mark_non_differentiable(stats, flags, classes)
    ctx.save_for_backward(logits, target, prior, stats, flags, classes)
    ctx.margin, ctx.threshold = margin, threshold
    ctx.group_split, ctx.ignore_index = group_split, ignore_index


@first_order_only("seg_ocr_loss", "triton")
def _seg_bwd(ctx, grad_ce, grad_ocr, _grad_stats, _grad_flags, _grad_classes):
    logits, target, prior, stats, flags, classes = ctx.saved_tensors
    grad = None
    if ctx.needs_input_grad[0]:
        grad = _maps_bwd_op(grad_ocr, grad_ce, logits, target, prior, stats, flags, classes,
                            ctx.margin, ctx.threshold, ctx.group_split, ctx.ignore_index)
    return (grad,) + (None,) * 8


_seg_maps_op.register_autograd(_seg_bwd, setup_context=_seg_setup)


def seg_ocr_loss_maps_triton(logits, target, tags, prior, opts: OCROptions):
    """(ce_map, ocr_map), two fp32 maps [B, *spatial] from ONE read of the logits, with one fused
    backward. ce_map[p] = logsumexp(z_p) − z_p[target_p], 0 where target_p == ignore_index."""
    ce, ocr, _, _, _ = _seg_maps_op(logits, target, tags, prior, float(opts.margin),
                                 float(opts.threshold), opts.group_split, opts.pixels,
                                 int(opts.ignore_index))
    return ce, ocr


# The objective with its gradient written by the forward (ocr_kernels/seg/objective.py): not
# differentiable themselves; the autograd.Function there hands the gradient to autograd.
@torch.library.custom_op(triton_op_name("seg_ocr_objective_triton"), mutates_args=())
def _seg_objective_op(logits: torch.Tensor, target: torch.Tensor, tags: torch.Tensor,
                      prior: Optional[torch.Tensor], ce_weight: Optional[torch.Tensor],
                      coef: torch.Tensor, margin: float, threshold: float, group_split: str,
                      pixels: str, ignore_index: int
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _objective(logits, target, tags, prior, ce_weight, coef, margin, threshold,
                      group_split, pixels, ignore_index)


@_seg_objective_op.register_fake
def _(logits, target, tags, prior, ce_weight, coef, margin, threshold, group_split, pixels,
      ignore_index):
    check_ocr_args(logits, tags, prior, target)
    if ce_weight is not None:
        check_map(ce_weight, logits, "ce_weight")
    torch._check(coef.shape == (2,), lambda: f"coef: expected 2 values, got {coef.shape}")
    return (new_map(logits, torch.float32), new_map(logits, torch.float32),
            torch.empty_like(logits))


@torch.library.custom_op(triton_op_name("scale_grad_triton"), mutates_args=("grad",))
def _scale_grad_op(grad: torch.Tensor, g: torch.Tensor) -> None:
    _scale(grad, g)


@_scale_grad_op.register_fake
def _(grad, g):
    torch._check(g.dim() == 0, lambda: f"g: expected a 0-d tensor, got {g.shape}")


def seg_ocr_objective_triton(logits, target, tags, prior, ce_weight, coef, opts: OCROptions):
    """(ce_map, ocr_map, grad): the maps as seg_ocr_loss_maps_triton's and the gradient of
    coef[0]·Σ ce_weight·ce_map + coef[1]·Σ ocr_map, from one pass over the logits."""
    return _seg_objective_op(logits, target, tags, prior, ce_weight, coef, float(opts.margin),
                             float(opts.threshold), opts.group_split, opts.pixels,
                             int(opts.ignore_index))


def scale_grad_triton(grad, g):
    """grad *= g in place, skipped on the device where g == 1."""
    _scale_grad_op(grad, g)
