"""The measured cases and the bytes each must move (the numerator of GB/s and of the floor).

A workload is one op at one shape, dtype and scenario; each of its passes ("fwd", "fwd+bwd")
is timed for every implementation of impls.py. The bytes are the fewest any implementation must
move through memory -- each input read once, each output written once:
- ocr_loss: fwd reads the logits; fwd+bwd also writes the gradient (one read of the logits plus
  one write of the gradient, as the Triton issue counts it). Tags, prior and the scalar loss are
  negligible and left out.
- seg_ocr_loss: as ocr_loss, plus one read of the integer target.
- wood_distance_loss: fwd reads features, labels and the C + K centroids; fwd+bwd also writes the
  features' gradient.
- kmeans (10 iterations): one read of the points per iteration, plus writing the assignments.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch

from . import inputs as inp
from .impls import IMPLS_BY_OP, Impl
from .shapes import Shape

KMEANS_ITERS = 10
PASSES = {"ocr_loss": ("fwd", "fwd+bwd"), "seg_ocr_loss": ("fwd", "fwd+bwd"),
          "wood_distance_loss": ("fwd", "fwd+bwd"), "kmeans": ("fwd",)}
LEAF = {"ocr_loss": "logits", "seg_ocr_loss": "logits", "wood_distance_loss": "features", "kmeans": None}
# W-OoD and K-means run on fp32 features only (no low-precision path is asked for).
FP32_ONLY = {"wood_distance_loss", "kmeans"}

_ITEMSIZE = {torch.float64: 8, torch.float32: 4, torch.float16: 2, torch.bfloat16: 2}


def prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def bytes_moved(op: str, shape: Shape, dtype: torch.dtype, pass_: str) -> int:
    e = _ITEMSIZE[dtype]
    bwd = pass_ == "fwd+bwd"
    if op == "ocr_loss":
        return prod(shape) * e * (2 if bwd else 1)
    if op == "seg_ocr_loss":
        target = prod(shape[:1] + tuple(shape[2:])) * 8  # int64 pseudo-mask
        return prod(shape) * e * (2 if bwd else 1) + target
    if op == "wood_distance_loss":
        B, D, C, K = shape
        return (B * D + (C + K) * D) * e + B * C * 4 + (B * D * e if bwd else 0)
    if op == "kmeans":
        N, D, k = shape
        return KMEANS_ITERS * N * D * e + N * 8
    raise ValueError(f"unknown op {op!r}")


@dataclass
class Workload:
    op: str
    shape: Shape
    dtype: torch.dtype
    scenario: Optional[inp.Scenario]  # OCR and seg only
    impls: List[Impl] = field(default_factory=list)

    @property
    def scenario_name(self) -> str:
        return self.scenario.name if self.scenario is not None else "-"

    def make_inputs(self, device, generator: torch.Generator) -> tuple:
        """(input dict, metadata dict) for one fresh input set."""
        if self.op in ("ocr_loss", "seg_ocr_loss"):
            d, frac = inp.ocr_inputs(self.shape, self.dtype, device, self.scenario, generator)
            if self.op == "seg_ocr_loss":
                d["target"] = inp.seg_target(d["logits"], d["tags"], generator)
            return d, {"oc_fraction": round(frac, 4)}
        if self.op == "wood_distance_loss":
            return inp.wood_inputs(self.shape, self.dtype, device, generator), {}
        return inp.kmeans_inputs(self.shape, self.dtype, device, generator), {}

    def input_bytes(self) -> int:
        return bytes_moved(self.op, self.shape, self.dtype, "fwd")


def pass_fn(op: str, pass_: str, impl_fn):
    """The function of one input set that runs one pass of one implementation."""
    leaf = LEAF[op]
    if pass_ == "fwd":
        if leaf is None:
            def run(i):
                with torch.no_grad():
                    impl_fn(i)
            return run
        return impl_fn  # the forward of a training step: inputs require grad, the graph is kept

    def run_bwd(i):
        i[leaf].grad = None
        impl_fn(i).backward()

    return run_bwd


def workloads(device: torch.device, shapes: Dict[str, List[Shape]], dtypes: Sequence[torch.dtype],
              wanted: Sequence[str], oc_fraction: float, defer_max: bool = True) -> List[Workload]:
    """Every workload, in priority order: each op's first shape before any op's second shape.

    defer_max=False (the GPU preset) keeps compile-max in its workload, after the other
    implementations, and only in the first (realistic) scenario at the first dtype: the target
    shapes then get their max-autotune anchor before the time budget runs out, at the cost of
    fewer tuned graphs."""
    out = []
    depth = max((len(v) for v in shapes.values()), default=0)
    for level in range(depth):
        for op, op_shapes in shapes.items():
            if level >= len(op_shapes):
                continue
            shape = op_shapes[level]
            op_dtypes = [torch.float32] if op in FP32_ONLY else list(dtypes)
            scen = inp.scenarios(oc_fraction) if op in ("ocr_loss", "seg_ocr_loss") else (None,)
            for dtype in op_dtypes:
                for sc in scen:
                    w = Workload(op, tuple(shape), dtype, sc)
                    w.impls = IMPLS_BY_OP[op](device, dtype, shape, sc, wanted)
                    out.append(w)
    if not defer_max:
        # The GPU runner's order: every OCR/seg case before W-OoD and K-means; within them the
        # first dtype, then the scenarios in order (realistic first), then op and shape. The
        # fast backends run first in each workload, then the anchors; compile-max (minutes of
        # tuning per graph) only for ocr_loss in the realistic scenario at the first dtype, and
        # no torch.compile anchor in the all-pixels scenario (its graph differs: another compile).
        scen = inp.scenarios(oc_fraction)
        first_dtype = (list(dtypes) or [torch.float32])[0]
        order = {r: k for k, r in enumerate(("backend", "eager", "compile", "compile-max"))}
        for w in out:
            realistic = w.scenario is None or w.scenario == scen[0]
            drop = set()
            if not (w.op == "ocr_loss" and realistic and w.dtype == first_dtype):
                drop.add("compile-max")
            if w.scenario is not None and w.scenario.pixels == "all":
                drop.add("compile")
            w.impls = sorted([i for i in w.impls if i.role not in drop], key=lambda i: order.get(i.role, 0))
        ops = list(shapes)
        return sorted(out, key=lambda w: (w.op in FP32_ONLY, list(dtypes).index(w.dtype) if w.dtype in dtypes else 0,
                                          scen.index(w.scenario) if w.scenario in scen else 0,
                                          ops.index(w.op), shapes[w.op].index(w.shape)))
    # max-autotune spends minutes tuning each graph: its cases run after everything else, so a
    # time budget drops them rather than the backends at later shapes.
    deferred = []
    for w in out:
        slow = [i for i in w.impls if i.role == "compile-max" and i.fn is not None]
        if slow:
            w.impls = [i for i in w.impls if i not in slow]
            deferred.append(Workload(w.op, w.shape, w.dtype, w.scenario, slow))
    return out + deferred
