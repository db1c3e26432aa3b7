"""The segmentor that hands each batch's image-level tags to its losses."""
from __future__ import annotations

from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS

from .losses import batch_tags, stack_tags


@MODELS.register_module()
class TaggedEncoderDecoder(EncoderDecoder):
    """mmseg's EncoderDecoder whose losses built with tags_from="data" (``SegOCRLoss``,
    ``OCRLoss``) get the batch's tags, stacked from each data sample's ``img_tags`` metainfo
    (``LoadImageTags`` + ``PackSegInputs(meta_keys=(..., "img_tags"))``). The decode and auxiliary
    heads stay stock (FCNHead, ASPPHead, SegformerHead, ...): only the segmentor type changes.
    Inference is EncoderDecoder's, unchanged (it needs no tags)."""

    def loss(self, inputs, data_samples):
        with batch_tags(stack_tags(data_samples, inputs.device)):
            return super().loss(inputs, data_samples)
