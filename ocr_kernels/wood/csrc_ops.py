"""The C++/CUDA W-OoD ops (backends "cpu" and "cuda"): fake and autograd registrations and the
functions the dispatch calls. Kernels: csrc/cpu/wood_kernel.cpp, csrc/cuda/wood_kernel.cu,
per-pair math shared in csrc/wood_pixel.h; the CPU K-means step in csrc/cpu/wood_kmeans.cpp; the
fused CPU loss (wood_loss) has its autograd in C++ (csrc/wood_loss_autograd.cpp)."""
from __future__ import annotations

import torch

from .._autograd import first_order_only
from .._extension import registered_ops
from .._tensors import check_points, math_dtype
from .reference import wood_terms_from_distances


def _register() -> None:
    lib = "ocr_kernels::"

    @torch.library.register_fake(lib + "wood_distances")
    def _(x, centroids):
        check_points(x, centroids)
        return x.new_empty((x.shape[0], centroids.shape[0]), dtype=math_dtype(x.dtype))

    @torch.library.register_fake(lib + "wood_weighted_diff")
    def _(a, b, w, dist, gout):
        check_points(a, b, "a", "b")
        for name, t in (("w", w), ("dist", dist)):
            torch._check(t.dim() == 2 and t.shape[0] == a.shape[0] and t.shape[1] == b.shape[0],
                         lambda: f"{name}: expected [{a.shape[0]}, {b.shape[0]}], got {t.shape}")
        torch._check(gout.numel() == 1, lambda: f"gout: expected one element, got {gout.shape}")
        return torch.empty_like(a, memory_format=torch.contiguous_format)

    @torch.library.register_fake(lib + "wood_assign")
    def _(x, centroids):
        check_points(x, centroids)
        n = x.shape[0]
        return x.new_empty((n,), dtype=torch.int64), x.new_empty((n,), dtype=math_dtype(x.dtype))

    @torch.library.register_fake(lib + "wood_kmeans_step")
    def _(x, centroids, mu, with_sums, prev_idx=None, prev_bounds=None, moved=None):
        n, k = x.shape[0], (centroids.shape[0] if with_sums else 0)
        f32 = torch.float32
        return (x.new_empty((n,), dtype=torch.int64), x.new_empty((n,), dtype=f32),
                x.new_empty((k, x.shape[1]), dtype=f32), x.new_empty((k,), dtype=f32),
                x.new_empty((n, 2), dtype=torch.float64))

    def setup(ctx, inputs, output):
        x, c = inputs
        ctx.save_for_backward(x, c, output)

    @first_order_only("centroid_distances", "cpu/cuda")
    def backward(ctx, grad):
        x, c, d = ctx.saved_tensors
        one = torch.ones((), device=d.device, dtype=d.dtype)
        ops = torch.ops.ocr_kernels
        gx = ops.wood_weighted_diff(x, c, grad, d, one) if ctx.needs_input_grad[0] else None
        gc = ops.wood_weighted_diff(c, x, grad.t(), d.t(), one) if ctx.needs_input_grad[1] else None
        return gx, gc

    torch.library.register_autograd(lib + "wood_distances", backward, setup_context=setup)

    @torch.library.register_fake(lib + "wood_loss")
    def _(features, labels, class_centroids, ood_centroids, topk):
        ct = math_dtype(features.dtype)
        shape = (features.shape[0], class_centroids.shape[0] + ood_centroids.shape[0])
        return (features.new_empty((), dtype=ct), features.new_empty(shape, dtype=ct),
                features.new_empty(shape, dtype=ct))

    @torch.library.register_fake(lib + "wood_loss_backward")
    def _(gout, features, class_centroids, ood_centroids, w, d, centroid_grads):
        D = features.shape[1]
        cc = class_centroids.shape if centroid_grads else (0, D)
        oc = ood_centroids.shape if centroid_grads else (0, D)
        return (torch.empty_like(features, memory_format=torch.contiguous_format),
                features.new_empty(cc), features.new_empty(oc))



def ops():
    """torch.ops.ocr_kernels with the extension loaded and the W-OoD registrations made."""
    return registered_ops(_register)


def centroid_distances_csrc(x, centroids):
    return ops().wood_distances(x, centroids)


def wood_distance_loss_csrc(features, labels, class_centroids, ood_centroids, topk):
    """On the CPU one op for the whole loss and one for its backward (wood_loss). On CUDA the
    distances come from the kernel and the threshold and the two sums are a handful of small
    device ops on [B, C] and [B, K] (the same code as the reference, no host sync)."""
    o = ops()
    if features.device.type == "cpu":
        return o.wood_loss(features, labels, class_centroids, ood_centroids, float(topk))[0]
    d_in = o.wood_distances(features, class_centroids)
    d_ood = o.wood_distances(features, ood_centroids)
    return wood_terms_from_distances(d_in, labels, d_ood, topk)


def gemm_assignment(x, centroids) -> bool:
    """Whether the cpu K-means step goes through a GEMM (wood_kmeans_step) rather than direct
    differences (wood_assign): on the CPU, below fp64, when there are enough centroids and
    coordinates for the GEMM to pay for its tile copy."""
    return (x.device.type == "cpu" and x.dtype != torch.float64
            and centroids.shape[0] >= 8 and x.shape[1] >= 16)


def assign_csrc(x, centroids, mu=None):
    if mu is not None and gemm_assignment(x, centroids):
        return ops().wood_kmeans_step(x, centroids, mu.to(torch.float32), False)[:2]
    return ops().wood_assign(x, centroids)


class KMeansSteps:
    """The cpu K-means steps of one run: each call is one wood_kmeans_step that carries the
    previous step's distance bounds (and how far the centroids moved since), so that points that
    provably keep their centroid are not read by the GEMM again. `step(c, with_sums)` returns
    (assignments, squared distance, sums, counts); None where the GEMM step does not apply (the
    caller then assigns and sums itself)."""

    def __init__(self, x, mu):
        self.x, self.mu = x, mu.to(torch.float32)
        self.prev = None  # (centroids, assignments, bounds) of the last step

    def step(self, centroids, with_sums=True):
        if not gemm_assignment(self.x, centroids):
            return None
        prev_idx = bounds = moved = None
        if self.prev is not None:
            c0, prev_idx, bounds = self.prev
            # fp64 differences of fp32 values are exact; the norm's relative error ~1e-16 is
            # covered by the bounds' slack
            moved = torch.linalg.vector_norm(centroids.double() - c0.double(), dim=1)
        idx, mind, sums, counts, new_bounds = ops().wood_kmeans_step(
            self.x, centroids, self.mu, with_sums, prev_idx, bounds, moved)
        self.prev = (centroids, idx, new_bounds)
        return idx, mind, sums, counts
