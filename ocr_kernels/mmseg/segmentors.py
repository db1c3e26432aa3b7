"""The segmentor that hands each batch's image-level tags to its losses and fuses the heads'
upsampling into them."""
from __future__ import annotations

from mmseg.models.segmentors import EncoderDecoder
from mmseg.utils import add_prefix
from mmseg.registry import MODELS
from torch import nn

from .._validation import check_bool
from .heads import fusable, fused_head_loss, fused_losses
from .losses import TAGS_KEY, batch_tags, stack_tags


@MODELS.register_module()
class TaggedEncoderDecoder(EncoderDecoder):
    """mmseg's EncoderDecoder whose losses built with tags_from="data" (``SegOCRLoss``,
    ``OCRLoss``) get the batch's tags, stacked from each data sample's ``img_tags`` metainfo
    (``LoadImageTags`` + ``PackSegInputs(meta_keys=(..., "img_tags"))``). The decode and auxiliary
    heads stay stock (FCNHead, ASPPHead, SegformerHead, ...): only the segmentor type changes.
    Inference is EncoderDecoder's, unchanged (it needs no tags).

    fuse_upsampling (default True): for every head that ``heads.fusable`` accepts, the head's
    logits go to this package's losses before any resize and those losses upsample them inside
    their kernels (``heads.fused_head_loss``): the [B, C+1, H, W] logits and their gradient are
    never materialised; those losses take the head's ``align_corners``. ``fused_heads`` names
    those heads. Without any ``img_tags`` in the batch
    no tags are set, so losses with tags_from="target" work here too.
    """

    def __init__(self, *args, fuse_upsampling: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.fuse_upsampling = check_bool("fuse_upsampling", fuse_upsampling)
        heads = [("decode", self.decode_head)]
        aux = getattr(self, "auxiliary_head", None)
        if isinstance(aux, nn.ModuleList):
            heads += [(f"aux_{i}", h) for i, h in enumerate(aux)]
        elif aux is not None:
            heads.append(("aux", aux))
        self.fused_heads = tuple(name for name, h in heads if self.fuse_upsampling and fusable(h))
        for name, head in heads:
            if name in self.fused_heads:
                for loss in fused_losses(head):  # sample the grid the head's own resize would
                    loss.align_corners = head.align_corners

    def _head_loss(self, name, head, inputs, data_samples):
        if name in self.fused_heads:
            return fused_head_loss(head, inputs, data_samples, self.train_cfg)
        return head.loss(inputs, data_samples, self.train_cfg)

    def _decode_head_forward_train(self, inputs, data_samples):
        return add_prefix(self._head_loss("decode", self.decode_head, inputs, data_samples), "decode")

    def _auxiliary_head_forward_train(self, inputs, data_samples):
        losses = dict()
        if isinstance(self.auxiliary_head, nn.ModuleList):
            for i, head in enumerate(self.auxiliary_head):
                losses.update(add_prefix(self._head_loss(f"aux_{i}", head, inputs, data_samples), f"aux_{i}"))
        else:
            losses.update(add_prefix(self._head_loss("aux", self.auxiliary_head, inputs, data_samples), "aux"))
        return losses

    def loss(self, inputs, data_samples):
        if not any(TAGS_KEY in s.metainfo for s in data_samples):
            return super().loss(inputs, data_samples)
        with batch_tags(stack_tags(data_samples, inputs.device)):
            return super().loss(inputs, data_samples)
