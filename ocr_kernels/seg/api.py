"""The public segmentation objective: ``seg_ocr_loss`` = cross-entropy + alpha * OCR."""
from __future__ import annotations

from typing import Optional

import torch

from .._dispatch import resolve_backend, resolve_resized_backend
from .._options import OCROptions
from .._validation import optional_prior_for, validate_seg_inputs, validate_seg_upsample
from ..ocr.api import mean_or_zero
from ..ocr.reference import upsample_logits
from .._tensors import math_dtype
from .backends import SEG_OBJECTIVE_IMPLS, SEG_OCR_IMPLS, SEG_OCR_RESIZED_IMPLS
from .objective import seg_objective, use_objective


def _global_counts(n_valid: torch.Tensor, n_pixels: int):
    """(non-ignored count, pixel count) summed over the ranks, and the world size; the local
    values and 1 when torch.distributed is not initialised. One all_reduce of two int64 on the
    logits' device (no host synchronisation: the counts stay tensors)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return n_valid, n_valid.new_tensor(n_pixels), 1
    counts = torch.stack([n_valid, n_valid.new_tensor(n_pixels)])
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    return counts[0], counts[1], dist.get_world_size()


def _valid_count(target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The number of non-ignored pixels, as a 0-d int64 tensor (no host sync). count_nonzero, not
    a bool .sum(): torch's sum of a bool mask first copies it to int64 on the CPU, 8 bytes a
    pixel, which would be most of the fused upsampling's extra memory."""
    return torch.count_nonzero(target != ignore_index)


def seg_denominators(target: torch.Tensor, n_pixels: int, dtype: torch.dtype, *,
                     ignore_index: int, ce_average: str = "valid", global_mean: bool = False):
    """(ce_den, ocr_den, world): the CE term's denominator (a 0-d tensor, or an int for
    ce_average="all" without global_mean), the OCR term's and the factor on both (the world
    size under global_mean, else 1). One all_reduce under global_mean; no host sync."""
    if not global_mean:
        ce_den = _valid_count(target, ignore_index).clamp_min(1).to(dtype) \
            if ce_average == "valid" else torch.sym_max(n_pixels, 1)
        return ce_den, torch.sym_max(n_pixels, 1), 1
    n_valid, n_all, world = _global_counts(_valid_count(target, ignore_index), n_pixels)
    n_all = n_all.clamp_min(1)  # an empty batch on every rank: 0, as without global_mean
    ce_den = n_valid.clamp_min(1) if ce_average == "valid" else n_all
    return ce_den.to(dtype), n_all.to(dtype), world


def reduce_seg_maps(ce_map: torch.Tensor, ocr_map: torch.Tensor, den, alpha: float
                    ) -> torch.Tensor:
    """The one place the two maps become the scalar objective (see ``seg_ocr_loss``); den:
    seg_denominators'. Each rank under global_mean returns world * (its share of the global
    sums): DDP averages the gradients over the ranks, which turns that back into the gradient
    of the global mean."""
    ce_den, ocr_den, world = den
    if world == 1 and not isinstance(ocr_den, torch.Tensor):
        return ce_map.sum() / ce_den + alpha * mean_or_zero(ocr_map)
    return world * (ce_map.sum() / ce_den + alpha * (ocr_map.sum() / ocr_den))


def seg_ocr_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    tags: torch.Tensor,
    prior: Optional[torch.Tensor] = None,
    *,
    upsample: bool = False,
    align_corners: bool = False,
    alpha: float = 1.0,
    ignore_index: int = 255,
    margin: float = 2.0,
    threshold: float = 0.2,
    group_split: str = "ada",
    pixels: str = "oc",
    ce_average: str = "valid",
    global_mean: bool = False,
    validate: bool = True,
    backend: str = "auto",
    ce_weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Segmentation cross-entropy + alpha * OCR (paper Eq. 4: L = L_seg + alpha * L_rec).

    Equal to ``F.cross_entropy(logits, target, ignore_index=ignore_index) + alpha *
    ocr_loss(logits, tags, prior, ...)``; the triton, cpu and cuda backends compute both terms in
    one read of the logits (and one fused backward).

    logits [B, C+1, *spatial] (channel 0 = background), target [B, *spatial] integer class
    indices in [0, C] or ignore_index, tags [B, C], prior [C+1, C+1] (for group_split="ada").
    Returns a 0-dim fp32 tensor (fp64 for fp64 logits); the gradient reaches the logits in their
    dtype.

    Reductions: the OCR term is the mean over every pixel (as ``ocr_loss``); the cross-entropy
    term is the mean over the non-ignored pixels (``ce_average="valid"``, torch's mean) or over
    every pixel (``"all"``, mmsegmentation's ``avg_non_ignore=False``). When every pixel is
    ignored the cross-entropy term is 0, not NaN as in torch.

    global_mean=True (under torch.distributed): the denominators are summed over the ranks with
    one all_reduce, and the result is scaled by the world size, so that DDP's gradient averaging
    gives exactly the gradient of the mean over the global batch, whatever each rank's pixel and
    ignored counts. The value returned on a rank is then its share times the world size (their
    average over ranks is the global loss). Without it, DDP gives the global gradient only when
    every rank has the same number of pixels and (for ce_average="valid") of non-ignored pixels.

    validate=True checks the target's values (see ``_validation.check_target_values``): a
    ValueError at once for CPU tensors; on CUDA (or under torch.compile) a device-side assert,
    never a host synchronisation. validate=False skips that read of the target; a bad target then
    gives meaningless values (the kernels clamp indices and never read out of bounds).

    ce_weight [B, *spatial] (floating, optional) multiplies each pixel's cross-entropy before the
    reduction, as mmsegmentation's ``CrossEntropyLoss`` applies a ``weight`` (OHEM's ``seg_weight``);
    the denominators do not change. The OCR term is not weighted. With upsample=True it is at
    the target's size.

    upsample=True: logits [B, C+1, h, w] smaller (or larger) than the target [B, H, W] are
    bilinearly resized to (H, W) exactly as ``F.interpolate(logits, target.shape[-2:],
    mode="bilinear", align_corners=align_corners)`` (in the math dtype), fused into the kernel on
    every backend but the reference (cpu, cuda, triton): no [B, C+1, H, W] tensor is allocated
    and the gradient reaches the low-resolution logits (deterministically). "auto" on CUDA takes
    the fused cuda kernels, else the fused Triton ones, and interpolates, then runs the fastest
    loss, only where neither can run (docs/semantics.md §1c).
    """
    opts = OCROptions(margin, threshold, group_split, pixels, ignore_index)
    size = validate_seg_upsample(logits, target, upsample, align_corners)
    validate_seg_inputs(logits, target, tags, prior, opts, alpha=alpha, ce_average=ce_average,
                        global_mean=global_mean, validate=validate, backend=backend,
                        ce_weight=ce_weight, spatial=size)
    impls = SEG_OCR_IMPLS
    if size is not None:
        name = resolve_resized_backend(backend, logits, op="seg_ocr_loss",
                                       implemented=tuple(SEG_OCR_RESIZED_IMPLS))
        if name is None:
            logits, backend, size = upsample_logits(logits, size, align_corners), "auto", None
        else:
            impls = {name: lambda *a: SEG_OCR_RESIZED_IMPLS[name](*a, align_corners)}
    if size is None:
        name = resolve_backend(backend, logits, op="seg_ocr_loss", implemented=tuple(SEG_OCR_IMPLS))
    target = target.long()  # the kernels read int64 (uint8 masks are common): a copy of the target only
    opts = opts._replace(margin=float(margin), threshold=float(threshold))
    prior = optional_prior_for(group_split, prior)
    den = seg_denominators(target, target.numel(), math_dtype(logits.dtype),
                           ignore_index=ignore_index, ce_average=ce_average,
                           global_mean=global_mean)
    alpha = float(alpha)

    def reduce(ce_map, ocr_map):
        return reduce_seg_maps(ce_map, ocr_map, den, alpha)

    if size is None and name in SEG_OBJECTIVE_IMPLS and use_objective(logits, ce_weight):
        return seg_objective(logits, target, tags, prior, ce_weight, opts,
                             SEG_OBJECTIVE_IMPLS[name], den, alpha, reduce)
    ce_map, ocr_map = impls[name](logits, target, tags, prior, opts)
    if ce_weight is not None:
        ce_map = ce_map * ce_weight
    return reduce(ce_map, ocr_map)
