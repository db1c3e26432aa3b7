"""The C++/CUDA W-OoD ops (backends "cpu" and "cuda"): fake and autograd registrations and the
functions the dispatch calls. Kernels: csrc/cpu/wood_kernel.cpp, csrc/cuda/wood_kernel.cu,
per-pair math shared in csrc/wood_pixel.h."""
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


def ops():
    """torch.ops.ocr_kernels with the extension loaded and the W-OoD registrations made."""
    return registered_ops(_register)


def centroid_distances_csrc(x, centroids):
    return ops().wood_distances(x, centroids)


def wood_distance_loss_csrc(features, labels, class_centroids, ood_centroids, topk):
    """Distances from the C++/CUDA kernel; the threshold and the two sums are a handful of small
    device ops on [B, C] and [B, K] (the same code as the reference, no host sync)."""
    o = ops()
    d_in = o.wood_distances(features, class_centroids)
    d_ood = o.wood_distances(features, ood_centroids)
    return wood_terms_from_distances(d_in, labels, d_ood, topk)


def assign_csrc(x, centroids, mu=None):
    return ops().wood_assign(x, centroids)
