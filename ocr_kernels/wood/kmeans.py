"""K-means (Lloyd) for the OoD cluster centroids, on one process or across torch.distributed ranks.

Empty-cluster rule: after each update, every cluster that received no point is re-seeded with one
of the points farthest from their assigned centroid (the r-th empty cluster, in index order, gets
the r-th farthest point of the whole -- possibly distributed -- set). A centroid therefore never
becomes NaN (the official W-OoD code divides by a zero count there).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .._dispatch import resolve_backend
from .._validation import validate_kmeans_inputs
from .backends import ASSIGN_IMPLS, STEPS_IMPLS
from .._tensors import math_dtype


def _dist():
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("distributed=True needs torch.distributed to be initialised "
                         "(torch.distributed.init_process_group); it is not")
    return dist


def _all_gather(dist, t: torch.Tensor) -> torch.Tensor:
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.stack(out)


def _init_first(x, k, dist) -> torch.Tensor:
    """The first k points of the (rank-ordered) set."""
    if dist is None:
        return x[:k]
    m = min(k, x.shape[0])
    head = torch.zeros((k, x.shape[1]), device=x.device, dtype=x.dtype)
    head[:m] = x[:m]
    counts = _all_gather(dist, torch.tensor([m], device=x.device)).flatten().tolist()
    heads = _all_gather(dist, head)
    return torch.cat([heads[r, :counts[r]] for r in range(len(counts))])[:k]


def _init_kmeanspp(x, k, seed, assign, mu, dist) -> torch.Tensor:
    """k-means++ (D^2 sampling). Seeded: the same seed gives the same centroids. Across ranks the
    choice of the rank is drawn from a CPU generator shared by all ranks, the point within the
    rank from that rank's own generator, and the point is then shared by an all-reduce."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
        if dist is not None:  # every rank must use rank 0's seed
            s = torch.tensor([seed], dtype=torch.int64, device=x.device)
            dist.broadcast(s, 0)
            seed = int(s.item())
    g_dev = torch.Generator(device=x.device).manual_seed(seed)
    g_cpu = torch.Generator().manual_seed(seed + 1)
    N, D = x.shape
    rank = 0 if dist is None else dist.get_rank()
    centroids = torch.empty((k, D), device=x.device, dtype=x.dtype)
    weights = torch.ones(N, device=x.device, dtype=torch.float64)  # first pick: uniform
    for i in range(k):
        if dist is None:
            total = weights.sum()
            w = torch.where(total > 0, weights, torch.ones_like(weights))
            j = torch.multinomial(w, 1, generator=g_dev)
            centroids[i] = x[j[0]]
        else:
            totals = _all_gather(dist, weights.sum().reshape(1)).flatten().cpu()
            if not bool(totals.sum() > 0):  # every point coincides with a centroid: uniform
                totals = _all_gather(dist, torch.tensor([float(N)], device=x.device, dtype=torch.float64)).flatten().cpu()
                weights = torch.ones_like(weights)
            r = int(torch.multinomial(totals, 1, generator=g_cpu))
            point = torch.zeros(D, device=x.device, dtype=torch.float64)
            if rank == r:
                local = weights if bool(weights.sum() > 0) else torch.ones_like(weights)
                point = x[torch.multinomial(local, 1, generator=g_dev)[0]].to(torch.float64)
            dist.all_reduce(point)
            centroids[i] = point.to(x.dtype)
        _, sq = assign(x, centroids[i:i + 1], mu)
        sq = sq.to(torch.float64)
        weights = sq if i == 0 else torch.minimum(weights, sq)
    return centroids


def _farthest_points(x, mind, k, dist):
    """The k points farthest from their assigned centroid (over all ranks), [k, D], farthest
    first. Fewer local points than k are padded with -inf so that they are never chosen."""
    m = min(k, x.shape[0])
    vals, idx = torch.topk(mind.to(torch.float64), m)
    pts = x[idx]
    if dist is None:
        return pts
    pv = torch.full((k,), float("-inf"), device=x.device, dtype=torch.float64)
    pp = torch.zeros((k, x.shape[1]), device=x.device, dtype=x.dtype)
    pv[:m], pp[:m] = vals, pts
    all_v = _all_gather(dist, pv).flatten()
    all_p = _all_gather(dist, pp).reshape(-1, x.shape[1])
    return all_p[torch.topk(all_v, k).indices]


def kmeans(x: torch.Tensor, k: int, *, iters: int = 10, init: str = "first",
           seed: Optional[int] = None, backend: str = "auto",
           distributed: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's K-means: ``(centroids [k, D] in x's dtype, assignments int64 [N])``.

    init "first" takes the first k points (the official W-OoD choice; across ranks: the first k
    of the rank-ordered set); "k-means++" is D^2 sampling, reproducible with `seed`. Each of the
    `iters` iterations assigns every point to its nearest centroid (a fused distance + argmin
    over tiles, ties to the lowest index) and moves each centroid to the mean of its points
    (fp32 sums; fp64 for fp64), re-seeding empty clusters (module docstring). The returned
    assignments are those of a final assignment step against the returned centroids (one step
    fresher than the official W-OoD K-means', which equal ours with iters - 1). On the cpu
    backend each step is one call (GEMM assignment with an exactness guard, distance bounds
    carried between steps, sums and counts; csrc/cpu/wood_kmeans.cpp).
    distributed=True (torch.distributed initialised): x holds this rank's points and all ranks'
    points are clustered as one set (all-reduce of the partial sums and counts); every rank gets
    the same centroids and the assignments of its own points.
    """
    validate_kmeans_inputs(x, k, iters, init, seed, backend, distributed)
    dist = _dist() if distributed else None
    if dist is not None:
        n_all = torch.tensor([x.shape[0]], device=x.device, dtype=torch.int64)
        dist.all_reduce(n_all)
        if k > int(n_all.item()):
            raise ValueError(f"k must be at most the number of points over all ranks "
                             f"N = {int(n_all.item())}; got {k}")
    name = resolve_backend(backend, x, op="kmeans", implemented=tuple(ASSIGN_IMPLS))
    assign = ASSIGN_IMPLS[name]
    ct = math_dtype(x.dtype)
    N, D = x.shape
    # The centring vector only conditions the tl.dot path; any vector is exact in theory.
    mu = x.mean(0, dtype=ct) if N > 0 else torch.zeros(D, device=x.device, dtype=ct)
    if init == "first":
        c = _init_first(x, k, dist).to(ct)
    else:
        c = _init_kmeanspp(x, k, seed, assign, mu, dist).to(ct)
    xs = x if x.dtype == ct else None
    steps = STEPS_IMPLS[name](x, mu) if name in STEPS_IMPLS else None
    for _ in range(iters):
        cx = c.to(x.dtype) if x.dtype != ct else c
        out = steps.step(cx) if steps is not None else None
        if out is not None:  # assignment, sums and counts in one call (row-order sums as below)
            idx, mind, sums, counts = out
        else:
            idx, mind = assign(x, cx, mu)
            sums = torch.zeros((k, D), device=x.device, dtype=ct)
            if xs is not None:
                sums.index_add_(0, idx, xs)
            else:  # low-precision input: upcast in row chunks, never a full fp32 copy of x
                step = max(1, (1 << 24) // max(1, D))
                for s in range(0, N, step):
                    sums.index_add_(0, idx[s:s + step], x[s:s + step].to(ct))
            counts = torch.bincount(idx, minlength=k).to(ct)
        if dist is not None:
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        empty = counts == 0
        means = sums / counts.clamp_min(1)[:, None]
        far = _farthest_points(x, mind, k, dist).to(ct)
        order = (torch.cumsum(empty.to(torch.int64), 0) - 1).clamp_min(0)
        c = torch.where(empty[:, None], far[order], means)
    c_out = c.to(x.dtype)
    out = steps.step(c_out, with_sums=False) if steps is not None else None
    idx = out[0] if out is not None else assign(x, c_out, mu)[0]
    return c_out, idx
