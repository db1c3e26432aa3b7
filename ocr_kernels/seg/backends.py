"""Which function computes the two per-pixel maps of the segmentation objective on each backend.

Each entry takes (logits, target, tags, prior, margin, threshold, group_split, pixels,
ignore_index) -- already validated, target int64 -- and returns (ce_map, ocr_map), both
[B, *spatial] in fp32 (fp64 for fp64 logits) and differentiable in the logits; ``seg_ocr_loss``
reduces them once in Python.

The fused kernels live with the OCR kernels (ocr_kernels/ocr/triton_kernel.py and csrc_ops.py).
A fast entry is registered only when its module defines the function. That is decided from the
module's source, without importing it: importing would import triton or build the C++ extension
when the package is imported, and the OCR backends import their modules only when chosen.
"""
from __future__ import annotations

import importlib.util
import re
from typing import Callable, Dict

from .reference import seg_ocr_loss_maps_reference


def _defines(module: str, function: str) -> bool:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    if spec is None or spec.origin is None:
        return False
    if not spec.origin.endswith(".py"):  # a compiled module: trust it, the import will tell
        return True
    try:
        with open(spec.origin, encoding="utf-8") as f:
            source = f.read()
    except OSError:
        return False
    return re.search(rf"^(def|async def)\s+{function}\s*\(|^{function}\s*=", source, re.M) is not None


def _triton(*args):
    from ..ocr.triton_kernel import seg_ocr_loss_maps_triton

    return seg_ocr_loss_maps_triton(*args)


def _csrc(*args):
    from ..ocr.csrc_ops import seg_ocr_loss_maps_csrc

    return seg_ocr_loss_maps_csrc(*args)


SEG_OCR_IMPLS: Dict[str, Callable] = {"reference": seg_ocr_loss_maps_reference}
if _defines("ocr_kernels.ocr.triton_kernel", "seg_ocr_loss_maps_triton"):
    SEG_OCR_IMPLS["triton"] = _triton
if _defines("ocr_kernels.ocr.csrc_ops", "seg_ocr_loss_maps_csrc"):
    SEG_OCR_IMPLS["cpu"] = _csrc
    SEG_OCR_IMPLS["cuda"] = _csrc
