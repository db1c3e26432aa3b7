"""The Triton W-OoD kernels against the float64 reference (CPU: under TRITON_INTERPRET=1)."""
import numpy as np
import pytest
import torch

from wood_np import backend_runs, distances_np, large_norm_inputs, wood_loss_np
from ocr_kernels import centroid_distances, kmeans, wood_distance_loss
from ocr_kernels.wood.official import official_wood_distance_loss
from ocr_kernels.wood.reference import centroid_distances_reference, wood_distance_loss_reference

DEV = "cuda" if torch.cuda.is_available() else "cpu"
_reason = backend_runs("triton", DEV)
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"triton: {_reason}")


def grads64(fn, *tensors):
    ts = [t.detach().to(torch.float64).requires_grad_(True) for t in tensors]
    out = fn(*ts)
    return out.detach(), torch.autograd.grad(out.sum(), ts)


@pytest.mark.parametrize("N, K, D", [(1, 1, 1), (5, 3, 7), (17, 33, 65), (40, 50, 128)])
def test_distances_and_gradients(N, K, D):
    x = torch.randn(N, D, device=DEV) * 3
    c = torch.randn(K, D, device=DEV)
    xa, ca = x.clone().requires_grad_(True), c.clone().requires_grad_(True)
    d = centroid_distances(xa, ca, backend="triton")
    assert d.dtype == torch.float32
    g = torch.randn_like(d)  # not the last layer
    d.backward(g)
    x64, c64 = x.double().requires_grad_(True), c.double().requires_grad_(True)
    d64 = centroid_distances_reference(x64, c64)
    gx, gc = torch.autograd.grad(d64, (x64, c64), g.double())
    torch.testing.assert_close(d.double(), d64.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xa.grad.double(), gx, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ca.grad.double(), gc, rtol=1e-4, atol=1e-4)


def test_distances_strided_and_half_inputs():
    x = torch.randn(20, 48, device=DEV).t().contiguous().t()  # column-major
    c = torch.randn(30, 96, device=DEV)[:, ::2]  # strided view
    d = centroid_distances(x, c, backend="triton")
    np.testing.assert_allclose(d.cpu().numpy(), distances_np(x, c), rtol=1e-5, atol=1e-5)
    xh, ch = x.half(), c.half()
    dh = centroid_distances(xh.requires_grad_(True), ch, backend="triton")
    assert dh.dtype == torch.float32
    np.testing.assert_allclose(dh.detach().cpu().numpy(), distances_np(xh, ch), rtol=1e-5, atol=1e-5)
    dh.sum().backward()
    assert xh.grad.dtype == torch.float16


def test_zero_distance_gradient_is_zero():
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]], device=DEV, requires_grad=True)
    c = torch.tensor([[1.0, 2.0], [3.0, 4.0]], device=DEV, requires_grad=True)
    d = centroid_distances(x, c, backend="triton")
    d.sum().backward()
    _, (gx, gc) = grads64(centroid_distances_reference, x, c)
    assert d[0, 0].item() == 0.0
    torch.testing.assert_close(x.grad.double(), gx)
    torch.testing.assert_close(c.grad.double(), gc)


def test_large_norm_distances():
    x, _, oc = large_norm_inputs(16, 2048, 1, 50, torch.float32)
    d = centroid_distances(x.to(DEV), oc.to(DEV), backend="triton").cpu().numpy()
    expected = distances_np(x, oc)
    assert np.abs(d / expected - 1).max() <= 1e-4


@pytest.mark.parametrize("shape", [(16, 256, 20, 50), (3, 5, 2, 7), (1, 1, 1, 1), (33, 40, 7, 100)])
@pytest.mark.parametrize("topk", [0.2, 0.9, 0.0])
def test_loss_and_gradients(shape, topk):
    B, D, C, K = shape
    x = torch.relu(torch.randn(B, D, device=DEV)) * 2
    y = (torch.rand(B, C, device=DEV) < 0.3)
    cc, oc = torch.relu(torch.randn(C, D, device=DEV)), torch.relu(torch.randn(K, D, device=DEV))
    ts = [t.clone().requires_grad_(True) for t in (x, cc, oc)]
    loss = wood_distance_loss(ts[0], y, ts[1], ts[2], topk=topk, backend="triton")
    gout = torch.rand(()) + 0.5
    (loss * gout).backward()
    ref, grads = grads64(lambda a, b, e: wood_distance_loss_reference(a, y, b, e, topk) * gout.double(), x, cc, oc)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(wood_loss_np(x, y, cc, oc, topk), rel=1e-5, abs=1e-5)
    if D >= 64 and topk < 0.9:  # no all-zero (zero-sum) centroid, kk > 0: the official code applies
        official = official_wood_distance_loss(x, y.float(), cc, oc, topk).item()
        assert loss.item() == pytest.approx(official, rel=1e-5, abs=1e-5)
    for t, g in zip(ts, grads):
        torch.testing.assert_close(t.grad.double(), g, rtol=1e-4, atol=1e-5)


def test_loss_ties_zero_distances_and_kk_zero():
    x = torch.randint(0, 5, (12, 1), device=DEV).float()
    oc = torch.randint(0, 5, (9, 1), device=DEV).float()
    cc = torch.randint(0, 5, (3, 1), device=DEV).float()
    y = torch.rand(12, 3, device=DEV) < 0.5
    for topk in (0.2, 0.5, 0.8, 1.0):
        xa = x.clone().requires_grad_(True)
        loss = wood_distance_loss(xa, y, cc, oc, topk=topk, backend="triton")
        loss.backward()
        assert loss.item() == pytest.approx(wood_loss_np(x, y, cc, oc, topk), abs=1e-6)
        _, (gx,) = grads64(lambda a: wood_distance_loss_reference(a, y, cc, oc, topk), x)
        assert torch.isfinite(xa.grad).all()
        torch.testing.assert_close(xa.grad.double(), gx, rtol=1e-5, atol=1e-6)


def test_loss_large_norms():
    x, cc, oc = large_norm_inputs(16, 2048, 20, 50, torch.float32)
    y = torch.rand(16, 20) < 0.2
    got = wood_distance_loss(x.to(DEV), y.to(DEV), cc.to(DEV), oc.to(DEV), backend="triton").item()
    expected = wood_loss_np(x, y, cc, oc, 0.2)
    # the loss is a difference of sums of ~1e-2 distances: compare with the scale of its terms
    scale = (distances_np(x, cc) * y.numpy()).sum() / (16 * 50) + distances_np(x, oc).mean()
    assert abs(got - expected) <= 1e-4 * scale


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


def test_kmeans_triton_equals_reference():
    blobs = torch.randn(6, 40) * 10
    x = (blobs[torch.arange(90) % 6] + torch.randn(90, 40)).to(DEV)
    c_t, a_t = kmeans(x, 6, iters=5, backend="triton")
    c_r, a_r = kmeans(x, 6, iters=5, backend="reference")
    assert torch.equal(a_t, a_r)
    torch.testing.assert_close(c_t, c_r, rtol=1e-5, atol=1e-5)
