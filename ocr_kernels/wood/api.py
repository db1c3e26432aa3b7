"""The public W-OoD functions: distances, the distance loss, class centroids, the classifier
objective (Lee et al., CVPR 2022, Eq. 1-4)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._dispatch import resolve_backend
from .._validation import (
    check_every_class_present,
    validate_centroid_distances,
    validate_class_centroid_inputs,
    validate_classifier_inputs,
    validate_wood_inputs,
)
from .backends import DISTANCE_IMPLS, LOSS_IMPLS
from .._tensors import math_dtype


def centroid_distances(x: torch.Tensor, centroids: torch.Tensor, *, backend: str = "auto"):
    """Euclidean distances ``[N, D], [K, D] -> [N, K]`` (Eq. 1), differentiable w.r.t. both inputs.

    Formed from direct differences x - c accumulated in fp32 (fp64 for fp64 inputs), never from
    ||x||^2 + ||c||^2 - 2 x.c and never with TF32, so features with norms of 1e4 that differ by
    1e-2 keep a relative error of ~1e-6. The gradient at distance 0 is 0. Returns fp32 (fp64 for
    fp64 inputs); gradients come back in the inputs' dtype.
    """
    validate_centroid_distances(x, centroids, backend)
    name = resolve_backend(backend, x, op="centroid_distances", implemented=tuple(DISTANCE_IMPLS))
    return DISTANCE_IMPLS[name](x, centroids)


def wood_distance_loss(features, labels, class_centroids, ood_centroids, *, topk: float = 0.2,
                       backend: str = "auto"):
    """W-OoD distance loss L_d (Eq. 2) with the official code's normalisation.

    d_in = ||x_b - class_c||, d_ood = ||x_b - ood_k||; thresh = the kk-th largest nonzero entry
    of d_ood over the whole batch, kk = int(n * (1 - topk)) with n the number of nonzero entries;
    loss = sum(d_in * labels) / (B*K) - sum(d_ood * [d_ood < thresh]) / (B*K)
    (= mean(d_in * labels) * C/K - mean(d_ood * selected), as the official code). kk = 0 selects
    nothing. The threshold is found on the device: no host synchronisation.

    features [B, D] (fp16/bf16/fp32: fp32 math; fp64: fp64 math), labels [B, C] multi-hot (any
    numeric dtype, used as weights), class_centroids [C, D], ood_centroids [K, D] (same dtype and
    device as features). Returns a 0-dim fp32 tensor (fp64 for fp64 features), differentiable
    w.r.t. features and both centroid sets (the threshold and the selection carry no gradient).
    """
    t = validate_wood_inputs(features, labels, class_centroids, ood_centroids, topk, backend)
    name = resolve_backend(backend, features, op="wood_distance_loss", implemented=tuple(LOSS_IMPLS))
    return LOSS_IMPLS[name](features, labels, class_centroids, ood_centroids, t)


def class_centroids(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[N, D], [N, C] -> [C, D]``: the mean feature of the images that contain each class; a
    multi-label image counts for each of its classes. A class with no image raises ValueError
    naming it (this reads the per-class counts: one host synchronisation, once before training).
    Computed in fp32 (fp64 for fp64) and returned in the features' dtype.
    """
    validate_class_centroid_inputs(features, labels)
    ct = math_dtype(features.dtype)
    present = (labels != 0).to(ct)
    counts = present.sum(0)
    check_every_class_present(counts)
    sums = present.t() @ features.to(ct) if ct == torch.float64 else _exact_fp32_mm(present.t(), features)
    return (sums / counts[:, None]).to(features.dtype)


def _exact_fp32_mm(a, b):
    """a @ b in fp32 without TF32 (sums of features must not lose 10 mantissa bits)."""
    prev = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        return a.to(torch.float32) @ b.to(torch.float32)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def wood_classifier_loss(logits_in, labels, logits_ood, features, class_centroids, ood_centroids,
                         *, lambda_: float = 0.007, topk: float = 0.2, backend: str = "auto"):
    """The W-OoD classifier objective (Eq. 3-4):
    BCE(logits_in, labels) + BCE(logits_ood, 0) + lambda_ * wood_distance_loss(...).

    Each BCE is the mean over its [B, C] logits (Eq. 3's 1/|C| sum, averaged over the batch);
    logits_ood may have a different batch size from logits_in. The official training script
    instead weights the OoD term by a separate coefficient, uses multilabel_soft_margin_loss on
    adversarially perturbed OoD images and masks one class; those are training-recipe choices
    outside this loss (compose them from the parts if needed).
    """
    validate_classifier_inputs(logits_in, labels, logits_ood, lambda_)
    y = labels.to(logits_in.dtype)
    bce_in = F.binary_cross_entropy_with_logits(logits_in, y)
    bce_ood = F.binary_cross_entropy_with_logits(logits_ood, torch.zeros_like(logits_ood))
    ld = wood_distance_loss(features, labels, class_centroids, ood_centroids, topk=topk,
                            backend=backend)
    return bce_in + bce_ood + float(lambda_) * ld
