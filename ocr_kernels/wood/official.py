"""A faithful re-creation of the official W-OoD distance loss (naver-ai/w-ood,
step/train_cam_clustering.py), written anew for benchmarking and equivalence tests.

It keeps the official code's costs and numerics on purpose:
- a Python loop over the C + K centroids; each iteration tests ``centroid.sum() == 0`` (a host
  synchronisation; an all-zero-sum centroid gets squared distance 0 -- the official code writes a
  hard-coded 16-element zero column, the batch size; here it is B), forms x - centroid, squares
  and sums, and grows the [B, j] score matrix by concatenation;
- ``sqrt`` with no epsilon (its gradient is NaN at distance 0);
- the threshold from ``nonzero`` + ``topk`` and a ``.item()`` host synchronisation;
- ``mean(d_in * y) * (C / K) - mean(d_ood * (d_ood < thresh))``.
When kk = int(n * (1 - topk)) is 0 the official code indexes an empty tensor and raises
IndexError; this re-creation does the same. Not part of the public API.
"""
from __future__ import annotations

import torch


def official_wood_distance_loss(features, labels, class_centroids, ood_centroids, topk=0.2):
    B = features.shape[0]
    C, K = class_centroids.shape[0], ood_centroids.shape[0]
    means = torch.cat((class_centroids, ood_centroids), 0)
    scores = None
    for j in range(C + K):
        mean_j = means[j]
        if mean_j.sum() == 0:
            column = torch.zeros([B], device=features.device, dtype=features.dtype)
        else:
            centred = features - mean_j
            column = (centred ** 2).sum(axis=1)
        column = column.view(-1, 1)
        scores = column if scores is None else torch.cat((scores, column), 1)
    dist = torch.sqrt(scores)
    fg = dist[:, :C] * labels
    ood = dist[:, C:]
    nonzero = ood[ood.nonzero(as_tuple=True)]
    values, _ = torch.topk(nonzero, k=int(nonzero.shape[0] * (1 - topk)))
    thresh = values[-1].item()
    return fg.mean() * (C / K) - (ood * (ood < thresh)).mean()
