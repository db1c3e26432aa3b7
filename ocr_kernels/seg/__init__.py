"""The segmentation objective: cross-entropy + alpha * OCR in one pass over the logits."""
from .api import seg_ocr_loss
from .module import SegOCRLoss
from .reference import seg_ocr_loss_reference

__all__ = ["SegOCRLoss", "seg_ocr_loss", "seg_ocr_loss_reference"]
