"""Triton kernels of W-OoD: pairwise distances, the fused loss terms, the weighted-difference
backward, and the fused distance + argmin of the K-means assignment step.

Accuracy first: every distance is a sum of squared *direct differences* (x - c) accumulated in
fp32, never ||x||^2 + ||c||^2 - 2 x.c, which cancels when features have large norms. The K-means
assignment has a tl.dot path (fp32 "ieee" products, never TF32, on data centred by the mean) that
recomputes a tile from direct differences whenever one of its entries is ill-conditioned.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from .._autograd import first_order_only
from .._op_names import triton_op_name
from .._tensors import check_points
from .reference import ood_threshold

_BN, _BK, _BD = 16, 16, 32


@triton.jit
def _load_rows(p1, p2, rows, K1, K2, offs_d, d_ok, s1r, s1d, s2r, s2d):
    """Rows `rows` of the virtual concatenation [set1; set2] (K1 + K2 rows), as fp32."""
    in1 = rows < K1
    in2 = (rows >= K1) & (rows < K1 + K2)
    r1 = tl.where(in1, rows, 0).to(tl.int64)
    r2 = tl.where(in2, rows - K1, 0).to(tl.int64)
    a = tl.load(p1 + r1[:, None] * s1r + offs_d[None, :] * s1d, mask=in1[:, None] & d_ok[None, :],
                other=0.0).to(tl.float32)
    b = tl.load(p2 + r2[:, None] * s2r + offs_d[None, :] * s2d, mask=in2[:, None] & d_ok[None, :],
                other=0.0).to(tl.float32)
    return a + b  # one of the two is 0: exact


@triton.jit
def _sqdist_tile(x_ptr, c1_ptr, c2_ptr, offs_n, offs_k, N, K1, K2, D,
                 sxn, sxd, s1k, s1d, s2k, s2d,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    n_ok = offs_n < N
    rn = tl.where(n_ok, offs_n, 0).to(tl.int64)
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_ok = offs_d < D
        xt = tl.load(x_ptr + rn[:, None] * sxn + offs_d[None, :] * sxd,
                     mask=n_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
        ct = _load_rows(c1_ptr, c2_ptr, offs_k, K1, K2, offs_d, d_ok, s1k, s1d, s2k, s2d)
        diff = xt[:, None, :] - ct[None, :, :]
        acc += tl.sum(diff * diff, axis=2)
    return acc


@triton.jit
def _dist_kernel(x_ptr, c1_ptr, c2_ptr, out_ptr, N, K1, K2, D,
                 sxn, sxd, s1k, s1d, s2k, s2d, son, sok,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[n, j] = ||x_n - c_j|| for the rows c of [set1; set2]."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    acc = _sqdist_tile(x_ptr, c1_ptr, c2_ptr, offs_n, offs_k, N, K1, K2, D,
                       sxn, sxd, s1k, s1d, s2k, s2d, BLOCK_N, BLOCK_K, BLOCK_D)
    dist = tl.sqrt_rn(acc)
    ok = (offs_n < N)[:, None] & (offs_k < K1 + K2)[None, :]
    tl.store(out_ptr + offs_n.to(tl.int64)[:, None] * son + offs_k[None, :] * sok, dist, mask=ok)


@triton.jit
def _wood_terms_kernel(d_ptr, y_ptr, thr_ptr, w_ptr, loss_ptr, B, C, K, inv_bk,
                       BLOCK: tl.constexpr):
    """One program: w[b, j] = dL/dd[b, j] (y/(B*K) for class columns, -[d < thr]/(B*K) for OoD
    columns) and loss = sum(w * d). d, y, w are contiguous [B, C+K], [B, C], [B, C+K]."""
    thr = tl.load(thr_ptr)
    J = C + K
    total = B * J
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for i0 in range(0, total, BLOCK):
        idx = i0 + tl.arange(0, BLOCK)
        ok = idx < total
        b = idx // J
        j = idx - b * J
        d = tl.load(d_ptr + idx, mask=ok, other=0.0)
        is_in = j < C
        y = tl.load(y_ptr + b * C + j, mask=ok & is_in, other=0.0)
        sel = tl.where(d < thr, 1.0, 0.0)
        w = tl.where(is_in, y, -sel) * inv_bk
        w = tl.where(ok, w, 0.0)
        tl.store(w_ptr + idx, w, mask=ok)
        acc += w * d
    tl.store(loss_ptr, tl.sum(acc, axis=0))


@triton.jit
def _wdiff_kernel(a_ptr, b1_ptr, b2_ptr, w_ptr, dist_ptr, gout_ptr, out_ptr, NA, K1, K2, D,
                  sai, sad, s1j, s1d, s2j, s2d, swi, swj, sdi, sdj, soi, sod,
                  BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr):
    """out[i, :] = sum_j g[i, j] (a_i - b_j), g = gout * w[i, j] / dist[i, j] (0 where dist = 0),
    b_j the rows of [set1; set2]. Direct differences again: the expanded form
    (sum_j g) a_i - g @ B cancels for large-norm features."""
    offs_i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    i_ok = offs_i < NA
    d_ok = offs_d < D
    ri = tl.where(i_ok, offs_i, 0).to(tl.int64)
    a = tl.load(a_ptr + ri[:, None] * sai + offs_d[None, :] * sad,
                mask=i_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
    gout = tl.load(gout_ptr).to(tl.float32)
    acc = tl.zeros([BLOCK_I, BLOCK_D], dtype=tl.float32)
    J = K1 + K2
    for j0 in range(0, J, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        j_ok = offs_j < J
        m = i_ok[:, None] & j_ok[None, :]
        w = tl.load(w_ptr + ri[:, None] * swi + offs_j[None, :] * swj, mask=m, other=0.0)
        dd = tl.load(dist_ptr + ri[:, None] * sdi + offs_j[None, :] * sdj, mask=m, other=0.0)
        pos = dd > 0
        # mask before dividing: 0 * inf never appears
        g = tl.where(pos, gout * w.to(tl.float32) / tl.where(pos, dd, 1.0), 0.0)
        bt = _load_rows(b1_ptr, b2_ptr, offs_j, K1, K2, offs_d, d_ok, s1j, s1d, s2j, s2d)
        diff = a[:, None, :] - bt[None, :, :]
        acc += tl.sum(g[:, :, None] * diff, axis=1)
    tl.store(out_ptr + ri[:, None] * soi + offs_d[None, :] * sod, acc.to(out_ptr.dtype.element_ty),
             mask=i_ok[:, None] & d_ok[None, :])


def _distances(x, c1, c2):
    """[N, K1 + K2] fp32 distances of x to the rows of c1 then c2 (c2 may be None)."""
    N, D = x.shape
    K1 = c1.shape[0]
    K2 = 0 if c2 is None else c2.shape[0]
    c2_ = c1 if c2 is None else c2
    out = torch.empty((N, K1 + K2), device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(N, _BN), triton.cdiv(K1 + K2, _BK))
    _dist_kernel[grid](x, c1, c2_, out, N, K1, K2, D, x.stride(0), x.stride(1),
                       c1.stride(0), c1.stride(1), c2_.stride(0), c2_.stride(1),
                       out.stride(0), out.stride(1), BLOCK_N=_BN, BLOCK_K=_BK, BLOCK_D=_BD)
    return out


def _weighted_diff(a, b1, b2, w, dist, gout):
    """[NA, D] in a's dtype: sum_j gout * w[i, j] / dist[i, j] * (a_i - b_j)."""
    NA, D = a.shape
    K1 = b1.shape[0]
    K2 = 0 if b2 is None else b2.shape[0]
    b2_ = b1 if b2 is None else b2
    out = torch.empty_like(a, memory_format=torch.contiguous_format)
    grid = (triton.cdiv(NA, _BN), triton.cdiv(D, _BD))
    _wdiff_kernel[grid](a, b1, b2_, w, dist, gout, out, NA, K1, K2, D,
                        a.stride(0), a.stride(1), b1.stride(0), b1.stride(1),
                        b2_.stride(0), b2_.stride(1), w.stride(0), w.stride(1),
                        dist.stride(0), dist.stride(1), out.stride(0), out.stride(1),
                        BLOCK_I=_BN, BLOCK_J=_BK, BLOCK_D=_BD)
    return out


# ---------------------------------------------------------------------------------------------
# torch.library registration (custom_op + register_fake + register_autograd, as the OCR ops in
# ocr_kernels/ocr/triton_kernel.py, so a training step compiles with fullgraph=True).

@torch.library.custom_op(triton_op_name("wood_distances_triton"), mutates_args=())
def _distances_op(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    return _distances(x, centroids, None)


@_distances_op.register_fake
def _(x, centroids):
    check_points(x, centroids)
    return x.new_empty((x.shape[0], centroids.shape[0]), dtype=torch.float32)


@torch.library.custom_op(triton_op_name("wood_weighted_diff_triton"), mutates_args=())
def _weighted_diff_op(a: torch.Tensor, b1: torch.Tensor, b2: Optional[torch.Tensor],
                      w: torch.Tensor, dist: torch.Tensor, gout: torch.Tensor) -> torch.Tensor:
    return _weighted_diff(a, b1, b2, w, dist, gout)


@_weighted_diff_op.register_fake
def _(a, b1, b2, w, dist, gout):
    check_points(a, b1, "a", "b1")
    J = b1.shape[0] + (0 if b2 is None else b2.shape[0])
    for name, t in (("w", w), ("dist", dist)):
        torch._check(t.dim() == 2 and t.shape[0] == a.shape[0] and t.shape[1] == J,
                     lambda: f"{name}: expected [{a.shape[0]}, {J}], got {t.shape}")
    torch._check(gout.numel() == 1, lambda: f"gout: expected one element, got {gout.shape}")
    return torch.empty_like(a, memory_format=torch.contiguous_format)


def _distances_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs, output)


@first_order_only("centroid_distances", "triton")
def _distances_bwd(ctx, grad):
    x, c, d = ctx.saved_tensors
    one = torch.ones((), device=d.device, dtype=torch.float32)
    gx = _weighted_diff_op(x, c, None, grad, d, one) if ctx.needs_input_grad[0] else None
    gc = _weighted_diff_op(c, x, None, grad.t(), d.t(), one) if ctx.needs_input_grad[1] else None
    return gx, gc


_distances_op.register_autograd(_distances_bwd, setup_context=_distances_setup)


@torch.library.custom_op(triton_op_name("wood_distance_loss_triton"), mutates_args=())
def _loss_op(x: torch.Tensor, labels: torch.Tensor, cc: torch.Tensor, oc: torch.Tensor,
             topk: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, d, w): d [B, C+K] the distances to [class; OoD] centroids, w = dloss/dd (kept for
    the backward, which needs no second pass over the distances)."""
    B, C, K = x.shape[0], cc.shape[0], oc.shape[0]
    d = _distances(x, cc, oc)
    thr = ood_threshold(d[:, C:], topk).reshape(1)  # on the device: no host synchronisation
    y = labels.to(device=x.device, dtype=torch.float32).contiguous()
    w = torch.empty_like(d)
    loss = torch.empty((), device=x.device, dtype=torch.float32)
    _wood_terms_kernel[(1,)](d, y, thr, w, loss, B, C, K, 1.0 / (B * K), BLOCK=1024)
    return loss, d, w


@_loss_op.register_fake
def _(x, labels, cc, oc, topk):
    check_points(x, cc, "features", "class_centroids")
    check_points(x, oc, "features", "ood_centroids")
    torch._check(labels.dim() == 2 and labels.shape[0] == x.shape[0]
                 and labels.shape[1] == cc.shape[0],
                 lambda: f"labels: expected [B, C], got {labels.shape}")
    pairs = (x.shape[0], cc.shape[0] + oc.shape[0])
    return (x.new_empty((), dtype=torch.float32), x.new_empty(pairs, dtype=torch.float32),
            x.new_empty(pairs, dtype=torch.float32))


def _loss_setup(ctx, inputs, output):
    x, labels, cc, oc, topk = inputs
    _, d, w = output
    ctx.save_for_backward(x, cc, oc, d, w)
    ctx.C = cc.shape[0]


@first_order_only("wood_distance_loss", "triton")
def _loss_bwd(ctx, gout, _grad_d, _grad_w):
    x, cc, oc, d, w = ctx.saved_tensors
    C = ctx.C
    gout = gout.reshape(()).to(torch.float32)
    gx = gcc = goc = None
    if ctx.needs_input_grad[0]:
        gx = _weighted_diff_op(x, cc, oc, w, d, gout)
    if ctx.needs_input_grad[2]:
        gcc = _weighted_diff_op(cc, x, None, w[:, :C].t(), d[:, :C].t(), gout)
    if ctx.needs_input_grad[3]:
        goc = _weighted_diff_op(oc, x, None, w[:, C:].t(), d[:, C:].t(), gout)
    return gx, None, gcc, goc, None


_loss_op.register_autograd(_loss_bwd, setup_context=_loss_setup)


def centroid_distances_triton(x, centroids):
    return _distances_op(x, centroids)


def wood_distance_loss_triton(features, labels, class_centroids, ood_centroids, topk):
    return _loss_op(features, labels, class_centroids, ood_centroids, float(topk))[0]


# ---------------------------------------------------------------------------------------------
# K-means assignment: fused distance + argmin, one [BLOCK_N, BLOCK_K] tile at a time.

@triton.jit
def _assign_kernel(x_ptr, c_ptr, mu_ptr, idx_ptr, mind_ptr, N, K, D, sxn, sxd, sck, scd,
                   USE_DOT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                   BLOCK_D: tl.constexpr):
    """idx[n] = argmin_k ||x_n - c_k|| (lowest index on ties), mind[n] = that squared distance.

    USE_DOT: the tile comes from tl.dot (fp32 ieee) on data centred by mu, sq = |x|^2 + |c|^2
    - 2 x.c; where sq is small against |x|^2 + |c|^2 (cancellation loses more than ~3 of fp32's
    7 digits) the whole tile is recomputed from direct differences."""
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    rn = tl.where(n_ok, offs_n, 0).to(tl.int64)
    best = tl.full([BLOCK_N], float("inf"), tl.float32)
    best_i = tl.zeros([BLOCK_N], dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        rk = tl.where(k_ok, offs_k, 0).to(tl.int64)
        if USE_DOT:
            dot = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
            xn = tl.zeros([BLOCK_N], dtype=tl.float32)
            cn = tl.zeros([BLOCK_K], dtype=tl.float32)
            for d0 in range(0, D, BLOCK_D):
                offs_d = d0 + tl.arange(0, BLOCK_D)
                d_ok = offs_d < D
                mu = tl.load(mu_ptr + offs_d, mask=d_ok, other=0.0)
                xt = tl.load(x_ptr + rn[:, None] * sxn + offs_d[None, :] * sxd,
                             mask=n_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
                ct = tl.load(c_ptr + rk[:, None] * sck + offs_d[None, :] * scd,
                             mask=k_ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)
                xt = tl.where(d_ok[None, :], xt - mu[None, :], 0.0)
                ct = tl.where(d_ok[None, :], ct - mu[None, :], 0.0)
                dot += tl.dot(xt, tl.trans(ct), input_precision="ieee")
                xn += tl.sum(xt * xt, axis=1)
                cn += tl.sum(ct * ct, axis=1)
            scale = xn[:, None] + cn[None, :]
            sq = tl.maximum(scale - 2.0 * dot, 0.0)
            ill = (sq < 1e-3 * scale) & n_ok[:, None] & k_ok[None, :]
            if tl.max(ill.to(tl.int32)) > 0:
                sq = _sqdist_tile(x_ptr, c_ptr, c_ptr, offs_n, offs_k, N, K, 0, D,
                                  sxn, sxd, sck, scd, sck, scd, BLOCK_N, BLOCK_K, BLOCK_D)
        else:
            sq = _sqdist_tile(x_ptr, c_ptr, c_ptr, offs_n, offs_k, N, K, 0, D,
                              sxn, sxd, sck, scd, sck, scd, BLOCK_N, BLOCK_K, BLOCK_D)
        sq = tl.where(k_ok[None, :], sq, float("inf"))
        tile_min = tl.min(sq, axis=1)
        # lowest index reaching the tile minimum (explicit, independent of tl.argmin's tie rule)
        cand = tl.where(sq == tile_min[:, None], offs_k[None, :], 2147483647)
        tile_arg = tl.min(cand, axis=1)
        upd = tile_min < best
        best_i = tl.where(upd, tile_arg, best_i)
        best = tl.where(upd, tile_min, best)
    tl.store(idx_ptr + offs_n, best_i.to(tl.int64), mask=n_ok)
    tl.store(mind_ptr + offs_n, best, mask=n_ok)


def assign_triton(x, c, mu, use_dot=None):
    """(assignments int64 [N], squared distance to the assigned centroid fp32 [N])."""
    N, D = x.shape
    K = c.shape[0]
    if use_dot is None:
        use_dot = K >= 16 and D >= 64
    idx = torch.empty(N, device=x.device, dtype=torch.int64)
    mind = torch.empty(N, device=x.device, dtype=torch.float32)
    mu = mu.to(torch.float32).contiguous()
    bn, bk, bd = (32, 16, 32) if use_dot else (_BN, _BK, _BD)
    _assign_kernel[(triton.cdiv(N, bn),)](x, c, mu, idx, mind, N, K, D, x.stride(0), x.stride(1),
                                          c.stride(0), c.stride(1), USE_DOT=bool(use_dot),
                                          BLOCK_N=bn, BLOCK_K=bk, BLOCK_D=bd)
    return idx, mind
