"""Independent float64 numpy definitions of the W-OoD quantities, for the tests."""
import numpy as np
import torch


def np64(t):
    return t.detach().cpu().to(torch.float64).numpy()


def distances_np(x, c):
    x, c = np64(x), np64(c)
    return np.sqrt(((x[:, None, :] - c[None, :, :]) ** 2).sum(-1))


def wood_loss_np(x, y, cc, oc, topk):
    d_in, d_ood = distances_np(x, cc), distances_np(x, oc)
    B, K = d_ood.shape
    nz = d_ood[d_ood != 0]
    kk = int(nz.shape[0] * (1 - topk))
    if kk > 0:
        thresh = np.sort(nz)[::-1][kk - 1]
        sel = d_ood < thresh
    else:
        sel = np.zeros_like(d_ood, dtype=bool)
    return (d_in * np64(y)).sum() / (B * K) - (d_ood * sel).sum() / (B * K)


def large_norm_inputs(B, D, C, K, dtype=torch.float32, gen=None):
    """Features with norms ~5e3 whose differences to every centroid are ~1e-2."""
    base = torch.rand(D, generator=gen, dtype=torch.float64) * 200.0 + 100.0
    spread = 1e-2 / D ** 0.5

    def cloud(n):
        return (base + torch.randn(n, D, generator=gen, dtype=torch.float64) * spread).to(dtype)

    return cloud(B), cloud(C), cloud(K)


def backend_runs(name, device="cpu"):
    from ocr_kernels._dispatch import unavailable_reason

    return unavailable_reason(name, torch.zeros(1, device=device))
