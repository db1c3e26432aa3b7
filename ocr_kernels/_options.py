"""Option strings of the public API and the integer codes the kernels receive.

The codes are part of the contract with csrc/ocr_pixel.h (GROUP_*, PIXELS_*): keep both in step.
"""
from typing import NamedTuple, Tuple

GROUP_SPLITS = {"ada": 0, "max": 1, "all": 2}
PIXEL_MODES = {"oc": 0, "ic": 1, "all": 2}
REDUCTIONS = ("mean", "sum", "none")
BACKENDS = ("auto", "reference", "triton", "cpu", "cuda")
# Denominator of the segmentation cross-entropy in seg_ocr_loss: "valid" = the non-ignored pixels
# (torch's F.cross_entropy mean), "all" = every pixel (mmsegmentation's avg_non_ignore=False).
CE_AVERAGES = ("valid", "all")


class OCROptions(NamedTuple):
    """The options of the OCR loss (and of the segmentation objective), validated, as every layer
    below the public functions carries them: the references, the backend tables and the kernel
    wrappers take one of these and unpack it only at the op boundary (``codes``)."""

    margin: float = 2.0
    threshold: float = 0.2
    group_split: str = "ada"
    pixels: str = "oc"
    # The target value whose cross-entropy is 0 (segmentation objective only).
    ignore_index: int = -100

    def codes(self) -> Tuple[float, float, int, int]:
        """(margin, threshold, group_split code, pixels code): the scalars the C++ ops take."""
        return (float(self.margin), float(self.threshold), GROUP_SPLITS[self.group_split],
                PIXEL_MODES[self.pixels])
