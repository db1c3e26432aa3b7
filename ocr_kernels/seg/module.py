"""``SegOCRLoss``: the segmentation objective as a loss module in mmsegmentation's conventions."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .._options import OCROptions
from .._validation import (
    check_bool, check_finite, check_int, check_loss_name, validate_ocr_options,
)
from .api import seg_ocr_loss


class SegOCRLoss(nn.Module):
    """``loss_weight * (cross-entropy + alpha * OCR)`` in mmsegmentation's loss conventions.

    - ``forward(pred, target, tags, weight=None, ignore_index=None, **kwargs)``: pred
      [B, C+1, *spatial] logits, target [B, *spatial] (mmseg's ``seg_label`` squeezed), tags [B, C]
      image-level labels. ``ignore_index`` overrides the constructor's (mmseg's decode heads pass
      it); a per-pixel ``weight`` [B, *spatial] (mmseg's ``seg_weight``, from OHEM) weights the
      cross-entropy term only (``seg_ocr_loss``'s ``ce_weight``).
    - ``avg_non_ignore`` (mmseg's default False): False averages the cross-entropy over every pixel,
      ignored ones counting as 0, exactly like mmseg's ``CrossEntropyLoss``; True averages over the
      non-ignored pixels, like ``torch.nn.functional.cross_entropy`` and ``seg_ocr_loss``'s default.
      The OCR term is always the mean over every pixel (the paper's Algorithm 1). mmseg computes
      the non-ignored count with ``.item()``; here it stays on the device.
    - ``loss_name`` must start with "loss_" (mmseg sums every such entry into the total loss).
    - The prior is a buffer: it follows ``.to()``/``.cuda()`` and is saved in the state dict.
    - ``global_mean`` / ``validate`` / ``backend`` / ``upsample`` / ``align_corners``: see
      ``seg_ocr_loss``. With ``upsample=True`` a head's logits smaller than the label are resized
      inside the loss (mmseg's own ``resize`` of the logits is then unnecessary).

    mmsegmentation configs use ``ocr_kernels.mmseg.SegOCRLoss`` (registered as "SegOCRLoss" by
    ``custom_imports=dict(imports=["ocr_kernels.mmseg"])``), which also takes the prior from a
    file and finds the tags itself.
    """

    def __init__(
        self,
        prior: Optional[torch.Tensor] = None,
        *,
        alpha: float = 1.0,
        margin: float = 2.0,
        threshold: float = 0.2,
        group_split: str = "ada",
        pixels: str = "oc",
        ignore_index: int = 255,
        avg_non_ignore: bool = False,
        global_mean: bool = False,
        validate: bool = True,
        backend: str = "auto",
        upsample: bool = False,
        align_corners: bool = False,
        loss_weight: float = 1.0,
        loss_name: str = "loss_seg_ocr",
    ):
        super().__init__()
        opts = validate_ocr_options(prior, OCROptions(margin, threshold, group_split, pixels), backend)
        self.alpha = check_finite("alpha", alpha)
        self.margin, self.threshold = opts.margin, opts.threshold
        self.loss_weight = check_finite("loss_weight", loss_weight)
        self.ignore_index = check_int("ignore_index", ignore_index)
        self.avg_non_ignore = check_bool("avg_non_ignore", avg_non_ignore)
        self.global_mean = check_bool("global_mean", global_mean)
        self.validate = check_bool("validate", validate)
        self.upsample = check_bool("upsample", upsample)
        self.align_corners = check_bool("align_corners", align_corners)
        self._loss_name = check_loss_name(loss_name)
        self.register_buffer("prior", prior)
        self.group_split, self.pixels, self.backend = group_split, pixels, backend

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        tags: torch.Tensor,
        weight: Optional[torch.Tensor] = None,
        ignore_index: Optional[int] = None,
        **kwargs,
    ) -> torch.Tensor:
        unknown = {k: v for k, v in kwargs.items() if v is not None}
        if unknown:
            raise TypeError(f"SegOCRLoss.forward got unsupported arguments {sorted(unknown)}")
        # logits already at the target's size need no resize (it would be the identity)
        upsample = self.upsample and tuple(pred.shape[2:]) != tuple(target.shape[1:])
        return self.loss_weight * seg_ocr_loss(
            pred, target, tags, self.prior, upsample=upsample,
            align_corners=self.align_corners, alpha=self.alpha,
            ignore_index=self.ignore_index if ignore_index is None else ignore_index,
            margin=self.margin, threshold=self.threshold, group_split=self.group_split,
            pixels=self.pixels, ce_average="valid" if self.avg_non_ignore else "all",
            global_mean=self.global_mean, validate=self.validate, backend=self.backend,
            ce_weight=weight,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, group_split={self.group_split!r}, pixels={self.pixels!r}, "
            f"margin={self.margin}, threshold={self.threshold}, ignore_index={self.ignore_index}, "
            f"avg_non_ignore={self.avg_non_ignore}, global_mean={self.global_mean}, "
            f"backend={self.backend!r}, upsample={self.upsample}, "
            f"align_corners={self.align_corners}, loss_weight={self.loss_weight}, "
            f"loss_name={self.loss_name!r}"
        )

