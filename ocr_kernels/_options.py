"""Option strings of the public API and the integer codes the kernels receive.

The codes are part of the contract with csrc/ocr_pixel.h (OCR_GROUP_*, OCR_PIXELS_*): keep both in
step.
"""

GROUP_SPLITS = {"ada": 0, "max": 1, "all": 2}
PIXEL_MODES = {"oc": 0, "ic": 1, "all": 2}
REDUCTIONS = ("mean", "sum", "none")
BACKENDS = ("auto", "reference", "triton", "cpu", "cuda")
# Denominator of the segmentation cross-entropy in seg_ocr_loss: "valid" = the non-ignored pixels
# (torch's F.cross_entropy mean), "all" = every pixel (mmsegmentation's avg_non_ignore=False).
CE_AVERAGES = ("valid", "all")
