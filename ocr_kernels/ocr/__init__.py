"""OCR (Out-of-Candidate Rectification): reference, kernels, autograd glue and module."""
from .api import ocr_loss
from .module import OCRLoss
from .prior import prior_correlation
from .reference import oc_error_rate, oc_pixel_mask

__all__ = ["OCRLoss", "ocr_loss", "prior_correlation", "oc_pixel_mask", "oc_error_rate"]
