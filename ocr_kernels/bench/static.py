"""``python -m ocr_kernels bench --static``: a static sm_90 performance model, no GPU needed.

Every Triton kernel is compiled for an sm_90 target through its REAL launcher (ocr/triton_kernel.py
``_forward``/``_backward``, wood/triton_kernels.py ``_distances``/``_weighted_diff``/
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
A loop that cannot be mapped is counted once and flagged in the record's ``notes``.

Bytes (DRAM, each byte once; small operands such as tags, prior and centroids hit L2):
- OCR/seg forward: the logits, the fp32 loss map (seg: also the CE map and the int64 target).
- OCR backward: the loss map and its gradient (fp32), the logits of the 32-byte sectors that hold
  a pixel with a gradient (the scenario decides: blobs, independent draw, every pixel) and the
  full gradient write. seg backward: the CE gradient reaches every non-ignored pixel, so its
  logits are read in full, plus the target and the CE map's gradient.
- Both: the forward's saved OC statistics (8 bytes a pixel), written at every pixel, read where
  the backward can have a gradient (the OCR scenario's sectors; every pixel for seg).
- Instructions: the per-image IC class count is a launch-invisible loop bound; the model takes
  ASSUMED_IC_CLASSES. Program-uniform branches (a tile without an active pixel) weigh each side
  by the share of programs taking it in the case's scenario (sass.py).
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
from typing import Dict, List, Optional, Tuple

import torch

from . import gpu_model, sass
from .cases import bytes_moved
from .inputs import DEFAULT_OC_FRACTION, blob_mask
from .shapes import PRESETS, shape_str

TARGET_ARCH = 90
OCR_SHAPES = [(16, 21, 321, 321), (16, 81, 321, 321), (8, 201, 128, 128), (2, 1030, 128, 128)]
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

    @property
    def name(self) -> str:
        parts = [self.op, shape_str(self.shape), self.dtype]
        if self.group:
            parts.append(self.group)
        if self.scenario:
            parts.append(self.scenario)
        return " ".join(parts)

    @property
    def pixels(self) -> str:
        return "all" if self.scenario == "all-pixels" else "oc"


def all_cases(preset: str = "full") -> List[Case]:
    """The model's cases: the Triton issue's target shapes first, then many classes (C+1 = 201
    and 1030: the chunked path), then W-OoD and K-means at their bench shapes."""
    if preset == "smoke":  # the CI test's: one block-path and one chunked case, both kernels
        return [Case("ocr_loss", (2, 21, 64, 64), "fp32", "ada", "blobs"),
                Case("ocr_loss", (1, 300, 16, 16), "bf16", "max", "all-pixels")]
    out = []
    for shape in OCR_SHAPES:
        for op in ("ocr_loss", "seg_ocr_loss"):
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


def launch_case(case: Case) -> Dict[str, List[Captured]]:
    """{"fwd": [...], "bwd": [...]}: the launches of each pass of the case (must run inside
    capture_launches)."""
    out = {}
    with capture_launches() as cap:
        if case.op in ("ocr_loss", "seg_ocr_loss"):
            from ..ocr import triton_kernel as tk

            B, C1 = case.shape[:2]
            spatial = case.shape[2:]
            z = _meta(case.shape, DTYPES[case.dtype])
            tags = _meta((B, C1 - 1), torch.int64)
            prior = _meta((C1 - 1, C1 - 1)) if case.group == "ada" else None
            seg = case.op == "seg_ocr_loss"
            tgt = _meta((B,) + spatial, torch.int64) if seg else None
            _, _, stats, classes = tk._forward(z, tgt, tags, prior, 1.0, 0.5, case.group,
                                               case.pixels, 255)
            out["fwd"], cap.records[:] = list(cap.records), []
            gmap = _meta((B,) + spatial)
            tk._backward(gmap, gmap if seg else None, z, tgt, prior, gmap, stats, classes, 0.5,
                         case.group, 255)
            out["bwd"] = list(cap.records)
        elif case.op == "wood_distance_loss":
            from ..wood import triton_kernels as tw

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
            from ..wood import triton_kernels as tw

            N, D, k = case.shape
            tw.assign_triton(_meta((N, D)), _meta((k, D)), _meta((D,)))
            out["fwd"] = list(cap.records)
        else:
            raise ValueError(f"unknown op {case.op!r}")
    return out


# ------------------------------------------------------------------------------------------
# Loop trip counts from the Python source
# ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _source_loops(path: str):
    """[(for node, enclosing FunctionDef)] of every ``for ... in range(...)`` in a file."""
    tree = ast.parse(Path(path).read_text())
    loops = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                if (isinstance(node, ast.For) and isinstance(node.iter, ast.Call)
                        and getattr(node.iter.func, "id", None) == "range"):
                    loops.append((node, fn))
    return loops


def _namespace(args: Dict[str, object], fn_node: ast.FunctionDef) -> Dict[str, object]:
    ns = {k: (v.value if hasattr(v, "value") and not isinstance(v, torch.Tensor) else v)
          for k, v in args.items() if not isinstance(v, torch.Tensor)}
    for node in ast.walk(fn_node):  # simple local definitions such as J = C + K
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                ns.setdefault(node.targets[0].id, _eval(node.value, ns))
            except Exception:
                pass
    return ns


def _eval(expr: ast.AST, ns: Dict[str, object]):
    return eval(compile(ast.Expression(expr), "<range>", "eval"), {"__builtins__": {}}, dict(ns))


@functools.lru_cache(maxsize=None)
def _source_calls(path: str):
    """{line: [(call node, enclosing FunctionDef)]} of every call of a plain name in a file."""
    tree = ast.parse(Path(path).read_text())
    out: Dict[int, list] = {}
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                    for ln in range(node.lineno, node.end_lineno + 1):
                        out.setdefault(ln, []).append((node, fn))
    return out


def _helper_namespace(lines, source_file, fn_node, args):
    """The namespace of a helper's loop through the call site its instructions were inlined from
    (the most common one among them): the helper's parameters bound to the caller's arguments,
    evaluated in the caller's namespace. None when no call site is found."""
    calls = _source_calls(source_file)
    votes: Dict[int, int] = {}
    found = {}
    for ls in lines:
        for f, n in ls:
            for call, caller in calls.get(n, []) if f == source_file else []:
                if call.func.id == fn_node.name:
                    votes[id(call)] = votes.get(id(call), 0) + 1
                    found[id(call)] = (call, caller)
    if not votes:
        return None
    call, caller = found[max(votes, key=votes.get)]
    outer = _namespace(args, caller)
    ns = dict(outer)
    for param, expr in zip([a.arg for a in fn_node.args.args], call.args):
        try:
            ns[param] = _eval(expr, outer)
        except Exception:
            pass
    return ns


def resolve_trips(code: sass.Sass, source_file: str, args: Dict[str, object]) -> List[str]:
    """Sets each loop's trips from its source loop; returns notes for loops it could not map.
    A loop in a helper takes the helper's arguments from the call site it was inlined from."""
    notes = []
    loops = _source_loops(source_file)
    for lp in code.loops:
        lines = sass.loop_lines(code, lp)
        best, best_key = None, None
        for node, fn_node in loops:
            lo, hi = node.body[0].lineno, node.end_lineno
            score = sum(1 for ls in lines if any(f == source_file and lo <= n <= hi for f, n in ls))
            key = (score, -(hi - lo))
            if score and (best_key is None or key > best_key):
                best, best_key = (node, fn_node), key
        if best is None:
            notes.append(f"SASS loop at {lp.start:#x}-{lp.end:#x} matched no source loop: counted once")
            continue
        node, fn_node = best
        try:
            ns = _namespace(args, fn_node)
            try:
                vals = [int(_eval(a, ns)) for a in node.iter.args]
            except NameError:
                ns = _helper_namespace(lines, source_file, fn_node, args)
                if ns is None:
                    raise
                vals = [int(_eval(a, ns)) for a in node.iter.args]
            lp.trips = float(len(range(*vals)))
            lp.source = f"{fn_node.name}:{node.lineno} {ast.unparse(node.iter)} = {lp.trips:.0f}"
        except Exception as exc:
            notes.append(f"loop {fn_node.name}:{node.lineno} {ast.unparse(node.iter)}: trips not "
                         f"evaluated ({type(exc).__name__}: {exc}); counted once")
    # the same source loop split by the compiler (e.g. peeled) would be counted twice: say so
    seen = {}
    for lp in code.loops:
        if lp.source:
            if lp.source in seen:
                notes.append(f"two SASS loops map to {lp.source}: both counted at the full trips")
            seen[lp.source] = lp
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
        if isinstance(node, ast.If) and "tl.max(" in ast.unparse(node.test):
            t = node.test
            active_body = not (isinstance(t, ast.Compare) and isinstance(t.ops[0], ast.Eq))
            body = (node.body[0].lineno, node.body[-1].end_lineno)
            orelse = (node.orelse[0].lineno, node.orelse[-1].end_lineno) if node.orelse else None
            out.append((body, orelse, active_body))
    return out


def _program_shares(code: sass.Sass, source_file: str, active: float) -> Dict[int, float]:
    """addr -> share of programs that run the instruction, for the sides of program-uniform
    branches (`active` = share of programs holding an active pixel)."""
    shares = {}
    for body, orelse, active_body in _program_branches(source_file):
        for rng, share in ((body, active if active_body else 1 - active),
                           (orelse, 1 - active if active_body else active)):
            if rng is None:
                continue
            for i in code.instrs:
                if any(f == source_file and rng[0] <= n <= rng[1] for f, n in i.lines):
                    shares[i.addr] = shares.get(i.addr, 1.0) * share
    return shares


def analyse_triton(cap: Captured, hints: Optional[Dict[str, object]] = None,
                   active_programs: float = 1.0) -> Dict[str, object]:
    """hints: values of kernel-side names the launch does not show (e.g. a count loaded from a
    tensor); active_programs: share of programs that take the active side of program-uniform
    branches."""
    k = cap.kernel
    name = k.name
    res, code0 = _cubin_facts(k.asm["cubin"], name)
    code = sass.Sass(code0.instrs, [sass.Loop(lp.start, lp.end) for lp in code0.loops])
    src = os.path.realpath(sys.modules[cap.fn.fn.__module__].__file__)
    consts = {a: (v.value if hasattr(v, "value") else v) for a, v in cap.args.items()
              if a in [cap.fn.arg_names[i] for i in cap.fn.constexprs]}
    notes = resolve_trips(code, src, {**(hints or {}), **cap.args, **consts})
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


def _sector_fraction(case: Case) -> float:
    """Fraction of the logits' 32-byte sectors (along the contiguous spatial dim) that hold a
    pixel with a gradient, in the case's scenario at its OC fraction."""
    if case.scenario == "all-pixels":
        return 1.0
    per = 32 // _ITEMSIZE[case.dtype]
    f = DEFAULT_OC_FRACTION
    if case.scenario == "indep":
        return 1.0 - (1.0 - f) ** per
    B, _, *sp = case.shape
    m = blob_mask((B, *sp), f, torch.Generator().manual_seed(0)).reshape(B, -1)
    n = m.shape[1] // per * per
    hit = m[:, :n].reshape(B, -1, per).any(-1).float().sum() + m[:, n:].any(-1).float().sum()
    return float(hit) / (B * math.ceil(m.shape[1] / per))


# IC classes per image the model assumes (background + the tags): the bench's VOC-like tags
# (inputs.voc_like_tags) draw 1 to 3 classes per image, 2 on average.
ASSUMED_IC_CLASSES = 3


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
    """(hints, share of active programs) of one OCR/seg launch; ({}, 1) for the others. The seg
    backward has a CE gradient at every pixel: every program is active."""
    if case.op not in ("ocr_loss", "seg_ocr_loss") or "BLOCK_P" not in cap.args:
        return {}, 1.0
    block = int(getattr(cap.args["BLOCK_P"], "value", cap.args["BLOCK_P"]))
    active = 1.0 if (case.op == "seg_ocr_loss" and pass_ == "bwd") else _active_programs(case, block)
    return {"nic": min(ASSUMED_IC_CLASSES, case.shape[1])}, active


def kernel_bytes(case: Case, pass_: str, cap: Captured) -> float:
    if case.op in ("ocr_loss", "seg_ocr_loss") and cap.fn.fn.__name__ in ("_fwd_kernel", "_bwd_kernel"):
        B, C1 = case.shape[:2]
        P = B * math.prod(case.shape[2:])
        logits = P * C1 * _ITEMSIZE[case.dtype]
        seg = case.op == "seg_ocr_loss"
        read_frac = 1.0 if seg else _sector_fraction(case)
        # the forward's saved OC statistics (8 bytes a pixel), written at every pixel and read
        # back where the backward can have a gradient (every pixel for seg: its CE term)
        if pass_ == "fwd":
            return logits + 4 * P + 8 * P + (4 * P + 8 * P if seg else 0)
        return logits * read_frac + logits + 8 * P + 8 * P * read_frac + (12 * P if seg else 0)
    # W-OoD, K-means and the OCR class lists: every tensor argument once (centroid re-reads
    # across tiles hit L2)
    seen, total = set(), 0
    for v in cap.args.values():
        if isinstance(v, torch.Tensor) and id(v) not in seen:
            seen.add(id(v))
            total += v.numel() * v.element_size()
    return float(total)


def _floor_bytes(case: Case, pass_: str) -> float:
    dt = DTYPES.get(case.dtype, torch.float32)
    if pass_ == "bwd":
        return bytes_moved(case.op, case.shape, dt, "fwd+bwd") - bytes_moved(case.op, case.shape, dt, "fwd")
    return bytes_moved(case.op, case.shape, dt, pass_)


def _logits(case: Case) -> int:
    if case.op in ("ocr_loss", "seg_ocr_loss"):
        return math.prod(case.shape)
    if case.op == "wood_distance_loss":
        B, D, C, K = case.shape
        return B * D
    N, D, _ = case.shape
    return N * D


def model_case(case: Case) -> List[dict]:
    """Rows for the case: one per kernel launch of each pass, then the pass totals."""
    rows = []
    launches = launch_case(case)
    totals: Dict[str, Dict[str, float]] = {}
    for pass_, caps in launches.items():
        for cap in caps:
            hints, active = _case_hints(case, pass_, cap)
            a = analyse_triton(cap, hints, active)
            nbytes = kernel_bytes(case, pass_, cap)
            threads = math.prod(cap.grid) * a["num_warps"] * 32
            n = _logits(case)
            row = dict(a, case=case.name, op=case.op, shape=shape_str(case.shape), dtype=case.dtype,
                       group=case.group, scenario=case.scenario, pass_=pass_, bytes=nbytes,
                       sass_per_logit=a["sass"]["executed"] * threads / n,
                       mufu_per_logit=a["sass"]["executed_mufu"] * threads / n,
                       shared_per_logit=a["sass"]["executed_shared"] * threads / n)
            launch = gpu_model.Launch(
                ctas=math.prod(cap.grid), warps_per_cta=a["num_warps"], regs=a["regs"] or 255,
                smem_per_cta=a["smem_bytes"], instr_per_thread=a["sass"]["executed"],
                mufu_per_thread=a["sass"]["executed_mufu"], fp64_per_thread=a["sass"]["executed_fp64"],
                load_bytes_in_flight_per_thread=a["load_bytes_in_flight_per_thread"], bytes=nbytes)
            row["predicted"] = {}
            for gname, gpu in gpu_model.GPUS.items():
                p = gpu_model.predict(launch, gpu)
                row["predicted"][gname] = p
                t = totals.setdefault(pass_, {}).setdefault(gname, 0.0)
                totals[pass_][gname] = t + (p["time_s"] or float("inf"))
            row["pass"] = row.pop("pass_")
            rows.append(row)
    passes = list(totals) + (["fwd+bwd"] if "bwd" in totals else [])
    for pass_ in passes:
        floor_b = _floor_bytes(case, pass_)
        for row in [r for r in rows if r["pass"] == pass_]:
            row["floor_bytes"] = floor_b
            for gname, gpu in gpu_model.GPUS.items():
                p = row["predicted"][gname]
                p["pct_of_floor_alone"] = (100 * gpu_model.floor_s(floor_b, gpu) / p["time_s"]
                                           if p["time_s"] else None)
        summary = {"kernel": "+".join(sorted({r["kernel"] for r in rows
                                              if r["pass"] in pass_.split("+")})),
                   "case": case.name, "op": case.op, "shape": shape_str(case.shape),
                   "dtype": case.dtype, "group": case.group, "scenario": case.scenario,
                   "pass": pass_, "total": True, "floor_bytes": floor_b, "predicted": {}}
        parts = [r for r in rows if r["pass"] in pass_.split("+") and not r.get("total")]
        summary["regs"] = max((r["regs"] or 0) for r in parts)
        summary["spills"] = sum(r["spills"] for r in parts)
        summary["sass_per_logit"] = sum(r["sass_per_logit"] for r in parts)
        summary["mufu_per_logit"] = sum(r["mufu_per_logit"] for r in parts)
        summary["bytes"] = sum(r["bytes"] for r in parts)
        for gname, gpu in gpu_model.GPUS.items():
            t = sum(totals[p][gname] for p in pass_.split("+"))
            summary["predicted"][gname] = {"time_s": t, "pct_of_floor": 100 * gpu_model.floor_s(floor_b, gpu) / t,
                                           "bound": "+".join(r["predicted"][gname]["bound"] for r in parts)}
        rows.append(summary)
    for r in rows:
        h = r["predicted"]["H200"]
        r["predicted_pct_of_floor"] = h.get("pct_of_floor", h.get("pct_of_floor_alone"))
        r["predicted_time_s"] = h["time_s"]
    return rows


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
    hdr = ["case", "pass", "kernel", "warps", "regs", "spill B", "smem B", "SASS/logit", "MUFU/logit",
           "MB", "H200 us", "H200 %floor", "H100 us", "H100 %floor", "bound (H200)"]
    lines = []
    for r in rows:
        h2, h1 = r["predicted"]["H200"], r["predicted"]["H100"]
        pct = lambda p: p.get("pct_of_floor", p.get("pct_of_floor_alone"))  # noqa: E731
        lines.append([r["case"], r["pass"] + (" (total)" if r.get("total") else ""),
                      r["kernel"].replace("triton:", ""),
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


HEADER = ("PREDICTIONS of a static model (ocr_kernels/bench/gpu_model.py), not measurements: "
          "kernels compiled for sm_90 without a GPU; times from issue, MUFU and memory throughput "
          "bounds. '%floor' = copy-floor time / predicted time (100 = at the copy bandwidth).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--static", action="store_true",
                   help="no timing: compile every kernel for sm_90 and report registers, spills, "
                        "executed SASS and PREDICTED H200/H100 times (no GPU needed)")
    p.add_argument("--static-cases", default="full", choices=("full", "ocr", "smoke"),
                   help="with --static: all cases (default), the OCR/seg ones only, or the CI smoke set")
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
    for i, case in enumerate(cases):
        print(f"[{i + 1}/{len(cases)}] {case.name}", file=sys.stderr, flush=True)
        try:
            rows += model_case(case)
        except Exception as exc:  # one failing case must not stop the rest
            errors.append({"case": case.name, "error": f"{type(exc).__name__}: {str(exc)[:400]}"})
            print(f"  failed: {errors[-1]['error']}", file=sys.stderr, flush=True)
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
                "## Per pass (fwd, bwd, fwd+bwd)\n\n" + format_table(totals, markdown=True) +
                "\n## Per kernel launch\n\n" + format_table([r for r in rows if not r.get("total")], markdown=True))
    print(HEADER)
    print(format_table(totals))
    print(f"{len(cases) - len(errors)} of {len(cases)} cases modelled in {time.monotonic() - t0:.0f} s; "
          f"results: {os.path.join(args.out, stem)}.json/.md", flush=True)
    return 1 if errors else 0


def _argv(args) -> List[str]:
    out = ["--out", args.out, "--static-cases", args.static_cases]
    return out + (["--name", args.name] if args.name else []) + (["--static-asm"] if args.static_asm else [])


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
