"""Triton op of the segmentation objective with the bilinear upsampling fused in
(seg_ocr_loss(upsample=True)): the (ce_map, ocr_map) pair at the target's size from the
low-resolution logits, with one fused backward. A thin registration over the kernels of
ocr_kernels/ocr/triton_resize.py (their WITH_CE variant); see that module for the design."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .._autograd import first_order_only
from .._op_names import triton_op_name
from .._options import OCROptions
from ..ocr.triton_kernel import _classes_like
from ..ocr.triton_resize import _forward, _maps_bwd_op, _map_like, check_resized_args, stats_like


@torch.library.custom_op(triton_op_name("seg_ocr_loss_maps_resized_triton"), mutates_args=())
def _seg_maps_op(logits: torch.Tensor, target: torch.Tensor, tags: torch.Tensor,
                 prior: Optional[torch.Tensor], align_corners: bool, margin: float,
                 threshold: float, group_split: str, pixels: str, ignore_index: int
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # (ce_map, ocr_map, OC statistics, class lists): the last two, not differentiable, are what
    # the backward op reuses.
    loss, ce, stats, classes = _forward(logits, target, tags, prior, tuple(target.shape[1:]),
                                        align_corners, margin, threshold, group_split, pixels,
                                        ignore_index)
    return ce, loss, stats, classes


@_seg_maps_op.register_fake
def _(logits, target, tags, prior, align_corners, margin, threshold, group_split, pixels,
      ignore_index):
    size = tuple(target.shape[1:])
    check_resized_args(logits, tags, prior, size)
    torch._check(target.dim() == 3 and target.shape[0] == logits.shape[0],
                 lambda: f"target: expected [B, H, W], got {target.shape}")
    return (_map_like(logits, size), _map_like(logits, size), stats_like(logits, size),
            _classes_like(logits))


def _seg_setup(ctx, inputs, output):
    logits, target, tags, prior, align_corners, margin, threshold, group_split, pixels, \
        ignore_index = inputs
    _, ocr_map, stats, classes = output
    ctx.mark_non_differentiable(stats, classes)
    ctx.save_for_backward(logits, target, prior, ocr_map, stats, classes)
    ctx.align_corners, ctx.threshold = align_corners, threshold
    ctx.group_split, ctx.ignore_index = group_split, ignore_index


@first_order_only("seg_ocr_loss", "triton")
def _seg_bwd(ctx, grad_ce, grad_ocr, _grad_stats, _grad_classes):
    logits, target, prior, ocr_map, stats, classes = ctx.saved_tensors
    grad = None
    if ctx.needs_input_grad[0]:
        grad = _maps_bwd_op(grad_ocr, grad_ce, logits, target, prior, ocr_map, stats, classes,
                            ctx.align_corners, ctx.threshold, ctx.group_split, ctx.ignore_index)
    return (grad,) + (None,) * 9


_seg_maps_op.register_autograd(_seg_bwd, setup_context=_seg_setup)


def seg_ocr_loss_maps_resized_triton(logits, target, tags, prior, opts: OCROptions,
                                     align_corners: bool):
    """(ce_map, ocr_map), fp32 [B, H, W] at the target's size, of the logits [B, C+1, h, w]
    bilinearly upsampled inside the kernels; differentiable in the low-resolution logits."""
    ce, ocr, _, _ = _seg_maps_op(logits, target, tags, prior, bool(align_corners),
                                 float(opts.margin), float(opts.threshold), opts.group_split,
                                 opts.pixels, int(opts.ignore_index))
    return ce, ocr
