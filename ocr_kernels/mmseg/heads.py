"""A decode head's training losses with the logits' upsampling fused into this package's losses.

mmseg's ``BaseDecodeHead.loss_by_feat`` resizes the head's logits to the label size, then calls
every loss of ``loss_decode`` on them: for WSSS on COCO that is a [B, 81, H, W] tensor and its
gradient, only to feed a loss that reads each value once. ``fused_head_loss`` computes the same
dict of losses from the head's low-resolution logits: this package's losses (``upsample=True``)
resize inside their kernels, any other loss in ``loss_decode`` still gets the resized logits
(computed once, only then), and ``acc_seg`` is computed image by image without a gradient.
``TaggedEncoderDecoder`` uses it for every head it can (``fuse_upsampling=True``).
"""
from __future__ import annotations

from typing import Optional

import torch
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import accuracy
from mmseg.models.utils import resize
from torch import nn

from .losses import OCRLoss, SegOCRLoss


def _losses(head):
    return list(head.loss_decode) if isinstance(head.loss_decode, nn.ModuleList) else [head.loss_decode]


def _fuses(loss) -> bool:
    return isinstance(loss, (SegOCRLoss, OCRLoss)) and loss.upsample


def fused_losses(head):
    """The losses of ``head.loss_decode`` that upsample the logits themselves."""
    return [loss for loss in _losses(head) if _fuses(loss)]


def fusable(head) -> bool:
    """Whether ``fused_head_loss`` reproduces this head's ``loss``: a head that keeps
    BaseDecodeHead's ``loss`` and ``loss_by_feat`` (FCNHead, ASPPHead, SegformerHead, ...), has no
    pixel sampler (OHEM weighs the full-resolution logits) and has one of this package's losses
    with ``upsample=True``."""
    cls = type(head)
    return (isinstance(head, BaseDecodeHead) and cls.loss is BaseDecodeHead.loss
            and cls.loss_by_feat is BaseDecodeHead.loss_by_feat and head.sampler is None
            and bool(fused_losses(head)))


def _accuracy(seg_logits, seg_label, head) -> torch.Tensor:
    """mmseg's ``accuracy`` (top-1, ``acc_seg``) of the resized logits, resized one image at a time
    without a gradient, so that the batch's full-resolution logits never exist at once."""
    eps = torch.finfo(torch.float32).eps
    with torch.no_grad():
        correct = seg_logits.new_zeros((1,), dtype=torch.float32)
        valid = seg_logits.new_zeros((1,), dtype=torch.float64)
        for b in range(seg_logits.shape[0]):
            up = resize(seg_logits[b:b + 1], size=seg_label.shape[1:], mode="bilinear",
                        align_corners=head.align_corners)
            keep = seg_label[b:b + 1] != head.ignore_index
            hit = up.topk(1, dim=1).indices[:, 0] == seg_label[b:b + 1]
            correct += hit[keep].float().sum(0, keepdim=True)
            valid += keep.sum()
        return (correct + eps) * (100.0 / (valid + eps)).float()


def fused_head_loss(head, inputs, batch_data_samples, train_cfg) -> dict:
    """``head.loss(inputs, batch_data_samples, train_cfg)`` for a ``fusable`` head, with the
    upsampling of the logits fused into this package's losses: the same keys and values (up to
    float rounding) as mmseg's ``loss_by_feat``."""
    seg_logits = head.forward(inputs)
    seg_label = head._stack_batch_gt(batch_data_samples)
    if tuple(seg_logits.shape[2:]) == tuple(seg_label.shape[2:]):
        return head.loss_by_feat(seg_logits, batch_data_samples)
    seg_label = seg_label.squeeze(1)
    resized: Optional[torch.Tensor] = None
    loss = dict()
    for loss_decode in _losses(head):
        if _fuses(loss_decode):
            if loss_decode.align_corners != head.align_corners:
                raise ValueError(
                    f"{type(loss_decode).__name__}(align_corners={loss_decode.align_corners}) in a "
                    f"{type(head).__name__} with align_corners={head.align_corners}: the fused "
                    "upsampling must sample the grid the head's own resize would; give the loss "
                    "the head's align_corners")
            pred = seg_logits
        else:
            if resized is None:
                resized = resize(seg_logits, size=seg_label.shape[1:], mode="bilinear",
                                 align_corners=head.align_corners)
            pred = resized
        value = loss_decode(pred, seg_label, weight=None, ignore_index=head.ignore_index)
        name = loss_decode.loss_name
        loss[name] = value if name not in loss else loss[name] + value
    if resized is not None:
        loss["acc_seg"] = accuracy(resized, seg_label, ignore_index=head.ignore_index)
    else:
        loss["acc_seg"] = _accuracy(seg_logits, seg_label, head)
    return loss
