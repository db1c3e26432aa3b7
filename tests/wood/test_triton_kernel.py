"""Triton-specific W-OoD tests (the shared matrix is tests/wood/test_backends.py): the
torch.library registration and the fused distance + argmin kernel of the K-means assignment.
CPU: under TRITON_INTERPRET=1."""
import numpy as np
import pytest
import torch

from wood.wood_np import backend_runs, distances_np, large_norm_inputs

DEV = "cuda" if torch.cuda.is_available() else "cpu"
_reason = backend_runs("triton", DEV)
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"triton: {_reason}")


def test_opcheck():
    import ocr_kernels.wood.triton_kernel as tk

    x = torch.randn(6, 9, device=DEV, requires_grad=True)
    c = torch.randn(4, 9, device=DEV, requires_grad=True)
    oc = torch.randn(5, 9, device=DEV, requires_grad=True)
    y = torch.rand(6, 4, device=DEV) < 0.5
    torch.library.opcheck(tk._distances_op, (x, c))
    torch.library.opcheck(tk._loss_op, (x, y, c, oc, 0.2))
    d = torch.rand(6, 9, device=DEV) + 0.1
    w = torch.randn(6, 9, device=DEV)
    one = torch.ones((), device=DEV)
    torch.library.opcheck(tk._weighted_diff_op, (x.detach(), c.detach(), oc.detach(), w, d, one))
    torch.library.opcheck(tk._weighted_diff_op, (x.detach(), c.detach(), None, w[:, :4], d[:, :4], one))


@pytest.mark.parametrize("use_dot", [True, False])
def test_assignment_kernel(use_dot):
    from ocr_kernels.wood.triton_kernel import assign_triton

    x, c = torch.randn(70, 80, device=DEV), torch.randn(19, 80, device=DEV)
    idx, mind = assign_triton(x, c, x.mean(0), use_dot=use_dot)
    sq = distances_np(x, c) ** 2
    best = sq.min(1)
    # a point whose best two centroids are within rounding may go either way
    second = np.sort(sq, 1)[:, 1]
    clear = (second - best) > 1e-4 * best
    assert (idx.cpu().numpy()[clear] == sq.argmin(1)[clear]).all()
    np.testing.assert_allclose(mind.cpu().numpy(), best, rtol=1e-5)


def test_assignment_kernel_large_norms_recomputes_ill_conditioned_tiles():
    from ocr_kernels.wood.triton_kernel import assign_triton

    x, _, c = large_norm_inputs(40, 256, 1, 20, torch.float32)
    # centring by a far-away vector keeps the norms large: the dot path must notice and recompute
    far = torch.zeros(256)
    idx, mind = assign_triton(x.to(DEV), c.to(DEV), far.to(DEV), use_dot=True)
    sq = distances_np(x, c) ** 2
    np.testing.assert_allclose(mind.cpu().numpy(), sq.min(1), rtol=1e-4)
    assert (idx.cpu().numpy() == sq.argmin(1)).mean() > 0.95
