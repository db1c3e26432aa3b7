"""The W-OoD distance loss in plain PyTorch: the definition every backend is tested against.

Pure tensor ops with data-independent shapes (no .item(), no nonzero), so it runs under
torch.compile and in CUDA graphs, and in float64 for gradcheck. Distances are formed from direct
differences x - c (never ||x||^2 + ||c||^2 - 2 x.c, which cancels for large-norm features).
"""
from __future__ import annotations

import torch

from .._tensors import math_dtype


def safe_norm(diff: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """||diff|| along dim with gradient 0 (not NaN) where the norm is 0.

    The clamp sends no gradient through entries below `tiny`, and the where picks 0 there, so
    0 * inf never appears."""
    sq = diff.pow(2).sum(dim)
    tiny = torch.finfo(sq.dtype).tiny
    return torch.where(sq > 0, sq.clamp_min(tiny).sqrt(), torch.zeros_like(sq))


def centroid_distances_reference(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """[N, D], [K, D] -> [N, K] Euclidean distances (fp32; fp64 for fp64 inputs)."""
    ct = math_dtype(x.dtype)
    return safe_norm(x.to(ct)[:, None, :] - centroids.to(ct)[None, :, :])


def assign_reference(x: torch.Tensor, c: torch.Tensor, mu=None):
    """Nearest centroid of every point by direct differences, in row chunks so that at most
    ~4M pair-coordinates are alive at a time. Ties go to the lowest index (torch.argmin)."""
    ct = math_dtype(x.dtype)
    N, D = x.shape
    K = c.shape[0]
    cc = c.to(ct)
    rows = max(1, (1 << 22) // max(1, K * D))
    idx, mind = [], []
    for s in range(0, N, rows):
        sq = (x[s:s + rows].to(ct)[:, None, :] - cc[None, :, :]).pow(2).sum(-1)
        i = sq.argmin(1)
        idx.append(i)
        mind.append(sq.gather(1, i[:, None]).squeeze(1))
    return torch.cat(idx), torch.cat(mind)


def kept_count(n: torch.Tensor, topk: float) -> torch.Tensor:
    """kk = int(n * (1 - topk)) on the device, bit-identical to the Python expression.

    n is an integer tensor (exact in float64 below 2^53); 1 - topk is formed in Python (double)
    as the official code does; the product is one correctly rounded double multiplication, the
    same that Python performs, and floor == int() for non-negative values."""
    return torch.floor(n.to(torch.float64) * (1.0 - float(topk))).to(torch.int64)


def ood_threshold(d_ood: torch.Tensor, topk: float) -> torch.Tensor:
    """The kk-th largest nonzero OoD distance (0-dim tensor, no gradient), or 0 when kk = 0.

    Distances are >= 0, so a descending sort puts every zero after every nonzero entry and the
    kk-th largest nonzero entry is simply sorted[kk - 1] (kk <= n). A threshold of 0 selects
    nothing, since the selection is the strict d < thresh."""
    flat = d_ood.detach().reshape(-1)
    n = (flat != 0).sum()
    kk = kept_count(n, topk)
    ordered = torch.sort(flat, descending=True).values
    at = (kk - 1).clamp_min(0).reshape(1)
    value = ordered.gather(0, at).reshape(())
    return torch.where(kk > 0, value, torch.zeros_like(value))


def wood_terms_from_distances(d_in, labels, d_ood, topk: float) -> torch.Tensor:
    """loss = sum(d_in * y) / (B*K) - sum(d_ood * [d_ood < thresh]) / (B*K)."""
    B, K = d_ood.shape
    thresh = ood_threshold(d_ood, topk)
    selected = (d_ood.detach() < thresh).to(d_ood.dtype)
    y = labels.to(d_in.dtype)
    # sum / (B*K) is the official mean over [B, C] times C / K (and mean over [B, K]).
    return ((d_in * y).sum() - (d_ood * selected).sum()) / (B * K)


def wood_distance_loss_reference(features, labels, class_centroids, ood_centroids, topk=0.2):
    """W-OoD distance loss (docs/semantics.md §2): a 0-dim fp32 tensor (fp64 for fp64
    features), differentiable w.r.t. features and both centroid sets."""
    d_in = centroid_distances_reference(features, class_centroids)
    d_ood = centroid_distances_reference(features, ood_centroids)
    return wood_terms_from_distances(d_in, labels, d_ood, topk)
