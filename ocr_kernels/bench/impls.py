"""What runs for each op: the anchors a user would otherwise pick, and each of our backends.

An implementation is a function of one input set (a dict from inputs.py) that returns the loss
(or, for K-means, the centroids). Anchors: "eager" (the pure-PyTorch reference; for W-OoD the
official per-centroid loop, labelled "official", also run on one thread as "official@1t"),
"compile" (torch.compile of the reference, static shapes), on a GPU at the target shapes
"compile-max" (mode "max-autotune-no-cudagraphs") and, for K-means on a CPU, "faiss" (faiss-cpu's
Kmeans with the same first-k init and iterations, when faiss is installed). Backends: ours, through
the public entry point with backend=name. When a backend cannot run here, the implementation
carries the reason instead of a function and is reported as skipped.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from .._dispatch import unavailable_reason
from .._triton import interpreting
from .inputs import Scenario

FAST_BACKENDS = ("triton", "cuda", "cpu")
ANCHORS = ("eager", "compile", "compile-max", "faiss")
SEG_IGNORE_INDEX = 255


@dataclass
class Impl:
    label: str  # column "backend" of the table
    role: str  # "eager" / "compile" (the speed-up denominators), "compile-max", "backend"
    fn: Optional[Callable[[dict], torch.Tensor]]
    reason: Optional[str] = None  # why it is skipped (fn is None)


# --- anchors -------------------------------------------------------------------------------------

def ocr_reference_mean(logits, tags, prior, pixels):
    from .._options import OCROptions
    from ..ocr.reference import ocr_loss_map_reference

    return ocr_loss_map_reference(logits, tags, prior, OCROptions(pixels=pixels)).mean()


def eager_kmeans(x: torch.Tensor, k: int, iters: int = 10):
    """What a user writes in eager torch: first-k init, then cdist + argmin + scatter per step.
    An empty cluster keeps its centroid (torch.where, no host sync)."""
    c = x[:k].clone()
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(dim=1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype).unsqueeze(1)
        c = torch.where(counts > 0, sums / counts.clamp_min(1), c)
    return c


def faiss_kmeans(x: torch.Tensor, k: int, iters: int = 10) -> torch.Tensor:
    """faiss-cpu's Kmeans as a user would run it on all the points (no subsampling), from the
    same first-k centroids, on torch's thread count."""
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())
    xn = x.detach().cpu().numpy()
    km = faiss.Kmeans(x.shape[1], k, niter=iters, max_points_per_centroid=x.shape[0] + 1, seed=1)
    km.train(xn, init_centroids=xn[:k].copy())
    return torch.from_numpy(km.centroids)


def faiss_reason(device: torch.device) -> Optional[str]:
    if device.type != "cpu":
        return "a CPU anchor (faiss-cpu)"
    try:
        import faiss  # noqa: F401
    except ImportError as exc:
        return f"faiss is not installed (pip install faiss-cpu): {exc}"
    return None


def on_one_thread(fn: Callable) -> Callable:
    """fn run with torch on one thread (the thread count is restored after)."""
    def run(*args, **kwargs):
        prev = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(prev)
    return run


_COMPILED: Dict[tuple, Callable] = {}


def compiled(fn: Callable, mode: Optional[str] = None) -> Callable:
    """One torch.compile wrapper per (function, mode), static shapes; the recompile limit is
    raised so that many shapes and dtypes never fall back to eager silently."""
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 512))
    key = (fn, mode)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(fn, dynamic=False, mode=mode)
    return _COMPILED[key]


# --- backend availability --------------------------------------------------------------------------

def backend_reason(name: str, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Why backend `name` cannot be timed on tensors of this device and dtype (None: it can)."""
    if name == "triton" and device.type == "cpu" and interpreting():
        return "TRITON_INTERPRET=1 runs Triton kernels in numpy: its timings mean nothing"
    probe = torch.empty(0, dtype=dtype, device=device)
    return unavailable_reason(name, probe)


def _anchor_filter(device: torch.device, shape, wanted: Sequence[str]):
    """The reason each anchor in `wanted` is not built here (only compile-max has one)."""
    out = {}
    if "compile-max" in wanted:
        if device.type != "cuda":
            out["compile-max"] = "GPU only (max-autotune tunes Triton kernels)"
        elif tuple(shape) not in _max_autotune_shapes():
            out["compile-max"] = "only at the target shapes (tuning takes minutes per graph)"
    return out


def _max_autotune_shapes():
    from .shapes import MAX_AUTOTUNE_SHAPES

    return MAX_AUTOTUNE_SHAPES


def _backend_impls(op, backends, device, dtype, make_fn, label_prefix="") -> List[Impl]:
    out = []
    for b in backends:
        if b in ANCHORS:
            continue
        reason = backend_reason(b, device, dtype)
        label = f"{label_prefix}{b}"
        out.append(Impl(label, "backend", None if reason else make_fn(b), reason))
    return out


# --- per op ----------------------------------------------------------------------------------------

def ocr_impls(device, dtype, shape, scenario: Scenario, wanted: Sequence[str]) -> List[Impl]:
    from .. import ocr_loss

    pix = scenario.pixels
    skip = _anchor_filter(device, shape, wanted)
    impls = []
    if "eager" in wanted:
        impls.append(Impl("eager", "eager", lambda i: ocr_reference_mean(i["logits"], i["tags"], i["prior"], pix)))
    if "compile" in wanted:
        f = compiled(ocr_reference_mean)
        impls.append(Impl("compile", "compile", lambda i: f(i["logits"], i["tags"], i["prior"], pix)))

    def make(b):
        return lambda i: ocr_loss(i["logits"], i["tags"], i["prior"], pixels=pix, backend=b)

    impls.extend(_backend_impls("ocr_loss", wanted, device, dtype, make))
    # Last: its autotuning is the slowest warm-up, so a time budget cuts it first.
    if "compile-max" in wanted:
        if skip.get("compile-max"):
            impls.append(Impl("compile-max", "compile-max", None, skip["compile-max"]))
        else:
            fm = compiled(ocr_reference_mean, "max-autotune-no-cudagraphs")
            impls.append(Impl("compile-max", "compile-max", lambda i: fm(i["logits"], i["tags"], i["prior"], pix)))
    return impls


def seg_impls(device, dtype, shape, scenario: Scenario, wanted: Sequence[str]) -> List[Impl]:
    from .. import ocr_loss, seg_ocr_loss

    pix = scenario.pixels
    anchor = seg_reference
    impls = []
    if "eager" in wanted:
        impls.append(Impl("eager", "eager", lambda i: anchor(i["logits"], i["target"], i["tags"], i["prior"], pix)))
    if "compile" in wanted:
        f = compiled(anchor)
        impls.append(Impl("compile", "compile", lambda i: f(i["logits"], i["target"], i["tags"], i["prior"], pix)))

    def make_fused(b):
        return lambda i: seg_ocr_loss(i["logits"], i["target"], i["tags"], i["prior"], pixels=pix, backend=b)

    def make_separate(b):
        def separate(i):
            ce = F.cross_entropy(i["logits"], i["target"], ignore_index=SEG_IGNORE_INDEX)
            return ce + ocr_loss(i["logits"], i["tags"], i["prior"], pixels=pix, backend=b)
        return separate

    impls.extend(_backend_impls("seg_ocr_loss", wanted, device, dtype, make_fused, "fused:"))
    impls.extend(_backend_impls("seg_ocr_loss", wanted, device, dtype, make_separate, "separate:"))
    skip = _anchor_filter(device, shape, wanted)
    if "compile-max" in wanted:
        if skip.get("compile-max"):
            impls.append(Impl("compile-max", "compile-max", None, skip["compile-max"]))
        else:
            fm = compiled(anchor, "max-autotune-no-cudagraphs")
            impls.append(Impl("compile-max", "compile-max",
                              lambda i: fm(i["logits"], i["target"], i["tags"], i["prior"], pix)))
    return impls


def seg_reference(logits, target, tags, prior, pixels):
    """seg_ocr_loss_reference with positional pixels (one function object, so torch.compile wraps
    it once)."""
    from ..seg.reference import seg_ocr_loss_reference

    return seg_ocr_loss_reference(logits, target, tags, prior, pixels=pixels)


def wood_impls(device, dtype, shape, scenario, wanted: Sequence[str]) -> List[Impl]:
    from .. import wood_distance_loss
    from ..wood.official import official_wood_distance_loss
    from ..wood.reference import wood_distance_loss_reference

    topk = 0.2

    def args(i):
        return i["features"], i["labels"], i["class_centroids"], i["ood_centroids"], topk

    impls = []
    if "eager" in wanted:
        impls.append(Impl("official", "eager", lambda i: official_wood_distance_loss(*args(i))))
        one = on_one_thread(official_wood_distance_loss)
        impls.append(Impl("official@1t", "official-1t", lambda i: one(*args(i))))
    if "compile" in wanted:
        f = compiled(wood_distance_loss_reference)
        impls.append(Impl("compile", "compile", lambda i: f(*args(i))))
    if "compile-max" in wanted and device.type == "cuda":
        impls.append(Impl("compile-max", "compile-max", None, "not asked for W-OoD (latency-bound)"))

    def make(b):
        return lambda i: wood_distance_loss(i["features"], i["labels"], i["class_centroids"],
                                            i["ood_centroids"], topk=topk, backend=b)

    impls.extend(_backend_impls("wood_distance_loss", wanted, device, dtype, make))
    return impls


def kmeans_impls(device, dtype, shape, scenario, wanted: Sequence[str]) -> List[Impl]:
    from .. import kmeans

    impls = []
    if "eager" in wanted:
        impls.append(Impl("eager", "eager", lambda i: eager_kmeans(i["x"], i["k"], 10)))
    if "faiss" in wanted:
        why = faiss_reason(device)
        impls.append(Impl("faiss", "faiss", None if why else (lambda i: faiss_kmeans(i["x"], i["k"], 10)), why))

    def make(b):
        return lambda i: kmeans(i["x"], i["k"], iters=10, backend=b)[0]

    impls.extend(_backend_impls("kmeans", wanted, device, dtype, make))
    return impls


IMPLS_BY_OP = {
    "ocr_loss": ocr_impls,
    "seg_ocr_loss": seg_impls,
    "wood_distance_loss": wood_impls,
    "kmeans": kmeans_impls,
}
