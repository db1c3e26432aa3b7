"""W-OoD distance loss, forward + backward, on this CPU: our backends vs the official loop.

    python -m benchmarks.wood.measure_cpu [--shape B D C K] [--threads N]

Prints one line per implementation (median of torch.utils.benchmark's blocked_autorange).
"""
from __future__ import annotations

import argparse
import platform

import torch
import torch.utils.benchmark as tb

from ocr_kernels import wood_distance_loss
from ocr_kernels._dispatch import BACKEND_DTYPES, _call_reason
from ocr_kernels.wood.official import official_wood_distance_loss
from ocr_kernels.wood.reference import wood_distance_loss_reference


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--shape", type=int, nargs=4, default=(16, 2048, 20, 50), metavar=("B", "D", "C", "K"))
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--min-run-time", type=float, default=2.0)
    p.add_argument("--kmeans", type=int, nargs=3, default=None, metavar=("N", "D", "K"),
                   help="time K-means (2 Lloyd iterations) instead of the loss")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.kmeans:
        return kmeans_main(a)
    B, D, C, K = a.shape
    g = torch.Generator().manual_seed(0)
    # post-ReLU pooled features, as in the paper
    x = torch.relu(torch.randn(B, D, generator=g)).requires_grad_(True)
    y = (torch.rand(B, C, generator=g) < 0.15).float()
    cc, oc = torch.relu(torch.randn(C, D, generator=g)), torch.relu(torch.randn(K, D, generator=g))

    def step(fn):
        def run():
            x.grad = None
            fn(x, y, cc, oc, 0.2).backward()
        return run

    impls = {
        "official (per-centroid loop, .item())": official_wood_distance_loss,
        "reference (eager)": wood_distance_loss_reference,
    }
    for name in ("cpu",):
        if _call_reason(name, x, BACKEND_DTYPES[name]) is None:
            impls[f"{name} backend"] = lambda *t, _n=name: wood_distance_loss(*t[:4], topk=t[4], backend=_n)
    impls["torch.compile(reference)"] = torch.compile(wood_distance_loss_reference)
    print(f"# W-OoD loss fwd+bwd, (B, D, C, K) = {tuple(a.shape)}, {a.threads} threads, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}")
    base = None
    for name, fn in impls.items():
        run = step(fn)
        run()  # warm-up (and compile)
        m = tb.Timer("run()", globals={"run": run}, num_threads=a.threads).blocked_autorange(
            min_run_time=a.min_run_time)
        t = m.median * 1e3
        base = base or t
        print(f"{name:42s} {t:9.3f} ms   {base / t:5.2f}x vs official")


def eager_kmeans(x, k, iters):
    """The eager-torch baseline of the issue: cdist + argmin + scatter (first-k init)."""
    c = x[:k].clone()
    for _ in range(iters):
        a = torch.cdist(x, c).argmin(1)
        s = torch.zeros_like(c).index_add_(0, a, x)
        n = torch.bincount(a, minlength=k).clamp_min(1).to(x.dtype)
        c = s / n[:, None]
    return c, a


def kmeans_main(a):
    import time

    from ocr_kernels import kmeans

    N, D, K = a.kmeans
    x = torch.relu(torch.randn(N, D, generator=torch.Generator().manual_seed(0)))
    print(f"# K-means, 2 iterations, (N, D, k) = {(N, D, K)}, {a.threads} threads, "
          f"torch {torch.__version__} (one timed run after a warm-up)")
    runs = {"eager torch (cdist + argmin + index_add)": lambda: eager_kmeans(x, K, 2)}
    for name in ("reference", "cpu"):
        if _call_reason(name, x, BACKEND_DTYPES[name]) is None:
            runs[f"ocr_kernels.kmeans backend={name}"] = lambda _n=name: kmeans(x, K, iters=2, backend=_n)
    for name, fn in runs.items():
        fn()
        t = time.perf_counter()
        fn()
        print(f"{name:42s} {(time.perf_counter() - t) * 1e3:9.1f} ms")


if __name__ == "__main__":
    main()
