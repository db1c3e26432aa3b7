"""Which function runs each W-OoD op on each backend. Fast backends are imported only when chosen.

DISTANCE_IMPLS[name](x, centroids) -> [N, K] fp32 (fp64 for fp64) distances, differentiable.
LOSS_IMPLS[name](features, labels, class_centroids, ood_centroids, topk) -> 0-dim loss.
ASSIGN_IMPLS[name](x, centroids, mu) -> (assignments int64 [N], squared distance [N]).
STEPS_IMPLS[name](x, mu) -> an object whose .step(centroids, with_sums) runs one Lloyd step of a
run in one call: (assignments, squared distance, sums [k, D], counts [k]), or None where it does
not apply; backends without one assign, then sum.
"""
from __future__ import annotations

from .reference import assign_reference, centroid_distances_reference, wood_distance_loss_reference


def _triton_distances(x, c):
    from .triton_kernel import centroid_distances_triton

    return centroid_distances_triton(x, c)


def _triton_loss(*args):
    from .triton_kernel import wood_distance_loss_triton

    return wood_distance_loss_triton(*args)


def _triton_assign(x, c, mu):
    from .triton_kernel import assign_triton

    return assign_triton(x, c, mu)


def _csrc_distances(x, c):
    from .csrc_ops import centroid_distances_csrc

    return centroid_distances_csrc(x, c)


def _csrc_loss(*args):
    from .csrc_ops import wood_distance_loss_csrc

    return wood_distance_loss_csrc(*args)


def _csrc_assign(x, c, mu):
    from .csrc_ops import assign_csrc

    return assign_csrc(x, c, mu)


def _csrc_steps(x, mu):
    from .csrc_ops import KMeansSteps

    return KMeansSteps(x, mu)


DISTANCE_IMPLS = {"reference": centroid_distances_reference, "triton": _triton_distances,
                  "cpu": _csrc_distances, "cuda": _csrc_distances}
LOSS_IMPLS = {"reference": wood_distance_loss_reference, "triton": _triton_loss,
              "cpu": _csrc_loss, "cuda": _csrc_loss}
ASSIGN_IMPLS = {"reference": assign_reference, "triton": _triton_assign,
                "cpu": _csrc_assign, "cuda": _csrc_assign}
STEPS_IMPLS = {"cpu": _csrc_steps}
