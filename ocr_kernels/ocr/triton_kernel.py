"""Fused Triton kernels of the OCR loss (docs/semantics.md §1) and of the fused CE + OCR maps of
the segmentation objective (§1b; its op registration is ocr_kernels/seg/triton_kernel.py).

Design (README "Design of the OCR kernels"):
- Layout: one program = BLOCK_P pixels of ONE image, 8 pixels a thread for the OCR loss (4 with
  the CE term), threads along the pixels; every block is 1-D, so a pixel's class reductions stay
  in its thread's registers (no shuffles, no shared memory, no layout conversions) and the
  register count does not grow with C+1: any C runs the same code, one coalesced row of the
  logits per class. When an image holds a whole tile (FULL) the last tile moves back to end at
  its last pixel, so no load or store of the class loops is masked.
- Grid: persistent when an image has more tiles than its share of one wave of resident
  programs (SMs x PROGRAMS_PER_SM / B; _CE with the CE term): each program loops over its image's
  tiles (LOOP), so the work is not cut into waves whose last is mostly idle; registers are capped
  to keep that many programs an SM. Otherwise one program a tile, without the loop.
- Tags are hoisted per image: the forward's programs build each image's class list, IC classes
  first, then OC (ascending), in their prologue (no launch of its own), and the kernels loop over
  each part, so the IC/OC test costs nothing per class.
- One exp per logit in the forward: online (max, argmax, sum without the argmax's term) over the IC
  list (the anchor) and over the OC list (the OC log-sum-exp), merged into the prediction and the
  softmax normaliser. "ada" then re-reads the few IC rows (its group test needs P_A with the full
  normaliser); a block without a counted pixel skips that pass.
- Forward writes the fp32 loss map (and the fp32 CE map for the fused objective), a flag bit a
  pixel (the loss is not 0; a tile's bits at its index) and, where the backward reads them, the
  OC statistics: one float, w = LSE_OC(z), for the OCR loss; the (max, sum) pair with the CE
  term, whose softmax needs them exactly.
- Backward (recompute): reads the flags, and the upstream gradient and the OC statistics only
  where a flag is set, never the loss map: s comes back from the statistics and the IC passes
  (the forward computes it by the same formulas), σ(s) from s; a block whose pixels all
  lack a gradient writes zeros without reading the logits; otherwise the IC passes run again
  (loads masked to the pixels with a gradient) and one more pass writes the gradient. With
  sparse OC pixels fwd+bwd moves about one read of the logits plus one write of the gradient,
  against two reads and two writes when the gradient is kept from the forward.
- Layouts: the logits' per-dim strides are passed, so contiguous and channels_last run without a
  copy; when the spatial dims collapse to one stride (both of those) a FLAT fast path skips the
  index decomposition. INT64 switches the offsets to 64 bits exactly when some offset needs it.

Registration: torch.library.custom_op + register_fake + register_autograd. triton_op/wrap_triton
is not used because under TRITON_INTERPRET=1 wrap_triton hands back the raw interpreted kernel,
which then runs on FakeTensors during tracing (opcheck and torch.compile both fail): custom_op is
the registration that can be tested here, and it compiles without graph breaks on a GPU too.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl

from .._autograd import first_order_only
from .._op_names import triton_op_name
from .._options import GROUP_SPLITS, PIXEL_MODES, OCROptions
from .._tensors import check_map, check_ocr_args, new_map
from .._triton import interpreting

# Pixels per program on a GPU; smaller images take one smaller block. Pixels a thread: 8 for the
# OCR loss (a class row's load, address and loop overhead shared by 8 pixels; 116-128 registers,
# 2 warps a program), 4 with the CE term (its extra per-pixel state would pass 128 registers at 8).
BLOCK_P = 512
PIXELS_PER_THREAD = 4
PIXELS_PER_THREAD_OCR = 8
# Under the interpreter (tests on the CPU) each program and each op costs Python overhead: few,
# large programs.
INTERPRET_BLOCK_P = 8192
# Classes a forward program reads of its image's tags at once while it builds the class list.
CLASS_CHUNK = 256
_FORCE_INT64 = False  # tests set it to run the 64-bit offset path on small tensors
# Programs an SM holds at once, for sizing a persistent grid: the OCR loss's 2 warps at <= 128
# registers fill the register file 8 times over; with the CE term, 4 warps at <= 96 (today 72-90)
# 5 times. _reg_cap holds the looping kernels to those budgets.
PROGRAMS_PER_SM = 8
PROGRAMS_PER_SM_CE = 5
_REGS_PER_SM = 65536  # sm_70 to sm_90
_FORCE_PROGRAMS_PER_IMAGE = 0  # tests set it: a few programs per image, each looping over tiles
_INT32_LIMIT = 2**31 - 1
# On a GPU the logs that only need an absolute error of ~1e-7 go through the SFU (lg2.approx);
# the interpreter has no inline PTX and takes numpy's log2.
_SFU_LOG = tl.constexpr(not interpreting())
_LOG2E = tl.constexpr(1.4426950408889634)
_LN2 = tl.constexpr(0.6931471805599453)


# --------------------------------------------------------------------------------------------
# Device helpers. Every value is one per pixel: the blocks are 1-D along the pixels, so no
# reduction crosses threads and no layout conversion (shared memory + barrier) is ever emitted.
# --------------------------------------------------------------------------------------------
@triton.jit
def _exp(x):
    # One MUFU.EX2 (flushing results below 2^-126 to 0, harmless in every sum and product here);
    # tl.exp adds a subnormal rescue around it.
    return tl.math.exp2(x * _LOG2E)


@triton.jit
def _div(x, y):
    # x / y through div.approx (one MUFU.RCP and a multiply, 2 ulp) in place of the full-range
    # division's sequence: every denominator here is a sum that holds a term 1 (>= 1), or NaN.
    return tl.math.fdiv(x, y, approx=True)


@triton.jit
def _ln_approx(x):
    # ln x with an absolute error of ~1e-7: for terms of s and of the "ada" normaliser, where an
    # absolute error is what counts. The relative-precision logs (tiny CE, tiny loss) use tl.log.
    if _SFU_LOG:
        y = tl.inline_asm_elementwise("lg2.approx.ftz.f32 $0, $1;", "=r,r", [x],
                                      dtype=tl.float32, is_pure=True, pack=1)
    else:
        y = tl.log2(x)
    return y * _LN2


@triton.jit
def _log1p_pos(x):
    # log(1 + x) for x >= 0 to ~2e-6 relative without a polynomial log: a series below 1/16 (the
    # loss of a confidently rectified pixel, ~e^s, and a confident pixel's CE sit far below
    # fp32's epsilon relative to 1), the SFU's log above, where its ~1e-7 absolute error is at
    # most 2e-6 of the result.
    p = x * (1.0 + x * (-0.5 + x * (1.0 / 3.0 + x * (-0.25 + x * (0.2 + x * (-1.0 / 6.0
                                                                             + x * (1.0 / 7.0)))))))
    return tl.where(x < 0.0625, p, _ln_approx(1.0 + x))


@triton.jit
def _sigmoid_from_loss(L):
    # σ(s) = 1 - e^{-L} with L = softplus(s) >= 0: the series of -expm1(-L) below 1/2, where
    # 1 - e^{-L} would cancel (tiny L: relative precision kept), 1 - e^{-L} above (at most 1.5x
    # the exp's error).
    p = 1.0 - L * (1.0 / 9.0) * (1.0 - L * 0.1)
    p = 1.0 - L * (1.0 / 7.0) * (1.0 - L * 0.125 * p)
    p = 1.0 - L * (1.0 / 5.0) * (1.0 - L * (1.0 / 6.0) * p)
    p = L * (1.0 - L * 0.5 * (1.0 - L * (1.0 / 3.0) * (1.0 - L * 0.25 * p)))
    return tl.where(L < 0.5, p, 1.0 - _exp(-L))


@triton.jit
def _softplus(s):
    return tl.maximum(s, 0.0) + _log1p_pos(_exp(-tl.abs(s)))


@triton.jit
def _sigmoid(s):
    # 1 / (1 + e^{-s}): the denominator is >= 1 (or inf below s = -88, where σ flushes to 0 as
    # fp32's e^s would), so _div's range holds; the error is the exp's, relative.
    return _div(1.0, 1.0 + _exp(-s))


@triton.jit
def _oc_stat(mi, mo, so, bad):
    # The one float the OCR loss saves a pixel: w = LSE_OC(z) = mo + ln(1 + so), absolute. Its
    # rounding costs |w|·2^-24 of s and of the OC softmax (at logits ~60, 4e-6 relative); a
    # form relative to the IC max (u = w - mi) would cost |u|·2^-24 instead, which fails when
    # an IC logit sits far above the OC ones (u ~ -1e5 rounds to 2^-7: tests/test_policies.py's
    # extreme gaps), while w stays exact there and where one OC logit dominates (w == mo).
    # `bad` (NaN at a non-finite logit) rides on it.
    return mo + _ln_approx(1.0 + so) + bad


@triton.jit
def _lse_from_u(mi, si, u):
    # The softmax normaliser over all classes from the IC pass and u = LSE_OC - mi:
    # LSE = mi + ln((1 + si) + e^u). The forward and the backward both take "ada"'s P_A and P_k
    # from it, so their group decisions are the same bit for bit.
    return mi + _ln_approx((1.0 + si) + _exp(u))


@triton.jit
def _s_from_w(icm, ics, w, margin):
    # s = LSE_G(-z) + LSE_OC(z) + Δ = (icm + w) + ln(ics) + Δ, the large terms first.
    return (icm + w) + (_ln_approx(ics) + margin)


@triton.jit
def _s_from_pair(icm, ics, mo, so, margin):
    # s from the exact OC pair (the CE variant saves it): -z_min + max_OC z first.
    ocm = tl.where(mo == float("-inf"), 0.0, mo)
    return (icm + ocm) + _ln_approx(ics * (1.0 + so)) + margin


@triton.jit
def _spatial_offset(n, S1, S2, s0, s1, s2, FLAT: tl.constexpr):
    # n is the flat pixel index inside one image; FLAT: the spatial dims collapse to stride s2.
    if FLAT:
        off = n * s2
    else:
        i2 = n % S2
        t = n // S2
        off = (t // S1) * s0 + (t % S1) * s1 + i2 * s2
    return off


@triton.jit
def _pixels(pid, N, BLOCK_P: tl.constexpr, FULL: tl.constexpr):
    # (first pixel, pixel indices, in-image mask) of a program's tile. FULL (N >= BLOCK_P): the
    # last tile is moved back to end at pixel N - 1, so that every lane holds a pixel and no
    # load or store needs a mask (the tail's predicates and "other" values cost ~2 instructions
    # a logit); the pixels it shares with the tile before are computed twice, identically.
    if FULL:
        start = tl.minimum(pid * BLOCK_P, N - BLOCK_P)
        n = start + tl.arange(0, BLOCK_P)
        row_mask = tl.full((BLOCK_P,), 1, tl.int1)
    else:
        start = pid * BLOCK_P
        n = start + tl.arange(0, BLOCK_P)
        row_mask = n < N
    return start, n, row_mask


@triton.jit
def _tile(ptr, base, start, n, S1, S2, s0, s1, s2, FLAT: tl.constexpr, BLOCK_P: tl.constexpr):
    # (pointer, per-pixel offsets) of a tile's pixels in one image (base: the image's offset,
    # start: the tile's first pixel).
    # FLAT: the tile's first pixel goes into the scalar pointer and the offsets are tl.arange
    # times the stride, so a thread's pixels sit at fixed distances from one address and a class
    # row costs one address computation, not one 64-bit add per pixel.
    if FLAT:
        p = ptr + (base + start * s2)
        off = tl.arange(0, BLOCK_P) * s2
    else:
        p = ptr + base
        off = _spatial_offset(n, S1, S2, s0, s1, s2, FLAT)
    return p, off


@triton.jit
def _load_class(z_ptr, zrow, lmask, cls_ptr, i, z_sc, INT64: tl.constexpr):
    # The i-th class of this image's list and its logits row: one coalesced load per pixel.
    c = tl.load(cls_ptr + i).to(tl.int32)
    if INT64:
        c = c.to(tl.int64)
    z = tl.load((z_ptr + c * z_sc) + zrow, mask=lmask, other=0.0).to(tl.float32)
    return c, z


@triton.jit
def _max_pass(z_ptr, zrow, lmask, cls_ptr, i0, i1, z_sc, bad, BLOCK_P: tl.constexpr,
              INT64: tl.constexpr):
    # Over the classes i0..i1-1 of the list: the running max m, its lowest index a (a later class
    # replaces it only when strictly greater, as torch.argmax on ties) and s = Σ e^{z_k - m} over
    # the classes seen but that argmax, whose term is exactly 1. One exp a class, e^{-|z - m|},
    # serves both a new maximum (rescale) and a smaller logit (add). Holding the argmax's 1 out of
    # s keeps s to its own relative precision: CE = log1p(s) of a confident pixel is far below
    # fp32's epsilon relative to 1.
    m = tl.full((BLOCK_P,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK_P,), tl.float32)
    a = tl.zeros((BLOCK_P,), tl.int32)
    if INT64:
        a = a.to(tl.int64)
    for i in range(i0, i1):
        c, z = _load_class(z_ptr, zrow, lmask, cls_ptr, i, z_sc, INT64)
        up = z > m
        e = _exp(-tl.abs(z - m))
        s = tl.where(up, e, 1.0) * s + e  # up: (s + 1)·e; else s + e
        a = tl.where(up, c, a)
        m = tl.where(up, z, m)
        # 0, or NaN once a logit is NaN or ±inf (the NaN policy: such a pixel's loss is NaN
        # whatever its mask; a -inf would otherwise vanish from m and s). One FFMA a logit.
        bad = z * 0.0 + bad
    return m, s, a, bad


@triton.jit
def _merge(mi, si, ai, mo, so, ao):
    # The (max, s, argmax) of all classes from the IC and the OC partials (ties: lowest index);
    # no OC class: mo = -inf, e = 0. Returns pred ∈ IC too.
    oc_up = (mo > mi) | ((mo == mi) & (ao < ai))
    e = _exp(-tl.abs(mo - mi))
    s = tl.where(oc_up, so + (si + 1.0) * e, si + (so + 1.0) * e)
    return tl.maximum(mi, mo), s, oc_up == 0


@triton.jit
def _in_group(z, c, A, pA, lse_all, gmask, prior_ptr, p_s0, p_s1, threshold,
              GROUP: tl.constexpr):
    # Membership of IC class c in the IC group of each pixel (Eq. 9 for "ada": M[A, c] is a
    # per-pixel gather from the tiny prior, in the pixels' own layout).
    if GROUP == 0:
        mrow = tl.load(prior_ptr + A * p_s0 + c * p_s1, mask=gmask, other=0.0).to(tl.float32)
        g = ((c == A) | (pA - _exp(z - lse_all) * mrow < threshold)) & gmask
    elif GROUP == 1:
        g = (c == A) & gmask
    else:
        g = gmask
    return g


@triton.jit
def _group_pass(z_ptr, zrow, gmask, cls_ptr, nic, z_sc, A, pA, lse_all, prior_ptr, p_s0, p_s1,
                threshold, BLOCK_P: tl.constexpr, GROUP: tl.constexpr, INT64: tl.constexpr):
    # (max, Σ e^{x - max}) of x = -z over the IC group. "ada" decides membership with P_A and the
    # full softmax normaliser, known only after the first pass, so the IC rows (a few classes,
    # just read) are read again; only the pixels of gmask load.
    gm = tl.full((BLOCK_P,), float("-inf"), tl.float32)
    gs = tl.zeros((BLOCK_P,), tl.float32)
    for i in range(0, nic):
        c, z = _load_class(z_ptr, zrow, gmask, cls_ptr, i, z_sc, INT64)
        g = _in_group(z, c, A, pA, lse_all, gmask, prior_ptr, p_s0, p_s1, threshold, GROUP)
        x = -z
        up = x > gm
        e = _exp(-tl.abs(x - gm))
        gs = tl.where(g, tl.where(up, e, 1.0) * gs + tl.where(up, 1.0, e), gs)
        gm = tl.where(g & up, x, gm)
    return tl.where(gm == float("-inf"), 0.0, gm), tl.where(gs > 0.0, gs, 1.0)


@triton.jit
def _plane(N, INT64: tl.constexpr):
    # B·N, the offset of the second [B, *spatial] plane of the statistics. Planes, not [B, 2, N]:
    # an offset 2·b·N is provably even, which would give the statistics' loads a wider vector
    # layout than the gradient's stores and a layout conversion (shared memory) in the hot loop.
    B = tl.num_programs(1)
    if INT64:
        B = B.to(tl.int64)
    return B * N


@triton.jit
def _flag_bytes(flag_ptr, b, pid, N, BLOCK_P: tl.constexpr):
    # A tile's flags: one bit a pixel, BLOCK_P / 8 bytes at the tile's index (not the pixel's:
    # the last tile of a FULL image starts at N - BLOCK_P, off the byte grid); bit k of byte j
    # is the tile's pixel 8j + k, which its thread holds (8 consecutive pixels a thread).
    return flag_ptr + (b * tl.cdiv(N, BLOCK_P) + pid) * (BLOCK_P // 8) + tl.arange(0, BLOCK_P // 8)


@triton.jit
def _store_flags(flag_ptr, b, pid, N, has_loss, BLOCK_P: tl.constexpr):
    bits = tl.reshape(has_loss.to(tl.int32), (BLOCK_P // 8, 8)) << tl.arange(0, 8)[None, :]
    tl.store(_flag_bytes(flag_ptr, b, pid, N, BLOCK_P), tl.sum(bits, 1).to(tl.uint8))


@triton.jit
def _load_flags(flag_ptr, b, pid, N, BLOCK_P: tl.constexpr):
    byte = tl.load(_flag_bytes(flag_ptr, b, pid, N, BLOCK_P)).to(tl.int32)
    bits = (byte[:, None] >> tl.arange(0, 8)[None, :]) & 1
    return tl.reshape(bits, (BLOCK_P,)) != 0


@triton.jit
def _pixel_mask(pred_ic, oc_any, PIXELS: tl.constexpr):
    if PIXELS == 0:
        m = pred_ic == 0
    elif PIXELS == 1:
        m = pred_ic != 0
    else:
        m = pred_ic == pred_ic
    return m & oc_any


@triton.jit
def _ic_classes(tags_row, t_sc, c, C1):
    # IC = {0} ∪ {c+1 : tags[b, c] != 0}, for the classes c of one chunk (False past C+1).
    valid = c < C1
    tg = tl.load(tags_row + (c - 1) * t_sc, mask=(c >= 1) & valid, other=0)
    return ((tg != 0) | (c == 0)) & valid


@triton.jit
def _class_list(tags_row, t_sc, row, C1, BLOCK_C: tl.constexpr):
    # This image's class list: IC classes to the front, OC after them, each ascending (ties in
    # the class loops then resolve to the lowest index); the IC count after the list, and
    # returned. Chunks of BLOCK_C classes keep the registers bounded at any C: one pass counts
    # the IC classes (the OC part starts there), one places them. Every program of the image
    # writes the same values to the same row (the backward reuses it), so the list needs no
    # launch of its own; the caller's barrier makes the row visible to all of its threads.
    nic = tl.sum(tl.zeros((BLOCK_C,), tl.int32), 0)
    for c0 in range(0, C1, BLOCK_C):
        ic = _ic_classes(tags_row, t_sc, c0 + tl.arange(0, BLOCK_C), C1)
        nic += tl.sum(ic.to(tl.int32), 0)
    before = tl.sum(tl.zeros((BLOCK_C,), tl.int32), 0)  # IC classes in the earlier chunks
    for c0 in range(0, C1, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        ic = _ic_classes(tags_row, t_sc, c, C1)
        rank = before + tl.cumsum(ic.to(tl.int32), 0)  # IC classes up to and including c
        tl.store(row + tl.where(ic, rank - 1, nic + c - rank), c, mask=c < C1)
        before += tl.sum(ic.to(tl.int32), 0)
    tl.store(row + C1, nic)
    return nic


@triton.jit
def _class_list_kernel(tags_ptr, cls_ptr, C1, t_sb, t_sc, BLOCK_C: tl.constexpr):
    # One program per image: the class lists of _class_lists, for kernels that do not build them
    # in their prologue.
    b = tl.program_id(0)
    _class_list(tags_ptr + b * t_sb, t_sc, cls_ptr + b * (C1 + 1), C1, BLOCK_C)


@triton.jit
def _image_classes(tags_ptr, cls_ptr, t_sb, t_sc, C1, BLOCK_C: tl.constexpr,
                   INT64: tl.constexpr):
    # A forward program's prologue: its image b, and b's class list (built here, _class_list)
    # and IC count.
    b = tl.program_id(1)
    if INT64:
        b = b.to(tl.int64)
    cls = cls_ptr + b * (C1 + 1)
    nic = _class_list(tags_ptr + b * t_sb, t_sc, cls, C1, BLOCK_C)
    tl.debug_barrier()  # the row just written is read back by every thread in the class loops
    return b, cls, nic


# --------------------------------------------------------------------------------------------
# Kernels: one program = BLOCK_P pixels of one image; the class loops run over the image's class
# list (IC classes first, then OC, each ascending), so the IC/OC test is hoisted out of the loops.
# --------------------------------------------------------------------------------------------
@triton.jit
def _fwd_kernel(
    z_ptr, tags_ptr, cls_ptr, prior_ptr, tgt_ptr, loss_ptr, ce_ptr, st_ptr, flag_ptr,
    N, S1, S2, C1,
    z_sb, z_sc, z_s0, z_s1, z_s2,
    t_sb, t_sc,
    p_s0, p_s1,
    y_sb, y_s0, y_s1, y_s2,
    margin, threshold, ignore_index,
    GROUP: tl.constexpr, PIXELS: tl.constexpr, WITH_CE: tl.constexpr, FLAT: tl.constexpr,
    INT64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, FULL: tl.constexpr,
    LOOP: tl.constexpr,
):
    b, cls, nic = _image_classes(tags_ptr, cls_ptr, t_sb, t_sc, C1, BLOCK_C, INT64)
    pid = tl.program_id(0)
    if LOOP:
        # Persistent over the image's tiles (_launch_args sizes the grid to the resident
        # programs): the class list above is built once per program, not once per tile.
        nprog = tl.num_programs(0)
        tiles = tl.cdiv(N, BLOCK_P)
        for tile in range(pid, tiles, nprog):
            _fwd_tile(z_ptr, cls, prior_ptr, tgt_ptr, loss_ptr, ce_ptr, st_ptr, flag_ptr, tile, b,
                      nic, N, S1, S2, C1, z_sb, z_sc, z_s0, z_s1, z_s2, p_s0, p_s1,
                      y_sb, y_s0, y_s1, y_s2, margin, threshold, ignore_index,
                      GROUP, PIXELS, WITH_CE, FLAT, INT64, BLOCK_P, FULL)
    else:
        # One program a tile (a grid of at most one wave): without the loop, whose live values
        # cost registers (at C+1 = 201, 128 and a spill instead of 124).
        _fwd_tile(z_ptr, cls, prior_ptr, tgt_ptr, loss_ptr, ce_ptr, st_ptr, flag_ptr, pid, b, nic,
                  N, S1, S2, C1, z_sb, z_sc, z_s0, z_s1, z_s2, p_s0, p_s1, y_sb, y_s0, y_s1, y_s2,
                  margin, threshold, ignore_index, GROUP, PIXELS, WITH_CE, FLAT, INT64, BLOCK_P,
                  FULL)


@triton.jit
def _class_runs(z_ptr, zrow, row_mask, cls, nic, C1, z_sc, PIXELS: tl.constexpr,
                BLOCK_P: tl.constexpr, INT64: tl.constexpr):
    # The forward's first step, one read of the tile's class rows: the IC and OC runs (mi, si,
    # anchor A; mo, so), `bad` (0, or NaN once a logit is not finite; the OC pass carries on the
    # IC pass's: one value live through it, not two), their merge (zmax, s1) and the pixel mask.
    mi, si, A, bad = _max_pass(z_ptr, zrow, row_mask, cls, 0, nic, z_sc,
                               tl.zeros((BLOCK_P,), tl.float32), BLOCK_P, INT64)
    mo, so, ao, bad = _max_pass(z_ptr, zrow, row_mask, cls, nic, C1, z_sc, bad, BLOCK_P, INT64)
    zmax, s1, pred_ic = _merge(mi, si, A, mo, so, ao)
    # (a block of nic, not the scalar: the interpreter's bool ops mistype scalar & block)
    pm = _pixel_mask(pred_ic, (tl.zeros((BLOCK_P,), tl.int32) + nic) < C1, PIXELS) & row_mask
    return mi, si, A, mo, so, bad, zmax, s1, pm


@triton.jit
def _ce_map(z_ptr, zrow, tgt_ptr, ce_ptr, out, b, n, row_mask, zmax, s1, S1, S2, C1, z_sc,
            y_sb, y_s0, y_s1, y_s2, ignore_index, FLAT: tl.constexpr, INT64: tl.constexpr):
    # The CE map of a tile; returns (target not ignored, clamped target class). A lane past the
    # image reads ignore_index, so y_ok holds only in the image.
    y = tl.load(tgt_ptr + b * y_sb + _spatial_offset(n, S1, S2, y_s0, y_s1, y_s2, FLAT),
                mask=row_mask, other=ignore_index)
    y_ok = y != ignore_index
    # A bad target must never read out of bounds: clamp (the caller validates values).
    tc = tl.minimum(tl.maximum(y, 0), C1 - 1).to(tl.int32)
    if INT64:
        tc = tc.to(tl.int64)
    zt = tl.load(z_ptr + zrow + tc * z_sc, mask=row_mask & y_ok, other=0.0).to(tl.float32)
    tl.store(ce_ptr + out, tl.where(y_ok, (zmax - zt) + _log1p_pos(s1), 0.0), mask=row_mask)
    return y_ok, tc


@triton.jit
def _fwd_tile(
    z_ptr, cls, prior_ptr, tgt_ptr, loss_ptr, ce_ptr, st_ptr, flag_ptr, pid, b, nic,
    N, S1, S2, C1,
    z_sb, z_sc, z_s0, z_s1, z_s2,
    p_s0, p_s1,
    y_sb, y_s0, y_s1, y_s2,
    margin, threshold, ignore_index,
    GROUP: tl.constexpr, PIXELS: tl.constexpr, WITH_CE: tl.constexpr, FLAT: tl.constexpr,
    INT64: tl.constexpr, BLOCK_P: tl.constexpr, FULL: tl.constexpr,
):
    # One tile (BLOCK_P pixels of image b) of the forward.
    if INT64:
        pid = tl.cast(pid, tl.int64)
    start, n, row_mask = _pixels(pid, N, BLOCK_P, FULL)
    z_ptr, zrow = _tile(z_ptr, b * z_sb, start, n, S1, S2, z_s0, z_s1, z_s2, FLAT, BLOCK_P)
    mi, si, A, mo, so, bad, zmax, s1, pm = _class_runs(z_ptr, zrow, row_mask, cls, nic, C1, z_sc,
                                                       PIXELS, BLOCK_P, INT64)
    if WITH_CE:  # the CE term needs (zmax, s1): the seg backward rebuilds them from (mo, so)
        lse_all = zmax + _ln_approx(1.0 + s1)  # "ada"'s P_k only
    else:
        w = _oc_stat(mi, mo, so, bad)
        lse_all = _lse_from_u(mi, si, w - mi)
    icm = -mi
    ics = tl.full((BLOCK_P,), 1.0, tl.float32)
    if GROUP != 1:
        if tl.max(pm.to(tl.int32), 0) != 0:  # a block without a counted pixel skips the pass
            icm, ics = _group_pass(z_ptr, zrow, pm, cls, nic, z_sc, A, _exp(mi - lse_all),
                                   lse_all, prior_ptr, p_s0, p_s1, threshold, BLOCK_P, GROUP,
                                   INT64)
    # The backward recomputes s the same way from what it reads (x, or mo and so), so σ(s)
    # there is that of the loss written here.
    if WITH_CE:
        s = _s_from_pair(icm, ics, mo, so, margin)
    else:
        s = _s_from_w(icm, ics, w, margin)
    out = b * N + n
    L = tl.where(pm, _softplus(s), 0.0) + bad
    tl.store(loss_ptr + out, L, mask=row_mask)
    # A bit a pixel says where the loss is not 0 (> 0, or NaN: a non-finite logit): the backward
    # reads it in place of the loss map and touches the upstream gradient and the statistics
    # only there.
    has_loss = (L > 0.0) | (L != L)
    _store_flags(flag_ptr, b, pid, N, has_loss, BLOCK_P)
    # The OC statistics for the backward, which then skips the pass over the OC rows (all but a
    # few of the C+1): w alone (4 bytes, _oc_stat) at the pixels with a loss for the OCR loss;
    # (mo, so) at every pixel with the CE term, whose softmax needs the exact (zmax, s1). `bad`
    # rides on the saved value (w, so), so a pixel with a non-finite logit reads back NaN: its
    # s, σ(s) and every gradient are NaN.
    if WITH_CE:
        tl.store(st_ptr + out, mo, mask=row_mask)
        tl.store(st_ptr + (_plane(N, INT64) + out), so + bad, mask=row_mask)
    else:
        tl.store(st_ptr + out, w, mask=row_mask & has_loss)
    if WITH_CE:
        _ce_map(z_ptr, zrow, tgt_ptr, ce_ptr, out, b, n, row_mask, zmax, s1, S1, S2, C1, z_sc,
                y_sb, y_s0, y_s1, y_s2, ignore_index, FLAT, INT64)


@triton.jit
def _bwd_kernel(
    z_ptr, cls_ptr, prior_ptr, tgt_ptr, st_ptr, flag_ptr, gl_ptr, gce_ptr, dz_ptr,
    N, S1, S2, C1,
    z_sb, z_sc, z_s0, z_s1, z_s2,
    d_sb, d_sc, d_s0, d_s1, d_s2,
    g_sb, g_s0, g_s1, g_s2,
    h_sb, h_s0, h_s1, h_s2,
    p_s0, p_s1,
    y_sb, y_s0, y_s1, y_s2,
    margin, threshold, ignore_index,
    GROUP: tl.constexpr, WITH_CE: tl.constexpr, FLAT: tl.constexpr, INT64: tl.constexpr,
    BLOCK_P: tl.constexpr, FULL: tl.constexpr, LOOP: tl.constexpr,
):
    b = tl.program_id(1)
    if INT64:
        b = b.to(tl.int64)
    pid = tl.program_id(0)
    if LOOP:  # persistent, as the forward
        nprog = tl.num_programs(0)
        tiles = tl.cdiv(N, BLOCK_P)
        for tile in range(pid, tiles, nprog):
            _bwd_tile(z_ptr, cls_ptr, prior_ptr, tgt_ptr, st_ptr, flag_ptr, gl_ptr,
                      gce_ptr, dz_ptr, tile, b, N, S1, S2, C1, z_sb, z_sc, z_s0, z_s1, z_s2,
                      d_sb, d_sc, d_s0, d_s1, d_s2, g_sb, g_s0, g_s1, g_s2, h_sb, h_s0, h_s1, h_s2,
                      p_s0, p_s1, y_sb, y_s0, y_s1, y_s2, margin, threshold, ignore_index,
                      GROUP, WITH_CE, FLAT, INT64, BLOCK_P, FULL)
    else:
        _bwd_tile(z_ptr, cls_ptr, prior_ptr, tgt_ptr, st_ptr, flag_ptr, gl_ptr, gce_ptr,
                  dz_ptr, pid, b, N, S1, S2, C1, z_sb, z_sc, z_s0, z_s1, z_s2,
                  d_sb, d_sc, d_s0, d_s1, d_s2, g_sb, g_s0, g_s1, g_s2, h_sb, h_s0, h_s1, h_s2,
                  p_s0, p_s1, y_sb, y_s0, y_s1, y_s2, margin, threshold, ignore_index,
                  GROUP, WITH_CE, FLAT, INT64, BLOCK_P, FULL)


@triton.jit
def _bwd_tile(
    z_ptr, cls_ptr, prior_ptr, tgt_ptr, st_ptr, flag_ptr, gl_ptr, gce_ptr, dz_ptr,
    pid, b, N, S1, S2, C1,
    z_sb, z_sc, z_s0, z_s1, z_s2,
    d_sb, d_sc, d_s0, d_s1, d_s2,
    g_sb, g_s0, g_s1, g_s2,
    h_sb, h_s0, h_s1, h_s2,
    p_s0, p_s1,
    y_sb, y_s0, y_s1, y_s2,
    margin, threshold, ignore_index,
    GROUP: tl.constexpr, WITH_CE: tl.constexpr, FLAT: tl.constexpr, INT64: tl.constexpr,
    BLOCK_P: tl.constexpr, FULL: tl.constexpr,
):
    # One tile (BLOCK_P pixels of image b) of the backward.
    if INT64:
        pid = tl.cast(pid, tl.int64)
    start, n, row_mask = _pixels(pid, N, BLOCK_P, FULL)
    # The forward's flag: L > 0 (exactly where the pixel mask is on: softplus > 0) or NaN. A
    # pixel with L == 0 carries no gradient, so its upstream gradient and statistics are read
    # only where the flag is set (their sectors elsewhere never move). The loss map is not read:
    # s comes back from the statistics and the IC passes, σ(s) from s.
    has_loss = _load_flags(flag_ptr, b, pid, N, BLOCK_P) & row_mask
    gl = tl.load(gl_ptr + b * g_sb + _spatial_offset(n, S1, S2, g_s0, g_s1, g_s2, FLAT),
                 mask=has_loss, other=0.0).to(tl.float32)
    act_ce = has_loss & (gl != gl)  # all False: the CE term's, when there is one
    gce = tl.zeros((BLOCK_P,), tl.float32)
    tc = tl.zeros((BLOCK_P,), tl.int32)
    if WITH_CE:
        y = tl.load(tgt_ptr + b * y_sb + _spatial_offset(n, S1, S2, y_s0, y_s1, y_s2, FLAT),
                    mask=row_mask, other=ignore_index)
        gce = tl.load(gce_ptr + b * h_sb + _spatial_offset(n, S1, S2, h_s0, h_s1, h_s2, FLAT),
                      mask=row_mask, other=0.0).to(tl.float32)
        act_ce = (y != ignore_index) & (gce != 0.0) & row_mask
        gce = tl.where(act_ce, gce, 0.0)
        tc = tl.minimum(tl.maximum(y, 0), C1 - 1).to(tl.int32)
        # the saved so (+ the forward's `bad`)
        x = tl.load(st_ptr + (_plane(N, INT64) + b * N + n), mask=has_loss | act_ce, other=0.0)
    else:
        x = tl.load(st_ptr + (b * N + n), mask=has_loss, other=0.0)  # the saved w (+ `bad`)
    # NaN where a logit of the pixel is not finite (its loss is NaN, so its flag is set): coef
    # and poison are NaN then, and so is every gradient of the pixel, whatever its upstream one.
    bad = x != x
    act_ocr = has_loss & ((gl != 0.0) | bad)
    poison = tl.where(bad, x, 0.0)
    active = act_ocr | act_ce
    dz_ptr, drow = _tile(dz_ptr, b * d_sb, start, n, S1, S2, d_s0, d_s1, d_s2, FLAT, BLOCK_P)
    if tl.max(active.to(tl.int32), 0) == 0:
        # No pixel of the block has a gradient: zeros, without reading the logits.
        dp = dz_ptr + drow
        for c in range(0, C1):
            tl.store(dp, tl.zeros((BLOCK_P,), dz_ptr.dtype.element_ty), mask=row_mask)
            dp += d_sc
    else:
        z_ptr, zrow = _tile(z_ptr, b * z_sb, start, n, S1, S2, z_s0, z_s1, z_s2, FLAT, BLOCK_P)
        cls = cls_ptr + b * (C1 + 1)
        nic = tl.load(cls + C1)
        # The forward's statistics: the OC ones as saved, the IC ones again from the few IC rows
        # (the anchor's tie-break between IC and OC does not matter here: both terms are 1).
        mi, si, A, _ = _max_pass(z_ptr, zrow, active, cls, 0, nic, z_sc,
                                 tl.zeros((BLOCK_P,), tl.float32), BLOCK_P, INT64)
        # (the variant's unused statistics are x: _grad_rows takes both sets)
        if WITH_CE:
            mo = tl.load(st_ptr + (b * N + n), mask=active, other=0.0)
            so = x
            zmax, s1, _ = _merge(mi, si, A, mo, so, A)
            lse_all = zmax + _ln_approx(1.0 + s1)
            w = x
        else:
            w = x
            lse_all = _lse_from_u(mi, si, w - mi)
            mo, so, zmax, s1 = x, x, x, x
        pA = _exp(mi - lse_all)
        if GROUP == 1:
            icm = -mi
            ics = tl.full((BLOCK_P,), 1.0, tl.float32)
        else:
            icm, ics = _group_pass(z_ptr, zrow, act_ocr, cls, nic, z_sc, A, pA, lse_all,
                                   prior_ptr, p_s0, p_s1, threshold, BLOCK_P, GROUP, INT64)
        if WITH_CE:
            s = _s_from_pair(icm, ics, mo, so, margin)
        else:
            s = _s_from_w(icm, ics, w, margin)
        _grad_rows(z_ptr, zrow, dz_ptr, drow, row_mask, active, act_ocr, cls, nic, C1, z_sc,
                   d_sc, A, pA, lse_all, prior_ptr, p_s0, p_s1, threshold, icm, ics, s,
                   tl.where(act_ocr, gl * _sigmoid(s), 0.0), gce, tc, mo, so, zmax, s1, w,
                   poison, GROUP, WITH_CE, INT64)


@triton.jit
def _grad_rows(z_ptr, zrow, dz_ptr, drow, row_mask, active, act_ocr, cls, nic, C1, z_sc, d_sc,
               A, pA, lse_all, prior_ptr, p_s0, p_s1, threshold, icm, ics, s, coef, gce, tc, mo,
               so, zmax, s1, w, poison, GROUP: tl.constexpr, WITH_CE: tl.constexpr,
               INT64: tl.constexpr):
    # Every class row of a tile's gradient, from the pixel's statistics (the backward's, or the
    # seg objective's forward: _obj_tile): coef = the OCR factor g·σ(s) (0 where the pixel has
    # no OCR gradient), gce the CE factor (0 where ignored), poison NaN at a pixel with a
    # non-finite logit. A pixel outside `active` gets 0.
    k_ic = _div(coef, ics)
    if WITH_CE:
        ocm = tl.where(mo == float("-inf"), 0.0, mo)
        k_oc = _div(coef, 1.0 + so)
        # CE: softmax_k - [k == t] with the full sum 1 + s1. The target's entry is
        # -(s1 + (1 - e_t))/(1 + s1) (s1 holds e_t unless t is the excluded argmax, where
        # e_t = 1): no cancellation, so a confident pixel's tiny gradient keeps its
        # precision.
        k_ce = _div(gce, 1.0 + s1)
    for i in range(0, nic):
        c, z = _load_class(z_ptr, zrow, active, cls, i, z_sc, INT64)
        g_in = _in_group(z, c, A, pA, lse_all, act_ocr, prior_ptr, p_s0, p_s1, threshold,
                         GROUP)
        g = tl.where(g_in, -k_ic * _exp(-z - icm), poison)
        if WITH_CE:
            e = _exp(z - zmax)
            g += k_ce * tl.where(c == tc, -(s1 + (1.0 - e)), e)
        tl.store((dz_ptr + c * d_sc) + drow,
                 tl.where(active, g, 0.0).to(dz_ptr.dtype.element_ty), mask=row_mask)
    for i in range(nic, C1):
        c, z = _load_class(z_ptr, zrow, active, cls, i, z_sc, INT64)
        if WITH_CE:
            g = k_oc * _exp(z - ocm)
            e = _exp(z - zmax)
            g += k_ce * tl.where(c == tc, -(s1 + (1.0 - e)), e)
        else:
            # softmax over OC of z: e^{z - w}, exact subtraction for the large entries
            g = coef * _exp(z - w)
        tl.store((dz_ptr + c * d_sc) + drow,
                 tl.where(active, g, 0.0).to(dz_ptr.dtype.element_ty), mask=row_mask)


@triton.jit
def _obj_kernel(
    z_ptr, tags_ptr, cls_ptr, prior_ptr, tgt_ptr, w_ptr, coef_ptr, loss_ptr, ce_ptr, dz_ptr,
    N, S1, S2, C1,
    z_sb, z_sc, z_s0, z_s1, z_s2,
    d_sb, d_sc, d_s0, d_s1, d_s2,
    t_sb, t_sc,
    p_s0, p_s1,
    y_sb, y_s0, y_s1, y_s2,
    w_sb, w_s0, w_s1, w_s2,
    margin, threshold, ignore_index,
    GROUP: tl.constexpr, PIXELS: tl.constexpr, HAS_W: tl.constexpr, FLAT: tl.constexpr,
    INT64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, FULL: tl.constexpr,
    LOOP: tl.constexpr,
):
    # The segmentation objective with its gradient written in the forward (seg/objective.py):
    # the forward's class list prologue and persistent grid, then _obj_tile a tile.
    b, cls, nic = _image_classes(tags_ptr, cls_ptr, t_sb, t_sc, C1, BLOCK_C, INT64)
    # the reduction's coefficients (seg/objective.py: on the device, never read by the host)
    ce_c = tl.load(coef_ptr).to(tl.float32)
    ocr_c = tl.load(coef_ptr + 1).to(tl.float32)
    pid = tl.program_id(0)
    if LOOP:
        nprog = tl.num_programs(0)
        tiles = tl.cdiv(N, BLOCK_P)
        for tile in range(pid, tiles, nprog):
            _obj_tile(z_ptr, cls, prior_ptr, tgt_ptr, w_ptr, loss_ptr, ce_ptr, dz_ptr, tile, b,
                      nic, ce_c, ocr_c, N, S1, S2, C1, z_sb, z_sc, z_s0, z_s1, z_s2,
                      d_sb, d_sc, d_s0, d_s1, d_s2, p_s0, p_s1, y_sb, y_s0, y_s1, y_s2,
                      w_sb, w_s0, w_s1, w_s2, margin, threshold, ignore_index,
                      GROUP, PIXELS, HAS_W, FLAT, INT64, BLOCK_P, FULL)
    else:
        _obj_tile(z_ptr, cls, prior_ptr, tgt_ptr, w_ptr, loss_ptr, ce_ptr, dz_ptr, pid, b, nic,
                  ce_c, ocr_c, N, S1, S2, C1, z_sb, z_sc, z_s0, z_s1, z_s2,
                  d_sb, d_sc, d_s0, d_s1, d_s2, p_s0, p_s1, y_sb, y_s0, y_s1, y_s2,
                  w_sb, w_s0, w_s1, w_s2, margin, threshold, ignore_index,
                  GROUP, PIXELS, HAS_W, FLAT, INT64, BLOCK_P, FULL)


@triton.jit
def _obj_tile(
    z_ptr, cls, prior_ptr, tgt_ptr, w_ptr, loss_ptr, ce_ptr, dz_ptr, pid, b, nic, ce_c, ocr_c,
    N, S1, S2, C1,
    z_sb, z_sc, z_s0, z_s1, z_s2,
    d_sb, d_sc, d_s0, d_s1, d_s2,
    p_s0, p_s1,
    y_sb, y_s0, y_s1, y_s2,
    w_sb, w_s0, w_s1, w_s2,
    margin, threshold, ignore_index,
    GROUP: tl.constexpr, PIXELS: tl.constexpr, HAS_W: tl.constexpr, FLAT: tl.constexpr,
    INT64: tl.constexpr, BLOCK_P: tl.constexpr, FULL: tl.constexpr,
):
    # One tile: the forward's maps (the CE variant of _fwd_tile, the same formulas, so the same
    # values bit for bit) and, from the statistics still in registers, the gradient of
    # ce_c·Σ w·CE + ocr_c·Σ L through _grad_rows (the backward's class loops).
    if INT64:
        pid = tl.cast(pid, tl.int64)
    start, n, row_mask = _pixels(pid, N, BLOCK_P, FULL)
    z_ptr, zrow = _tile(z_ptr, b * z_sb, start, n, S1, S2, z_s0, z_s1, z_s2, FLAT, BLOCK_P)
    mi, si, A, mo, so, bad, zmax, s1, pm = _class_runs(z_ptr, zrow, row_mask, cls, nic, C1, z_sc,
                                                       PIXELS, BLOCK_P, INT64)
    lse_all = zmax + _ln_approx(1.0 + s1)
    pA = _exp(mi - lse_all)
    icm = -mi
    ics = tl.full((BLOCK_P,), 1.0, tl.float32)
    if GROUP != 1:
        if tl.max(pm.to(tl.int32), 0) != 0:
            icm, ics = _group_pass(z_ptr, zrow, pm, cls, nic, z_sc, A, pA, lse_all, prior_ptr,
                                   p_s0, p_s1, threshold, BLOCK_P, GROUP, INT64)
    s = _s_from_pair(icm, ics, mo, so, margin)
    out = b * N + n
    L = tl.where(pm, _softplus(s), 0.0) + bad
    tl.store(loss_ptr + out, L, mask=row_mask)
    y_ok, tc = _ce_map(z_ptr, zrow, tgt_ptr, ce_ptr, out, b, n, row_mask, zmax, s1, S1, S2, C1,
                       z_sc, y_sb, y_s0, y_s1, y_s2, ignore_index, FLAT, INT64)
    # The factors the backward would get from the reduction at an upstream gradient of 1 (the
    # backward op's gl, gce): ocr_c at every pixel with a loss, ce_c·w where not ignored. A
    # non-finite logit poisons the pixel: NaN at every class, as the maps' backward gives.
    gce = ce_c
    if HAS_W:
        gce = gce * tl.load(w_ptr + b * w_sb + _spatial_offset(n, S1, S2, w_s0, w_s1, w_s2, FLAT),
                            mask=y_ok, other=0.0).to(tl.float32)
    gce = tl.where(y_ok, gce, 0.0)
    act_ce = y_ok & (gce != 0.0)
    act_ocr = (L > 0.0) | (bad != bad)  # (ocr_c == 0, alpha = 0: a gradient of 0·σ)
    active = act_ocr | act_ce
    dz_ptr, drow = _tile(dz_ptr, b * d_sb, start, n, S1, S2, d_s0, d_s1, d_s2, FLAT, BLOCK_P)
    _grad_rows(z_ptr, zrow, dz_ptr, drow, row_mask, active, act_ocr, cls, nic, C1, z_sc, d_sc,
               A, pA, lse_all, prior_ptr, p_s0, p_s1, threshold, icm, ics, s,
               tl.where(act_ocr, ocr_c * _sigmoid(s), 0.0) + bad, gce, tc, mo, so + bad, zmax,
               s1 + bad, mo, bad, GROUP, True, INT64)


@triton.jit
def _scale_kernel(x_ptr, g_ptr, n, BLOCK: tl.constexpr, INT64: tl.constexpr):
    # x *= g, in place, unless g == 1 (the common upstream gradient of a loss): then every
    # program returns after one load of g, so the backward of the fused objective costs a launch.
    g = tl.load(g_ptr).to(tl.float32)
    if g != 1.0:
        pid = tl.program_id(0)
        nprog = tl.num_programs(0)
        blocks = tl.cdiv(n, BLOCK)
        if INT64:
            pid = pid.to(tl.int64)
        for blk in range(pid, blocks, nprog):
            offs = blk * BLOCK + tl.arange(0, BLOCK)
            m = offs < n
            x = tl.load(x_ptr + offs, mask=m).to(tl.float32)
            tl.store(x_ptr + offs, (x * g).to(x_ptr.dtype.element_ty), mask=m)


# --------------------------------------------------------------------------------------------
# Host-side launch (shapes and strides only: no host synchronisation)
# --------------------------------------------------------------------------------------------
def _spatial_strides(sizes: Sequence[int], strides: Sequence[int]):
    """(S0, S1, S2), (s0, s1, s2) padded to 3 spatial dims, and the single stride the spatial
    dims collapse to (None when they do not)."""
    sizes, strides = list(sizes), list(strides)
    flat = None
    live = [(sz, st) for sz, st in zip(sizes, strides) if sz != 1]
    if not live:
        flat = 0
    elif all(live[i][1] == live[i + 1][1] * live[i + 1][0] for i in range(len(live) - 1)):
        flat = live[-1][1]
    pad = 3 - len(sizes)
    return [1] * pad + sizes, [0] * pad + strides, flat


def _max_offset(t: torch.Tensor) -> int:
    return sum((s - 1) * abs(st) for s, st in zip(t.shape, t.stride()) if s > 0)


def _blocks(N: int, pixels_per_thread: int = PIXELS_PER_THREAD) -> Tuple[int, int]:
    """(BLOCK_P, num_warps) for N pixels per image at pixels_per_thread (their per-pixel state,
    ~14 values each, stays in registers at any C+1)."""
    if interpreting():
        return min(max(triton.next_power_of_2(N), 16), INTERPRET_BLOCK_P), 4
    block_p = min(BLOCK_P, max(32, triton.next_power_of_2(N)))
    return block_p, max(1, block_p // (32 * pixels_per_thread))


def _pix(t: Optional[torch.Tensor], first: int):
    """Strides of a per-pixel view: batch stride and 3 padded spatial strides."""
    if t is None:
        return 0, [0, 0, 0], 0
    _, st, flat = _spatial_strides(t.shape[first:], t.stride()[first:])
    return t.stride(0), st, flat


def _class_block(C1: int) -> int:
    """BLOCK_C of the class-list prologue: the classes it reads at once."""
    return min(max(2, triton.next_power_of_2(C1)), CLASS_CHUNK)


def _class_lists(tags: torch.Tensor, C1: int) -> torch.Tensor:
    """The class lists (int32 [B, C+2], see _forward) from a launch of their own, for kernels
    that do not build them in their prologue as _fwd_kernel does."""
    B = tags.shape[0]
    classes = torch.empty((B, C1 + 1), dtype=torch.int32, device=tags.device)
    if B:
        _class_list_kernel[(B,)](tags, classes, C1, tags.stride(0), tags.stride(1),
                                 BLOCK_C=_class_block(C1))
    return classes


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    from triton.runtime import driver

    return int(driver.active.utils.get_device_properties(device_index)["multiprocessor_count"])


def _programs_per_image(device: torch.device, tiles: int, B: int, with_ce: bool) -> int:
    """The grid's programs per image. The OCR loss runs a persistent grid: one wave of resident
    programs (SMs x PROGRAMS_PER_SM) shared among the B images, each looping over its image's
    tiles; the waves of a one-tile-a-program grid would end in a partial wave that leaves most
    of the GPU idle (3232 tiles at (16, 21, 321, 321) are 3.06 waves of 1056 programs). The CE
    variant likewise, at PROGRAMS_PER_SM_CE."""
    if _FORCE_PROGRAMS_PER_IMAGE:
        return max(1, min(tiles, _FORCE_PROGRAMS_PER_IMAGE))
    if interpreting():
        return tiles
    from triton.runtime import driver

    index = device.index if device.index is not None else driver.active.get_current_device()
    per_sm = PROGRAMS_PER_SM_CE if with_ce else PROGRAMS_PER_SM
    return max(1, min(tiles, _sm_count(index) * per_sm // max(B, 1)))


def _reg_cap(g) -> dict:
    """The persistent grid is sized for PROGRAMS_PER_SM programs an SM: hold its kernels to the
    registers that allow it (ptxas would otherwise take ~148 at pixels="all": 6 programs an SM).
    The interpreter has no registers; maxnreg is an option of the NVIDIA backend only (another
    backend rejects it)."""
    if not g["loop"] or interpreting():
        return {}
    from triton.runtime import driver

    if driver.active.get_current_target().backend != "cuda":
        return {}
    per_sm = PROGRAMS_PER_SM_CE if g["with_ce"] else PROGRAMS_PER_SM
    # registers are allocated 8 a thread at a time (256 a warp)
    return {"maxnreg": _REGS_PER_SM // (per_sm * g["warps"] * 32) // 8 * 8}


def _launch_args(logits, tensors, with_ce):
    """Shared geometry of a launch; tensors = per-pixel views [(tensor, first_spatial_dim)]."""
    B, C1 = logits.shape[:2]
    sizes, _, _ = _spatial_strides(logits.shape[2:], logits.stride()[2:])
    N = math.prod(logits.shape[2:])
    geoms = [_pix(t, first) for t, first in tensors]
    flat = all(g[2] is not None for g in geoms)
    if flat:  # every tensor's spatial dims collapse: pass the flat stride in the s2 slot
        geoms = [(sb, [0, 0, f], f) for sb, _, f in geoms]
    block_p, warps = _blocks(N, PIXELS_PER_THREAD if with_ce else PIXELS_PER_THREAD_OCR)
    # The largest offset the kernels form: a tensor's last element, plus (for the masked tail
    # lanes of the last tile) less than one tile of pixels past it; B·N + one tile for the maps.
    big = max((_max_offset(t) + block_p * max(map(abs, t.stride()[first:]), default=0)
               for t, first in tensors if t is not None), default=0)
    int64 = _FORCE_INT64 or max(big, B * N + block_p) > _INT32_LIMIT
    grid = (_programs_per_image(logits.device, triton.cdiv(N, block_p), B, with_ce), B)
    return dict(B=B, C1=C1, N=N, S1=sizes[1], S2=sizes[2], geoms=geoms, flat=flat,
                block_p=block_p, warps=warps, int64=int64, grid=grid, full=N >= block_p,
                loop=grid[0] < triton.cdiv(N, block_p), with_ce=with_ce)


def _stats_like(logits: torch.Tensor, with_ce: bool) -> torch.Tensor:
    """The forward's saved OC statistics, fp32: [1, B, *spatial] (w = LSE_OC(z), _oc_stat) for
    the OCR loss; [2, B, *spatial] (max and sum of the OC logits) with the CE term, whose
    softmax needs them exactly."""
    return logits.new_empty((2 if with_ce else 1, logits.shape[0]) + tuple(logits.shape[2:]),
                            dtype=torch.float32)


def _flags_like(logits: torch.Tensor) -> torch.Tensor:
    """The forward's per-pixel flags, one bit a pixel where the loss is not 0: uint8
    [B, tiles, BLOCK_P / 8], a tile's bits at its index (see _flag_bytes)."""
    N = math.prod(logits.shape[2:])
    block_p = _blocks(N)[0]
    return logits.new_empty((logits.shape[0], triton.cdiv(N, block_p), block_p // 8),
                            dtype=torch.uint8)


def _forward(logits, target, tags, prior, margin, threshold, group_split, pixels, ignore_index):
    """(loss_map, ce_map, stats, flags, classes); ce_map is loss_map when target is None; stats
    (_stats_like: defined where flags is 1, or everywhere with a target), flags and classes (the
    class lists) go to _backward."""
    with_ce = target is not None
    B = logits.shape[0]
    spatial = tuple(logits.shape[2:])
    loss = torch.empty((B,) + spatial, dtype=torch.float32, device=logits.device)
    ce = torch.empty((B,) + spatial, dtype=torch.float32, device=logits.device) if with_ce else loss
    stats = _stats_like(logits, with_ce)
    flags = _flags_like(logits)
    # int32 [B, C+2]: per image the C+1 class indices, IC classes first, then OC (each
    # ascending), then the IC count; the forward kernel writes it (_class_list) and the backward
    # reuses it.
    classes = _classes_like(logits)
    if loss.numel() == 0:
        return loss, ce, stats, flags, classes
    g = _launch_args(logits, [(logits, 2), (target, 1), (stats, 2)], with_ce)
    (z_sb, zst, _), (y_sb, yst, _), _ = g["geoms"]
    pr = prior if prior is not None else loss
    p_st = prior.stride() if prior is not None else (0, 0)
    _fwd_kernel[g["grid"]](
        logits, tags, classes, pr, target if with_ce else classes, loss, ce, stats, flags,
        g["N"], g["S1"], g["S2"], g["C1"],
        z_sb, logits.stride(1), zst[0], zst[1], zst[2],
        tags.stride(0), tags.stride(1),
        p_st[0], p_st[1],
        y_sb, yst[0], yst[1], yst[2],
        float(margin), float(threshold), int(ignore_index),
        GROUP=GROUP_SPLITS[group_split], PIXELS=PIXEL_MODES[pixels], WITH_CE=with_ce,
        FLAT=g["flat"], INT64=g["int64"], BLOCK_P=g["block_p"],
        BLOCK_C=_class_block(g["C1"]), FULL=g["full"], LOOP=g["loop"], num_warps=g["warps"],
        **_reg_cap(g),
    )
    return loss, ce, stats, flags, classes


def _backward(grad_ocr, grad_ce, logits, target, prior, stats, flags, classes, margin,
              threshold, group_split, ignore_index):
    with_ce = target is not None
    dz = torch.empty_like(logits)  # preserve_format: the logits' layout for dense tensors
    if dz.numel() == 0:
        return dz
    g = _launch_args(logits, [(logits, 2), (dz, 2), (grad_ocr, 1), (grad_ce, 1), (target, 1),
                              (stats, 2)], with_ce)
    (z_sb, zst, _), (d_sb, dst, _), (g_sb, gst, _), (h_sb, hst, _), (y_sb, yst, _), _ = g["geoms"]
    pr = prior if prior is not None else stats
    p_st = prior.stride() if prior is not None else (0, 0)
    _bwd_kernel[g["grid"]](
        logits, classes, pr, target if with_ce else classes, stats, flags, grad_ocr,
        grad_ce if with_ce else stats, dz,
        g["N"], g["S1"], g["S2"], g["C1"],
        z_sb, logits.stride(1), zst[0], zst[1], zst[2],
        d_sb, dz.stride(1), dst[0], dst[1], dst[2],
        g_sb, gst[0], gst[1], gst[2],
        h_sb, hst[0], hst[1], hst[2],
        p_st[0], p_st[1],
        y_sb, yst[0], yst[1], yst[2],
        float(margin), float(threshold), int(ignore_index),
        GROUP=GROUP_SPLITS[group_split], WITH_CE=with_ce, FLAT=g["flat"], INT64=g["int64"],
        BLOCK_P=g["block_p"], FULL=g["full"], LOOP=g["loop"], num_warps=g["warps"],
        **_reg_cap(g),
    )
    return dz


def _objective(logits, target, tags, prior, ce_weight, coef, margin, threshold, group_split,
               pixels, ignore_index):
    """(ce_map, loss_map, grad) of the segmentation objective in one pass (_obj_kernel): the
    maps as _forward writes them and grad = d/dlogits (coef[0]·Σ ce_weight·ce_map +
    coef[1]·Σ loss_map), coef a 2-float tensor on the logits' device."""
    B = logits.shape[0]
    spatial = tuple(logits.shape[2:])
    loss = torch.empty((B,) + spatial, dtype=torch.float32, device=logits.device)
    ce = torch.empty_like(loss)
    dz = torch.empty_like(logits)  # preserve_format: the logits' layout for dense tensors
    if dz.numel() == 0:
        return ce, loss, dz.zero_()
    classes = _classes_like(logits)
    g = _launch_args(logits, [(logits, 2), (dz, 2), (target, 1), (ce_weight, 1)], True)
    (z_sb, zst, _), (d_sb, dst, _), (y_sb, yst, _), (w_sb, wst, _) = g["geoms"]
    pr = prior if prior is not None else loss
    p_st = prior.stride() if prior is not None else (0, 0)
    _obj_kernel[g["grid"]](
        logits, tags, classes, pr, target, ce_weight if ce_weight is not None else loss, coef,
        loss, ce, dz,
        g["N"], g["S1"], g["S2"], g["C1"],
        z_sb, logits.stride(1), zst[0], zst[1], zst[2],
        d_sb, dz.stride(1), dst[0], dst[1], dst[2],
        tags.stride(0), tags.stride(1),
        p_st[0], p_st[1],
        y_sb, yst[0], yst[1], yst[2],
        w_sb, wst[0], wst[1], wst[2],
        float(margin), float(threshold), int(ignore_index),
        GROUP=GROUP_SPLITS[group_split], PIXELS=PIXEL_MODES[pixels], HAS_W=ce_weight is not None,
        FLAT=g["flat"], INT64=g["int64"], BLOCK_P=g["block_p"],
        BLOCK_C=_class_block(g["C1"]), FULL=g["full"], LOOP=g["loop"], num_warps=g["warps"],
        **_reg_cap(g),
    )
    return ce, loss, dz


SCALE_BLOCK = 2048


def _scale(grad: torch.Tensor, g: torch.Tensor) -> None:
    """grad *= g in place unless g == 1, decided on the device (no host synchronisation); grad
    dense (any order of its dims), g a 0-d tensor on its device."""
    n = grad.numel()
    if n == 0:
        return
    if interpreting():
        grid = (triton.cdiv(n, SCALE_BLOCK),)
    else:
        from triton.runtime import driver

        index = grad.device.index if grad.device.index is not None else driver.active.get_current_device()
        grid = (max(1, min(triton.cdiv(n, SCALE_BLOCK), 4 * _sm_count(index))),)
    _scale_kernel[grid](grad, g, n, BLOCK=SCALE_BLOCK, INT64=n + SCALE_BLOCK > _INT32_LIMIT,
                        num_warps=4)


# --------------------------------------------------------------------------------------------
# torch.library registration
# --------------------------------------------------------------------------------------------
def _classes_like(logits: torch.Tensor) -> torch.Tensor:
    return logits.new_empty((logits.shape[0], logits.shape[1] + 1), dtype=torch.int32)


# The forward ops also return what the backward op reuses (not differentiable): the OC statistics,
# the per-pixel flags and the class lists (the seg op, ocr_kernels/seg/triton_kernel.py, likewise).
@torch.library.custom_op(triton_op_name("ocr_loss_map_triton"), mutates_args=())
def _ocr_map_op(logits: torch.Tensor, tags: torch.Tensor, prior: Optional[torch.Tensor],
                margin: float, threshold: float, group_split: str,
                pixels: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    loss, _, stats, flags, classes = _forward(logits, None, tags, prior, margin, threshold,
                                              group_split, pixels, -100)
    return loss, stats, flags, classes


@_ocr_map_op.register_fake
def _(logits, tags, prior, margin, threshold, group_split, pixels):
    check_ocr_args(logits, tags, prior)
    return (new_map(logits, torch.float32), _stats_like(logits, False), _flags_like(logits),
            _classes_like(logits))


@torch.library.custom_op(triton_op_name("ocr_maps_backward_triton"), mutates_args=())
def _maps_bwd_op(grad_ocr: torch.Tensor, grad_ce: Optional[torch.Tensor], logits: torch.Tensor,
                 target: Optional[torch.Tensor], prior: Optional[torch.Tensor],
                 stats: torch.Tensor, flags: torch.Tensor, classes: torch.Tensor, margin: float,
                 threshold: float, group_split: str, ignore_index: int) -> torch.Tensor:
    return _backward(grad_ocr, grad_ce, logits, target, prior, stats, flags, classes, margin,
                     threshold, group_split, ignore_index)


@_maps_bwd_op.register_fake
def _(grad_ocr, grad_ce, logits, target, prior, stats, flags, classes, margin, threshold,
      group_split, ignore_index):
    check_map(grad_ocr, logits, "grad_ocr")
    planes = 2 if target is not None else 1
    torch._check(tuple(stats.shape) == (planes,) + tuple(grad_ocr.shape),
                 lambda: f"stats: expected [{planes}, B, *spatial], got {stats.shape}")
    torch._check(tuple(flags.shape) == tuple(_flags_like(logits).shape),
                 lambda: f"flags: expected [B, tiles, BLOCK_P / 8], got {flags.shape}")
    torch._check(tuple(classes.shape) == (logits.shape[0], logits.shape[1] + 1),
                 lambda: f"classes: expected [B, C+2], got {classes.shape}")
    return torch.empty_like(logits)


def _ocr_setup(ctx, inputs, output):
    logits, tags, prior, margin, threshold, group_split, pixels = inputs
    loss, stats, flags, classes = output
    ctx.mark_non_differentiable(stats, flags, classes)
    ctx.save_for_backward(logits, prior, stats, flags, classes)
    ctx.margin, ctx.threshold, ctx.group_split = margin, threshold, group_split


@first_order_only("ocr_loss", "triton")
def _ocr_bwd(ctx, grad_map, _grad_stats, _grad_flags, _grad_classes):
    logits, prior, stats, flags, classes = ctx.saved_tensors
    grad = None
    if ctx.needs_input_grad[0]:
        grad = _maps_bwd_op(grad_map, None, logits, None, prior, stats, flags, classes,
                            ctx.margin, ctx.threshold, ctx.group_split, -100)
    return (grad,) + (None,) * 6


_ocr_map_op.register_autograd(_ocr_bwd, setup_context=_ocr_setup)


# --------------------------------------------------------------------------------------------
# Public entry point (inputs already validated by the caller)
# --------------------------------------------------------------------------------------------
def ocr_loss_map_triton(logits, tags, prior, opts: OCROptions):
    """Per-pixel OCR loss [B, *spatial] in fp32, differentiable in the logits (Triton)."""
    return _ocr_map_op(logits, tags, prior, float(opts.margin), float(opts.threshold),
                       opts.group_split, opts.pixels)[0]
