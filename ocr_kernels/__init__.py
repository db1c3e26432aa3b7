"""ocr-kernels: fused kernels for the losses of weakly supervised semantic segmentation."""
from ._dispatch import BackendStatus, BackendUnavailableError, available_backends
from .ocr import OCRLoss, oc_error_rate, oc_pixel_mask, ocr_loss, prior_correlation
from .seg import SegOCRLoss, seg_ocr_loss
from .tags import ClsLabels, load_prior, tags_from_target
from .wood import (
    WOoDLoss,
    centroid_distances,
    class_centroids,
    kmeans,
    wood_classifier_loss,
    wood_distance_loss,
)

__version__ = "0.1.0"

__all__ = [
    "BackendStatus",
    "BackendUnavailableError",
    "ClsLabels",
    "OCRLoss",
    "SegOCRLoss",
    "WOoDLoss",
    "available_backends",
    "centroid_distances",
    "class_centroids",
    "kmeans",
    "load_prior",
    "oc_error_rate",
    "oc_pixel_mask",
    "ocr_loss",
    "prior_correlation",
    "seg_ocr_loss",
    "tags_from_target",
    "wood_classifier_loss",
    "wood_distance_loss",
]
