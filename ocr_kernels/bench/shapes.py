"""The shapes each op is measured at: presets "full" (GPU), "gpu" (the GPU runner's one call),
"quick" (CPU default), "tiny" (tests).

OCR and seg shapes are logits [B, C+1, H, W] (docs/semantics.md §3); W-OoD shapes are
(B, D, C, K); K-means shapes are (N, D, k). The first shapes of each preset come first in the run,
so a time budget drops the later ones.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

Shape = Tuple[int, ...]

OPS = ("ocr_loss", "seg_ocr_loss", "wood_distance_loss", "kmeans")

_OCR_FULL = [
    (16, 21, 321, 321),  # VOC at label size: the target shapes first
    (16, 81, 321, 321),  # COCO at label size
    (16, 21, 41, 41),  # DeepLab output stride 8
    (8, 21, 56, 56),  # SEAM / AffinityNet
    (16, 81, 41, 41),
    (8, 151, 128, 128),  # ADE20K-like many classes
]
_OCR_QUICK = [(8, 21, 128, 128), (2, 81, 128, 128)]  # the CPU targets of the csrc issue

PRESETS: Dict[str, Dict[str, List[Shape]]] = {
    "full": {
        "ocr_loss": _OCR_FULL,
        "seg_ocr_loss": _OCR_FULL[:3],
        "wood_distance_loss": [(16, 2048, 20, 50), (64, 2048, 80, 100)],
        "kmeans": [(100_000, 2048, 50)],
    },
    "quick": {
        "ocr_loss": _OCR_QUICK,
        "seg_ocr_loss": _OCR_QUICK[:1],
        "wood_distance_loss": [(16, 2048, 20, 50)],
        "kmeans": [(8192, 128, 50)],
    },
    # benchmarks/gpu/run.sh's one call: the target shapes first, then W-OoD and K-means
    "gpu": {
        "ocr_loss": _OCR_FULL[:2],
        "seg_ocr_loss": _OCR_FULL[:2],
        "wood_distance_loss": [(16, 2048, 20, 50)],
        "kmeans": [(100_000, 2048, 50)],
    },
    "tiny": {
        "ocr_loss": [(2, 5, 8, 8)],
        "seg_ocr_loss": [(2, 5, 8, 8)],
        "wood_distance_loss": [(4, 16, 3, 5)],
        "kmeans": [(64, 8, 4)],
    },
}

# torch.compile(mode="max-autotune-no-cudagraphs") tunes for minutes per graph: only the shapes the
# Triton issue sets its targets at get it.
MAX_AUTOTUNE_SHAPES = {(16, 21, 321, 321), (16, 81, 321, 321)}

_RANKS = {"ocr_loss": (3, 4, 5), "seg_ocr_loss": (3, 4, 5), "wood_distance_loss": (4,), "kmeans": (3,)}


def parse_shape(text: str) -> Shape:
    try:
        shape = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"a shape is written like 8x21x128x128; got {text!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"a shape needs positive sizes; got {text!r}")
    return shape


def shapes_for(spec: str, ops: Sequence[str]) -> Dict[str, List[Shape]]:
    """--shapes: a preset name, or op:AxBx... items separated by commas (op names as in OPS)."""
    if spec in PRESETS:
        return {op: list(PRESETS[spec][op]) for op in ops}
    out: Dict[str, List[Shape]] = {op: [] for op in ops}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        op, sep, text = item.partition(":")
        if not sep or op not in OPS:
            raise ValueError(
                f"--shapes takes a preset {sorted(PRESETS)} or items op:AxBx... with op in {list(OPS)}; "
                f"got {item!r}"
            )
        shape = parse_shape(text)
        if len(shape) not in _RANKS[op]:
            raise ValueError(f"{op} shapes have {_RANKS[op]} sizes; got {item!r}")
        if op in out:
            out[op].append(shape)
    return out


def shape_str(shape: Shape) -> str:
    return "x".join(str(s) for s in shape)
