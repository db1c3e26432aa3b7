"""``python -m ocr_kernels bench --static``: a static sm_90 performance model, no GPU needed.

Every Triton kernel is compiled for an sm_90 target through its REAL launcher (ocr/triton_kernel.py
``_forward``/``_backward``, wood/triton_kernel.py ``_distances``/``_weighted_diff``/
``assign_triton``) called on meta tensors of the case's shape: a stand-in Triton driver answers
"cuda, capability 9.0" and JITFunction.run compiles (warm-up) instead of launching, so the model
sees the grid, num_warps and constexprs (block sizes, chunking, flat/int64 paths) that would run.
Every kernel of csrc/cuda/*.cu is compiled by nvcc for sm_90 (-Xptxas -v).

Per kernel and case it reports the launch, registers, spills, shared memory, the SASS
instructions and MUFU ops EXECUTED per logit (sass.py: loop-aware, trip counts from the case),
the bytes moved and a predicted time on H200 and H100 (gpu_model.py), as % of the copy floor.
All times are PREDICTIONS of a model; the timed bench measures.

Trip counts: each SASS loop is mapped to the Python ``for`` whose body holds the source lines of
most of its instructions (nvdisasm -gi gives each instruction's line and inlining call sites),
and that loop's ``range(...)`` is evaluated with the launch's arguments (the kernel's scalar
arguments and constexprs by name, plus the simple assignments of the enclosing function).
A loop that cannot be mapped is counted once and flagged in the record's ``notes``. A loop
nested in another maps to another source loop than its parents (a helper's loop carries the
call site's line too). The Triton OCR kernels' persistent tile loop, ``range(pid, tiles, nprog)``,
runs its mean over the programs, tiles / nprog (as the CUDA grid-stride
loops: _cpp_trips); the uneven tail (some programs run one tile more) is not modelled.

Bytes (DRAM, each byte once; small operands such as tags, prior and centroids hit L2):
- OCR/seg forward: the logits, the fp32 loss map (seg: also the CE map and the int64 target).
- OCR backward: the loss map (CUDA; the Triton kernel recomputes s) and its gradient (fp32;
  both backends read the gradient only in the sectors of pixels with a loss), the logits of the 32-byte sectors that hold a pixel with a
  gradient (the scenario decides: blobs, independent draw, every pixel) and the full gradient
  write. seg backward: the CE gradient reaches every non-ignored pixel, so its
  logits are read in full, plus the target and the CE map's gradient.
- CUDA OCR (not seg): the forward writes a mask of a bit a pixel (the loss is not 0) beside the
  loss map; the backward reads it in full and the loss map only in the sectors of pixels with a
  loss (seg: the loss map in full).
- seg_ocr_loss (a training step, seg/objective.py): the forward's one kernel reads the logits
  and the int64 target and writes the gradient and the two fp32 maps (its gradient pass re-reads
  the tile's rows: taken as cache hits, as the backward kernels' passes are; the working set is
  the resident tiles, about 28 MB across an H200 at C+1 = 21 and 110 MB at 81, against 50 MB of
  L2: at 81 part of it may come from DRAM); the backward is the in-place scale, whose programs
  load g (1 in the bench's step) and return: its loop weighs 0. The reduction's torch ops (the
  target's non-ignored count, the two map sums) are in neither op's rows, as for ocr_loss.
- Triton OCR: the forward writes a flag bit a pixel (the loss is not 0) in full and the
  saved OC statistics at the pixels with a loss (OCR: 4 bytes a pixel, the scenario's sectors
  of an fp32 map) or at every pixel (seg: 8 bytes); the backward reads the flags in full and
  the upstream gradient and the statistics in those sectors only (partial-sector writes are
  counted as whole sectors), not the loss map (it recomputes s). Program-uniform branches (a tile without an active pixel) weigh
  each side by the share of programs taking it in the case's scenario (sass.py); the per-image IC
  count the kernels load from their class lists is the mean of the case's tag draw.
- Fused upsampling (``--static-cases resize``): each backend's fused kernels against F.interpolate
  (its traffic at the copy bandwidth, a lower bound on its time) + the same backend's loss at full
  resolution: Triton in _unfused_rows / _resize_kernel_bytes, CUDA (csrc/cuda/ocr_resize_kernel.cu)
  in model_resized_case, whose docstring gives its bytes and floor. The CUDA backward's rows
  take one of three paths by their count of slots holding a pixel with a gradient (skip,
  compacted, slots' path): _compact_rows weighs each by its share of the scenario's output rows
  (mask at the output size; seg: every pixel), the compacted path's busy and idle warps by their
  share (every warp takes its (column, class) items of the combines).
- CUDA OCR/seg kernels (analyse_cuda_ocr): the fast-path instantiation (NCHW), its grid as the
  launcher sizes it (one wave of resident blocks, a column per image); class loops run the
  per-image list lengths (nic from the case's tag draw, noc = C+1 - nic), a block's tile loop
  per_image / gridDim.x times. Backward: per 128-pixel warp of the scenario's mask, k pixels with
  a gradient; the warps with k <= 32·kCompactRounds (zeros, then ceil(k / 32) compacted rounds of
  one pixel a lane: the rounds loop runs the mean over warps) and the others (4 pixels a lane)
  weigh each side of the warp-uniform branch by their share. A one-pixel IC loop the compiler
  interleaves by 4 is counted with its remainder over the per-image IC counts of the tag draw
  (_cpp_trips); a pixel's maps re-read in its compacted round hit the cache. Forward (OCR): the
  shifted mask stores of an image's last tile (store_mask_shifted, when N is not a multiple of
  32) weigh one tile in per_image.
- Upstream gradients of the maps (both backends alike): as the bench's fwd+bwd delivers them.
  Its ocr_loss and seg_ocr_loss reduce with map.sum() / N (reduction "mean", no ce_weight), so
  autograd hands the backward op the stride-0 expand of a scalar, which both backends read
  through its strides: one sector for the whole grid, counted as 0 bytes (upstream_grad,
  _grad_bytes; the Triton backward is captured with that expanded gradient, so its code and
  strides are the real ones). A reduction "none" followed by a weighting would deliver a dense
  gradient: 4 bytes a pixel where it is read. (The fused-upsampling rows, _resize_kernel_bytes,
  still count a dense gradient.)
The floor is the bench's (cases.bytes_moved): fwd = one read of the logits, fwd+bwd = one read
plus one write (seg: plus the target); "bwd" rows use the gradient write alone.
"""
from __future__ import annotations

import argparse
import ast
import datetime as _dt
import functools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from . import gpu_model, sass
from .cases import bytes_moved
from .inputs import DEFAULT_OC_FRACTION, blob_mask, dataset_prior, seg_target, voc_like_tags
from .shapes import PRESETS, shape_str

TARGET_ARCH = 90
OCR_SHAPES = [(16, 21, 321, 321), (16, 81, 321, 321), (8, 201, 128, 128), (2, 1030, 128, 128)]
# fused upsampling: DeepLab's 1/8 logits of a 321 crop, upsampled to the labels
RESIZE_SHAPES = [(16, 81, 41, 41), (16, 21, 41, 41)]
RESIZE_SIZE = (321, 321)
GROUPS = ("ada", "max", "all")
SCENARIOS = ("blobs", "indep", "all-pixels")  # the layouts of the bench's OCR scenarios (inputs.py)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_ITEMSIZE = {"fp32": 4, "bf16": 2}
_ASM_DIR: Optional[str] = None  # set by --static-asm


@dataclass(frozen=True)
class Case:
    op: str  # ocr_loss, seg_ocr_loss, wood_distance_loss, kmeans
    shape: Tuple[int, ...]
    dtype: str = "fp32"
    group: Optional[str] = None
    scenario: Optional[str] = None
    size: Optional[Tuple[int, int]] = None  # fused upsampling of the logits [B, C+1, h, w] to size

    @property
    def name(self) -> str:
        shape = shape_str(self.shape) + (f"->{self.size[0]}x{self.size[1]}" if self.size else "")
        parts = [self.op, shape, self.dtype]
        if self.group:
            parts.append(self.group)
        if self.scenario:
            parts.append(self.scenario)
        return " ".join(parts)

    @property
    def pixels(self) -> str:
        return "all" if self.scenario == "all-pixels" else "oc"

    @property
    def output(self) -> "Case":
        """The case at the loss's resolution: itself, or (B, C+1, H, W) without the resize."""
        if self.size is None:
            return self
        return Case(self.op, tuple(self.shape[:2]) + tuple(self.size), self.dtype, self.group,
                    self.scenario)


def all_cases(preset: str = "full") -> List[Case]:
    """The model's cases: the Triton issue's target shapes first, then many classes (C+1 = 201
    and 1030), then W-OoD and K-means at their bench shapes."""
    if preset == "smoke":  # the CI test's: 21 classes in blobs and 300 classes, every pixel
        return [Case("ocr_loss", (2, 21, 64, 64), "fp32", "ada", "blobs"),
                Case("ocr_loss", (1, 300, 16, 16), "bf16", "max", "all-pixels")]
    if preset == "resize":  # the fused upsampling (CUDA) against interpolate + the CUDA loss
        return [Case(op, shape, "fp32", "ada", "blobs", size=RESIZE_SIZE)
                for shape in RESIZE_SHAPES for op in ("seg_ocr_loss", "ocr_loss")]
    if preset == "gpu":  # what benchmarks/gpu/run.sh times beside: the target shapes, "ada"
        return [Case(op, shape, dt, "ada", sc) for shape in OCR_SHAPES[:2]
                for op in ("ocr_loss", "seg_ocr_loss") for dt in DTYPES for sc in SCENARIOS]
    out = []
    for shape in OCR_SHAPES:
        # many classes (C+1 = 201, 1030) for the OCR loss alone: the seg kernels
        # are the same code with the CE terms added
        for op in ("ocr_loss", "seg_ocr_loss") if shape[1] <= 81 else ("ocr_loss",):
            for dt in DTYPES:
                for g in GROUPS:
                    for sc in SCENARIOS:
                        out.append(Case(op, shape, dt, g, sc))
    if preset == "full":
        for shape in PRESETS["full"]["wood_distance_loss"]:
            out.append(Case("wood_distance_loss", tuple(shape)))
        for shape in PRESETS["full"]["kmeans"]:
            out.append(Case("kmeans", tuple(shape)))
    return out


# ------------------------------------------------------------------------------------------
# Compiling through the real launchers
# ------------------------------------------------------------------------------------------
class _Sm90Driver:
    """Answers the few questions JITFunction.run asks of the active driver, for a GPU that is
    not there: device 0, stream 0, target cuda/90."""

    def __init__(self):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", TARGET_ARCH, 32)
        # a launcher that sizes a persistent grid asks for the SM count: the modelled H200's
        self.utils = type("Utils", (), {"get_device_properties": staticmethod(
            lambda device: {"multiprocessor_count": gpu_model.GPUS["H200"].sms})})()

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target

    def get_active_torch_device(self):
        return torch.device("meta")


@dataclass
class Captured:
    fn: object  # the JITFunction
    kernel: object  # the CompiledKernel
    grid: Tuple[int, ...]
    args: Dict[str, object]  # every argument by name (tensors included)


class capture_launches:
    """Within the block every Triton launch compiles for sm_90 and is recorded, not run."""

    def __enter__(self):
        if os.environ.get("TRITON_INTERPRET", "0") == "1":
            raise RuntimeError("the static model compiles real Triton kernels: run it without "
                               "TRITON_INTERPRET=1 (bench --static re-runs itself without it)")
        from triton.runtime import driver
        from triton.runtime.jit import JITFunction

        self.records: List[Captured] = []
        self._driver, self._jit = driver, JITFunction
        self._orig = JITFunction.run
        self._prev = driver._active  # None until a real driver was asked for (none here)
        driver.set_active(_Sm90Driver())
        records, orig = self.records, self._orig

        def run(fn, *args, grid, warmup, **kwargs):
            k = orig(fn, *args, grid=grid, warmup=True, **kwargs)
            bound = dict(zip(fn.arg_names, args))
            bound.update({k2: v for k2, v in kwargs.items() if k2 in fn.arg_names})
            g = grid(bound) if callable(grid) else grid
            g = tuple(g) + (1,) * (3 - len(g))
            records.append(Captured(fn, k, g, bound))
            return k

        JITFunction.run = run
        return self

    def __exit__(self, *exc):
        self._jit.run = self._orig
        self._driver._active = self._prev
        return False


def _meta(shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")


def upstream_grad(case: Case) -> torch.Tensor:
    """The upstream gradient of a per-pixel map [B, *spatial] as the bench's fwd+bwd hands it to
    the backward op: ocr_loss and seg_ocr_loss reduce their maps with map.sum() / N (ocr/api.py
    mean_or_zero, seg/api.py reduce_seg_maps; the bench passes no ce_weight), so autograd's
    SumBackward delivers the stride-0 expand of a scalar (tests/bench/test_static_model.py
    checks it on a real autograd run)."""
    out = case.output
    return _meta(()).expand((out.shape[0],) + tuple(out.shape[2:]))


def _grad_bytes(grad: torch.Tensor) -> float:
    """DRAM bytes a pixel of an upstream gradient costs: its element size, or 0 for a stride-0
    expand, which both backends read through its strides (csrc/ops.cpp, csrc/ocr_host.h; the
    Triton launcher's per-pixel strides): one sector for the whole grid, a cache hit after the
    first load."""
    return 0.0 if all(st == 0 for st in grad.stride()) else float(grad.element_size())


def launch_case(case: Case) -> Dict[str, List[Captured]]:
    """{"fwd": [...], "bwd": [...]}: the launches of each pass of the case (must run inside
    capture_launches)."""
    out = {}
    with capture_launches() as cap:
        if case.op in ("ocr_loss", "seg_ocr_loss") and case.size is not None:
            from ..ocr import triton_resize as tr

            B, C1 = case.shape[:2]
            z = _meta(case.shape, DTYPES[case.dtype])
            g = torch.Generator().manual_seed(0)
            tags = voc_like_tags(B, C1 - 1, g)
            prior = dataset_prior(C1 - 1, g) if case.group == "ada" else None
            seg = case.op == "seg_ocr_loss"
            tgt = _meta((B,) + tuple(case.size), torch.int64) if seg else None
            loss, _, stats, classes = tr._forward(z, tgt, tags, prior, case.size, False, 1.0, 0.5,
                                                  case.group, case.pixels, 255)
            out["fwd"], cap.records[:] = list(cap.records), []
            gmap = _meta((B,) + tuple(case.size))
            tr._backward(gmap, gmap if seg else None, z, tgt, prior, loss, stats, classes, False,
                         0.5, case.group, 255)
            out["bwd"] = list(cap.records)
        elif case.op in ("ocr_loss", "seg_ocr_loss"):
            from ..ocr import triton_kernel as tk

            B, C1 = case.shape[:2]
            spatial = case.shape[2:]
            z = _meta(case.shape, DTYPES[case.dtype])
            # the tags and prior are real (the bench's VOC-like draw): a launcher may derive
            # per-image data from them (class lists, counts) that bounds the kernels' loops
            g = torch.Generator().manual_seed(0)
            tags = voc_like_tags(B, C1 - 1, g)
            prior = dataset_prior(C1 - 1, g) if case.group == "ada" else None
            if case.op == "seg_ocr_loss":
                # a training step's seg_ocr_loss (seg/objective.py): the forward writes the
                # gradient, the backward's scale returns at once (the bench's upstream gradient
                # is 1)
                tgt = _meta((B,) + spatial, torch.int64)
                _, _, dz = tk._objective(z, tgt, tags, prior, None, _meta((2,)), 1.0, 0.5,
                                         case.group, case.pixels, 255)
                out["fwd"], cap.records[:] = list(cap.records), []
                tk._scale(dz, _meta(()))
                out["bwd"] = list(cap.records)
                return out
            _, _, stats, flags, classes = tk._forward(z, None, tags, prior, 1.0, 0.5, case.group,
                                                      case.pixels, 255)
            out["fwd"], cap.records[:] = list(cap.records), []
            # the map's upstream gradient as autograd delivers it (upstream_grad), so the
            # backward compiles for its real strides
            tk._backward(upstream_grad(case), None, z, None, prior, stats, flags, classes, 1.0,
                         0.5, case.group, 255)
            out["bwd"] = list(cap.records)
        elif case.op == "wood_distance_loss":
            from ..wood import triton_kernel as tw

            B, D, C, K = case.shape
            x, cc, oc = _meta((B, D)), _meta((C, D)), _meta((K, D))
            d = tw._distances(x, cc, oc)
            w = _meta((B, C + K))
            thr, loss, y = _meta((1,)), _meta(()), _meta((B, C))
            tw._wood_terms_kernel[(1,)](d, y, thr, w, loss, B, C, K, 1.0 / (B * K), BLOCK=1024)
            out["fwd"], cap.records[:] = list(cap.records), []
            tw._weighted_diff(x, cc, oc, w, d, _meta(()))
            out["bwd"] = list(cap.records)
        elif case.op == "kmeans":
            from ..wood import triton_kernel as tw

            N, D, k = case.shape
            tw.assign_triton(_meta((N, D)), _meta((k, D)), _meta((D,)))
            out["fwd"] = list(cap.records)
        else:
            raise ValueError(f"unknown op {case.op!r}")
    return out


# ------------------------------------------------------------------------------------------
# Loop trip counts from the Python source
# ------------------------------------------------------------------------------------------
_RANGES = ("range", "static_range")  # range(...), tl.range(...); tl.static_range unrolls (no loop)


@functools.lru_cache(maxsize=None)
def _source_tree(path: str):
    """(every FunctionDef by name, [(for node, enclosing FunctionDef)] of its range loops)."""
    tree = ast.parse(Path(path).read_text())
    funcs = {fn.name: fn for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)}
    loops = []
    for fn in funcs.values():
        for node in ast.walk(fn):
            f = node.iter.func if isinstance(node, ast.For) and isinstance(node.iter, ast.Call) else None
            name = getattr(f, "id", None) or getattr(f, "attr", None)
            if name in _RANGES:
                loops.append((node, fn))
    return funcs, loops


def _eval(expr: ast.AST, ns: Dict[str, object]):
    return eval(compile(ast.Expression(expr), "<range>", "eval"), {"__builtins__": {}}, dict(ns))


def _loaded_mean(value: ast.AST, tensors: Dict[str, torch.Tensor]) -> Optional[float]:
    """``x = tl.load(p + ...)`` of a small host-known tensor argument p (per-image counts the
    launcher computed from the tags): the mean over the tensor, the average trip of a loop
    bounded by it."""
    if not (isinstance(value, ast.Call) and getattr(value.func, "attr", None) == "load" and value.args):
        return None
    for n in ast.walk(value.args[0]):
        t = tensors.get(getattr(n, "id", None))
        if t is not None and t.device.type != "meta" and t.numel():
            return float(t.double().mean())
    return None


class _Env:
    """Values of names inside the kernel and its inlined helpers, for evaluating loop bounds:
    the launch's scalar arguments and constexprs, simple local assignments, per-image counts
    loaded from host-known tensors, and helper parameters bound through the call site that the
    SASS line info names."""

    def __init__(self, funcs, kernel_name: str, args: Dict[str, object],
                 hints: Optional[Dict[str, object]] = None):
        self.funcs, self.kernel = funcs, kernel_name
        self.tensors = {k: v for k, v in args.items() if isinstance(v, torch.Tensor)}
        self.scalars = {k: (v.value if hasattr(v, "value") else v) for k, v in args.items()
                        if not isinstance(v, torch.Tensor)}
        # values of kernel-side names the launch cannot show (a count a captured launch would
        # have written): they win over the kernel's own assignment of the name, in the kernel and
        # in the helpers it inlines (a per-tile helper loads the count itself)
        self.hints = dict(hints or {})
        self.scalars.update(self.hints)

    def _locals(self, fn: ast.FunctionDef, ns: Dict[str, object]) -> Dict[str, object]:
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
                if name in ns:
                    continue
                v = _loaded_mean(node.value, self.tensors)
                try:
                    ns[name] = v if v is not None else _eval(node.value, ns)
                except Exception:
                    pass
        return ns

    def namespace(self, fn: ast.FunctionDef, lines: set, depth: int = 0) -> Dict[str, object]:
        if fn.name == self.kernel or depth > 6:
            return self._locals(fn, dict(self.scalars))
        ns: Dict[str, object] = {}
        for caller in self.funcs.values():  # the call site the instructions were inlined through
            for call in ast.walk(caller):
                if (isinstance(call, ast.Call) and getattr(call.func, "id", None) == fn.name
                        and call.lineno in lines):
                    outer = self.namespace(caller, lines, depth + 1)
                    params = [a.arg for a in fn.args.args]
                    for p, a in zip(params, call.args):
                        try:
                            ns[p] = _eval(a, outer)
                        except Exception:
                            pass
                    for kw in call.keywords:
                        try:
                            ns[kw.arg] = _eval(kw.value, outer)
                        except Exception:
                            pass
                    for p in params:  # same-named arguments flow through unchanged
                        if p not in ns and p in outer:
                            ns[p] = outer[p]
                    for k, v in self.hints.items():
                        ns.setdefault(k, v)
                    return self._locals(fn, ns)
        return self._locals(fn, {k: v for k, v in self.scalars.items()})


def resolve_trips(code: sass.Sass, source_file: str, kernel_name: str, args: Dict[str, object],
                  hints: Optional[Dict[str, object]] = None) -> List[str]:
    """Sets each loop's trips from its source loop; returns notes for loops it could not map."""
    notes = []
    funcs, loops = _source_tree(source_file)
    # Triton caches compiled kernels by source, so the line info may name another checkout of
    # the same file: compare paths from the package folder down.
    parts = Path(source_file).parts
    suffix = os.path.join(*parts[-3:]) if len(parts) >= 3 else source_file
    env = _Env(funcs, kernel_name, args, hints)
    # names of program ids that start a persistent (grid-stride) loop: its mean trips are counted
    grid_stride = set((hints or {}).get("grid_stride", ()))
    mapped: Dict[int, object] = {}
    # outer loops first: a loop nested in another maps to another source loop than its parents
    # (the instructions of a loop inside a helper carry the call site's line too, inside the
    # parent's source loop), as _cpp_trips does
    for lp in sorted(code.loops, key=lambda o: (o.start, -o.end)):
        lines = sass.loop_lines(code, lp)
        here = [{n for f, n in ls if f.endswith(suffix)} for ls in lines]
        taken = {mapped[id(o)] for o in code.loops
                 if o is not lp and o.contains(lp.start) and o.contains(lp.end) and id(o) in mapped}
        best, best_key = None, None
        for node, fn_node in loops:
            if id(node) in taken:
                continue
            # from the ``for`` line itself: a nested loop's counter and test belong to it, so
            # the inner SASS loop maps to the inner source loop (its span is the smaller)
            lo, hi = node.lineno, node.end_lineno
            score = sum(1 for ls in here if any(lo <= n <= hi for n in ls))
            key = (score, -(hi - lo))
            if score and (best_key is None or key > best_key):
                best, best_key = (node, fn_node), key
        if best is None:
            notes.append(f"SASS loop at {lp.start:#x}-{lp.end:#x} matched no source loop: counted once")
            continue
        node, fn_node = best
        mapped[id(lp)] = id(node)
        all_lines = set().union(*here) if here else set()
        try:
            ns = env.namespace(fn_node, all_lines)
            vals = [_eval(a, ns) for a in node.iter.args]
            start, stop, step = (0, vals[0], 1) if len(vals) == 1 else (vals + [1])[:3]
            first = node.iter.args[0] if len(node.iter.args) == 3 else None
            if isinstance(first, ast.Name) and first.id in grid_stride:
                # range(pid, stop, nprog) over the programs pid = 0..nprog-1 visits each of
                # [0, stop) once: stop / nprog trips per program on average (the CUDA
                # grid-stride loops' per_cta count likewise)
                lp.trips = float(max(0, stop)) / step
            else:
                lp.trips = float(max(0.0, math.ceil((stop - start) / step) if all(isinstance(v, int) for v in vals)
                                     else (stop - start) / step))
            lp.source = f"{fn_node.name}:{node.lineno} {ast.unparse(node.iter)} = {lp.trips:.4g}"
        except Exception as exc:
            notes.append(f"loop {fn_node.name}:{node.lineno} {ast.unparse(node.iter)}: trips not "
                         f"evaluated ({type(exc).__name__}: {exc}); counted once")
    # a source loop the compiler split in two (versioned, peeled) is counted twice: say so
    sources = [lp.source for lp in code.loops if lp.source]
    for src in sorted({x for x in sources if sources.count(x) > 1}):
        notes.append(f"{sources.count(src)} SASS loops map to {src} (same call site): each counted at "
                     f"the full trips, an upper bound")
    return notes


# ------------------------------------------------------------------------------------------
# Per-kernel analysis
# ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _cubin_facts(cubin: bytes, name: str):
    res = sass.resource_usage(cubin).get(name, {})
    code = sass.disassemble(cubin, name)[name]
    return res, code


def _load_bytes_in_flight(code: sass.Sass) -> float:
    """Global-load bytes one thread issues in one region (a loop body or the straight-line code)
    before it waits: the largest such sum over the regions."""
    per: Dict[Optional[int], float] = {}
    for i in code.instrs:
        if i.base not in ("LDG", "LD"):
            continue
        inner = [lp for lp in code.loops if lp.contains(i.addr)]
        key = min(inner, key=lambda lp: lp.end - lp.start).start if inner else None
        per[key] = per.get(key, 0.0) + sass._access_bytes(i.opcode)
    return max(per.values(), default=0.0)


@functools.lru_cache(maxsize=None)
def _program_branches(path: str):
    """[(body lines, else lines, body_when_active)] of every ``if`` whose test reduces a per-pixel
    mask over the program (``tl.max(...)``): a whole program takes one side. body_when_active:
    the body runs in programs holding an active pixel (``!= 0`` / ``> 0``), else the else side."""
    out = []
    for node in ast.walk(ast.parse(Path(path).read_text())):
        test = ast.unparse(node.test) if isinstance(node, ast.If) else ""
        # (and _scale_kernel's test of the upstream gradient: its programs all take one side)
        if "tl.max(" in test or test == "g != 1.0":
            t = node.test
            active_body = not (isinstance(t, ast.Compare) and isinstance(t.ops[0], ast.Eq))
            body = (node.body[0].lineno, node.body[-1].end_lineno)
            orelse = (node.orelse[0].lineno, node.orelse[-1].end_lineno) if node.orelse else None
            out.append((body, orelse, active_body))
    return out


def _program_shares(code: sass.Sass, source_file: str, active: float) -> Dict[int, float]:
    """addr -> share of programs that run the instruction, for the sides of program-uniform
    branches (`active` = share of programs holding an active pixel)."""
    parts = Path(source_file).parts
    suffix = os.path.join(*parts[-3:]) if len(parts) >= 3 else source_file
    shares = {}
    for body, orelse, active_body in _program_branches(source_file):
        for rng, share in ((body, active if active_body else 1 - active),
                           (orelse, 1 - active if active_body else active)):
            if rng is None:
                continue
            for i in code.instrs:
                if any(f.endswith(suffix) and rng[0] <= n <= rng[1] for f, n in i.lines):
                    shares[i.addr] = shares.get(i.addr, 1.0) * share
    # instructions the line table leaves outside the branch (a masked load's zeroing) run with
    # their loop
    return _spread_to_loops(code, shares)


def _spread_to_loops(code: sass.Sass, shares: Dict[int, float]) -> Dict[int, float]:
    """An innermost loop most of whose instructions carry one share gives it to the rest of its
    body, which runs in the same call or branch (the line table drops the source line of some
    instructions: the "ada" prior's loads, a masked load's zeroing). Returns `shares`."""
    for lp in code.loops:
        if any(o is not lp and lp.contains(o.start) for o in code.loops):
            continue
        body = [i.addr for i in code.instrs if lp.contains(i.addr)]
        known = [shares[a] for a in body if a in shares]
        if known:
            share, n = max(((v, known.count(v)) for v in set(known)), key=lambda x: x[1])
            if 2 * n > len(body):
                for a in body:
                    shares.setdefault(a, share)
    return shares


def analyse_triton(cap: Captured, hints: Optional[Dict[str, object]] = None,
                   active_programs: float = 1.0) -> Dict[str, object]:
    """hints: values of kernel-side names the launch does not show; active_programs: share of
    programs that take the active side of program-uniform branches."""
    k = cap.kernel
    name = k.name
    res, code0 = _cubin_facts(k.asm["cubin"], name)
    code = sass.Sass(code0.instrs, [sass.Loop(lp.start, lp.end) for lp in code0.loops])
    src = os.path.realpath(sys.modules[cap.fn.fn.__module__].__file__)
    consts = {a: (v.value if hasattr(v, "value") else v) for a, v in cap.args.items()
              if a in [cap.fn.arg_names[i] for i in cap.fn.constexprs]}
    notes = resolve_trips(code, src, cap.fn.fn.__name__, {**cap.args, **consts}, hints)
    code.shares = _program_shares(code, src, active_programs)
    if code.shares:
        notes.append(f"program-uniform branches weighted: {active_programs:.3f} of the programs "
                     f"take the active side")
    summ = sass.summary(code)
    st, ld = sass.spill_bytes(code)
    warps = k.metadata.num_warps
    if _ASM_DIR is not None:  # the PTX beside the results, for checking by hand (ptxas -v)
        ptx = Path(_ASM_DIR) / f"{name}-{k.hash[:12]}.ptx"
        if not ptx.exists():
            ptx.parent.mkdir(parents=True, exist_ok=True)
            ptx.write_text(k.asm["ptx"])
    return {
        "kernel": f"triton:{name}", "kernel_hash": k.hash, "grid": list(cap.grid), "num_warps": warps,
        "constexprs": {a: v for a, v in consts.items() if isinstance(v, (int, float, bool, str))},
        "regs": res.get("REG"), "spills": st + ld, "spill_store_bytes": st, "spill_load_bytes": ld,
        "stack_bytes": res.get("STACK", 0),
        "smem_bytes": int(getattr(k.metadata, "shared", 0) or 0) + res.get("SHARED", 0),
        "sass": summ, "loops": [lp.source or "unmapped" for lp in code.loops],
        "load_bytes_in_flight_per_thread": _load_bytes_in_flight(code), "notes": notes,
        "hints": hints or {}, "active_programs": active_programs,
    }


def _sector_fraction(case: Case, itemsize: Optional[int] = None) -> float:
    """Fraction of the 32-byte sectors (along the contiguous spatial dim) of a per-pixel tensor
    with `itemsize`-byte elements (default: the logits') that hold a pixel with a gradient, in
    the case's scenario at its OC fraction."""
    if case.scenario == "all-pixels":
        return 1.0
    per = 32 // (itemsize or _ITEMSIZE[case.dtype])
    f = DEFAULT_OC_FRACTION
    if case.scenario == "indep":
        return 1.0 - (1.0 - f) ** per
    B, _, *sp = case.shape
    m = blob_mask((B, *sp), f, torch.Generator().manual_seed(0)).reshape(B, -1)
    n = m.shape[1] // per * per
    hit = m[:, :n].reshape(B, -1, per).any(-1).float().sum() + m[:, n:].any(-1).float().sum()
    return float(hit) / (B * math.ceil(m.shape[1] / per))


def _active_programs(case: Case, block: int) -> float:
    """Share of the OCR programs (`block` consecutive pixels of one image) that hold a pixel of
    the case's scenario (an OC pixel: a loss in the forward, a gradient in the backward)."""
    if case.scenario == "all-pixels":
        return 1.0
    f = DEFAULT_OC_FRACTION
    if case.scenario == "indep":
        return 1.0 - (1.0 - f) ** block
    B, _, *sp = case.shape
    m = blob_mask((B, *sp), f, torch.Generator().manual_seed(0)).reshape(B, -1)
    tiles = -(-m.shape[1] // block)
    pad = torch.zeros(B, tiles * block - m.shape[1], dtype=torch.bool)
    return float(torch.cat([m, pad], 1).reshape(B, tiles, block).any(-1).float().mean())


def _case_hints(case: Case, pass_: str, cap: Captured):
    """(hints, share of active programs) of one OCR/seg Triton launch; ({}, 1) for the others.
    nic, the per-image IC class count the forward computes from the tags and the backward loads
    from the class lists (neither runs here): background + the tags of the case's draw, on
    average. The
    seg backward has a CE gradient at every pixel: every program is active. The seg objective's
    scale (_scale_kernel) at g == 1: no program takes its scaling side."""
    if cap.fn.fn.__name__ == "_scale_kernel":
        # the seg objective's backward at the bench's upstream gradient of 1: every program
        # loads g and returns (its grid-stride loop, weighted 0, runs over the blocks)
        n = int(cap.args["n"])
        blocks = -(-n // int(getattr(cap.args["BLOCK"], "value", cap.args["BLOCK"])))
        return {"pid": 0, "nprog": cap.grid[0], "blocks": blocks, "grid_stride": ("pid",)}, 0.0
    if case.op not in ("ocr_loss", "seg_ocr_loss") or "BLOCK_P" not in cap.args:
        return {}, 1.0
    B, C1 = case.shape[:2]
    nic = 1.0 + float(voc_like_tags(B, C1 - 1, torch.Generator().manual_seed(0)).sum(1).double().mean())
    block = int(getattr(cap.args["BLOCK_P"], "value", cap.args["BLOCK_P"]))
    hints = {"nic": nic}
    name = cap.fn.fn.__name__
    if name in ("_fwd_kernel", "_bwd_kernel", "_obj_kernel"):
        # the persistent tile loop range(pid, tiles, nprog): the grid's programs per image share
        # the image's tiles; its mean trips per program (a program runs the floor or the
        # ceiling of it: the model's time is a throughput over an SM's programs, so the tail,
        # where the programs with one tile more run alone, is not modelled: optimistic by at
        # most one tile a program)
        N = math.prod(case.shape[2:])
        hints.update(pid=0, nprog=cap.grid[0], tiles=-(-N // block), grid_stride=("pid",))
    if name in ("_rs_gather_x_kernel", "_rs_gather_y_kernel"):
        # nt: the footprint loop's trips, the largest of a block's lanes (interior lanes of one
        # output row or column of low-resolution pixels), from the launch's grid arguments
        x = name == "_rs_gather_x_kernel"
        n_in, n_out = (case.shape[3], case.size[1]) if x else (case.shape[2], case.size[0])
        hints["nt"] = _footprint_trips(n_in, n_out)
        # the x-gather's program covers block lanes of (output row, column j): about block
        # x (W / w) output pixels of the scenario's mask
        block = block * max(1, round(case.size[1] / case.shape[3])) if x else block
        if x:  # its class range [i0, i1) of the list, IC part then OC part: mean trips
            groups = math.ceil(C1 / int(getattr(cap.args["CLASSES"], "value", cap.args["CLASSES"])))
            hints.update(i0=0, ic_end=nic / groups, oc_start=0, i1=(C1 - nic) / groups)
    active = 1.0 if (case.op == "seg_ocr_loss" and pass_ == "bwd") else \
        _active_programs(case.output, block)
    if name == "_rs_gather_y_kernel":
        active = 1.0
    return hints, active


def _footprint_trips(n_in: int, n_out: int) -> float:
    """The mean over low-resolution indices of triton_resize._footprint's count (without
    align_corners): the gathers' loop trips per class."""
    inv = n_out / n_in
    total = 0
    for j in range(n_in):
        lo = 0 if j <= 1 else max(math.floor((j - 0.5) * inv - 0.5) - 1, 0)
        hi = n_out - 1 if j >= n_in - 1 else min(math.floor((j + 1.5) * inv - 0.5) + 1, n_out - 1)
        total += max(hi - lo + 1, 0)
    return total / n_in


def _resize_kernel_bytes(case: Case, cap: Captured) -> float:
    """A fused-upsampling launch: each tensor argument once, the per-image ones (logits, maps,
    statistics, gradient) for the launch's chunk of images only (its grid's second dim); the
    chunk buffers (coefficients, R) whole. Upper bounds: reads restricted to a gradient's pixels
    (blobs) are counted in full."""
    B = case.shape[0]
    share = cap.grid[1] / B
    seen, total = set(), 0.0
    for v in cap.args.values():
        if isinstance(v, torch.Tensor) and id(v) not in seen:
            seen.add(id(v))
            per_image = v.dim() >= 2 and (v.shape[0] == B or (v.shape[0] == 2 and v.shape[1] == B))
            small = v.dim() == 2 and v.shape[0] in (B, case.shape[1])  # class lists, prior: L2
            nbytes = v.numel() * v.element_size()
            total += 0.0 if small else nbytes * (share if per_image else 1.0)
    return total


def kernel_bytes(case: Case, pass_: str, cap: Optional[Captured]) -> float:
    if case.size is not None and cap is not None and cap.fn.fn.__name__.startswith("_rs_"):
        return _resize_kernel_bytes(case, cap)
    if cap is not None and cap.fn.fn.__name__ == "_scale_kernel":
        return 4.0 * cap.grid[0]  # each program's load of g (g == 1: nothing else moves)
    if cap is not None and cap.fn.fn.__name__ == "_obj_kernel":
        # the seg objective's one pass: the logits read (the gradient pass's re-read of the
        # tile's rows is taken as a cache hit, as the backward kernels' passes are), the
        # gradient written, the two fp32 maps written and the int64 target read
        P = case.shape[0] * math.prod(case.shape[2:])
        return 2 * P * case.shape[1] * _ITEMSIZE[case.dtype] + 8 * P + 8 * P
    triton_main = cap is not None and cap.fn.fn.__name__ in ("_fwd_kernel", "_bwd_kernel")
    if case.op in ("ocr_loss", "seg_ocr_loss") and (cap is None or triton_main):
        B, C1 = case.shape[:2]
        P = B * math.prod(case.shape[2:])
        logits = P * C1 * _ITEMSIZE[case.dtype]
        seg = case.op == "seg_ocr_loss"
        read_frac = 1.0 if seg else _sector_fraction(case)
        map_frac = _sector_fraction(case, 4)  # fp32 per-pixel maps: 8 pixels a sector
        # The maps' upstream gradients (4 bytes a pixel each, or 0 as the bench delivers them:
        # upstream_grad); the Triton backward's are those it was captured with.
        if triton_main and pass_ == "bwd":
            g_ocr = _grad_bytes(cap.args["gl_ptr"])
            g_ce = _grad_bytes(cap.args["gce_ptr"]) if seg else 0.0
        else:
            g_ocr = g_ce = _grad_bytes(upstream_grad(case))
        if not triton_main and seg:
            # CUDA seg: the objective kernel (the logits read, the gradient written, the maps and
            # the target; its passes' re-reads as cache hits) and the scale's load of g
            return 2 * logits + 16 * P if pass_ == "fwd" else 4.0 * _cuda_scale_ctas(case)
        if not triton_main:
            # CUDA: the OCR forward also writes its mask, a bit a pixel (the loss is not 0); the
            # backward reads the mask in full and the loss map and its upstream gradient only in
            # the sectors of pixels with a loss (a compacted pixel's re-reads of its maps hit the
            # cache: not counted). seg saves no mask: its backward reads the loss map at every
            # pixel, its OCR upstream gradient where the loss is not 0, the target (8 bytes) and
            # the CE map's gradient at every pixel.
            mask = 0.0 if seg else P / 8
            if pass_ == "fwd":
                return logits + 4 * P + mask + (4 * P + 8 * P if seg else 0)
            loss_map = 4 * P if seg else 4 * P * map_frac
            return (logits * read_frac + logits + mask + loss_map + g_ocr * P * map_frac
                    + ((8 + g_ce) * P if seg else 0))
        # Triton: the forward writes a bit a pixel (the loss is not 0; BLOCK_P / 8 bytes a
        # tile) and the OC statistics where the backward reads them: one float a pixel (w) at
        # the pixels with a loss (the scenario's sectors of an fp32 map), or two (mo, so) at
        # every pixel for seg (its CE term). The backward reads the flags in full, and the
        # upstream gradient and the statistics in those sectors; not the loss map.
        block = int(getattr(cap.args["BLOCK_P"], "value", cap.args["BLOCK_P"]))
        flags = B * -(-math.prod(case.shape[2:]) // block) * block / 8
        stats = 8 * P if seg else 4 * P * map_frac
        if pass_ == "fwd":
            return logits + 4 * P + flags + stats + (4 * P + 8 * P if seg else 0)
        return (logits * read_frac + logits + flags + g_ocr * P * map_frac + stats
                + ((8 + g_ce) * P if seg else 0))
    # W-OoD and K-means: every tensor argument once (centroid re-reads
    # across tiles hit L2)
    seen, total = set(), 0
    for v in cap.args.values():
        if isinstance(v, torch.Tensor) and id(v) not in seen:
            seen.add(id(v))
            total += v.numel() * v.element_size()
    return float(total)


def _floor_bytes(case: Case, pass_: str) -> float:
    dt = DTYPES.get(case.dtype, torch.float32)
    if case.size is not None:
        # the fused path's own floor: the low-resolution logits read (and their gradient
        # written), the fp32 maps at the output size written (seg: the target read)
        B, C1 = case.shape[:2]
        P = B * math.prod(case.size)
        low = math.prod(case.shape) * _ITEMSIZE[case.dtype]
        maps = P * (4 + (12 if case.op == "seg_ocr_loss" else 0))
        return {"fwd": low + maps, "bwd": low, "fwd+bwd": 2 * low + maps}[pass_]
    if case.op == "kmeans":  # the model covers one assignment step: one read of the points
        N, D, _ = case.shape
        return N * D * 4 + N * 8
    if pass_ == "bwd":
        return bytes_moved(case.op, case.shape, dt, "fwd+bwd") - bytes_moved(case.op, case.shape, dt, "fwd")
    return bytes_moved(case.op, case.shape, dt, pass_)


def _logits(case: Case) -> int:
    """Per-logit counts divide by this: the logits the loss reads (after any upsampling)."""
    if case.op in ("ocr_loss", "seg_ocr_loss"):
        return math.prod(case.output.shape)
    if case.op == "wood_distance_loss":
        B, D, C, K = case.shape
        return B * D
    N, D, _ = case.shape
    return N * D


def _shape_str(case: Case) -> str:
    return shape_str(case.shape) + (f"->{shape_str(case.size)}" if case.size else "")


def _row(case: Case, pass_: str, a: dict, ctas: int, nbytes: float) -> dict:
    """One launch's record: its facts `a`, per-logit counts and the model's predictions."""
    threads = ctas * a["num_warps"] * 32
    n = _logits(case)
    row = dict(a, case=case.name, op=case.op, shape=_shape_str(case), dtype=case.dtype,
               group=case.group, scenario=case.scenario, bytes=nbytes,
               sass_per_logit=a["sass"]["executed"] * threads / n,
               mufu_per_logit=a["sass"]["executed_mufu"] * threads / n,
               shared_per_logit=a["sass"]["executed_shared"] * threads / n)
    row["pass"] = pass_
    launch = gpu_model.Launch(
        ctas=ctas, warps_per_cta=a["num_warps"], regs=a["regs"] or 255, smem_per_cta=a["smem_bytes"],
        instr_per_thread=a["sass"]["executed"], mufu_per_thread=a["sass"]["executed_mufu"],
        fp64_per_thread=a["sass"]["executed_fp64"],
        load_bytes_in_flight_per_thread=a["load_bytes_in_flight_per_thread"], bytes=nbytes)
    row["predicted"] = {g: gpu_model.predict(launch, gpu) for g, gpu in gpu_model.GPUS.items()}
    return row


def _totals(case: Case, backend: str, rows: List[dict]) -> List[dict]:
    """Per pass (fwd, bwd, fwd+bwd) of one backend: the sum of its launches against the floor."""
    out = []
    passes = [p for p in ("fwd", "bwd") if any(r["pass"] == p for r in rows)]
    passes += ["fwd+bwd"] if "bwd" in passes else []
    for pass_ in passes:
        floor_b = _floor_bytes(case, pass_)
        parts = [r for r in rows if r["pass"] in pass_.split("+")]
        for r in parts:
            if r["pass"] == pass_:
                r["floor_bytes"] = floor_b
                for g, gpu in gpu_model.GPUS.items():
                    p = r["predicted"][g]
                    p["pct_of_floor_alone"] = 100 * gpu_model.floor_s(floor_b, gpu) / p["time_s"] if p["time_s"] else None
        t = {"kernel": "+".join(sorted({r["kernel"] for r in parts})), "backend": backend,
             "case": case.name, "op": case.op, "shape": _shape_str(case), "dtype": case.dtype,
             "group": case.group, "scenario": case.scenario, "pass": pass_, "total": True,
             "floor_bytes": floor_b, "regs": max((r["regs"] or 0) for r in parts),
             "spills": sum(r["spills"] for r in parts),
             "sass_per_logit": sum(r["sass_per_logit"] for r in parts),
             "mufu_per_logit": sum(r["mufu_per_logit"] for r in parts),
             "bytes": sum(r["bytes"] for r in parts), "predicted": {}}
        for g, gpu in gpu_model.GPUS.items():
            time_s = sum(r["predicted"][g]["time_s"] or float("inf") for r in parts)
            t["predicted"][g] = {"time_s": time_s, "pct_of_floor": 100 * gpu_model.floor_s(floor_b, gpu) / time_s,
                                 "bound": "+".join(r["predicted"][g]["bound"] for r in parts)}
        out.append(t)
    return out


def model_case(case: Case, backends: Sequence[str] = ("triton", "cuda")) -> List[dict]:
    """Rows for the case: one per kernel launch of each pass, then each backend's pass totals."""
    rows = []
    if "triton" in backends:
        tr = []
        for pass_, caps in launch_case(case).items():
            for cap in caps:
                a = analyse_triton(cap, *_case_hints(case, pass_, cap))
                tr.append(_row(case, pass_, a, math.prod(cap.grid), kernel_bytes(case, pass_, cap)))
        for r in tr:
            r["backend"] = "triton"
        rows += tr + _totals(case, "triton", tr)
    if case.size is not None:
        if rows:  # the fused Triton kernels against interpolate + the Triton loss
            rows += _unfused_rows(case, rows)
        if "cuda" in backends and _nvcc() is not None:  # the same for the CUDA kernels
            rows += model_resized_case(case)
    elif "cuda" in backends and case.op in ("ocr_loss", "seg_ocr_loss") and _nvcc() is not None:
        cu = []
        for pass_ in ("fwd", "bwd"):
            a, ctas = analyse_cuda_ocr(case, pass_)
            cu.append(_row(case, pass_, a, ctas, kernel_bytes(case, pass_, None)))
        for r in cu:
            r["backend"] = "cuda"
        rows += cu + _totals(case, "cuda", cu)
    for r in rows:
        h = r["predicted"]["H200"]
        r["predicted_pct_of_floor"] = h.get("pct_of_floor", h.get("pct_of_floor_alone"))
        r["predicted_time_s"] = h["time_s"]
    return rows


def _interpolate_s(case: Case, pass_: str, gpu: gpu_model.Gpu) -> float:
    """F.interpolate's forward (read the low-resolution logits, write the full-resolution ones)
    or backward (zero the low-resolution gradient, read the full-resolution one, write the
    low-resolution one) as their DRAM traffic at the copy bandwidth, plus a launch each: a lower
    bound on torch's kernels, not a model of them."""
    low = math.prod(case.shape) * _ITEMSIZE[case.dtype]
    full = math.prod(case.output.shape) * _ITEMSIZE[case.dtype]
    nbytes = low + full if pass_ == "fwd" else full + 2 * low
    launches = 1 if pass_ == "fwd" else 2
    return gpu_model.floor_s(nbytes, gpu) + launches * gpu_model.LAUNCH_OVERHEAD_S


def _unfused_rows(case: Case, fused_rows: List[dict]) -> List[dict]:
    """The unfused path the fused one replaces, per pass: F.interpolate (traffic model, see
    _interpolate_s) + the Triton loss at the output resolution (this model). Each fused total
    gets the ratio of its predicted time to it."""
    loss_rows = [r for r in model_case(case.output, ("triton",)) if r.get("total")]
    out = []
    for lr in loss_rows:
        r = dict(lr, backend="interpolate+triton", case=case.name, shape=_shape_str(case),
                 kernel="F.interpolate (traffic) + " + lr["kernel"], predicted={})
        for g, gpu in gpu_model.GPUS.items():
            interp = sum(_interpolate_s(case, p, gpu) for p in lr["pass"].split("+"))
            t = lr["predicted"][g]["time_s"] + interp
            r["predicted"][g] = {"time_s": t, "interpolate_s": interp,
                                 "pct_of_floor": 100 * gpu_model.floor_s(lr["floor_bytes"], gpu) / t,
                                 "bound": "interp+" + lr["predicted"][g]["bound"]}
        r["predicted_time_s"] = r["predicted"]["H200"]["time_s"]
        r["predicted_pct_of_floor"] = r["predicted"]["H200"]["pct_of_floor"]
        out.append(r)
        for f in fused_rows:
            if f.get("total") and f["pass"] == lr["pass"]:
                f["vs_unfused"] = {g: f["predicted"][g]["time_s"] / r["predicted"][g]["time_s"]
                                   for g in gpu_model.GPUS}
    return out


def resize_headline_triton(rows: List[dict]) -> str:
    """Markdown: fused vs unfused per resized case and pass (PREDICTIONS)."""
    out = ["| case | pass | fused regs (max) | spill B | fused H200 | unfused H200 (interpolate + loss) "
           "| fused / unfused H200 | fused / unfused H100 |", "|" + "---|" * 8]
    fused = [r for r in rows if r.get("total") and r["backend"] == "triton" and "vs_unfused" in r]
    for f in fused:
        u = next(r for r in rows if r.get("total") and r["backend"] == "interpolate+triton"
                 and r["case"] == f["case"] and r["pass"] == f["pass"])
        out.append(f"| {f['case']} | {f['pass']} | {f['regs']} | {f['spills']} | "
                   f"{f['predicted']['H200']['time_s'] * 1e3:.3f} ms | "
                   f"{u['predicted']['H200']['time_s'] * 1e3:.3f} ms | {f['vs_unfused']['H200']:.2f}x | "
                   f"{f['vs_unfused']['H100']:.2f}x |")
    out += ["", "Unfused = F.interpolate modelled as its DRAM traffic at the copy bandwidth (forward: "
            "read the low-resolution logits, write the full-resolution ones; backward: zero, read "
            "the full-resolution gradient, write the low-resolution one; a launch each: a lower "
            "bound on torch's kernels) + this model's Triton loss at the output resolution. Fused "
            "bytes count each tensor argument of a launch once (its chunk's share of the per-image "
            "ones), reads restricted to a gradient's pixels in full: an upper bound. The "
            "x-gather's class loops over a program's class range use the mean IC/OC split."]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------
# The CUDA kernels (csrc/cuda/*.cu through nvcc)
# ------------------------------------------------------------------------------------------
def _nvcc() -> Optional[str]:
    from .._extension import find_cuda_home

    home, _ = find_cuda_home()
    return os.path.join(home, "bin", "nvcc") if home else None


@functools.lru_cache(maxsize=None)
def cuda_cubin(source: str) -> bytes:
    """The sm_90 cubin of one .cu file, with the extension's own nvcc flags."""
    from .._extension import csrc_dir, cuda_cflags

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "k.cubin")
        subprocess.run([_nvcc(), "-cubin", f"-arch=sm_{TARGET_ARCH}", *cuda_cflags(), "-I", str(csrc_dir()),
                        source, "-o", out], check=True, capture_output=True, text=True)
        return Path(out).read_bytes()


@functools.lru_cache(maxsize=None)
def _demangled(cubin: bytes) -> Dict[str, str]:
    names = list(sass.resource_usage(cubin))
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                             check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        out = names
    return dict(zip(out, names))


_FOR = re.compile(r"\bfor\s*\((?:[^;]*);\s*\w+\s*<\s*([\w.]+)\s*;")


@functools.lru_cache(maxsize=None)
def _cpp_loops(path: str) -> List[Tuple[int, int, str]]:
    """(first line, last line, bound) of each ``for (...; i < bound; ...)`` of a C++ file: the
    body's extent by brace matching (or the statement up to its ';')."""
    lines = Path(path).read_text().splitlines()
    out = []
    for i, text in enumerate(lines):
        m = _FOR.search(text)
        if not m:
            continue
        depth, opened, end = 0, False, i
        header_done = False
        paren = 0
        for j in range(i, len(lines)):
            seg = lines[j] if j > i else lines[j][m.start():]
            for ch in seg:
                if not header_done:
                    paren += ch == "("
                    paren -= ch == ")"
                    header_done = paren == 0 and ch == ")"
                    continue
                if ch == "{":
                    depth, opened = depth + 1, True
                elif ch == "}":
                    depth -= 1
                elif ch == ";" and not opened:
                    depth = 0
                    opened = True  # a single statement ends here
                    break
            if header_done and opened and depth == 0:
                end = j
                break
        out.append((i + 1, end + 1, m.group(1)))
    return out


def _fully_unrolled(path: str, line: int) -> bool:
    """Whether the ``for`` at `line` follows a bare ``#pragma unroll`` (a constant bound, unrolled
    in full: it leaves no SASS loop, so no SASS loop may be mapped to it)."""
    lines = Path(path).read_text().splitlines()
    return line >= 2 and lines[line - 2].strip() == "#pragma unroll"


def _cpp_trips(code: sass.Sass, ns: Dict[str, float], threads_total: int, ppt: int = 1,
               per_cta: Optional[Dict[str, float]] = None,
               ppt_inside: Optional[Dict[str, int]] = None,
               dists: Optional[Dict[str, torch.Tensor]] = None,
               skip_unrolled: bool = False) -> List[str]:
    """Trip counts of the SASS loops of a CUDA kernel: each maps to the C++ loop holding most of
    its instructions' lines; a loop unrolled U times (U = its global loads over the distinct
    source lines they come from, over `ppt`, the pixels a thread loads per class from one line;
    inside a loop whose bound is named in `ppt_inside`, that many) runs bound / U times; the
    grid-stride pixel loop runs ceil(pixels / threads) times; a bound named in `per_cta` runs
    that many times (a block's share of the tiles, or a mean over warps). A loop the compiler
    unrolled U times whose bound has per-sample values in `dists` (the per-image IC class count)
    runs mean(floor(v / U)) times, and its remainder (the U − 1 guarded copies of its body in the
    enclosing loop, or a remainder loop) mean(v mod U) iterations. skip_unrolled: source loops
    under a bare ``#pragma unroll`` are not candidates (they leave no SASS loop; a SASS loop of
    code inlined into one, e.g. a flush called from thread_backward's per-pixel store, carries
    its call site's line and would otherwise map to it, the tightest range, and lose its trips)."""
    notes = []
    remainders = []
    files = {f for i in code.instrs for f, _ in i.lines if f.endswith((".h", ".cuh", ".cu"))}
    loops = [(f, lo, hi, b) for f in files if os.path.exists(f) for lo, hi, b in _cpp_loops(f)
             if not (skip_unrolled and _fully_unrolled(f, lo))]
    mapped: Dict[int, tuple] = {}
    # outer loops first: a loop nested in another maps to another source loop than its parents
    # (inlined code can carry the call site's line, inside the parent's source loop, and not its own)
    for lp in sorted(code.loops, key=lambda o: (o.start, -o.end)):
        lines = sass.loop_lines(code, lp)
        taken = {mapped[id(o)] for o in code.loops
                 if o is not lp and o.contains(lp.start) and o.contains(lp.end) and id(o) in mapped}
        best, best_key = None, None
        for f, lo, hi, b in loops:
            if (f, lo, hi, b) in taken:
                continue
            score = sum(1 for ls in lines if any(ff == f and lo <= n <= hi for ff, n in ls))
            key = (score, -(hi - lo))
            if score and (best_key is None or key > best_key):
                best, best_key = (f, lo, hi, b), key
        if best is None:
            notes.append(f"SASS loop at {lp.start:#x} matched no source loop: counted once")
            continue
        mapped[id(lp)] = best
        f, lo, hi, bound = best
        bound = bound.split(".")[-1]  # a member of a struct of arguments: its name
        outer = {mapped[id(o)][3] for o in code.loops
                 if o is not lp and o.contains(lp.start) and o.contains(lp.end) and id(o) in mapped}
        lp_ppt = next((n for b, n in (ppt_inside or {}).items() if b in outer), ppt)
        body = [i for i in code.instrs if lp.contains(i.addr)]
        inner = [o for o in code.loops if o is not lp and lp.contains(o.start) and lp.contains(o.end)]
        direct = [i for i in body if not any(o.contains(i.addr) for o in inner)]
        unroll = 1
        for kind in ("LDG", "STG"):
            mem = [i for i in direct if i.base == kind]
            if mem:
                unroll = max(1, round(len(mem) / len({i.lines for i in mem}) / lp_ppt))
                break
        if bound == "total":
            lp.trips = float(math.ceil(ns["total"] / threads_total))
        elif per_cta and bound in per_cta:
            lp.trips = per_cta[bound]
        elif dists and bound in dists and unroll > 1:
            v = dists[bound].double()
            lp.trips = float(torch.floor(v / unroll).mean())
            parents = [o for o in code.loops
                       if o is not lp and o.contains(lp.start) and o.contains(lp.end)]
            parent = min(parents, key=lambda o: o.end - o.start) if parents else None
            remainders.append((best, parent, unroll, float(torch.remainder(v, unroll).mean())))
        elif bound in ns:
            lp.trips = max(1.0, ns[bound] / unroll)
        else:
            notes.append(f"loop {os.path.basename(f)}:{lo} bound {bound!r} unknown: counted once")
            continue
        lp.source = f"{os.path.basename(f)}:{lo} i < {bound}, unrolled x{unroll}: {lp.trips:.1f}"
    for (f, lo, hi, b), parent, unroll, rem in remainders:
        def direct_in_parent(addr):
            inside = [o for o in code.loops if o.contains(addr)]
            return (parent is None and not inside) or (
                parent is not None and parent.contains(addr)
                and not any(o is not parent and parent.contains(o.start) and o.contains(addr) for o in inside))
        for o in code.loops:  # a remainder loop: the same source loop, not unrolled
            if o is not parent and mapped.get(id(o)) == (f, lo, hi, b) and o.trips is not None \
                    and (parent is None or (parent.contains(o.start) and parent is min(
                        [q for q in code.loops if q is not o and q.contains(o.start) and q.contains(o.end)],
                        key=lambda q: q.end - q.start, default=None))) and "unrolled x1" in (o.source or ""):
                o.trips = rem
                o.source = f"{os.path.basename(f)}:{lo} remainder of x{unroll}: {rem:.2f}"
        copies = [i for i in code.instrs if direct_in_parent(i.addr)
                  and any(ff == f and lo < n <= hi for ff, n in i.lines)]
        for i in copies:  # the guarded copies run rem of their unroll − 1
            code.shares[i.addr] = code.shares.get(i.addr, 1.0) * rem / (unroll - 1)
        notes.append(f"{os.path.basename(f)}:{lo} unrolled x{unroll} by the compiler: "
                     f"{len(copies)} remainder instructions weighted {rem / (unroll - 1):.2f}")
    return notes


def _header_int(name: str) -> int:
    from .._extension import csrc_dir

    text = (csrc_dir() / "ocr_thread.h").read_text()
    return int(re.search(rf"constexpr int {name}\s*=\s*(\d+)", text).group(1))


def _warp_gradient_pixels(case: Case, threads: int, ppt: int) -> torch.Tensor:
    """Pixels with a gradient in each of the CUDA backward's warps (32·ppt consecutive pixels of
    one image; an image's last tile padded with pixels without one) in the case's scenario:
    "blobs" the bench's blob mask, "indep" independent pixels at the OC fraction (seed 0),
    "all-pixels" every pixel."""
    B, _, *sp = case.shape
    if case.scenario == "all-pixels":
        m = torch.ones(B, math.prod(sp), dtype=torch.bool)
    elif case.scenario == "indep":
        m = torch.rand(B, math.prod(sp), generator=torch.Generator().manual_seed(0)) < DEFAULT_OC_FRACTION
    else:
        m = blob_mask((B, *sp), DEFAULT_OC_FRACTION, torch.Generator().manual_seed(0)).reshape(B, -1)
    tile = threads * ppt
    tiles = -(-m.shape[1] // tile)
    pad = torch.zeros(B, tiles * tile - m.shape[1], dtype=torch.bool)
    return torch.cat([m, pad], 1).reshape(B, tiles, threads // 32, 32 * ppt).sum(-1).flatten()


def _call_line_shares(code: sass.Sass, source: str, shares: Dict[str, float]) -> Dict[int, float]:
    """addr -> share for the instructions inlined through the calls in `source` whose text starts
    with a key of `shares` (e.g. "f<" or "f<T, 1>"; a warp-uniform branch: each side weighs the
    share of warps that take it). The line table drops the call site of some inlined
    instructions (the "ada" prior's loads in a class loop): an innermost loop most of whose
    instructions carry one share gives it to the rest of its body, which runs in the same call."""
    lines = Path(source).read_text().splitlines()
    where = {}
    for fn, share in shares.items():
        for n, text in enumerate(lines, 1):
            if re.search(rf"\b{re.escape(fn)}", text):
                where[n] = share
    out = {}
    for i in code.instrs:
        hit = [where[n] for f, n in i.lines if f == source and n in where]
        if hit:
            out[i.addr] = hit[0]
    return _spread_to_loops(code, out)


def _oc_target_share(case: Case, run: int) -> float:
    """The share of `run` consecutive pixels (a warp's, for the CUDA objective) of the seg case
    holding a non-ignored target that is an OC class of its image (inputs.seg_target's
    pseudo-labels, drawn from the IC classes: 0)."""
    from ..ocr.reference import ic_mask_from_tags

    B, C1 = case.shape[:2]
    sp = tuple(case.shape[2:])
    tags = voc_like_tags(B, C1 - 1, torch.Generator().manual_seed(0))
    t = seg_target(torch.empty((B, C1) + (1,) * len(sp)).expand((B, C1) + sp), tags,
                   torch.Generator().manual_seed(1)).reshape(B, -1)
    ic = ic_mask_from_tags(tags).bool()
    kept = t != 255
    oc = torch.zeros_like(kept)
    oc[kept] = ~ic[torch.arange(B).view(B, 1).expand_as(t)[kept], t[kept]]
    n = oc.shape[1] // run * run
    return float(oc[:, :n].reshape(B, -1, run).any(-1).double().mean()) if n else 0.0


def _cuda_scale_ctas(case: Case) -> int:
    """launch_scale's grid: one wave of 256-thread blocks (8 an SM, a few registers each), or
    fewer when the elements run out first."""
    return min(-(-math.prod(case.shape) // 256), 8 * gpu_model.GPUS["H200"].sms)


def _analyse_cuda_scale(case: Case, src: str, cubin: bytes, scalar: str) -> Tuple[dict, int]:
    """The seg objective's backward (scale_grad_kernel) at the bench's upstream gradient of 1:
    each thread loads g and returns; the grid-stride loop past that return weighs 0."""
    want = f"scale_grad_kernel<{scalar}, float>"
    mangled = next(m for d, m in _demangled(cubin).items() if want in d)
    res, code0 = _cubin_facts(cubin, mangled)
    code = sass.Sass(code0.instrs, [sass.Loop(lp.start, lp.end) for lp in code0.loops])
    # everything past the kernel's `return` at g == 1 (the loop and its set-up) weighs 0
    lines = Path(src).read_text().splitlines()
    start = next(n for n, t in enumerate(lines, 1) if "scale_grad_kernel(" in t)
    ret = next(n for n in range(start, len(lines) + 1) if "return;" in lines[n - 1])
    end = next(n for n in range(ret, len(lines) + 1) if lines[n - 1].startswith("}"))
    code.shares = {i.addr: 0.0 for i in code.instrs
                   if any(f == src and ret < n <= end for f, n in i.lines)}
    threads, ctas, n = 256, _cuda_scale_ctas(case), math.prod(case.shape)
    notes = _cpp_trips(code, {"n": n}, ctas * threads, 1, {}, {}, {})
    notes.append("scale at g == 1: every thread loads g and returns (the loop weighs 0)")
    st, ld = sass.spill_bytes(code)
    return ({"kernel": f"cuda:{want}", "grid": [ctas, 1, 1], "num_warps": threads // 32,
             "constexprs": {}, "regs": res.get("REG"), "spills": st + ld, "spill_store_bytes": st,
             "spill_load_bytes": ld, "stack_bytes": res.get("STACK", 0), "smem_bytes": res.get("SHARED", 0),
             "sass": sass.summary(code), "loops": [lp.source or "unmapped" for lp in code.loops],
             "load_bytes_in_flight_per_thread": _load_bytes_in_flight(code), "notes": notes}, ctas)


def analyse_cuda_ocr(case: Case, pass_: str) -> Tuple[dict, int]:
    """Facts of the CUDA OCR kernel (csrc/cuda/ocr_kernel.cu) that the case launches: the
    unit-pixel-stride path (the cases are NCHW-contiguous), "ada" (the only group the cases use).
    Backward: the share of warps that compact and their mean compacted rounds come from the
    scenario's per-warp gradient counts (seg: every pixel has a CE gradient, k = 128)."""
    from .._extension import csrc_dir

    src = str(csrc_dir() / "cuda" / "ocr_kernel.cu")
    cubin = cuda_cubin(src)
    threads, ppt = _header_int("kBlockThreads"), _header_int("kThreadPixels")
    scalar = {"fp32": "float", "bf16": "__nv_bfloat16"}[case.dtype]
    seg = case.op == "seg_ocr_loss"
    if seg and pass_ == "bwd":
        return _analyse_cuda_scale(case, src, cubin, scalar)
    group = {"ada": 0, "max": 1, "all": 2}[case.group or "ada"]
    if seg:  # a training step's seg_ocr_loss: the objective kernel writes the gradient
        want = f"objective_kernel<{scalar}, float, {group}, true>"
    else:
        kern = "forward_kernel" if pass_ == "fwd" else "backward_kernel"
        want = f"{kern}<{scalar}, float, {group}, false, true>"
    names = _demangled(cubin)
    mangled = next(m for d, m in names.items() if want in d)
    res, code0 = _cubin_facts(cubin, mangled)
    code = sass.Sass(code0.instrs, [sass.Loop(lp.start, lp.end) for lp in code0.loops])
    B, C1 = case.shape[:2]
    N = math.prod(case.shape[2:])
    P = B * N
    per_image = math.ceil(N / (threads * ppt))
    # class list; the backward's slots, the forward's mask ballots (the objective: neither)
    smem = 4 * (C1 + 1) + (0 if seg else threads * ppt if pass_ == "bwd" else 4 * threads * ppt // 32)
    occ = gpu_model.occupancy(res.get("REG") or 255, threads // 32, smem)
    wave = max(1, occ["ctas_per_sm"]) * gpu_model.GPUS["H200"].sms  # the launcher's grid
    gy = min(B, 65535)
    gx = max(1, min(per_image, wave // gy))
    ctas = gx * gy
    nic = 1.0 + float(voc_like_tags(B, C1 - 1, torch.Generator().manual_seed(0)).sum(1).double().mean())
    ns = {"C1": C1, "total": P, "nic": nic, "noc": C1 - nic, "words": math.ceil(C1 / 32)}
    per_cta = {"B": B / gy, "per_image": per_image / gx}
    notes = [f"CUDA kernels: class loops over the per-image lists, nic = {nic:.2f} IC classes "
             f"(the case's tag draw)"]
    if pass_ == "fwd" and case.op == "ocr_loss":
        # the mask of an image's last tile, shifted when N is not a multiple of 32 (a block-
        # uniform branch): one tile in per_image
        shifted = 1.0 / per_image if N % 32 and N >= threads * ppt else 0.0
        code.shares = _call_line_shares(code, src, {"store_mask_shifted<": shifted})
        notes.append(f"forward: the shifted mask stores of an image's last tile weigh {shifted:.4f}")
    if seg:
        # the OC class loop compares with the targets only in warps holding a non-ignored OC
        # target (the scenario's pseudo-labels: none)
        oc_t = _oc_target_share(case, 32 * ppt)
        code.shares = _call_line_shares(code, str(csrc_dir() / "ocr_thread.h"),
                                        {"oc_stores_any_target<": oc_t,
                                         "oc_stores_ic_targets<": 1.0 - oc_t})
        notes.append(f"objective: {oc_t:.3f} of the warps compare the OC classes with targets")
    if pass_ == "bwd":
        k = _warp_gradient_pixels(case, threads, ppt)
        rounds = (k + 31) // 32
        compact = rounds <= _header_int("kCompactRounds")
        share = float(compact.float().mean())
        per_cta["rounds"] = float((rounds * compact).float().mean())
        code.shares = _call_line_shares(code, src, {"thread_backward_zeros<": share,
                                                    "thread_backward<acc_t, GROUP, CE, PPT>": 1.0 - share})
        notes.append(f"backward: {share:.3f} of the warps compact (zeros for the pixels without a "
                     f"gradient, {per_cta['rounds']:.3f} rounds of one pixel a lane per warp on "
                     f"average), the others run PPT pixels a lane")
    # the compacted rounds run one pixel a lane
    nic_b = 1.0 + voc_like_tags(B, C1 - 1, torch.Generator().manual_seed(0)).sum(1).double()
    notes = _cpp_trips(code, ns, ctas * threads, ppt, per_cta, {"rounds": 1},
                       {"nic": nic_b, "C1": torch.tensor([float(C1)])}) + notes
    st, ld = sass.spill_bytes(code)
    return ({"kernel": f"cuda:{want}", "grid": [ctas, 1, 1], "num_warps": threads // 32,
             "constexprs": {}, "regs": res.get("REG"), "spills": st + ld, "spill_store_bytes": st,
             "spill_load_bytes": ld, "stack_bytes": res.get("STACK", 0), "smem_bytes": res.get("SHARED", 0) + smem,
             "sass": sass.summary(code), "loops": [lp.source or "unmapped" for lp in code.loops],
             "load_bytes_in_flight_per_thread": _load_bytes_in_flight(code), "notes": notes}, ctas)


# ------------------------------------------------------------------------------------------
# Fused upsampling: csrc/cuda/ocr_resize_kernel.cu against F.interpolate + the CUDA loss
# ------------------------------------------------------------------------------------------
def _resize_i0(n_in: int, n_out: int) -> torch.Tensor:
    """i0 of every output index (align_corners=False), as ocr_resize_pixel.h's resize_tap in fp32."""
    if n_in == n_out:
        return torch.arange(n_out)
    scale = torch.tensor(n_in, dtype=torch.float32) / torch.tensor(n_out, dtype=torch.float32)
    real = (scale * (torch.arange(n_out, dtype=torch.float32) + 0.5) - 0.5).clamp_min(0)
    return real.to(torch.int64).clamp_max(n_in - 1)


def _resize_bytes(case: Case, launch: str) -> float:
    """DRAM bytes of one fused-upsampling launch (fast path): the low-resolution logits once (a
    source row is staged by the ~2·H/h output rows that read it: re-reads from L2), the [B, H, W]
    maps, the backward's two-plane buffer written then read, the gradient written."""
    B, C1, h, w = case.shape
    P = B * case.size[0] * case.size[1]
    low = B * C1 * h * w
    logits = low * _ITEMSIZE[case.dtype]
    seg = case.op == "seg_ocr_loss"
    if launch == "forward":
        return logits + 4 * P + (12 * P if seg else 0)
    if launch == "backward":
        return logits + 8 * P + (12 * P if seg else 0) + 2 * low * 4
    return 2 * low * 4 + logits  # gather: the two planes in, the gradient out


def _resize_slots(case: Case) -> Tuple[int, int]:
    """(slots, block threads) of ocr_resize_thread.h's resize_plan: ceil(width / PPT) slots a
    cell column, the block they round up to (at most kResizeMaxThreads)."""
    _, _, h, w = case.shape
    n = torch.bincount(_resize_i0(w, case.size[1]), minlength=w)
    ppt = _header_int("kThreadPixels")
    slots = int(((n + ppt - 1) // ppt).sum())
    return slots, min(-(-slots // 32) * 32, _resize_header_int("kResizeMaxThreads"))


def _resize_header_int(name: str) -> int:
    from .._extension import csrc_dir

    text = (csrc_dir() / "ocr_resize_thread.h").read_text()
    return int(re.search(rf"constexpr \w+ {name}\s*=\s*(\d+)", text).group(1))


def _gradient_mask(case: Case) -> torch.Tensor:
    """[B, H, W]: the output pixels with a gradient in the case's scenario (seg: every pixel, the
    cross-entropy's reaches each one; "blobs" the bench's blob mask, "indep" independent pixels at
    the OC fraction, seed 0)."""
    B = case.shape[0]
    H, W = case.size
    if case.scenario == "all-pixels" or case.op == "seg_ocr_loss":
        return torch.ones(B, H, W, dtype=torch.bool)
    if case.scenario == "indep":
        return torch.rand(B, H, W, generator=torch.Generator().manual_seed(0)) < DEFAULT_OC_FRACTION
    return blob_mask((B, H, W), DEFAULT_OC_FRACTION, torch.Generator().manual_seed(0))


def _compact_rows(case: Case, threads: int, groups: int) -> Dict[str, float]:
    """What the backward's rows (csrc/ocr_resize_thread.h: a block walks one output row at a time)
    see in the case's scenario: the share that skip (no pixel with a gradient), compact (their
    active slots, those holding such a pixel, fill fewer warps than the block's; one slot group;
    ocr_loss only) or take the slots' path, and for the compacted ones the mean share of the block's warps that
    hold an active slot (the others only meet the flushes)."""
    _, _, h, w = case.shape
    H, W = case.size
    m = _gradient_mask(case).reshape(-1, W)
    ppt = _header_int("kThreadPixels")
    i0 = _resize_i0(w, W)
    n = torch.bincount(i0, minlength=w)
    first = torch.cat([torch.zeros(1, dtype=torch.int64), ((n + ppt - 1) // ppt).cumsum(0)])
    start = torch.cat([torch.zeros(1, dtype=torch.int64), n.cumsum(0)])
    x = torch.arange(W)
    slot_of_x = first[i0] + (x - start[i0]) // ppt
    slots = int(first[-1])
    active = torch.zeros(m.shape[0], slots, dtype=torch.float64).index_add_(1, slot_of_x, m.double()) > 0
    K = active.sum(-1)
    warps = threads // 32
    seg = case.op == "seg_ocr_loss"  # its kernels do not compact
    compact = (K > 0) & ((K + 31) // 32 < warps) if groups == 1 and W < (1 << 27) and not seg \
        else torch.zeros_like(K, dtype=torch.bool)
    out = {"skip": float((K == 0).double().mean()), "compact": float(compact.double().mean())}
    out["slots"] = 1.0 - out["skip"] - out["compact"]
    out["busy"] = float((((K[compact] + 31) // 32).double() / warps).mean()) if bool(compact.any()) else 1.0
    out["active_slots"] = float(K[compact].double().mean()) if bool(compact.any()) else 0.0
    # a compacted row's combine (resize_combine_span) over the columns its active slots reach,
    # [left tap of the first, right tap of the last]: its items laid out as resize_span_lane
    # does, `per` = threads // span classes at once; the share of the warps holding an item, and
    # the class steps of a thread that holds one
    out["span_lanes"], out["span_trips"], out["span"] = 1.0, 1.0, float(w)
    if bool(compact.any()):
        chunk = _resize_header_int("kResizeClassChunk")
        slot_col = torch.repeat_interleave(torch.arange(w), (n + ppt - 1) // ppt)
        act = active[compact].to(torch.int64)
        first_s = act.argmax(1)
        last_s = slots - 1 - act.flip(1).argmax(1)
        upper = slot_col[last_s] + (1 if w != W else 0)
        span = (upper.clamp_max(w - 1) - slot_col[first_s] + 1).double()
        per = torch.where(span <= threads, torch.div(threads, span, rounding_mode="floor"), torch.ones_like(span))
        at_once = per.clamp_max(chunk)
        out["span_lanes"] = float((torch.ceil(at_once * span / 32) * 32).clamp_max(threads).mean() / threads)
        out["span_trips"] = float(torch.ceil(chunk / at_once).mean())
        out["span"] = float(span.mean())
    return out


def _oc_target_rows(case: Case) -> float:
    """The share of the fused seg backward's output rows in which a pixel's target (not
    ignored) is an OC class of its image: those rows' OC class loops compare each class with the
    targets (csrc/ocr_thread.h oc_stores_any_target), the others do not (oc_stores_ic_targets).
    The scenario's targets are inputs.seg_target's, drawn from the image's IC classes as
    pseudo-labels are."""
    if case.op != "seg_ocr_loss":
        return 0.0
    from ..ocr.reference import ic_mask_from_tags

    B, C1 = case.shape[:2]
    H, W = case.size
    tags = voc_like_tags(B, C1 - 1, torch.Generator().manual_seed(0))
    # (the logits only give seg_target their shape: an expanded view, no memory)
    t = seg_target(torch.empty(B, C1, 1, 1).expand(B, C1, H, W), tags, torch.Generator().manual_seed(1))
    ic = ic_mask_from_tags(tags).bool()
    kept = t != 255
    oc = torch.zeros_like(kept)
    oc[kept] = ~ic[torch.arange(B).view(B, 1, 1).expand_as(t)[kept], t[kept]]
    return float(oc.reshape(-1, W).any(1).double().mean())


def _line_shares(code: sass.Sass, source: str, shares: Dict[str, float]) -> Dict[int, float]:
    """addr -> product of the shares of every named call (``fn<`` in `source`) the instruction
    is inlined through (nested runtime branches: a flush inside a row that may be skipped)."""
    lines = Path(source).read_text().splitlines()
    where = {n: share for fn, share in shares.items()
             for n, text in enumerate(lines, 1) if re.search(rf"\b{fn}<", text)}
    out = {}
    real = os.path.realpath(source)
    for i in code.instrs:
        hits = {n for f, n in i.lines if n in where and os.path.realpath(f) == real}
        if hits:
            out[i.addr] = math.prod(where[n] for n in hits)
    return out


def _resize_block_unroll(code: sass.Sass, header: str) -> List[str]:
    """Trip counts of the SASS loops mapped to the block code (ocr_resize_thread.h) that the
    compiler unrolled: _cpp_trips divides a loop's loads per source line by the pixels a thread
    loads per class (kThreadPixels), right for thread_forward / thread_backward's per-pixel loads
    but not for the block code, which loads one element a line and iteration. So a loop over the
    class list unrolled 4 times (4 loads of ic[k], one line) kept its C1 trips: 4x its
    instructions (until 2026-12-03: ~4 % of the 81-class forward). Here such an innermost loop
    (no `#pragma unroll 1` at its source line) runs bound / U, U its global loads over the
    distinct source lines they come from (an outer loop's loads are those of the code inlined
    into it, not copies of one iteration)."""
    notes = []
    lines = Path(header).read_text().splitlines()
    for lp in code.loops:
        m = re.match(r"ocr_resize_thread\.h:(\d+) (.*), unrolled x1: ", lp.source or "")
        if not m or lp.trips is None:
            continue
        n = int(m.group(1))
        if n >= 2 and lines[n - 2].strip() == "#pragma unroll 1":
            continue
        if any(o is not lp and lp.contains(o.start) and lp.contains(o.end) for o in code.loops):
            continue
        loads = [i for i in code.instrs if lp.contains(i.addr) and i.base == "LDG"]
        if not loads:
            continue
        unroll = round(len(loads) / len({i.lines for i in loads}))
        if unroll > 1:
            lp.trips = max(1.0, lp.trips / unroll)
            lp.source = f"ocr_resize_thread.h:{n} {m.group(2)}, unrolled x{unroll}: {lp.trips:.1f}"
            notes.append(f"ocr_resize_thread.h:{n} unrolled x{unroll} by the compiler (block code: "
                         f"one load a line and iteration)")
    return notes


def analyse_cuda_resized(case: Case, launch: str) -> Tuple[dict, int]:
    """Facts of one launch of the fused-upsampling CUDA kernels' fast path (csrc/cuda/
    ocr_resize_kernel.cu running csrc/ocr_resize_thread.h): forward (blocks over output rows),
    backward (blocks over cell rows), gather. "ada", NCHW logits.

    The gather's loops: its (image, class group) loop has a named bound (`rows`) that runs
    rows / gridDim.y times a thread (once at these shapes), the class loop inside it
    C1 / groups times. (Until 2026-12-03 that outer loop's bound was an expression the loop
    parser does not read, so its SASS loop took the class loop's trip count and the class loop
    inside it ran once: the gather was counted at ~5x the instructions it executes.)"""
    from .._extension import csrc_dir

    src = str(csrc_dir() / "cuda" / "ocr_resize_kernel.cu")
    header = str(csrc_dir() / "ocr_resize_thread.h")
    text = Path(src).read_text()
    cubin = cuda_cubin(src)
    scalar = {"fp32": "float", "bf16": "__nv_bfloat16"}[case.dtype]
    ce = "true" if case.op == "seg_ocr_loss" else "false"
    group = {"ada": 0, "max": 1, "all": 2}[case.group or "ada"]
    names = _demangled(cubin)
    if launch == "gather":
        want = f"resized_fast_gather_kernel<{scalar}, float>"
    else:
        want = f"resized_fast_{launch}_kernel<{scalar}, float, "
    mangled = next(m for d, m in names.items() if want in d and (launch == "gather" or
                                                                d.endswith(f", {group}, {ce}>(ocr::ResizeArgs, ocr::ResizePlan)")))
    res, code0 = _cubin_facts(cubin, mangled)
    code = sass.Sass(code0.instrs, [sass.Loop(lp.start, lp.end) for lp in code0.loops])
    B, C1, h, w = case.shape
    H, W = case.size
    nic = 1.0 + float(voc_like_tags(B, C1 - 1, torch.Generator().manual_seed(0)).sum(1).double().mean())
    chunk = _resize_header_int("kResizeClassChunk")
    notes = []
    if launch == "gather":
        threads = int(re.search(r"kThreads\s*=\s*(\d+)", text).group(1))
        warps = threads // 32
        group = int(re.search(r"kGatherClasses\s*=\s*(\d+)", text).group(1))
        rows = B * -(-C1 // group)
        gy = min(rows, 65535)  # as launch_fast_pass: (image, class group) a grid row
        ctas = math.ceil(h * w / threads) * gy
        smem = res.get("SHARED", 0)
        # a thread per low-resolution pixel (the last block of a row partly idle: counted full);
        # its (image, class group) loop runs rows / gy times, the class loop inside it
        notes += _cpp_trips(code, {"classes": C1 / -(-C1 // group)}, ctas * threads,
                            per_cta={"rows": rows / gy}, skip_unrolled=True)
    else:
        slots, threads = _resize_slots(case)
        warps = threads // 32
        groups = -(-slots // threads)
        acc = 4
        smem = (res.get("SHARED", 0) + acc * max(C1 * w, 3 * w + 1)
                + 4 * (C1 + 1 + 2 * slots + w + 1))
        if launch == "backward":  # top, bottom, the chunk; the per-row column ranges and span
            smem += acc * (2 * C1 * w + chunk * 2 * threads) + 4 * (w + 2)
        occ = gpu_model.occupancy(res.get("REG") or 255, warps, smem)
        wave = max(1, occ["ctas_per_sm"]) * gpu_model.GPUS["H200"].sms  # the launcher's grid
        items = B * H if launch == "forward" else B * h
        ctas = min(items, wave)
        per = -(-items // ctas)
        staged_at_once = max(1, threads // w)
        # trip counts per thread
        # (the combine's class loop: a thread's classes of the chunk, per = threads / w at once)
        ns = {"classes": C1 / staged_at_once, "groups": groups, "nic": nic, "noc": C1 - nic,
              "C1": C1, "count": chunk / staged_at_once, "first": slots / w,
              "pairs": C1 / staged_at_once / 2,
              "ny": H / h, "zeros": 2 * C1 * w / threads, "out_classes": C1 / staged_at_once,
              "steps": max(H, W).bit_length(), "slots": slots, "probes": slots.bit_length(),
              "flushes": -(-C1 // chunk)}
        # the combine's loops past the unrolled slots: the mean excess over the source columns
        n_x = torch.bincount(_resize_i0(w, W), minlength=w)
        seg = (n_x + _header_int("kThreadPixels") - 1) // _header_int("kThreadPixels")
        unrolled = _resize_header_int("kResizeUnrolledSlots")
        excess = float((seg - unrolled).clamp_min(0).double().mean())
        reach1 = torch.cat([seg[:1] * 0, seg[:-1]])  # lx1 sums of cell j - 1 (its upper tap)
        reach1[-1] += seg[-1]  # the right edge's own
        excess1 = float((reach1 - unrolled).clamp_min(0).double().mean())
        # loops run by the first n threads of a block: the share of its warps that issue them
        lanes = lambda n: min(threads, -(-n // 32) * 32) / threads  # noqa: E731
        per_cta = {"last": items / ctas, "staged_cols": lanes(staged_at_once * w),
                   "mine_cols": lanes(staged_at_once * w), "w": lanes(w),
                   "out_cols": lanes(staged_at_once * w), "n0": excess, "n1": excess1}
        if launch == "backward":
            rows = _compact_rows(case, threads, groups)
            per_cta["span_end"] = rows["span_lanes"]
            ns["span_classes"] = rows["span_trips"]
        notes += _cpp_trips(code, ns, ctas * threads, _header_int("kThreadPixels"), per_cta,
                            skip_unrolled=True)
        notes += _resize_block_unroll(code, header)
        # the class list: written by warp 0 alone, when a block's range enters a new image
        rows_per_image = H if launch == "forward" else h
        # (resize_oc_tie_args: a pixel whose IC and OC maxima are equal floats; the scenario's
        # logits are continuous, so none)
        shares = {"resize_class_list": min(1.0, (1 + per / rows_per_image) / per) / warps,
                  "resize_slot": 1.0 if groups > 1 else 0.0, "resize_oc_tie_args": 0.0}
        if launch == "backward":
            shares.update(resize_slot_row=rows["slots"], resize_backward_compact=rows["compact"],
                          resize_row_ranks=rows["compact"], resize_span_lane=rows["compact"],
                          resize_compact_slot=rows["busy"], resize_idle_flushes=1.0 - rows["busy"],
                          resize_slot_scan=1.0 / warps, resize_chunk_flush=1.0 / chunk)
            notes.append(f"backward rows: {rows['skip']:.3f} skip (no gradient), {rows['compact']:.3f} "
                         f"compact ({rows['active_slots']:.1f} active slots, {rows['busy']:.3f} of the "
                         f"warps hold one; their combine spans {rows['span']:.1f} columns, "
                         f"{rows['span_lanes']:.3f} of the warps hold its items), {rows['slots']:.3f} take "
                         f"the slots' path; the in-loop "
                         f"chunk flushes weigh 1/{chunk} of the class steps")
        code.shares = _line_shares(code, header, shares)
        if launch == "backward":
            oc_t = _oc_target_rows(case)
            thread_h = str(csrc_dir() / "ocr_thread.h")
            for addr, share in _line_shares(code, thread_h, {"oc_stores_any_target": oc_t,
                                                             "oc_stores_ic_targets": 1.0 - oc_t}).items():
                code.shares[addr] = code.shares.get(addr, 1.0) * share
            notes.append(f"backward rows with an OC class as a pixel's target: {oc_t:.3f} (their OC "
                         f"class loop compares each class with the targets)")
        notes.append(f"fast path: {slots} slots, {threads} threads a block, "
                     f"{ctas} blocks ({items} {'rows' if launch == 'forward' else 'cell rows'}, "
                     f"{per} at most a block); class loops over the per-image lists, nic = {nic:.2f}")
    st, ld = sass.spill_bytes(code)
    return ({"kernel": f"cuda:{want.rstrip(', ')}{'' if launch == 'gather' else '...>'}", "grid": [ctas, 1, 1],
             "num_warps": warps, "constexprs": {}, "regs": res.get("REG"), "spills": st + ld,
             "spill_store_bytes": st, "spill_load_bytes": ld, "stack_bytes": res.get("STACK", 0),
             "smem_bytes": smem, "sass": sass.summary(code),
             "loops": [lp.source or "unmapped" for lp in code.loops],
             "load_bytes_in_flight_per_thread": _load_bytes_in_flight(code), "notes": notes}, ctas)


def _copy_row(case: Case, pass_: str, kernel: str, nbytes: float) -> dict:
    """A launch modelled as its memory traffic at the copy bandwidth (F.interpolate and its
    backward, which the model does not compile): a lower bound on its time."""
    pred = {}
    for g, gpu in gpu_model.GPUS.items():
        pred[g] = {"time_s": gpu_model.floor_s(nbytes, gpu) + gpu_model.LAUNCH_OVERHEAD_S,
                   "bound": "copy"}
    return {"kernel": kernel, "case": case.name, "op": case.op, "shape": shape_str(case.shape),
            "dtype": case.dtype, "group": case.group, "scenario": case.scenario, "pass": pass_,
            "bytes": nbytes, "regs": None, "spills": 0, "sass_per_logit": 0.0,
            "mufu_per_logit": 0.0, "predicted": pred,
            "notes": ["modelled as its DRAM traffic at the copy bandwidth (lower bound)"]}


def _resized_totals(case: Case, backend: str, rows: List[dict], floor: Dict[str, float]) -> List[dict]:
    out = []
    for pass_ in ("fwd", "bwd", "fwd+bwd"):
        parts = [r for r in rows if r["pass"] in pass_.split("+")]
        for r in parts:
            if r["pass"] == pass_:
                for g, gpu in gpu_model.GPUS.items():
                    p = r["predicted"][g]
                    p["pct_of_floor_alone"] = 100 * gpu_model.floor_s(floor[pass_], gpu) / p["time_s"]
        t = {"kernel": "+".join(r["kernel"] for r in parts), "backend": backend, "case": case.name,
             "op": case.op, "shape": shape_str(case.shape), "size": list(case.size),
             "dtype": case.dtype, "group": case.group, "scenario": case.scenario, "pass": pass_,
             "total": True, "floor_bytes": floor[pass_],
             "regs": max((r["regs"] or 0) for r in parts), "spills": sum(r["spills"] for r in parts),
             "sass_per_logit": sum(r["sass_per_logit"] for r in parts),
             "mufu_per_logit": sum(r["mufu_per_logit"] for r in parts),
             "bytes": sum(r["bytes"] for r in parts), "predicted": {}}
        for g, gpu in gpu_model.GPUS.items():
            time_s = sum(r["predicted"][g]["time_s"] or float("inf") for r in parts)
            t["predicted"][g] = {"time_s": time_s,
                                 "pct_of_floor": 100 * gpu_model.floor_s(floor[pass_], gpu) / time_s,
                                 "bound": "+".join(r["predicted"][g]["bound"] for r in parts)}
        out.append(t)
    return out


def model_resized_case(case: Case) -> List[dict]:
    """The fused CUDA kernels' fast path (analyse_cuda_resized: forward; backward = cell rows +
    gather) against the unfused path:
    F.interpolate (modelled as its traffic at the copy bandwidth: read the low-resolution logits,
    write the full-resolution ones; backward: read their gradient, write the low-resolution one),
    then the CUDA loss at full resolution (this model's own rows for that shape). Floor (both):
    the low-resolution logits read (+ the target for seg) and, with the backward, their gradient
    written -- what the fused path cannot avoid besides its [B, H, W] maps."""
    if _nvcc() is None:
        raise RuntimeError("the fused-upsampling model needs nvcc")
    B, C1, h, w = case.shape
    H, W = case.size
    e = _ITEMSIZE[case.dtype]
    low, full = B * C1 * h * w * e, B * C1 * H * W * e
    target = 8 * B * H * W if case.op == "seg_ocr_loss" else 0
    floor = {"fwd": low + target, "bwd": low, "fwd+bwd": 2 * low + target}
    fused = []
    for pass_, launch in (("fwd", "forward"), ("bwd", "backward"), ("bwd", "gather")):
        a, ctas = analyse_cuda_resized(case, launch)
        r = _row(case, pass_, a, ctas, _resize_bytes(case, launch))
        r["backend"] = "cuda fused"
        fused.append(r)
    plain = Case(case.op, (B, C1, H, W), case.dtype, case.group, case.scenario)
    loss_rows = [r for r in model_case(plain, ("cuda",)) if not r.get("total")]
    unfused = [_copy_row(case, "fwd", "interpolate (copy model)", low + full)]
    for r in loss_rows:
        unfused.append(dict(r, case=case.name))
    unfused.append(_copy_row(case, "bwd", "interpolate backward (copy model)", full + low))
    for r in unfused:
        r["backend"] = "interpolate + cuda"
    rows = fused + _resized_totals(case, "cuda fused", fused, floor)
    rows += unfused + _resized_totals(case, "interpolate + cuda", unfused, floor)
    for r in rows:
        h2 = r["predicted"]["H200"]
        r["predicted_pct_of_floor"] = h2.get("pct_of_floor", h2.get("pct_of_floor_alone"))
        r["predicted_time_s"] = h2["time_s"]
    return rows


def resize_headline_cuda(rows: List[dict]) -> str:
    """Markdown: fused vs unfused fwd+bwd per fused-upsampling case, and their ratio."""
    out = ["| op, logits -> size | dtype | scenario | fused H200 predicted | interpolate + cuda H200 "
           "predicted | fused / unfused | fused H100 / unfused H100 |", "|" + "---|" * 7]
    tot = {(r["case"], r["backend"]): r for r in rows
           if r.get("total") and r.get("size") and r["pass"] == "fwd+bwd"}
    for (name, backend), r in tot.items():
        if backend != "cuda fused":
            continue
        u = tot.get((name, "interpolate + cuda"))
        if u is None:
            continue
        f2, u2 = r["predicted"]["H200"]["time_s"], u["predicted"]["H200"]["time_s"]
        f1, u1 = r["predicted"]["H100"]["time_s"], u["predicted"]["H100"]["time_s"]
        out.append(f"| `{r['op']}` ({r['shape'].replace('x', ', ')}) -> {r['size'][0]}x{r['size'][1]} | "
                   f"{r['dtype']} | {r['group']}, {r['scenario']} | {f2 * 1e3:.3f} ms | {u2 * 1e3:.3f} ms | "
                   f"{f2 / u2:.2f}x | {f1 / u1:.2f}x |")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------
def tool_versions() -> Dict[str, str]:
    import triton

    out = {"torch": torch.__version__, "triton": triton.__version__}
    for name in ("ptxas", "nvdisasm", "cuobjdump"):
        exe = sass.triton_ptxas() if name == "ptxas" else sass.tool(name)
        if exe:
            try:
                v = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
                out[name] = f"{exe}: {v.strip().splitlines()[-1]}"
            except OSError:
                out[name] = exe
    return out


def format_table(rows: List[dict], markdown: bool = False) -> str:
    hdr = ["case", "pass", "backend / kernel", "warps", "regs", "spill B", "smem B", "SASS/logit", "MUFU/logit",
           "MB", "H200 us", "H200 %floor", "H100 us", "H100 %floor", "bound (H200)"]
    lines = []
    for r in rows:
        h2, h1 = r["predicted"]["H200"], r["predicted"]["H100"]
        pct = lambda p: p.get("pct_of_floor", p.get("pct_of_floor_alone"))  # noqa: E731
        lines.append([r["case"], r["pass"] + (" (total)" if r.get("total") else ""),
                      r["backend"] if r.get("total") else r["kernel"],
                      str(r.get("num_warps", "")), str(r["regs"]), str(r["spills"]),
                      str(r.get("smem_bytes", "")), f"{r['sass_per_logit']:.1f}", f"{r['mufu_per_logit']:.2f}",
                      f"{r['bytes'] / 1e6:.1f}", f"{h2['time_s'] * 1e6:.0f}", f"{pct(h2):.1f}",
                      f"{h1['time_s'] * 1e6:.0f}", f"{pct(h1):.1f}", h2["bound"]])
    if markdown:
        out = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        out += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(out) + "\n"
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(hdr)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(hdr)] + [fmt(c) for c in lines]) + "\n"


def headline(rows: List[dict]) -> str:
    """Markdown: fwd+bwd of ocr/seg at the target shapes, "ada", realistic and worst scenarios."""
    out = ["| op, shape | dtype | scenario | backend | regs (max) | spill B | SASS / logit | MUFU / logit | "
           "H200 predicted | H200 % of floor | H100 % of floor | bound |", "|" + "---|" * 12]
    for r in rows:
        if not (r.get("total") and r["pass"] == "fwd+bwd" and r["group"] == "ada"
                and r["scenario"] in ("blobs", "all-pixels") and r["shape"] in ("16x21x321x321", "16x81x321x321")):
            continue
        h2, h1 = r["predicted"]["H200"], r["predicted"]["H100"]
        out.append(f"| `{r['op']}` ({r['shape'].replace('x', ', ')}) | {r['dtype']} | {r['scenario']} | "
                   f"{r['backend']} | {r['regs']} | {r['spills']} | {r['sass_per_logit']:.0f} | "
                   f"{r['mufu_per_logit']:.1f} | {h2['time_s'] * 1e3:.2f} ms | {h2['pct_of_floor']:.0f}% | "
                   f"{h1['pct_of_floor']:.0f}% | {h2['bound']} |")
    return "\n".join(out) + "\n"


HEADER = ("PREDICTIONS of a static model (ocr_kernels/bench/gpu_model.py), not measurements: "
          "kernels compiled for sm_90 without a GPU; times from issue, MUFU and memory throughput "
          "bounds. '%floor' = copy-floor time / predicted time (100 = at the copy bandwidth).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--static", action="store_true",
                   help="no timing: compile every kernel for sm_90 and report registers, spills, "
                        "executed SASS and PREDICTED H200/H100 times (no GPU needed)")
    p.add_argument("--static-cases", default="full", choices=("full", "ocr", "gpu", "smoke", "resize"),
                   help="with --static: all cases (default), the OCR/seg ones only, those the GPU "
                        "runner times, the CI smoke set, or the fused upsampling (CUDA) against "
                        "interpolate + the CUDA loss")
    p.add_argument("--static-backends", default="triton,cuda",
                   help="with --static: the kernels to model (default triton,cuda; the CUDA ones need nvcc)")
    p.add_argument("--static-jobs", type=int, default=2,
                   help="with --static: compile in this many processes (default 2)")
    p.add_argument("--static-asm", action="store_true",
                   help="with --static: also write each kernel's PTX to OUT/asm/NAME-HASH.ptx")


def run(args) -> int:
    if os.environ.get("TRITON_INTERPRET", "0") == "1":  # the interpreter swaps the kernels out
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.call([sys.executable, "-m", "ocr_kernels.bench.static", *_argv(args)], env=env)
    global _ASM_DIR
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.monotonic()
    cases = all_cases(args.static_cases)
    os.makedirs(args.out, exist_ok=True)
    _ASM_DIR = os.path.join(args.out, "asm") if args.static_asm else None
    stem = args.name or f"static-sm90-{started:%Y-%m-%d}"
    print(f"ocr-kernels static model: {len(cases)} cases, sm_{TARGET_ARCH} -> {args.out}/{stem}.*", flush=True)
    rows: List[dict] = []
    errors = []
    # the scenarios of one (op, shape, dtype, group) share their backward kernel: one task each,
    # so a worker compiles it once (Triton's in-process cache)
    backends = [b.strip() for b in args.static_backends.split(",") if b.strip()]
    groups: Dict[tuple, List[Case]] = {}
    for c in cases:
        groups.setdefault((c.op, c.shape, c.dtype, c.group), []).append(c)
    if args.static_jobs > 1 and len(groups) > 1:
        import concurrent.futures as cf
        import multiprocessing as mp

        with cf.ProcessPoolExecutor(args.static_jobs, mp_context=mp.get_context("fork")) as pool:
            futures = [pool.submit(_model_cases, g, _ASM_DIR, backends) for g in groups.values()]
            results = [f.result() for f in futures]  # in submission order: a stable report
    else:
        results = [_model_cases(g, _ASM_DIR, backends) for g in groups.values()]
    for g_rows, g_errors in results:
        rows += g_rows
        errors += g_errors
    doc = {"kind": "static-model", "target": f"sm_{TARGET_ARCH}", "started": started.isoformat(),
           "wall_s": time.monotonic() - t0, "header": HEADER, "method": __doc__,
           "sass_method": sass.__doc__, "model": gpu_model.__doc__, "constants": gpu_model.constants(),
           "tools": tool_versions(), "argv": sys.argv[1:], "errors": errors, "records": rows}
    with open(os.path.join(args.out, f"{stem}.json"), "w") as f:
        json.dump(doc, f, indent=1, default=str)
    totals = [r for r in rows if r.get("total")]
    with open(os.path.join(args.out, f"{stem}.md"), "w") as f:
        f.write(f"# Static sm_90 model ({started:%Y-%m-%d})\n\n{HEADER}\n\n"
                f"Command: `python -m ocr_kernels bench --static{' --static-cases ' + args.static_cases if args.static_cases != 'full' else ''}`; "
                f"tools: {', '.join(f'{k} {v}' for k, v in doc['tools'].items())}.\n\n"
                + ("## Fused upsampling, CUDA: fused vs F.interpolate + the CUDA loss, forward + backward (PREDICTIONS)\n\n"
                   + resize_headline_cuda(rows) + "\n" if any(r.get("backend") == "cuda fused" for r in rows) else "")
                + ("## Fused upsampling, Triton: fused vs F.interpolate + the Triton loss (PREDICTIONS)\n\n"
                   + resize_headline_triton(rows) + "\n" if any("vs_unfused" in r for r in rows) else "")
                + ("## Headline: forward + backward at the target shapes (group_split=\"ada\")\n\n"
                   + headline(rows) if headline(rows).count("\n") > 2 else "") +
                "\n## Per pass (fwd, bwd, fwd+bwd)\n\n" + format_table(totals, markdown=True) +
                "\n## Per kernel launch\n\n" + format_table([r for r in rows if not r.get("total")], markdown=True))
    print(HEADER)
    print(format_table(totals))
    print(f"{len(cases) - len(errors)} of {len(cases)} cases modelled in {time.monotonic() - t0:.0f} s; "
          f"results: {os.path.join(args.out, stem)}.json/.md", flush=True)
    return 1 if errors else 0


def _model_cases(cases: List[Case], asm_dir: Optional[str], backends: Sequence[str]):
    global _ASM_DIR
    _ASM_DIR = asm_dir
    rows, errors = [], []
    for case in cases:
        print(f"  {case.name}", file=sys.stderr, flush=True)
        try:
            rows += model_case(case, backends)
        except Exception as exc:  # one failing case must not stop the rest
            errors.append({"case": case.name, "error": f"{type(exc).__name__}: {str(exc)[:400]}"})
            print(f"  failed: {errors[-1]['error']}", file=sys.stderr, flush=True)
    return rows, errors


def _argv(args) -> List[str]:
    out = ["--out", args.out, "--static-cases", args.static_cases]
    out += ["--static-jobs", str(args.static_jobs), "--static-backends", args.static_backends]
    out += ["--name", args.name] if args.name else []
    return out + (["--static-asm"] if args.static_asm else [])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ocr_kernels.bench.static", description=__doc__)
    p.add_argument("--out", default="bench-out")
    p.add_argument("--name", default=None)
    add_arguments(p)
    args = p.parse_args(argv)
    args.static = True
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
