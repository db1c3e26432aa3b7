"""The losses as mmseg builds and calls them, and how each batch's tags reach them.

mmseg's decode heads call every loss as ``loss(seg_logits, seg_label, weight=seg_weight,
ignore_index=...)`` with the logits already resized to the label size, and nothing else: the
image-level tags cannot come through that call. ``tags_from`` picks where they come from:

- "data": the tags ``TaggedEncoderDecoder.loss`` sets for the batch it is computing the losses of
  (``batch_tags``), stacked from each data sample's ``img_tags`` metainfo (``LoadImageTags``).
  Every head of the segmentor (decode and auxiliary) sees them, whatever its class.
- "target": the foreground classes present in the label map, ignored pixels excluded
  (``ocr_kernels.tags_from_target``). For WSSS pseudo-masks made from the CAMs of the tagged
  classes, that is the tag set minus the classes the CAM missed; it needs no other change.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Optional, Sequence

import numpy as np
import torch
from mmseg.registry import MODELS

from .. import ocr as _ocr
from .. import seg as _seg
from .._validation import check_bool, check_int, check_option
from ..tags import load_prior, tags_from_target

TAGS_FROM = ("data", "target")
TAGS_KEY = "img_tags"

_BATCH_TAGS: ContextVar[Optional[torch.Tensor]] = ContextVar("ocr_kernels_batch_tags", default=None)


@contextmanager
def batch_tags(tags: torch.Tensor):
    """The losses built with tags_from="data" use ``tags`` [B, C] for the calls made inside."""
    token = _BATCH_TAGS.set(tags)
    try:
        yield tags
    finally:
        _BATCH_TAGS.reset(token)


def stack_tags(data_samples: Sequence, device=None) -> torch.Tensor:
    """[B, C] uint8 tags from each data sample's ``img_tags`` metainfo."""
    rows = []
    for i, sample in enumerate(data_samples):
        if TAGS_KEY not in sample.metainfo:
            raise KeyError(
                f"data sample {i} has no {TAGS_KEY!r} in its metainfo (keys: "
                f"{sorted(sample.metainfo)}): add dict(type='LoadImageTags', ...) to the train "
                f"pipeline and {TAGS_KEY!r} to PackSegInputs' meta_keys"
            )
        rows.append(np.asarray(sample.metainfo[TAGS_KEY]) != 0)
    if len({r.shape for r in rows}) != 1:
        raise ValueError(f"every image's {TAGS_KEY} must have the same length C; got shapes {[r.shape for r in rows]}")
    return torch.from_numpy(np.stack(rows).astype(np.uint8)).to(device)


def _resolve_prior(prior):
    return None if prior is None else load_prior(prior)


def _tags(loss, pred: torch.Tensor, target: Optional[torch.Tensor], ignore_index: int) -> torch.Tensor:
    if loss.tags_from == "target":
        if target is None:
            raise ValueError(f'{type(loss).__name__} with tags_from="target" needs the target; got None')
        return tags_from_target(target, pred.shape[1] - 1, ignore_index)
    tags = _BATCH_TAGS.get()
    if tags is None:
        raise RuntimeError(
            f'{type(loss).__name__} got no image tags. With tags_from="data" they come from the '
            'segmentor: use model=dict(type="TaggedEncoderDecoder", ...) with '
            "dict(type='LoadImageTags', ...) in the train pipeline and 'img_tags' in PackSegInputs' "
            'meta_keys; or set tags_from="target" (the classes present in the label map); or pass '
            "tags= when calling the loss yourself"
        )
    return tags


def _refuse_reduction_override(loss, reduction_override) -> None:
    if reduction_override is not None:
        raise ValueError(
            f"{type(loss).__name__} does not return a per-pixel loss (reduction_override="
            f"{reduction_override!r}): mmseg's OHEMPixelSampler asks for one only without a "
            "thresh; give it a thresh (e.g. sampler=dict(type='OHEMPixelSampler', thresh=0.7, "
            "min_kept=100000)), then its seg_weight weights the cross-entropy term"
        )


@MODELS.register_module(name="SegOCRLoss")
class SegOCRLoss(_seg.SegOCRLoss):
    """``loss_weight * (cross-entropy + alpha * OCR)`` for mmseg's decode heads.

    ``ocr_kernels.SegOCRLoss`` with: ``prior`` as a tensor, a nested list, a path (.npy, .pt,
    .json, .txt) or ``dict(type="cls_labels", file=...)`` (``ocr_kernels.load_prior``); the tags
    found by ``tags_from`` ("data" or "target", see this module) when ``forward`` gets none; and
    mmseg's ``seg_weight`` (OHEM) as a per-pixel weight of the cross-entropy term.

    ``upsample`` defaults to True here: logits smaller than the label (``TaggedEncoderDecoder``
    passes a head's logits before mmseg's resize, see ``heads.fused_head_loss``) are upsampled
    inside the loss; logits already at the label's size are used as they are.
    """

    def __init__(self, prior=None, *, tags_from: str = "data", upsample: bool = True, **kwargs):
        super().__init__(_resolve_prior(prior), upsample=upsample, **kwargs)
        self.tags_from = check_option("tags_from", tags_from, TAGS_FROM)

    def forward(self, pred, target, tags=None, weight=None, ignore_index=None,
                reduction_override=None, **kwargs):
        _refuse_reduction_override(self, reduction_override)
        if tags is None:
            tags = _tags(self, pred, target, self.ignore_index if ignore_index is None else ignore_index)
        return super().forward(pred, target, tags, weight=weight, ignore_index=ignore_index, **kwargs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tags_from={self.tags_from!r}"


@MODELS.register_module(name="OCRLoss")
class OCRLoss(_ocr.OCRLoss):
    """``loss_weight * OCR`` for mmseg's decode heads, to list after mmseg's CrossEntropyLoss in
    ``loss_decode``. Prior and tags as ``SegOCRLoss``; ``ignore_index`` only serves
    tags_from="target" (the OCR term is a mean over every pixel). A ``weight`` (OHEM's
    ``seg_weight``) is for the cross-entropy: the OCR term does not use it, as in ``SegOCRLoss``.
    ``upsample`` (default True): logits smaller than the target are upsampled to its size inside
    the loss (``ocr_loss(size=...)``), as ``SegOCRLoss`` does.
    """

    def __init__(self, prior=None, *, tags_from: str = "data", ignore_index: int = 255,
                 upsample: bool = True, **kwargs):
        super().__init__(_resolve_prior(prior), **kwargs)
        self.tags_from = check_option("tags_from", tags_from, TAGS_FROM)
        self.ignore_index = check_int("ignore_index", ignore_index)
        self.upsample = check_bool("upsample", upsample)

    def forward(self, pred, target=None, tags=None, weight=None, ignore_index=None,
                reduction_override=None, **kwargs):
        _refuse_reduction_override(self, reduction_override)
        unknown = {k: v for k, v in kwargs.items() if v is not None}
        if unknown:
            raise TypeError(f"OCRLoss.forward got unsupported arguments {sorted(unknown)}")
        if tags is None:
            tags = _tags(self, pred, target, self.ignore_index if ignore_index is None else ignore_index)
        size = None
        if self.upsample and target is not None and tuple(pred.shape[2:]) != tuple(target.shape[-2:]):
            size = tuple(target.shape[-2:])
        return super().forward(pred, tags, size=size)

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, tags_from={self.tags_from!r}, "
                f"ignore_index={self.ignore_index}, upsample={self.upsample}")
