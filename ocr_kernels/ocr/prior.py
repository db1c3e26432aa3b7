"""The prior correlation matrix M of Eq. 7."""
from __future__ import annotations

from typing import Optional

import torch

from .._validation import describe, check_tensor


def prior_correlation(tags: torch.Tensor, normalize: Optional[str] = None) -> torch.Tensor:
    """Co-occurrence of classes over a training set's image-level tags.

    tags: [L, C] (bool, int or float; nonzero = present), one row per training image.
    Returns M [C+1, C+1] float32 with M[k, l] = (1/L) Σ_i 1[k ∈ S_i and l ∈ S_i], where class 0,
    background, is present in every image (Eq. 7). This raw matrix is what the defaults
    (threshold=0.2) assume.

    normalize="minmax" gives the appendix's row-wise min-max version (Fig. S2b):
    M'[k, :] = (M[k, :] − min_l M[k, l]) / (max_l M[k, l] − min_l M[k, l]); a row whose entries
    are all equal (a class that never occurs, for instance) becomes all zeros.
    """
    check_tensor("tags", tags, "a tensor [L, C] of dataset tags")
    if tags.dim() != 2 or tags.shape[0] == 0 or tags.shape[1] == 0:
        raise ValueError(
            f"tags must have shape [L, C] with L >= 1 images and C >= 1 classes; got {describe(tags)}"
        )
    if normalize not in (None, "minmax"):
        raise ValueError(f'normalize must be None or "minmax"; got {normalize!r}')
    present = (tags != 0).to(torch.float64)
    present = torch.cat([torch.ones_like(present[:, :1]), present], dim=1)  # background everywhere
    m = present.T @ present / tags.shape[0]
    if normalize == "minmax":
        lo = m.min(dim=1, keepdim=True).values
        span = m.max(dim=1, keepdim=True).values - lo
        m = torch.where(span > 0, (m - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(m))
    return m.to(torch.float32)
