"""Fused Triton kernels of the OCR loss (docs/semantics.md §1) and of the fused CE + OCR maps of
the segmentation objective (§1b; its op registration is ocr_kernels/seg/triton_kernel.py).

Design ("recompute"):
- Forward: one read of each pixel's C+1 logits computes the prediction, the OC mask, the anchor,
  the softmax statistics, the IC group, both log-sum-exps and the loss; it writes only the fp32
  loss map (and the fp32 cross-entropy map for the fused segmentation objective).
- Backward: σ(s) = -expm1(-L) comes back from the saved loss map, so a pixel's logits are re-read
  only where L > 0 and its upstream gradient is nonzero (for the fused objective: or where the CE
  term has a gradient); every other pixel gets zeros without touching the logits. With sparse OC
  pixels fwd+bwd moves about one read of the logits plus one write of the gradient, against two
  reads/writes when the gradient is kept from the forward and scaled by grad_output later.
- Pixels are tiled (BLOCK_P per program, one image per program row of the grid, coalesced along
  the spatial dim for NCHW); when C+1 fits a block the classes stay in registers, otherwise the
  classes are looped over in chunks with online (max, sum) pairs.
- Layouts: the logits' per-dim strides are passed, so contiguous and channels_last run without a
  copy; when the spatial dims collapse to one stride (both of those) a FLAT fast path skips the
  index decomposition. INT64 switches the offsets to 64 bits when a tensor's extent needs it.

Registration: torch.library.custom_op + register_fake + register_autograd. triton_op/wrap_triton
is not used because under TRITON_INTERPRET=1 wrap_triton hands back the raw interpreted kernel,
which then runs on FakeTensors during tracing (opcheck and torch.compile both fail): custom_op is
the registration that can be tested here, and it compiles without graph breaks on a GPU too.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl

from .._options import GROUP_SPLITS, PIXEL_MODES, OCROptions
from .._tensors import check_map, check_ocr_args, new_map
from .._triton import interpreting

# Largest class block kept in registers; above it the chunked kernels run. Tests lower it to
# exercise the chunked path at small C.
MAX_BLOCK_C = 256
CHUNK_C = 64
_FORCE_INT64 = False  # tests set it to run the 64-bit offset path on small tensors
_INT32_LIMIT = 2**31 - 1


# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------
@triton.jit
def _log1p_pos(x):
    # log(1 + x) for x >= 0, accurate for tiny x (Goldberg): the loss of a confidently
    # rectified pixel is ~e^s, far below fp32's epsilon relative to 1.
    u = 1.0 + x
    d = tl.where(u == 1.0, 1.0, u - 1.0)
    return tl.where(u == 1.0, x, tl.log(u) * (x / d))


@triton.jit
def _sigmoid_from_loss(L):
    # σ(s) = 1 - e^{-L} with L = softplus(s) >= 0. Kahan's expm1 trick keeps tiny L accurate;
    # it is used only below 0.5, where e^{-L} is a normal number (log of a subnormal e^{-L}
    # would be inexact) and where plain 1 - e^{-L} would cancel.
    u = tl.exp(-L)
    small = L < 0.5
    lg = tl.log(tl.where(small & (u != 1.0), u, 0.5))
    em1 = tl.where(u == 1.0, -L, (u - 1.0) * (-L / lg))
    return tl.where(small, -em1, 1.0 - u)


@triton.jit
def _softplus(s):
    return tl.maximum(s, 0.0) + _log1p_pos(tl.exp(-tl.abs(s)))


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
def _ic_mask(tags_ptr, b, c, C1, t_sb, t_sc):
    # IC = {0} ∪ {c+1 : tags[b, c] != 0}; classes past C1 are in neither IC nor OC.
    valid = c < C1
    tg = tl.load(tags_ptr + b * t_sb + (c - 1) * t_sc, mask=(c >= 1) & valid, other=0)
    return ((tg != 0) | (c == 0)) & valid


@triton.jit
def _max_sum_rows(x, sel):
    # Row-wise (max, Σ e^{x - max}) of x over sel; (0, 1) for an empty selection (no OC class: the
    # loss is masked there, and finite values keep the backward's exponents free of inf - inf).
    # The pair, not max + log(sum), feeds the softmax: one absolute fp32 log-sum-exp would carry
    # an error of |x|·2^-24, a large relative error in e^{x_k - lse} for large logits.
    xs = tl.where(sel, x, float("-inf"))
    mx = tl.max(xs, 1)
    mxs = tl.where(mx == float("-inf"), 0.0, mx)
    sm = tl.sum(tl.exp(xs - mxs[:, None]), 1)
    return mxs, tl.where(sm > 0.0, sm, 1.0)


@triton.jit
def _online_lse(run_m, run_s, x, sel):
    # Merge one chunk into running (max, sum-of-exp) pairs.
    xs = tl.where(sel, x, float("-inf"))
    new_m = tl.maximum(run_m, tl.max(xs, 1))
    safe = tl.where(new_m == float("-inf"), 0.0, new_m)
    run_s = run_s * tl.exp(run_m - safe) + tl.sum(tl.exp(xs - safe[:, None]), 1)
    return new_m, run_s


@triton.jit
def _online_max_rest(run_m, run_s1, z, c, cm, ci):
    # Merge one chunk (max cm at index ci) into (run_m, run_s1), where run_s1 = Σ e^{z_k - run_m}
    # over all classes but ONE argmax, whose term is exactly 1: the full sum is 1 + run_s1 with
    # run_s1 held to its own relative precision (see _block_stats).
    safe_c = tl.where(cm == float("-inf"), 0.0, cm)
    cs1 = tl.sum(tl.where(c[None, :] == ci[:, None], 0.0, tl.exp(z - safe_c[:, None])), 1)
    up = cm > run_m
    w = tl.exp(tl.where(cm == run_m, 0.0, tl.where(up, run_m - cm, cm - run_m)))
    run_s1 = tl.where(up, cs1 + (run_s1 + 1.0) * w, run_s1 + (cs1 + 1.0) * w)
    return tl.maximum(run_m, cm), run_s1


@triton.jit
def _finish_max(run_m):
    return tl.where(run_m == float("-inf"), 0.0, run_m)


@triton.jit
def _ce_grad(z, c, tc, zmax, s1):
    # softmax_k - [k == t] with the full sum 1 + s1. The target's entry is -(sum - e_t)/sum
    # = -(s1 + (1 - e_t))/sum (s1 holds e_t unless t is the excluded argmax, where e_t = 1):
    # no cancellation, so a confident pixel's tiny gradient keeps its relative precision.
    e = tl.exp(z - zmax[:, None])
    hit = c[None, :] == tc[:, None]
    return tl.where(hit, -(s1[:, None] + (1.0 - e)), e) / (1.0 + s1[:, None])


@triton.jit
def _ada_group(z, c, ic, A, pA, lse_all, prior_ptr, p_s0, p_s1, C1, threshold):
    # Eq. 9: {A} ∪ {k ∈ IC : P_A − P_k·M[A, k] < t}; M[A, :] is a gather from the tiny prior.
    p = tl.exp(z - lse_all[:, None])
    mrow = tl.load(prior_ptr + A[:, None] * p_s0 + c[None, :] * p_s1,
                   mask=(c[None, :] < C1) & (A[:, None] >= 0) & (A[:, None] < C1), other=0.0).to(tl.float32)
    return (c[None, :] == A[:, None]) | (ic[None, :] & (pA[:, None] - p * mrow < threshold))


@triton.jit
def _block_stats(z, c, ic, oc, prior_ptr, p_s0, p_s1, C1, threshold, GROUP: tl.constexpr):
    # Everything a pixel needs, from its C+1 logits held in registers (-inf past C1).
    BIG: tl.constexpr = 2147483647
    zmax = tl.max(z, 1)
    pred = tl.min(tl.where(z == zmax[:, None], c[None, :], BIG), 1)  # ties: lowest index
    # Full softmax normaliser as 1 + s1, s1 = Σ_{k≠pred} e^{z_k - max}: CE = (max - z_t) +
    # log1p(s1) keeps a confident pixel's tiny CE (s1 far below fp32's epsilon relative to 1)
    # to relative precision, where max + log(sum) - z_t would lose it to |z|·2^-24.
    s1 = tl.sum(tl.where(c[None, :] == pred[:, None], 0.0, tl.exp(z - zmax[:, None])), 1)
    lse_all = zmax + _log1p_pos(s1)
    pred_ic = tl.max(tl.where((c[None, :] == pred[:, None]) & ic[None, :], 1, 0), 1)
    za = tl.where(ic[None, :], z, float("-inf"))
    zA = tl.max(za, 1)
    A = tl.min(tl.where((za == zA[:, None]) & ic[None, :], c[None, :], BIG), 1)
    A = tl.minimum(A, C1 - 1)  # NaN logits match no maximum: never index the prior past C+1
    if GROUP == 0:
        G = _ada_group(z, c, ic, A, tl.exp(zA - lse_all), lse_all, prior_ptr, p_s0, p_s1, C1,
                       threshold)
    elif GROUP == 1:
        G = c[None, :] == A[:, None]
    else:
        G = (c[None, :] == A[:, None]) | ic[None, :]
    icm, ics = _max_sum_rows(-z, G)
    ocm, ocs = _max_sum_rows(z, oc[None, :] & (z == z))
    return zmax, s1, lse_all, pred_ic, G, icm, ics, ocm, ocs


@triton.jit
def _ocr_grad(z, G, oc, coef, icm, ics, ocm, ocs):
    # -σ·softmax_G(-z) on the IC group, +σ·softmax_OC(z) on OC, 0 elsewhere (the exponents are
    # masked before exp so that classes past C+1, at -inf, never make inf·0).
    e_ic = tl.exp(tl.where(G, -z - icm[:, None], float("-inf"))) / ics[:, None]
    e_oc = tl.exp(tl.where(oc[None, :] & (z == z), z - ocm[:, None], float("-inf"))) / ocs[:, None]
    return coef[:, None] * (e_oc - e_ic)


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
def _chunk(z_ptr, zrow, row_mask, c0, C1, z_sc, tags_ptr, b, t_sb, t_sc,
           BLOCK_C: tl.constexpr, INT64: tl.constexpr):
    c = c0 + tl.arange(0, BLOCK_C)
    if INT64:
        c = c.to(tl.int64)
    valid = c < C1
    z = tl.load(z_ptr + zrow[:, None] + c[None, :] * z_sc, mask=row_mask[:, None] & valid[None, :],
                other=0.0).to(tl.float32)
    z = tl.where(valid[None, :], z, float("-inf"))
    ic = _ic_mask(tags_ptr, b, c, C1, t_sb, t_sc)
    return c, z, ic, valid & (ic == 0)


@triton.jit
def _chunked_stats(z_ptr, zrow, row_mask, C1, z_sc, tags_ptr, b, t_sb, t_sc, prior_ptr, p_s0, p_s1,
                   threshold, tc, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                   GROUP: tl.constexpr, WITH_CE: tl.constexpr, INT64: tl.constexpr):
    # Pass 1: running max/argmax of all logits (prediction, lowest index on ties: a later chunk
    # replaces the running winner only when strictly greater), of the IC logits (anchor), the
    # online log-sum-exps of all logits and of the OC logits, and of -z over IC for "all".
    # "ada" cannot choose its IC group in the same pass: membership needs P_A = exp(z_A − lse_all)
    # with the FULL softmax normaliser and the final anchor, so a second pass over the chunks
    # accumulates the log-sum-exp of -z over the group.
    NEG: tl.constexpr = float("-inf")
    BIG: tl.constexpr = 2147483647
    run_m = tl.full((BLOCK_P,), NEG, tl.float32)
    run_s1 = tl.zeros((BLOCK_P,), tl.float32)
    pred_ic = tl.full((BLOCK_P,), 1, tl.int32)
    zA = tl.full((BLOCK_P,), NEG, tl.float32)
    A = tl.zeros((BLOCK_P,), tl.int32)
    if INT64:
        A = A.to(tl.int64)
    om = tl.full((BLOCK_P,), NEG, tl.float32)
    osum = tl.zeros((BLOCK_P,), tl.float32)
    im = tl.full((BLOCK_P,), NEG, tl.float32)
    isum = tl.zeros((BLOCK_P,), tl.float32)
    zt = tl.zeros((BLOCK_P,), tl.float32)
    n_oc = tl.zeros((BLOCK_P,), tl.int32)
    for c0 in range(0, C1, BLOCK_C):
        c, z, ic, oc = _chunk(z_ptr, zrow, row_mask, c0, C1, z_sc, tags_ptr, b, t_sb, t_sc,
                              BLOCK_C, INT64)
        cm = tl.max(z, 1)
        ci = tl.min(tl.where(z == cm[:, None], c[None, :], BIG), 1)
        ci_ic = tl.max(tl.where((c[None, :] == ci[:, None]) & ic[None, :], 1, 0), 1)
        pred_ic = tl.where(cm > run_m, ci_ic, pred_ic)
        run_m, run_s1 = _online_max_rest(run_m, run_s1, z, c, cm, ci)
        za = tl.where(ic[None, :], z, NEG)
        cA = tl.max(za, 1)
        cAi = tl.min(tl.where((za == cA[:, None]) & ic[None, :], c[None, :], BIG), 1)
        A = tl.where(cA > zA, cAi, A)
        zA = tl.maximum(zA, cA)
        om, osum = _online_lse(om, osum, z, oc[None, :] & (z == z))
        if GROUP == 2:
            im, isum = _online_lse(im, isum, -z, ic[None, :] & (z == z))
        if WITH_CE:
            zt += tl.sum(tl.where(c[None, :] == tc[:, None], z, 0.0), 1)
        n_oc += tl.sum(oc.to(tl.int32), 0)
    zmax = _finish_max(run_m)
    lse_all = zmax + _log1p_pos(run_s1)
    if GROUP == 0:
        pA = tl.exp(zA - lse_all)
        for c0 in range(0, C1, BLOCK_C):
            c, z, ic, oc = _chunk(z_ptr, zrow, row_mask, c0, C1, z_sc, tags_ptr, b, t_sb, t_sc,
                                  BLOCK_C, INT64)
            G = _ada_group(z, c, ic, A, pA, lse_all, prior_ptr, p_s0, p_s1, C1, threshold)
            im, isum = _online_lse(im, isum, -z, G)
        icm = _finish_max(im)
    elif GROUP == 1:
        icm = -zA
        isum = tl.full((BLOCK_P,), 1.0, tl.float32)
    else:
        icm = _finish_max(im)
    return (zmax, run_s1, lse_all, pred_ic, A, zA, icm, isum, _finish_max(om),
            tl.where(osum > 0, osum, 1.0), zt, n_oc > 0)


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------
@triton.jit
def _fwd_kernel(
    z_ptr, tags_ptr, prior_ptr, tgt_ptr, loss_ptr, ce_ptr,
    N, S1, S2, C1,
    z_sb, z_sc, z_s0, z_s1, z_s2,
    t_sb, t_sc, p_s0, p_s1,
    y_sb, y_s0, y_s1, y_s2,
    margin, threshold, ignore_index,
    dz_ptr, d_sb, d_sc, d_s0, d_s1, d_s2,
    GROUP: tl.constexpr, PIXELS: tl.constexpr, WITH_CE: tl.constexpr, CHUNKED: tl.constexpr,
    FLAT: tl.constexpr, INT64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
    STORE_GRAD: tl.constexpr = False,
):
    pid = tl.program_id(0)
    b = tl.program_id(1)
    if INT64:
        pid = pid.to(tl.int64)
        b = b.to(tl.int64)
    n = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    row_mask = n < N
    zrow = b * z_sb + _spatial_offset(n, S1, S2, z_s0, z_s1, z_s2, FLAT)
    tc = tl.zeros((BLOCK_P,), tl.int32)
    if WITH_CE:
        y = tl.load(tgt_ptr + b * y_sb + _spatial_offset(n, S1, S2, y_s0, y_s1, y_s2, FLAT),
                    mask=row_mask, other=ignore_index)
        y_ok = y != ignore_index
        # A bad target must never read out of bounds: clamp (the caller validates values).
        tc = tl.minimum(tl.maximum(y, 0), C1 - 1).to(tl.int32)
    if CHUNKED:
        zmax, s1, lse_all, pred_ic, A, zA, icm, ics, ocm, ocs, zt, oc_any = _chunked_stats(
            z_ptr, zrow, row_mask, C1, z_sc, tags_ptr, b, t_sb, t_sc, prior_ptr, p_s0, p_s1,
            threshold, tc, BLOCK_P, BLOCK_C, GROUP, WITH_CE, INT64)
    else:
        c, z, ic, oc = _chunk(z_ptr, zrow, row_mask, 0, C1, z_sc, tags_ptr, b, t_sb, t_sc,
                              BLOCK_C, INT64)
        oc_any = tl.max(oc.to(tl.int32), 0) > 0
        zmax, s1, lse_all, pred_ic, G, icm, ics, ocm, ocs = _block_stats(
            z, c, ic, oc, prior_ptr, p_s0, p_s1, C1, threshold, GROUP)
        if WITH_CE:
            zt = tl.sum(tl.where(c[None, :] == tc[:, None], z, 0.0), 1)
    m = _pixel_mask(pred_ic, oc_any, PIXELS)
    # The large maxima first: -z_A + max_OC z is exact for close logits, where summing two
    # absolute log-sum-exps would cost |z|·2^-24 of s and so of σ(s) in the gradient.
    s = (icm + ocm) + (tl.log(ics) + tl.log(ocs)) + margin
    loss = tl.where(m, _softplus(s), 0.0)
    if STORE_GRAD:  # the "keep the gradient" design (block path, plain OCR): d loss / d z
        coef = tl.where(m, 1.0 / (1.0 + tl.exp(-s)), 0.0)
        g = tl.where(row_mask[:, None] & (c[None, :] < C1),
                     _ocr_grad(z, G, oc, coef, icm, ics, ocm, ocs), 0.0)
        drow = b * d_sb + _spatial_offset(n, S1, S2, d_s0, d_s1, d_s2, FLAT)
        tl.store(dz_ptr + drow[:, None] + c[None, :] * d_sc, g.to(dz_ptr.dtype.element_ty),
                 mask=row_mask[:, None] & (c[None, :] < C1))
    out = b * N + n
    tl.store(loss_ptr + out, loss, mask=row_mask)
    if WITH_CE:
        tl.store(ce_ptr + out, tl.where(y_ok, (zmax - zt) + _log1p_pos(s1), 0.0), mask=row_mask)


@triton.jit
def _bwd_kernel(
    z_ptr, tags_ptr, prior_ptr, tgt_ptr, loss_ptr, gl_ptr, gce_ptr, dz_ptr,
    N, S1, S2, C1,
    z_sb, z_sc, z_s0, z_s1, z_s2,
    d_sb, d_sc, d_s0, d_s1, d_s2,
    g_sb, g_s0, g_s1, g_s2,
    h_sb, h_s0, h_s1, h_s2,
    t_sb, t_sc, p_s0, p_s1,
    y_sb, y_s0, y_s1, y_s2,
    threshold, ignore_index,
    GROUP: tl.constexpr, WITH_CE: tl.constexpr, CHUNKED: tl.constexpr,
    FLAT: tl.constexpr, INT64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1)
    if INT64:
        pid = pid.to(tl.int64)
        b = b.to(tl.int64)
    n = pid * BLOCK_P + tl.arange(0, BLOCK_P)
    row_mask = n < N
    L = tl.load(loss_ptr + b * N + n, mask=row_mask, other=0.0)
    gl = tl.load(gl_ptr + b * g_sb + _spatial_offset(n, S1, S2, g_s0, g_s1, g_s2, FLAT),
                 mask=row_mask, other=0.0).to(tl.float32)
    # L > 0 exactly where the pixel mask is on (softplus > 0); L == 0 carries no gradient.
    act_ocr = (L > 0.0) & (gl != 0.0)
    coef = tl.where(act_ocr, gl * _sigmoid_from_loss(L), 0.0)
    active = act_ocr
    tc = tl.zeros((BLOCK_P,), tl.int32)
    if WITH_CE:
        y = tl.load(tgt_ptr + b * y_sb + _spatial_offset(n, S1, S2, y_s0, y_s1, y_s2, FLAT),
                    mask=row_mask, other=ignore_index)
        gce = tl.load(gce_ptr + b * h_sb + _spatial_offset(n, S1, S2, h_s0, h_s1, h_s2, FLAT),
                      mask=row_mask, other=0.0).to(tl.float32)
        act_ce = (y != ignore_index) & (gce != 0.0) & row_mask
        gce = tl.where(act_ce, gce, 0.0)
        tc = tl.minimum(tl.maximum(y, 0), C1 - 1).to(tl.int32)
        active = active | act_ce
    zrow = b * z_sb + _spatial_offset(n, S1, S2, z_s0, z_s1, z_s2, FLAT)
    drow = b * d_sb + _spatial_offset(n, S1, S2, d_s0, d_s1, d_s2, FLAT)
    if CHUNKED:
        # Statistics first (the same passes as the forward), then one more pass writes.
        zmax, s1, lse_all, pred_ic, A, zA, icm, ics, ocm, ocs, zt, oc_any = _chunked_stats(
            z_ptr, zrow, active, C1, z_sc, tags_ptr, b, t_sb, t_sc, prior_ptr, p_s0, p_s1,
            threshold, tc, BLOCK_P, BLOCK_C, GROUP, WITH_CE, INT64)
        pA = tl.exp(zA - lse_all)
        for c0 in range(0, C1, BLOCK_C):
            c, z, ic, oc = _chunk(z_ptr, zrow, active, c0, C1, z_sc, tags_ptr, b, t_sb, t_sc,
                                  BLOCK_C, INT64)
            if GROUP == 0:
                G = _ada_group(z, c, ic, A, pA, lse_all, prior_ptr, p_s0, p_s1, C1, threshold)
            elif GROUP == 1:
                G = c[None, :] == A[:, None]
            else:
                G = (c[None, :] == A[:, None]) | ic[None, :]
            g = _ocr_grad(z, G, oc, coef, icm, ics, ocm, ocs)
            if WITH_CE:
                g += gce[:, None] * _ce_grad(z, c, tc, zmax, s1)
            g = tl.where(active[:, None] & (c[None, :] < C1), g, 0.0)
            tl.store(dz_ptr + drow[:, None] + c[None, :] * d_sc, g.to(dz_ptr.dtype.element_ty),
                     mask=row_mask[:, None] & (c[None, :] < C1))
    else:
        c, z, ic, oc = _chunk(z_ptr, zrow, active, 0, C1, z_sc, tags_ptr, b, t_sb, t_sc,
                              BLOCK_C, INT64)
        zmax, s1, lse_all, pred_ic, G, icm, ics, ocm, ocs = _block_stats(
            z, c, ic, oc, prior_ptr, p_s0, p_s1, C1, threshold, GROUP)
        g = _ocr_grad(z, G, oc, coef, icm, ics, ocm, ocs)
        if WITH_CE:
            g += gce[:, None] * _ce_grad(z, c, tc, zmax, s1)
        g = tl.where(active[:, None] & (c[None, :] < C1), g, 0.0)
        tl.store(dz_ptr + drow[:, None] + c[None, :] * d_sc, g.to(dz_ptr.dtype.element_ty),
                 mask=row_mask[:, None] & (c[None, :] < C1))


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


def _blocks(C1: int, N: int) -> Tuple[bool, int, int, int]:
    """(chunked, BLOCK_P, BLOCK_C, num_warps) for C+1 classes and N pixels per image."""
    chunked = C1 > MAX_BLOCK_C
    block_c = CHUNK_C if chunked else max(2, triton.next_power_of_2(C1))
    if interpreting():
        # Each program costs Python overhead in the interpreter: few, large programs.
        block_p = min(max(triton.next_power_of_2(N), 16), max(16, 16384 // block_c))
        return chunked, block_p, block_c, 4
    # About 4096 fp32 values per tile live in registers across 4-8 warps.
    block_p = max(16, min(256, 4096 // block_c))
    block_p = min(block_p, max(16, triton.next_power_of_2(N)))
    num_warps = 8 if block_p * block_c >= 4096 else 4
    return chunked, block_p, block_c, num_warps


def _pix(t: Optional[torch.Tensor], first: int):
    """Strides of a per-pixel view: batch stride and 3 padded spatial strides."""
    if t is None:
        return 0, [0, 0, 0], 0
    _, st, flat = _spatial_strides(t.shape[first:], t.stride()[first:])
    return t.stride(0), st, flat


def _launch_args(logits, tensors):
    """Shared geometry of a launch; tensors = per-pixel views [(tensor, first_spatial_dim)]."""
    B, C1 = logits.shape[:2]
    sizes, _, _ = _spatial_strides(logits.shape[2:], logits.stride()[2:])
    N = math.prod(logits.shape[2:])
    geoms = [_pix(t, first) for t, first in tensors]
    flat = all(g[2] is not None for g in geoms)
    if flat:  # every tensor's spatial dims collapse: pass the flat stride in the s2 slot
        geoms = [(sb, [0, 0, f], f) for sb, _, f in geoms]
    chunked, block_p, block_c, warps = _blocks(C1, N)
    big = max((_max_offset(t) for t, _ in tensors if t is not None), default=0)
    int64 = _FORCE_INT64 or big > _INT32_LIMIT - (block_p + block_c) * max(
        1, max(abs(s) for s in logits.stride())) or B * N + block_p > _INT32_LIMIT
    grid = (triton.cdiv(N, block_p), B)
    return dict(B=B, C1=C1, N=N, S1=sizes[1], S2=sizes[2], geoms=geoms, flat=flat,
                chunked=chunked, block_p=block_p, block_c=block_c, warps=warps, int64=int64,
                grid=grid)


def _forward(logits, target, tags, prior, margin, threshold, group_split, pixels, ignore_index,
             store_grad=False):
    """(loss_map, ce_map) -- ce_map is loss_map when target is None -- and, with store_grad (the
    grad-in-forward design, block path only), (loss_map, d loss_map / d logits)."""
    with_ce = target is not None
    B = logits.shape[0]
    spatial = tuple(logits.shape[2:])
    loss = torch.empty((B,) + spatial, dtype=torch.float32, device=logits.device)
    ce = torch.empty((B,) + spatial, dtype=torch.float32, device=logits.device) if with_ce else loss
    dz = torch.empty_like(logits) if store_grad else None
    if loss.numel() == 0:
        return (loss, dz) if store_grad else (loss, ce)
    g = _launch_args(logits, [(logits, 2), (target, 1), (dz, 2)])
    (z_sb, zst, _), (y_sb, yst, _), (d_sb, dst, _) = g["geoms"]
    assert not (store_grad and (with_ce or g["chunked"])), "grad-in-forward: block path, OCR only"
    dummy = tags
    pr = prior if prior is not None else dummy
    p_st = prior.stride() if prior is not None else (0, 0)
    _fwd_kernel[g["grid"]](
        logits, tags, pr, target if with_ce else dummy, loss, ce,
        g["N"], g["S1"], g["S2"], g["C1"],
        z_sb, logits.stride(1), zst[0], zst[1], zst[2],
        tags.stride(0), tags.stride(1), p_st[0], p_st[1],
        y_sb, yst[0], yst[1], yst[2],
        float(margin), float(threshold), int(ignore_index),
        dz if store_grad else loss, d_sb, dz.stride(1) if store_grad else 0, dst[0], dst[1], dst[2],
        GROUP=GROUP_SPLITS[group_split], PIXELS=PIXEL_MODES[pixels], WITH_CE=with_ce,
        CHUNKED=g["chunked"], FLAT=g["flat"], INT64=g["int64"], BLOCK_P=g["block_p"],
        BLOCK_C=g["block_c"], STORE_GRAD=store_grad, num_warps=g["warps"],
    )
    return (loss, dz) if store_grad else (loss, ce)


def _backward(grad_ocr, grad_ce, logits, target, tags, prior, ocr_map, threshold, group_split,
              ignore_index):
    with_ce = target is not None
    dz = torch.empty_like(logits)  # preserve_format: the logits' layout for dense tensors
    if dz.numel() == 0:
        return dz
    g = _launch_args(logits, [(logits, 2), (dz, 2), (grad_ocr, 1), (grad_ce, 1), (target, 1)])
    (z_sb, zst, _), (d_sb, dst, _), (g_sb, gst, _), (h_sb, hst, _), (y_sb, yst, _) = g["geoms"]
    dummy = tags
    pr = prior if prior is not None else dummy
    p_st = prior.stride() if prior is not None else (0, 0)
    _bwd_kernel[g["grid"]](
        logits, tags, pr, target if with_ce else dummy, ocr_map, grad_ocr,
        grad_ce if with_ce else dummy, dz,
        g["N"], g["S1"], g["S2"], g["C1"],
        z_sb, logits.stride(1), zst[0], zst[1], zst[2],
        d_sb, dz.stride(1), dst[0], dst[1], dst[2],
        g_sb, gst[0], gst[1], gst[2],
        h_sb, hst[0], hst[1], hst[2],
        tags.stride(0), tags.stride(1), p_st[0], p_st[1],
        y_sb, yst[0], yst[1], yst[2],
        float(threshold), int(ignore_index),
        GROUP=GROUP_SPLITS[group_split], WITH_CE=with_ce, CHUNKED=g["chunked"], FLAT=g["flat"],
        INT64=g["int64"], BLOCK_P=g["block_p"], BLOCK_C=g["block_c"], num_warps=g["warps"],
    )
    return dz


# --------------------------------------------------------------------------------------------
# torch.library registration
# --------------------------------------------------------------------------------------------
@torch.library.custom_op("ocr_kernels::ocr_loss_map_triton", mutates_args=())
def _ocr_map_op(logits: torch.Tensor, tags: torch.Tensor, prior: Optional[torch.Tensor],
                margin: float, threshold: float, group_split: str, pixels: str) -> torch.Tensor:
    return _forward(logits, None, tags, prior, margin, threshold, group_split, pixels, -100)[0]


@_ocr_map_op.register_fake
def _(logits, tags, prior, margin, threshold, group_split, pixels):
    check_ocr_args(logits, tags, prior)
    return new_map(logits, torch.float32)


@torch.library.custom_op("ocr_kernels::ocr_maps_backward_triton", mutates_args=())
def _maps_bwd_op(grad_ocr: torch.Tensor, grad_ce: Optional[torch.Tensor], logits: torch.Tensor,
                 target: Optional[torch.Tensor], tags: torch.Tensor, prior: Optional[torch.Tensor],
                 ocr_map: torch.Tensor, threshold: float, group_split: str,
                 ignore_index: int) -> torch.Tensor:
    return _backward(grad_ocr, grad_ce, logits, target, tags, prior, ocr_map, threshold,
                     group_split, ignore_index)


@_maps_bwd_op.register_fake
def _(grad_ocr, grad_ce, logits, target, tags, prior, ocr_map, threshold, group_split,
      ignore_index):
    check_ocr_args(logits, tags, prior, target)
    check_map(ocr_map, logits, "ocr_map")
    check_map(grad_ocr, logits, "grad_ocr")
    return torch.empty_like(logits)


@torch.library.custom_op("ocr_kernels::ocr_loss_map_keep_grad_triton", mutates_args=())
def _ocr_map_keep_grad_op(logits: torch.Tensor, tags: torch.Tensor, prior: Optional[torch.Tensor],
                          margin: float, threshold: float, group_split: str,
                          pixels: str) -> Tuple[torch.Tensor, torch.Tensor]:
    return _forward(logits, None, tags, prior, margin, threshold, group_split, pixels, -100,
                    store_grad=True)


@_ocr_map_keep_grad_op.register_fake
def _(logits, tags, prior, margin, threshold, group_split, pixels):
    check_ocr_args(logits, tags, prior)
    return new_map(logits, torch.float32), torch.empty_like(logits)


def _keep_grad_setup(ctx, inputs, output):
    ctx.save_for_backward(output[1])


def _keep_grad_bwd(ctx, grad_map, _grad_of_grad):
    (dz,) = ctx.saved_tensors
    grad = None
    if ctx.needs_input_grad[0]:  # a second read of the kept gradient and a second write
        grad = dz * grad_map.unsqueeze(1).to(dz.dtype)  # keeps dz's (the logits') layout
    return (grad,) + (None,) * 6


_ocr_map_keep_grad_op.register_autograd(_keep_grad_bwd, setup_context=_keep_grad_setup)


def _ocr_setup(ctx, inputs, output):
    logits, tags, prior, margin, threshold, group_split, pixels = inputs
    ctx.save_for_backward(logits, tags, prior, output)
    ctx.threshold, ctx.group_split = threshold, group_split


def _ocr_bwd(ctx, grad_map):
    logits, tags, prior, loss_map = ctx.saved_tensors
    grad = None
    if ctx.needs_input_grad[0]:
        grad = _maps_bwd_op(grad_map, None, logits, None, tags, prior, loss_map, ctx.threshold,
                            ctx.group_split, -100)
    return (grad,) + (None,) * 6


_ocr_map_op.register_autograd(_ocr_bwd, setup_context=_ocr_setup)


# --------------------------------------------------------------------------------------------
# Public entry points (inputs already validated by the caller)
# --------------------------------------------------------------------------------------------
# Which backward design ocr_loss_map_triton uses: "recompute" (the default: the forward writes
# only the loss map, the backward re-reads the logits of pixels with a gradient) or "keep_grad"
# (the forward also writes d loss/d logits, the backward scales it by grad_map). "keep_grad" is
# an internal switch kept for measuring both on a GPU; it applies only when C+1 <= MAX_BLOCK_C.
DESIGN = "recompute"


def ocr_loss_map_triton(logits, tags, prior, opts: OCROptions):
    """Per-pixel OCR loss [B, *spatial] in fp32, differentiable in the logits (Triton)."""
    args = (logits, tags, prior, float(opts.margin), float(opts.threshold), opts.group_split,
            opts.pixels)
    if DESIGN == "keep_grad" and logits.shape[1] <= MAX_BLOCK_C and logits.requires_grad:
        return _ocr_map_keep_grad_op(*args)[0]
    return _ocr_map_op(*args)
