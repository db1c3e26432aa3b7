"""WOoDLoss: the distance loss as an nn.Module holding the centroids."""
from __future__ import annotations

import torch
from torch import nn

from .._options import BACKENDS
from .._validation import check_finite, check_loss_name, check_option, check_tensor, check_topk
from .api import wood_distance_loss


class WOoDLoss(nn.Module):
    """``loss_weight * wood_distance_loss(features, labels, class_centroids, ood_centroids)``.

    The centroids are buffers: they follow ``.to()``/``.cuda()``, are saved in the state dict and
    get no gradient (W-OoD keeps them fixed). loss_weight defaults to the paper's lambda = 0.007;
    ``loss_name`` follows mmsegmentation's convention (it must start with "loss_").
    """

    def __init__(self, class_centroids: torch.Tensor, ood_centroids: torch.Tensor, *,
                 topk: float = 0.2, loss_weight: float = 0.007, loss_name: str = "loss_wood",
                 backend: str = "auto"):
        super().__init__()
        check_tensor("class_centroids", class_centroids, "a floating-point tensor [C, D]")
        check_tensor("ood_centroids", ood_centroids, "a floating-point tensor [K, D]")
        self.topk = check_topk(topk)
        self.loss_weight = check_finite("loss_weight", loss_weight)
        check_option("backend", backend, BACKENDS)
        self._loss_name = check_loss_name(loss_name)
        self.register_buffer("class_centroids", class_centroids.detach().clone())
        self.register_buffer("ood_centroids", ood_centroids.detach().clone())
        self.backend = backend

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_weight * wood_distance_loss(
            features, labels, self.class_centroids.to(features.dtype),
            self.ood_centroids.to(features.dtype), topk=self.topk, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"C={self.class_centroids.shape[0]}, K={self.ood_centroids.shape[0]}, "
                f"topk={self.topk}, loss_weight={self.loss_weight}, backend={self.backend!r}, "
                f"loss_name={self.loss_name!r}")
