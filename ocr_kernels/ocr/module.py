"""``OCRLoss``: the OCR loss as a module holding its prior."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .._options import REDUCTIONS, OCROptions
from .._validation import (
    check_bool, check_finite, check_loss_name, check_option, validate_ocr_options,
)
from .api import ocr_loss


class OCRLoss(nn.Module):
    """``loss_weight * ocr_loss(logits, tags, self.prior, ...)`` as a module.

    The prior is a buffer, so it follows ``.to()``/``.cuda()`` and is saved in the state dict.
    ``loss_name`` follows mmsegmentation's convention (it must start with "loss_").
    ``align_corners`` and ``forward``'s ``size``: the fused bilinear upsampling of ``ocr_loss``.
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
        align_corners: bool = False,
        loss_weight: float = 1.0,
        loss_name: str = "loss_ocr",
    ):
        super().__init__()
        opts = validate_ocr_options(prior, OCROptions(margin, threshold, group_split, pixels), backend)
        check_option("reduction", reduction, REDUCTIONS)
        self.margin, self.threshold = opts.margin, opts.threshold
        self.loss_weight = check_finite("loss_weight", loss_weight)
        self.align_corners = check_bool("align_corners", align_corners)
        self._loss_name = check_loss_name(loss_name)
        self.register_buffer("prior", prior)
        self.group_split, self.pixels, self.reduction, self.backend = group_split, pixels, reduction, backend

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, logits: torch.Tensor, tags: torch.Tensor,
                size: Optional[Sequence[int]] = None) -> torch.Tensor:
        return self.loss_weight * ocr_loss(
            logits, tags, self.prior, size=size, align_corners=self.align_corners, margin=self.margin, threshold=self.threshold,
            group_split=self.group_split, pixels=self.pixels, reduction=self.reduction,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"group_split={self.group_split!r}, pixels={self.pixels!r}, margin={self.margin}, "
            f"threshold={self.threshold}, reduction={self.reduction!r}, backend={self.backend!r}, "
            f"align_corners={self.align_corners}, loss_weight={self.loss_weight}, "
            f"loss_name={self.loss_name!r}"
        )
