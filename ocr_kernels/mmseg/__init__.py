"""mmsegmentation integration, loaded the mmseg way:

    custom_imports = dict(imports=["ocr_kernels.mmseg"], allow_failed_imports=False)

registers in mmseg's registries:
- MODELS "SegOCRLoss" (cross-entropy + alpha * OCR) and "OCRLoss" (OCR alone, next to mmseg's
  "CrossEntropyLoss"), both taking the prior as a tensor, list, file or cls_labels spec;
- MODELS "TaggedEncoderDecoder": mmseg's EncoderDecoder whose losses see each image's tags;
- TRANSFORMS "LoadImageTags": an image's tags from a cls_labels.npy or from its annotation.

``import ocr_kernels`` never imports this module (nor mmseg).
"""
try:
    import mmseg.models  # noqa: F401  the stock segmentors, heads and losses
except ImportError as e:
    if getattr(e, "name", None) in ("mmseg", "mmengine", "mmcv"):
        hint = ('Install mmsegmentation (pip install "ocr-kernels[mmseg]") and mmcv with its '
                "compiled ops (e.g. `mim install mmcv==2.1.0`)")
    else:
        hint = ("mmsegmentation imports mmcv's compiled ops (mmcv._ext), which mmcv-lite does not "
                'have: install the full mmcv ("mmcv>=2.0.0rc4,<2.2.0" for mmsegmentation 1.x, '
                "e.g. `mim install mmcv==2.1.0`)")
    raise ImportError(
        f"ocr_kernels.mmseg needs mmsegmentation's models, whose import failed: {e}. {hint}"
    ) from e

from .losses import OCRLoss, SegOCRLoss, batch_tags, stack_tags
from .segmentors import TaggedEncoderDecoder
from .transforms import LoadImageTags

__all__ = ["LoadImageTags", "OCRLoss", "SegOCRLoss", "TaggedEncoderDecoder", "batch_tags", "stack_tags"]
