"""Triton kernels of the OCR loss and of the fused CE + OCR maps with the bilinear upsampling fused
in (ocr_loss(size=...), seg_ocr_loss(upsample=True); docs/semantics.md §1c). The seg op's
registration is ocr_kernels/seg/triton_resize.py.

The logits [B, C+1, h, w] are sampled exactly as ``F.interpolate(mode="bilinear", size=(H, W),
align_corners=...)`` samples them (torch's upsample_bilinear2d grid: the scale from the sizes,
the source index clamped at 0 without align_corners, the second tap clamped to the last row or
column; fp32 weights and an fp32 blend of the 4 taps); neither the [B, C+1, H, W] logits nor
their gradient is ever allocated.

Forward: the kernels of ocr/triton_kernel.py on an output tile (512 output pixels of one image,
4 a thread, the same device helpers), each class row an interpolation of 4 taps of the
low-resolution logits, which stay in L2: the DRAM traffic is the low-resolution logits once and
the fp32 maps.

Backward, deterministic without atomics (each value is written by one program, summed in a
fixed order):
1. coefficients: per output pixel, the class-independent factors of its logits' gradient (the
   forward's statistics again from the IC rows and the saved OC pair, times the upstream
   gradients), a few fp32 planes;
2. x-gather: for each output row and low-resolution column j, R[c, oy, j] = Σ_ox wx(ox, j) ·
   dL/dz_c(oy, ox) over the output columns that column j feeds, each term recomputed from the
   coefficients and the interpolated logit;
3. y-gather: dz[c, i, j] = Σ_oy wy(oy, i) · R[c, oy, j].
The coefficient planes and R ([C+1, H, w], 1/scale of a full-resolution tensor) exist for a chunk
of images at a time, sized to a few percent of one [B, C+1, H, W] tensor.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import triton
import triton.language as tl

from .._autograd import first_order_only
from .._op_names import triton_op_name
from .._options import GROUP_SPLITS, PIXEL_MODES, OCROptions
from .._tensors import check_ocr_args
from . import triton_kernel as tk
from .triton_kernel import (_class_lists, _classes_like, _exp, _in_group, _ln_approx, _log1p_pos,
                            _merge, _pixel_mask, _sigmoid_from_loss, _softplus)

# Coefficient planes of the backward (per output pixel, fp32): the OC pivot and factor, the IC
# pivot and factor, the anchor and "ada"'s P_A and log-normaliser; with the CE term the
# prediction's max, the CE factor, the softmax sum without the max's term and the target.
_OCM, _KOC, _ICM, _KIC, _ANC, _PA, _LSE, _ZMX, _KCE, _S1, _TGT = (tl.constexpr(k) for k in range(11))
N_COEF_OCR, N_COEF_SEG = 7, 11
# The backward's per-chunk buffers (coefficients + R) are kept under this share of one
# [B, C+1, H, W] tensor of the logits' dtype (at least one image a chunk): with the saved
# statistics (8 bytes an output pixel) the fused path's extra memory stays under 10% of the
# unfused path's two full-resolution tensors (the upsampled logits and their gradient) from
# C+1 = 21 classes on.
CHUNK_SHARE = 1 / 10
# Output pixels a thread in the forward and coefficient kernels: 2, not the plain kernels' 4, as
# each pixel holds 4 tap offsets and 4 weights (registers <= 128). The gathers: one lane per
# (output row, low-resolution column) or low-resolution pixel, GATHER_BLOCK lanes a program.
PIXELS_PER_THREAD = 2
GATHER_BLOCK = 128
GATHER_CLASSES = 16  # classes of the list an x-gather program sums


# --------------------------------------------------------------------------------------------
# Device helpers: the sampling grid
# --------------------------------------------------------------------------------------------
@triton.jit
def _axis(d, n_in, scale, ALIGN: tl.constexpr, INT64: tl.constexpr):
    # torch's source index of output index d along one axis: (first tap, second tap, weights).
    df = d.to(tl.float32)
    if ALIGN:
        real = scale * df
    else:
        real = tl.maximum(scale * (df + 0.5) - 0.5, 0.0)
    i0 = tl.minimum(real.to(tl.int32), n_in - 1)  # real >= 0: truncation is the floor
    l1 = tl.minimum(tl.maximum(real - i0.to(tl.float32), 0.0), 1.0)
    i1 = i0 + (i0 < n_in - 1).to(tl.int32)
    if INT64:
        i0 = i0.to(tl.int64)
        i1 = i1.to(tl.int64)
    return i0, i1, 1.0 - l1, l1


@triton.jit
def _footprint(j, n_in, n_out, inv, ALIGN: tl.constexpr):
    # The output indices that low-resolution index j feeds (first tap j or j - 1) lie in
    # [lo, lo + cnt): bounds from the inverse of the grid with one index of margin each side
    # (the taps are tested exactly where the weights are formed).
    jf = j.to(tl.float32)
    if ALIGN:
        lo = tl.floor((jf - 1.0) * inv) - 1.0
        hi = tl.floor((jf + 1.0) * inv) + 1.0
    else:
        lo = tl.floor((jf - 0.5) * inv - 0.5) - 1.0
        hi = tl.floor((jf + 1.5) * inv - 0.5) + 1.0
    # j <= 1 collects the outputs clamped to source index 0; the last index every output after
    lo = tl.where(j <= 1, 0.0, tl.maximum(lo, 0.0)).to(tl.int32)
    hi = tl.where(j >= n_in - 1, n_out - 1.0, tl.minimum(hi, n_out - 1.0)).to(tl.int32)
    return lo, tl.maximum(hi - lo + 1, 0)


@triton.jit
def _tap_weight(i0, i1, l0, l1, j):
    # Weight of low-resolution index j in the output sample (both taps on the last index: both)
    return tl.where(i0 == j, l0, 0.0) + tl.where(i1 == j, l1, 0.0)


@triton.jit
def _interp(p, o00, o01, o10, o11, wy0, wy1, wx0, wx1, mask):
    # The bilinear blend of the 4 taps in fp32, in upsample_bilinear2d's order.
    a = tl.load(p + o00, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(p + o01, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(p + o10, mask=mask, other=0.0).to(tl.float32)
    d = tl.load(p + o11, mask=mask, other=0.0).to(tl.float32)
    return wy0 * (wx0 * a + wx1 * b) + wy1 * (wx0 * c + wx1 * d)


@triton.jit
def _interp_class(z_ptr, o00, o01, o10, o11, wy0, wy1, wx0, wx1, lmask, cls_ptr, i, z_sc,
                  INT64: tl.constexpr):
    # The i-th class of this image's list and its interpolated logits.
    c = tl.load(cls_ptr + i).to(tl.int32)
    if INT64:
        c = c.to(tl.int64)
    z = _interp(z_ptr + c * z_sc, o00, o01, o10, o11, wy0, wy1, wx0, wx1, lmask)
    return c, z


@triton.jit
def _rs_max_pass(z_ptr, o00, o01, o10, o11, wy0, wy1, wx0, wx1, lmask, cls_ptr, i0, i1, z_sc,
                 BLOCK_P: tl.constexpr, INT64: tl.constexpr):
    # triton_kernel._max_pass over interpolated rows: (max, Σ e^{z - max} without the argmax's
    # term, argmax with the lowest index on ties, 0 or NaN for a non-finite logit).
    m = tl.full((BLOCK_P,), float("-inf"), tl.float32)
    s = tl.zeros((BLOCK_P,), tl.float32)
    a = tl.zeros((BLOCK_P,), tl.int32)
    bad = tl.zeros((BLOCK_P,), tl.float32)
    if INT64:
        a = a.to(tl.int64)
    for i in range(i0, i1):
        c, z = _interp_class(z_ptr, o00, o01, o10, o11, wy0, wy1, wx0, wx1, lmask, cls_ptr, i,
                             z_sc, INT64)
        up = z > m
        e = _exp(-tl.abs(z - m))
        s = tl.where(up, e, 1.0) * s + e
        a = tl.where(up, c, a)
        m = tl.where(up, z, m)
        bad = z * 0.0 + bad
    return m, s, a, bad


@triton.jit
def _rs_group_pass(z_ptr, o00, o01, o10, o11, wy0, wy1, wx0, wx1, gmask, cls_ptr, nic, z_sc, A,
                   pA, lse_all, prior_ptr, p_s0, p_s1, threshold, BLOCK_P: tl.constexpr,
                   GROUP: tl.constexpr, INT64: tl.constexpr):
    # triton_kernel._group_pass over interpolated rows: (max, Σ e^{x - max}) of x = -z over the
    # IC group.
    gm = tl.full((BLOCK_P,), float("-inf"), tl.float32)
    gs = tl.zeros((BLOCK_P,), tl.float32)
    for i in range(0, nic):
        c, z = _interp_class(z_ptr, o00, o01, o10, o11, wy0, wy1, wx0, wx1, gmask, cls_ptr, i,
                             z_sc, INT64)
        g = _in_group(z, c, A, pA, lse_all, gmask, prior_ptr, p_s0, p_s1, threshold, GROUP)
        x = -z
        up = x > gm
        e = _exp(-tl.abs(x - gm))
        gs = tl.where(g, tl.where(up, e, 1.0) * gs + tl.where(up, 1.0, e), gs)
        gm = tl.where(g & up, x, gm)
    return tl.where(gm == float("-inf"), 0.0, gm), tl.where(gs > 0.0, gs, 1.0)


@triton.jit
def _output_taps(n, W, h, w, scale_h, scale_w, zb, z_sh, z_sw, ALIGN: tl.constexpr,
                 INT64: tl.constexpr):
    # The 4 tap offsets and the weights of output pixels n (flat over H·W) of one image.
    oy = n // W
    ox = n - oy * W
    y0, y1, wy0, wy1 = _axis(oy, h, scale_h, ALIGN, INT64)
    x0, x1, wx0, wx1 = _axis(ox, w, scale_w, ALIGN, INT64)
    r0 = zb + y0 * z_sh
    r1 = zb + y1 * z_sh
    return (r0 + x0 * z_sw, r0 + x1 * z_sw, r1 + x0 * z_sw, r1 + x1 * z_sw, wy0, wy1, wx0, wx1,
            oy, ox)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _rs_fwd_kernel(
    z_ptr, cls_ptr, prior_ptr, tgt_ptr, loss_ptr, ce_ptr, st_ptr,
    h, w, H, W, C1,
    z_sb, z_sc, z_sh, z_sw,
    p_s0, p_s1,
    y_sb, y_sh, y_sw,
    scale_h, scale_w, margin, threshold, ignore_index,
    GROUP: tl.constexpr, PIXELS: tl.constexpr, WITH_CE: tl.constexpr, ALIGN: tl.constexpr,
    INT64: tl.constexpr, BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1)
    if INT64:
        pid = pid.to(tl.int64)
        b = b.to(tl.int64)
    N = H * W
    n = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    row_mask = n < N
    o00, o01, o10, o11, wy0, wy1, wx0, wx1, oy, ox = _output_taps(
        n, W, h, w, scale_h, scale_w, b * z_sb, z_sh, z_sw, ALIGN, INT64)
    cls = cls_ptr + b * (C1 + 1)
    nic = tl.load(cls + C1)
    mi, si, A, bad_i = _rs_max_pass(z_ptr, o00, o01, o10, o11, wy0, wy1, wx0, wx1, row_mask, cls,
                                    0, nic, z_sc, BLOCK_P, INT64)
    mo, so, ao, bad_o = _rs_max_pass(z_ptr, o00, o01, o10, o11, wy0, wy1, wx0, wx1, row_mask, cls,
                                     nic, C1, z_sc, BLOCK_P, INT64)
    zmax, s1, pred_ic = _merge(mi, si, A, mo, so, ao)
    lse_all = zmax + _ln_approx(1.0 + s1)
    pm = _pixel_mask(pred_ic, (tl.zeros((BLOCK_P,), tl.int32) + nic) < C1, PIXELS) & row_mask
    icm = -mi
    ics = tl.full((BLOCK_P,), 1.0, tl.float32)
    if GROUP != 1:
        if tl.max(pm.to(tl.int32), 0) != 0:  # a block without a counted pixel skips the pass
            icm, ics = _rs_group_pass(z_ptr, o00, o01, o10, o11, wy0, wy1, wx0, wx1, pm, cls,
                                      nic, z_sc, A, _exp(mi - lse_all), lse_all, prior_ptr, p_s0,
                                      p_s1, threshold, BLOCK_P, GROUP, INT64)
    ocm = tl.where(mo == float("-inf"), 0.0, mo)
    s = (icm + ocm) + _ln_approx(ics * (1.0 + so)) + margin
    out = b * N + n
    tl.store(loss_ptr + out, tl.where(pm, _softplus(s), 0.0) + (bad_i + bad_o), mask=row_mask)
    tl.store(st_ptr + out, mo, mask=row_mask)
    tl.store(st_ptr + (tl.num_programs(1) * N + out), so, mask=row_mask)
    if WITH_CE:
        y = tl.load(tgt_ptr + b * y_sb + oy * y_sh + ox * y_sw, mask=row_mask, other=ignore_index)
        y_ok = y != ignore_index
        tc = tl.minimum(tl.maximum(y, 0), C1 - 1).to(tl.int32)
        if INT64:
            tc = tc.to(tl.int64)
        zt = _interp(z_ptr + tc * z_sc, o00, o01, o10, o11, wy0, wy1, wx0, wx1, row_mask & y_ok)
        tl.store(ce_ptr + out, tl.where(y_ok, (zmax - zt) + _log1p_pos(s1), 0.0), mask=row_mask)


@triton.jit(do_not_specialize=["b0"])  # one kernel for every chunk
def _rs_coef_kernel(
    z_ptr, cls_ptr, prior_ptr, tgt_ptr, loss_ptr, st_ptr, gl_ptr, gce_ptr, cf_ptr,
    b0, B, h, w, H, W, C1,
    z_sb, z_sc, z_sh, z_sw,
    g_sb, g_sh, g_sw,
    q_sb, q_sh, q_sw,
    p_s0, p_s1,
    y_sb, y_sh, y_sw,
    scale_h, scale_w, threshold, ignore_index,
    GROUP: tl.constexpr, WITH_CE: tl.constexpr, ALIGN: tl.constexpr, INT64: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    # Step 1 of the backward: the class-independent factors of each output pixel's gradient
    # (triton_kernel._bwd_kernel's, before its class loops). A pixel without a gradient gets zero
    # factors and +inf pivots, so that every term the gathers form there is exactly 0.
    pid = tl.program_id(0)
    bb = tl.program_id(1)
    if INT64:
        pid = pid.to(tl.int64)
        bb = bb.to(tl.int64)
    b = b0 + bb
    N = H * W
    n = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    row_mask = n < N
    o00, o01, o10, o11, wy0, wy1, wx0, wx1, oy, ox = _output_taps(
        n, W, h, w, scale_h, scale_w, b * z_sb, z_sh, z_sw, ALIGN, INT64)
    out = b * N + n
    L = tl.load(loss_ptr + out, mask=row_mask, other=0.0)
    gl = tl.load(gl_ptr + b * g_sb + oy * g_sh + ox * g_sw, mask=row_mask, other=0.0).to(tl.float32)
    act_ocr = (((L > 0.0) & (gl != 0.0)) | (L != L)) & row_mask
    coef = tl.where(act_ocr, gl * _sigmoid_from_loss(L), 0.0)
    active = act_ocr
    gce = tl.zeros((BLOCK_P,), tl.float32)
    tc = tl.zeros((BLOCK_P,), tl.int32)
    if WITH_CE:
        y = tl.load(tgt_ptr + b * y_sb + oy * y_sh + ox * y_sw, mask=row_mask, other=ignore_index)
        gce = tl.load(gce_ptr + b * q_sb + oy * q_sh + ox * q_sw, mask=row_mask,
                      other=0.0).to(tl.float32)
        act_ce = (y != ignore_index) & (gce != 0.0) & row_mask
        gce = tl.where(act_ce, gce, 0.0)
        tc = tl.minimum(tl.maximum(y, 0), C1 - 1).to(tl.int32)
        active = active | act_ce
    cls = cls_ptr + b * (C1 + 1)
    nic = tl.load(cls + C1)
    mi, si, A, _ = _rs_max_pass(z_ptr, o00, o01, o10, o11, wy0, wy1, wx0, wx1, active, cls, 0, nic,
                                z_sc, BLOCK_P, INT64)
    mo = tl.load(st_ptr + out, mask=active, other=0.0)
    so = tl.load(st_ptr + (B * N + out), mask=active, other=0.0)
    zmax, s1, _ = _merge(mi, si, A, mo, so, A)
    lse_all = zmax + _ln_approx(1.0 + s1)
    pA = _exp(mi - lse_all)
    if GROUP == 1:
        icm = -mi
        ics = tl.full((BLOCK_P,), 1.0, tl.float32)
    else:
        icm, ics = _rs_group_pass(z_ptr, o00, o01, o10, o11, wy0, wy1, wx0, wx1, act_ocr, cls, nic,
                                  z_sc, A, pA, lse_all, prior_ptr, p_s0, p_s1, threshold, BLOCK_P,
                                  GROUP, INT64)
    ocm = tl.where(act_ocr, tl.where(mo == float("-inf"), 0.0, mo), float("inf"))
    icm = tl.where(act_ocr, icm, float("inf"))
    PL = tl.num_programs(1) * N
    cp = cf_ptr + (bb * N + n)
    tl.store(cp + _OCM * PL, ocm, mask=row_mask)
    tl.store(cp + _KOC * PL, coef / (1.0 + so), mask=row_mask)
    tl.store(cp + _ICM * PL, icm, mask=row_mask)
    tl.store(cp + _KIC * PL, coef / ics, mask=row_mask)
    tl.store(cp + _ANC * PL, tl.where(act_ocr, A, 0).to(tl.float32), mask=row_mask)
    tl.store(cp + _PA * PL, pA, mask=row_mask)
    tl.store(cp + _LSE * PL, lse_all, mask=row_mask)
    if WITH_CE:
        tl.store(cp + _ZMX * PL, tl.where(active, zmax, float("inf")), mask=row_mask)
        tl.store(cp + _KCE * PL, gce / (1.0 + s1), mask=row_mask)
        tl.store(cp + _S1 * PL, tl.where(active, s1, 0.0), mask=row_mask)
        tl.store(cp + _TGT * PL, tc.to(tl.float32), mask=row_mask)


@triton.jit
def _rs_term(cp, PL, m, r0, r1, x0, x1, wy0, wy1, wx0, wx1, z_sw, c, zc, IC: tl.constexpr,
             prior_ptr, p_s0, p_s1, threshold, GROUP: tl.constexpr, WITH_CE: tl.constexpr):
    # dL/dz_c at the output pixels cp (masked to m) from their coefficients and the interpolated
    # logit (triton_kernel._bwd_kernel's class-loop body).
    z = _interp(zc, r0 + x0 * z_sw, r0 + x1 * z_sw, r1 + x0 * z_sw, r1 + x1 * z_sw, wy0, wy1,
                wx0, wx1, m)
    if IC:
        icm = tl.load(cp + _ICM * PL, mask=m, other=float("inf"))
        k_ic = tl.load(cp + _KIC * PL, mask=m, other=0.0)
        A = tl.load(cp + _ANC * PL, mask=m, other=0.0).to(tl.int32)
        pA = tl.load(cp + _PA * PL, mask=m, other=0.0)
        lse = tl.load(cp + _LSE * PL, mask=m, other=0.0)
        g_in = _in_group(z, c, A, pA, lse, m, prior_ptr, p_s0, p_s1, threshold, GROUP)
        g = tl.where(g_in, -k_ic * _exp(-z - icm), k_ic * 0.0)  # k_ic NaN: a poisoned pixel
    else:
        ocm = tl.load(cp + _OCM * PL, mask=m, other=float("inf"))
        k_oc = tl.load(cp + _KOC * PL, mask=m, other=0.0)
        g = k_oc * _exp(z - ocm)
    if WITH_CE:
        zmax = tl.load(cp + _ZMX * PL, mask=m, other=float("inf"))
        k_ce = tl.load(cp + _KCE * PL, mask=m, other=0.0)
        s1 = tl.load(cp + _S1 * PL, mask=m, other=0.0)
        tc = tl.load(cp + _TGT * PL, mask=m, other=-1.0).to(tl.int32)
        e = _exp(z - zmax)
        g += k_ce * tl.where(c == tc, -(s1 + (1.0 - e)), e)
    return g


@triton.jit
def _gather_x_classes(z_ptr, cls, i0, i1, rp, M, row_mask, cf_ptr, PL, pix, lo, cnt, nt, j, r0,
                      r1, wy0, wy1, w, scale_w, z_sc, z_sw, prior_ptr, p_s0, p_s1, threshold,
                      IC: tl.constexpr, GROUP: tl.constexpr, WITH_CE: tl.constexpr,
                      ALIGN: tl.constexpr, INT64: tl.constexpr, BLOCK_P: tl.constexpr):
    # Classes i0..i1-1 of the list: each lane's Σ over the footprint [lo, lo + cnt) of its
    # column j, stored to R.
    for i in range(i0, i1):
        c = tl.load(cls + i).to(tl.int32)
        if INT64:
            c = c.to(tl.int64)
        zc = z_ptr + c * z_sc
        acc = tl.zeros((BLOCK_P,), tl.float32)
        for t in range(0, nt):
            ox = lo + t
            x0, x1, wx0, wx1 = _axis(ox, w, scale_w, ALIGN, INT64)
            wgt = _tap_weight(x0, x1, wx0, wx1, j)
            m = (t < cnt) & (wgt != 0.0)
            g = _rs_term(cf_ptr + (pix + ox), PL, m, r0, r1, x0, x1, wy0, wy1, wx0, wx1, z_sw, c,
                         zc, IC, prior_ptr, p_s0, p_s1, threshold, GROUP, WITH_CE)
            acc += tl.where(m, wgt * g, 0.0)
        tl.store(rp + c * M, acc, mask=row_mask)


@triton.jit(do_not_specialize=["b0"])  # one kernel for every chunk
def _rs_gather_x_kernel(
    z_ptr, cls_ptr, prior_ptr, cf_ptr, r_ptr,
    b0, h, w, H, W, C1,
    z_sb, z_sc, z_sh, z_sw,
    p_s0, p_s1,
    scale_h, scale_w, inv_w, threshold,
    GROUP: tl.constexpr, WITH_CE: tl.constexpr, ALIGN: tl.constexpr, INT64: tl.constexpr,
    BLOCK_P: tl.constexpr, CLASSES: tl.constexpr,
):
    # Step 2: R[bb, c, oy, j] = Σ_ox wx(ox, j) · dL/dz_c(oy, ox), one lane per (oy, j), CLASSES
    # consecutive classes of the list a program (a chunk of images alone is too few lanes).
    i0 = tl.program_id(2) * CLASSES
    i1 = tl.minimum(i0 + CLASSES, C1)
    pid = tl.program_id(0)
    bb = tl.program_id(1)
    if INT64:
        pid = pid.to(tl.int64)
        bb = bb.to(tl.int64)
    b = b0 + bb
    N = H * W
    M = H * w
    n = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    row_mask = n < M
    oy = n // w
    j = n - oy * w
    y0, y1, wy0, wy1 = _axis(oy, h, scale_h, ALIGN, INT64)
    r0 = b * z_sb + y0 * z_sh
    r1 = b * z_sb + y1 * z_sh
    lo, cnt = _footprint(j, w, W, inv_w, ALIGN)
    cnt = tl.where(row_mask, cnt, 0)
    nt = tl.max(cnt, 0)
    PL = tl.num_programs(1) * N
    pix = bb * N + oy * W
    # Does any output pixel of the block's footprint have a gradient?
    act = tl.zeros((BLOCK_P,), tl.int32)
    for t in range(0, nt):
        m = t < cnt
        cp = cf_ptr + (pix + lo + t)
        k = tl.load(cp + _KIC * PL, mask=m, other=0.0)
        a = (k != 0.0)
        if WITH_CE:
            a = a | (tl.load(cp + _KCE * PL, mask=m, other=0.0) != 0.0)
        act = act | a.to(tl.int32)
    cls = cls_ptr + b * (C1 + 1)
    rp = r_ptr + bb * C1 * M + n
    if tl.max(act, 0) == 0:
        # no gradient reaches this block's columns: zeros, without reading the logits
        for i in range(i0, i1):
            c = tl.load(cls + i)
            tl.store(rp + c * M, tl.zeros((BLOCK_P,), tl.float32), mask=row_mask)
    else:
        nic = tl.load(cls + C1)
        ic_end = tl.minimum(i1, nic)  # the IC classes of [i0, i1), then the OC ones
        oc_start = tl.maximum(i0, nic)
        _gather_x_classes(z_ptr, cls, i0, ic_end, rp, M, row_mask, cf_ptr, PL, pix, lo, cnt, nt, j,
                          r0, r1, wy0, wy1, w, scale_w, z_sc, z_sw, prior_ptr, p_s0, p_s1,
                          threshold, True, GROUP, WITH_CE, ALIGN, INT64, BLOCK_P)
        _gather_x_classes(z_ptr, cls, oc_start, i1, rp, M, row_mask, cf_ptr, PL, pix, lo, cnt, nt, j,
                          r0, r1, wy0, wy1, w, scale_w, z_sc, z_sw, prior_ptr, p_s0, p_s1,
                          threshold, False, GROUP, WITH_CE, ALIGN, INT64, BLOCK_P)


@triton.jit(do_not_specialize=["b0"])  # one kernel for every chunk
def _rs_gather_y_kernel(
    r_ptr, dz_ptr,
    b0, h, w, H, C1,
    d_sb, d_sc, d_sh, d_sw,
    scale_h, inv_h,
    ALIGN: tl.constexpr, INT64: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # Step 3: dz[b, c, i, j] = Σ_oy wy(oy, i) · R[bb, c, oy, j], one lane per (i, j), one class
    # a program (the low-resolution image alone is too few lanes to fill a GPU).
    pid = tl.program_id(0)
    bb = tl.program_id(1)
    c = tl.program_id(2)
    if INT64:
        pid = pid.to(tl.int64)
        bb = bb.to(tl.int64)
        c = c.to(tl.int64)
    b = b0 + bb
    M = H * w
    n = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    row_mask = n < h * w
    i = n // w
    j = n - i * w
    lo, cnt = _footprint(i, h, H, inv_h, ALIGN)
    cnt = tl.where(row_mask, cnt, 0)
    rp = r_ptr + (bb * C1 + c) * M + j
    nt = tl.max(cnt, 0)
    acc = tl.zeros((BLOCK_P,), tl.float32)
    for t in range(0, nt):
        oy = lo + t
        y0, y1, wy0, wy1 = _axis(oy, h, scale_h, ALIGN, INT64)
        wgt = _tap_weight(y0, y1, wy0, wy1, i)
        m = (t < cnt) & (wgt != 0.0)
        acc += wgt * tl.load(rp + oy * w, mask=m, other=0.0)
    tl.store(dz_ptr + b * d_sb + c * d_sc + i * d_sh + j * d_sw,
             acc.to(dz_ptr.dtype.element_ty), mask=row_mask)


# --------------------------------------------------------------------------------------------
# Host-side launch (shapes and strides only: no host synchronisation)
# --------------------------------------------------------------------------------------------
def _grid_scale(n_in: int, n_out: int, align_corners: bool) -> Tuple[float, float]:
    """(scale, 1/scale) of one axis as upsample_bilinear2d computes it from the sizes (the
    scale is exact in fp32 after rounding the double quotient of two small ints); 1/scale only
    bounds the gathers' footprints (0 for a single output)."""
    if align_corners:
        scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    else:
        scale = n_in / n_out
    return scale, (1.0 / scale if scale > 0 else 0.0)


def _blocks(N: int, lanes: Optional[int] = None) -> Tuple[int, int]:
    """(BLOCK_P, num_warps): the plain kernels' tiles (triton_kernel._blocks, which the tests'
    small_tiles shrink) at PIXELS_PER_THREAD, or gather programs of `lanes` lanes, one a
    thread."""
    block_p, warps = tk._blocks(N)
    if tk.interpreting():
        return block_p, warps
    if lanes is not None:
        block_p = min(block_p, lanes)
        return block_p, max(1, block_p // 32)
    return block_p, max(1, block_p // (32 * PIXELS_PER_THREAD))


def _int64(*sizes: int) -> bool:
    return tk._FORCE_INT64 or max(sizes) > tk._INT32_LIMIT


def _max_offset(t: Optional[torch.Tensor]) -> int:
    return 0 if t is None else tk._max_offset(t)


def _map_strides(t: Optional[torch.Tensor]):
    return (0, 0, 0) if t is None else tuple(t.stride())


def stats_like(logits: torch.Tensor, size) -> torch.Tensor:
    """The forward's saved OC statistics: fp32 [2, B, H, W]."""
    return logits.new_empty((2, logits.shape[0], *size), dtype=torch.float32)


def _forward(logits, target, tags, prior, size, align_corners, margin, threshold, group_split,
             pixels, ignore_index):
    """(loss_map, ce_map, stats, classes) at the output size; ce_map is loss_map without a
    target."""
    with_ce = target is not None
    B, C1, h, w = logits.shape
    H, W = size
    loss = logits.new_empty((B, H, W), dtype=torch.float32)
    ce = logits.new_empty((B, H, W), dtype=torch.float32) if with_ce else loss
    stats = stats_like(logits, size)
    classes = _class_lists(tags, C1)
    if loss.numel() == 0:
        return loss, ce, stats, classes
    N = H * W
    block_p, warps = _blocks(N)
    sh, ih = _grid_scale(h, H, align_corners)
    sw, iw = _grid_scale(w, W, align_corners)
    pr = prior if prior is not None else loss
    p_st = prior.stride() if prior is not None else (0, 0)
    y_st = _map_strides(target)
    int64 = _int64(_max_offset(logits), _max_offset(target), 2 * B * N + block_p)
    _rs_fwd_kernel[(triton.cdiv(N, block_p), B)](
        logits, classes, pr, target if with_ce else classes, loss, ce, stats,
        h, w, H, W, C1,
        *logits.stride(),
        p_st[0], p_st[1],
        *y_st,
        sh, sw, float(margin), float(threshold), int(ignore_index),
        GROUP=GROUP_SPLITS[group_split], PIXELS=PIXEL_MODES[pixels], WITH_CE=with_ce,
        ALIGN=bool(align_corners), INT64=int64, BLOCK_P=block_p, num_warps=warps,
    )
    return loss, ce, stats, classes


def chunk_images(logits: torch.Tensor, size, with_ce: bool) -> int:
    """Images per chunk of the backward: its coefficient planes and R ([C+1, H, w]) together
    within CHUNK_SHARE of one [B, C+1, H, W] tensor of the logits' dtype, at least one."""
    B, C1, _, w = logits.shape
    H, W = size
    per_image = 4 * ((N_COEF_SEG if with_ce else N_COEF_OCR) * H * W + C1 * H * w)
    budget = CHUNK_SHARE * B * C1 * H * W * logits.element_size()
    return max(1, min(B, int(budget // max(per_image, 1))))


def _backward(grad_ocr, grad_ce, logits, target, prior, ocr_map, stats, classes, align_corners,
              threshold, group_split, ignore_index):
    with_ce = target is not None
    dz = torch.empty_like(logits)  # preserve_format: the logits' layout for dense tensors
    if dz.numel() == 0:
        return dz
    B, C1, h, w = logits.shape
    H, W = ocr_map.shape[1:]
    N = H * W
    if N == 0:
        return dz.zero_()
    sh, ih = _grid_scale(h, H, align_corners)
    sw, iw = _grid_scale(w, W, align_corners)
    nb = chunk_images(logits, (H, W), with_ce)
    n_coef = N_COEF_SEG if with_ce else N_COEF_OCR
    coef = logits.new_empty((n_coef, nb, H, W), dtype=torch.float32)
    r = logits.new_empty((nb, C1, H, w), dtype=torch.float32)
    pr = prior if prior is not None else ocr_map
    p_st = prior.stride() if prior is not None else (0, 0)
    g_st, q_st, y_st = _map_strides(grad_ocr), _map_strides(grad_ce), _map_strides(target)
    block_p, warps = _blocks(N)
    block_x, warps_x = _blocks(H * w, GATHER_BLOCK)
    block_y, warps_y = _blocks(h * w, GATHER_BLOCK)
    per_prog = min(C1, GATHER_CLASSES)
    int64 = _int64(_max_offset(logits), _max_offset(dz), _max_offset(grad_ocr),
                   _max_offset(grad_ce), _max_offset(target), 2 * B * N + block_p,
                   coef.numel() + block_p * n_coef, r.numel() + block_x)
    flags = dict(ALIGN=bool(align_corners), INT64=int64)
    for b0 in range(0, B, nb):
        nbc = min(nb, B - b0)
        _rs_coef_kernel[(triton.cdiv(N, block_p), nbc)](
            logits, classes, pr, target if with_ce else classes, ocr_map, stats, grad_ocr,
            grad_ce if with_ce else grad_ocr, coef,
            b0, B, h, w, H, W, C1,
            *logits.stride(),
            *g_st, *(q_st if with_ce else g_st),
            p_st[0], p_st[1],
            *y_st,
            sh, sw, float(threshold), int(ignore_index),
            GROUP=GROUP_SPLITS[group_split], WITH_CE=with_ce, BLOCK_P=block_p,
            num_warps=warps, **flags,
        )
        _rs_gather_x_kernel[(triton.cdiv(H * w, block_x), nbc, triton.cdiv(C1, per_prog))](
            logits, classes, pr, coef, r,
            b0, h, w, H, W, C1,
            *logits.stride(),
            p_st[0], p_st[1],
            sh, sw, iw, float(threshold),
            GROUP=GROUP_SPLITS[group_split], WITH_CE=with_ce, BLOCK_P=block_x, num_warps=warps_x,
            CLASSES=per_prog, **flags,
        )
        _rs_gather_y_kernel[(triton.cdiv(h * w, block_y), nbc, C1)](
            r, dz,
            b0, h, w, H, C1,
            *dz.stride(),
            sh, ih,
            BLOCK_P=block_y, num_warps=warps_y, **flags,
        )
    return dz


# --------------------------------------------------------------------------------------------
# torch.library registration
# --------------------------------------------------------------------------------------------
def check_resized_args(logits, tags, prior, size, target=None) -> None:
    check_ocr_args(logits, tags, prior, target)
    torch._check(logits.dim() == 4 and len(size) == 2, lambda: "expected 2-D logits and size")


def _map_like(logits: torch.Tensor, size) -> torch.Tensor:
    return logits.new_empty((logits.shape[0], *size), dtype=torch.float32)


@torch.library.custom_op(triton_op_name("ocr_loss_map_resized_triton"), mutates_args=())
def _ocr_map_op(logits: torch.Tensor, tags: torch.Tensor, prior: Optional[torch.Tensor],
                size: List[int], align_corners: bool, margin: float, threshold: float,
                group_split: str, pixels: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    loss, _, stats, classes = _forward(logits, None, tags, prior, size, align_corners, margin,
                                       threshold, group_split, pixels, -100)
    return loss, stats, classes


@_ocr_map_op.register_fake
def _(logits, tags, prior, size, align_corners, margin, threshold, group_split, pixels):
    check_resized_args(logits, tags, prior, size)
    return _map_like(logits, size), stats_like(logits, size), _classes_like(logits)


@torch.library.custom_op(triton_op_name("ocr_maps_resized_backward_triton"), mutates_args=())
def _maps_bwd_op(grad_ocr: torch.Tensor, grad_ce: Optional[torch.Tensor], logits: torch.Tensor,
                 target: Optional[torch.Tensor], prior: Optional[torch.Tensor],
                 ocr_map: torch.Tensor, stats: torch.Tensor, classes: torch.Tensor,
                 align_corners: bool, threshold: float, group_split: str,
                 ignore_index: int) -> torch.Tensor:
    return _backward(grad_ocr, grad_ce, logits, target, prior, ocr_map, stats, classes,
                     align_corners, threshold, group_split, ignore_index)


@_maps_bwd_op.register_fake
def _(grad_ocr, grad_ce, logits, target, prior, ocr_map, stats, classes, align_corners, threshold,
      group_split, ignore_index):
    torch._check(grad_ocr.shape == ocr_map.shape, lambda: "grad_ocr: shape differs from ocr_map's")
    torch._check(tuple(stats.shape) == (2,) + tuple(ocr_map.shape),
                 lambda: f"stats: expected [2, B, H, W], got {stats.shape}")
    torch._check(tuple(classes.shape) == (logits.shape[0], logits.shape[1] + 1),
                 lambda: f"classes: expected [B, C+2], got {classes.shape}")
    return torch.empty_like(logits)


def _ocr_setup(ctx, inputs, output):
    logits, tags, prior, size, align_corners, margin, threshold, group_split, pixels = inputs
    loss, stats, classes = output
    ctx.mark_non_differentiable(stats, classes)
    ctx.save_for_backward(logits, prior, loss, stats, classes)
    ctx.align_corners, ctx.threshold, ctx.group_split = align_corners, threshold, group_split


@first_order_only("ocr_loss", "triton")
def _ocr_bwd(ctx, grad_map, _grad_stats, _grad_classes):
    logits, prior, loss_map, stats, classes = ctx.saved_tensors
    grad = None
    if ctx.needs_input_grad[0]:
        grad = _maps_bwd_op(grad_map, None, logits, None, prior, loss_map, stats, classes,
                            ctx.align_corners, ctx.threshold, ctx.group_split, -100)
    return (grad,) + (None,) * 8


_ocr_map_op.register_autograd(_ocr_bwd, setup_context=_ocr_setup)


def ocr_loss_map_resized_triton(logits, tags, prior, opts: OCROptions, size, align_corners: bool):
    """Per-pixel OCR loss [B, H, W] (fp32) of the logits [B, C+1, h, w] bilinearly upsampled to
    size = (H, W) inside the kernels; differentiable in the low-resolution logits (Triton)."""
    return _ocr_map_op(logits, tags, prior, [int(s) for s in size], bool(align_corners),
                       float(opts.margin), float(opts.threshold), opts.group_split,
                       opts.pixels)[0]
