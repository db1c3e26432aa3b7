"""The public OCR entry points: ``ocr_loss`` and the ``OCRLoss`` module."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .._dispatch import resolve_backend
from .._validation import check_finite, check_option, optional_prior_for, validate_ocr_inputs
from .._options import GROUP_SPLITS, PIXEL_MODES, REDUCTIONS, BACKENDS
from .backends import OCR_LOSS_MAP_IMPLS


def mean_or_zero(t: torch.Tensor) -> torch.Tensor:
    """t.mean(), but 0 with a zero gradient for an empty t (a batch of 0 images or of no pixels)
    where torch's mean gives NaN: an empty batch contributes nothing to a training step."""
    return t.sum() / torch.sym_max(t.numel(), 1)


def reduce_loss_map(loss_map: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":  # Algorithm 1's .mean(): every pixel counts in the denominator
        return mean_or_zero(loss_map)
    if reduction == "sum":
        return loss_map.sum()
    return loss_map


def ocr_loss(
    logits: torch.Tensor,
    tags: torch.Tensor,
    prior: Optional[torch.Tensor] = None,
    *,
    margin: float = 2.0,
    threshold: float = 0.2,
    group_split: str = "ada",
    pixels: str = "oc",
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """Out-of-Candidate Rectification loss (Cheng et al., CVPR 2023, Eq. 5-19).

    logits [B, C+1, *spatial] (1-3 spatial dims, channel 0 = background; fp16/bf16/fp32 with fp32
    math, fp64 with fp64 math), tags [B, C] (nonzero = present), prior [C+1, C+1] (required for
    group_split="ada"; see ``prior_correlation``). Returns a 0-dim fp32 loss ("mean", "sum") or
    the per-pixel loss [B, *spatial] ("none"); fp64 for fp64 logits. The gradient flows to the
    logits in their dtype. See README "Semantics" for the exact definition.
    """
    validate_ocr_inputs(
        logits, tags, prior, margin=margin, threshold=threshold, group_split=group_split,
        pixels=pixels, reduction=reduction, backend=backend,
    )
    name = resolve_backend(backend, logits, op="ocr_loss", implemented=tuple(OCR_LOSS_MAP_IMPLS))
    loss_map = OCR_LOSS_MAP_IMPLS[name](
        logits, tags, optional_prior_for(group_split, prior), float(margin), float(threshold),
        group_split, pixels,
    )
    return reduce_loss_map(loss_map, reduction)


class OCRLoss(nn.Module):
    """``loss_weight * ocr_loss(logits, tags, self.prior, ...)`` as a module.

    The prior is a buffer, so it follows ``.to()``/``.cuda()`` and is saved in the state dict.
    ``loss_name`` follows mmsegmentation's convention (it must start with "loss_").
    """

    def __init__(
        self,
        prior: Optional[torch.Tensor] = None,
        *,
        margin: float = 2.0,
        threshold: float = 0.2,
        group_split: str = "ada",
        pixels: str = "oc",
        reduction: str = "mean",
        backend: str = "auto",
        loss_weight: float = 1.0,
        loss_name: str = "loss_ocr",
    ):
        super().__init__()
        check_option("group_split", group_split, GROUP_SPLITS)
        check_option("pixels", pixels, PIXEL_MODES)
        check_option("reduction", reduction, REDUCTIONS)
        check_option("backend", backend, BACKENDS)
        self.margin = check_finite("margin", margin)
        self.threshold = check_finite("threshold", threshold)
        self.loss_weight = check_finite("loss_weight", loss_weight)
        if group_split == "ada" and prior is None:
            raise ValueError(
                'prior is required for group_split="ada": pass '
                "ocr_kernels.prior_correlation(dataset_tags); got None"
            )
        if prior is not None and not isinstance(prior, torch.Tensor):
            raise TypeError(f"prior must be a tensor [C+1, C+1]; got {type(prior).__name__}")
        if not isinstance(loss_name, str) or not loss_name.startswith("loss_"):
            raise ValueError(f'loss_name must be a string starting with "loss_"; got {loss_name!r}')
        self.register_buffer("prior", prior)
        self.group_split, self.pixels, self.reduction, self.backend = group_split, pixels, reduction, backend
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * ocr_loss(
            logits, tags, self.prior, margin=self.margin, threshold=self.threshold,
            group_split=self.group_split, pixels=self.pixels, reduction=self.reduction,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"group_split={self.group_split!r}, pixels={self.pixels!r}, margin={self.margin}, "
            f"threshold={self.threshold}, reduction={self.reduction!r}, backend={self.backend!r}, "
            f"loss_weight={self.loss_weight}, loss_name={self.loss_name!r}"
        )
