"""The C++/CUDA OCR ops (backends "cpu" and "cuda"): fake and autograd registrations and the
functions the dispatch calls.

The ops live in the ``ocr_kernels`` namespace of the extension (csrc/ops.cpp); the dispatcher
picks the CPU or CUDA kernel from the tensors' device. The forward writes only the per-pixel loss
map; the backward op recovers σ(s) = 1 − exp(−L) from it and re-reads the logits only where
L > 0 (and, for the segmentation maps, where the cross-entropy has a gradient).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .._autograd import first_order_only
from .._extension import registered_ops
from .._options import GROUP_SPLITS, PIXEL_MODES



def _map_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _new_map(logits: torch.Tensor) -> torch.Tensor:
    return logits.new_empty((logits.shape[0], *logits.shape[2:]), dtype=_map_dtype(logits.dtype))


def _register() -> None:
    lib = "ocr_kernels::"

    @torch.library.register_fake(lib + "ocr_loss_map")
    def _(logits, tags, prior, margin, threshold, group_split, pixels):
        return _new_map(logits)

    @torch.library.register_fake(lib + "ocr_loss_map_backward")
    def _(grad_map, logits, tags, prior, loss_map, margin, threshold, group_split, pixels):
        return torch.empty_like(logits)

    @torch.library.register_fake(lib + "seg_ocr_loss_maps")
    def _(logits, target, tags, prior, margin, threshold, group_split, pixels, ignore_index):
        return _new_map(logits), _new_map(logits)

    @torch.library.register_fake(lib + "seg_ocr_loss_maps_backward")
    def _(grad_ce, grad_ocr, logits, target, tags, prior, ocr_map, margin, threshold, group_split,
          pixels, ignore_index):
        return torch.empty_like(logits)

    @torch.library.register_fake(lib + "_pixelwise_seg_ocr")
    def _(logits, target, tags, prior, grad_ce, grad_ocr, margin, threshold, group_split, pixels,
          ignore_index):
        return _new_map(logits), _new_map(logits), torch.empty_like(logits)

    def setup_ocr(ctx, inputs, output):
        logits, tags, prior, margin, threshold, group_split, pixels = inputs
        ctx.save_for_backward(logits, tags, prior, output)
        ctx.opts = (margin, threshold, group_split, pixels)

    @first_order_only("ocr_loss", "cpu/cuda")
    def backward_ocr(ctx, grad_map):
        logits, tags, prior, loss_map = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0]:
            grad = torch.ops.ocr_kernels.ocr_loss_map_backward(
                grad_map, logits, tags, prior, loss_map, *ctx.opts)
        return grad, None, None, None, None, None, None

    torch.library.register_autograd(lib + "ocr_loss_map", backward_ocr, setup_context=setup_ocr)

    def setup_seg(ctx, inputs, output):
        logits, target, tags, prior, margin, threshold, group_split, pixels, ignore_index = inputs
        ctx.save_for_backward(logits, target, tags, prior, output[1])
        ctx.opts = (margin, threshold, group_split, pixels, ignore_index)

    @first_order_only("seg_ocr_loss", "cpu/cuda")
    def backward_seg(ctx, grad_ce, grad_ocr):
        logits, target, tags, prior, ocr_map = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0]:
            grad = torch.ops.ocr_kernels.seg_ocr_loss_maps_backward(
                grad_ce, grad_ocr, logits, target, tags, prior, ocr_map, *ctx.opts)
        return grad, None, None, None, None, None, None, None, None

    torch.library.register_autograd(lib + "seg_ocr_loss_maps", backward_seg, setup_context=setup_seg)


def ops():
    """torch.ops.ocr_kernels, with the extension built/loaded and the Python registrations made."""
    return registered_ops(_register)


def ocr_loss_map_csrc(
    logits: torch.Tensor,
    tags: torch.Tensor,
    prior: Optional[torch.Tensor],
    margin: float,
    threshold: float,
    group_split: str,
    pixels: str,
) -> torch.Tensor:
    """Per-pixel OCR loss [B, *spatial] (fp32; fp64 for fp64 logits), differentiable in logits."""
    return ops().ocr_loss_map(logits, tags, prior, float(margin), float(threshold),
                              GROUP_SPLITS[group_split], PIXEL_MODES[pixels])


def seg_ocr_loss_maps_csrc(
    logits: torch.Tensor,
    target: torch.Tensor,
    tags: torch.Tensor,
    prior: Optional[torch.Tensor],
    margin: float,
    threshold: float,
    group_split: str,
    pixels: str,
    ignore_index: int,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(ce_map, ocr_map), both [B, *spatial] fp32 (fp64 for fp64 logits), from one read of the
    logits; ce_map[p] = logsumexp(z_p) − z_p[target_p] (0 where target_p == ignore_index). Both
    are differentiable in logits through one fused backward."""
    return ops().seg_ocr_loss_maps(logits, target, tags, prior, float(margin), float(threshold),
                                   GROUP_SPLITS[group_split], PIXEL_MODES[pixels], int(ignore_index))
