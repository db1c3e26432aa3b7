"""The C++ (cpu) and CUDA (cuda) W-OoD ops against the float64 reference. A backend that cannot
run here is skipped with its reason (CPU-only CI: "cuda")."""
import numpy as np
import pytest
import torch

from wood_np import backend_runs, distances_np, large_norm_inputs, wood_loss_np
from ocr_kernels import centroid_distances, kmeans, wood_distance_loss
from ocr_kernels.wood.official import official_wood_distance_loss
from ocr_kernels.wood.reference import centroid_distances_reference, wood_distance_loss_reference


@pytest.fixture(params=["cpu", "cuda"])
def be(request):
    name = request.param
    dev = "cuda" if name == "cuda" and torch.cuda.is_available() else "cpu"
    reason = backend_runs(name, dev)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    return name, dev


def grads64(fn, *tensors, g=None):
    ts = [t.detach().cpu().to(torch.float64).requires_grad_(True) for t in tensors]
    out = fn(*ts)
    return out.detach(), torch.autograd.grad(out, ts, None if g is None else g.cpu().double())


@pytest.mark.parametrize("N, K, D", [(1, 1, 1), (5, 3, 7), (17, 33, 65), (16, 70, 2048)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distances_and_gradients(be, N, K, D, dtype):
    name, dev = be
    x = torch.randn(N, D, device=dev, dtype=dtype) * 3
    c = torch.randn(K, D, device=dev, dtype=dtype)
    xa, ca = x.clone().requires_grad_(True), c.clone().requires_grad_(True)
    d = centroid_distances(xa, ca, backend=name)
    assert d.dtype == dtype
    g = torch.randn_like(d)
    d.backward(g)
    d64, (gx, gc) = grads64(centroid_distances_reference, x, c, g=g)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(d.cpu().double(), d64, rtol=tol, atol=tol)
    torch.testing.assert_close(xa.grad.cpu().double(), gx, rtol=tol * 10, atol=tol * 10)
    torch.testing.assert_close(ca.grad.cpu().double(), gc, rtol=tol * 10, atol=tol * 10)


def test_gradcheck_fp64(be):
    name, dev = be
    x = torch.randn(4, 6, dtype=torch.float64, device=dev, requires_grad=True)
    c = torch.randn(5, 6, dtype=torch.float64, device=dev, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: centroid_distances(a, b, backend=name), (x, c))
    y = (torch.rand(4, 3, device=dev) < 0.5)
    cc = torch.randn(3, 6, dtype=torch.float64, device=dev, requires_grad=True)
    f = lambda a, b, e: wood_distance_loss(a, y, b, e, backend=name)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, cc, c))


def test_half_and_strided_inputs(be):
    name, dev = be
    x = torch.randn(20, 96, device=dev)[:, ::2]
    c = torch.randn(48, 30, device=dev).t()
    np.testing.assert_allclose(centroid_distances(x, c, backend=name).cpu().numpy(), distances_np(x, c), rtol=1e-5)
    for dt in (torch.float16, torch.bfloat16):
        xh = x.to(dt).requires_grad_(True)
        d = centroid_distances(xh, c.to(dt), backend=name)
        assert d.dtype == torch.float32
        np.testing.assert_allclose(d.detach().cpu().numpy(), distances_np(xh, c.to(dt)), rtol=1e-5)
        d.sum().backward()
        assert xh.grad.dtype == dt and torch.isfinite(xh.grad.float()).all()


def test_zero_distance_and_large_norms(be):
    name, dev = be
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]], device=dev, requires_grad=True)
    c = torch.tensor([[1.0, 2.0], [3.0, 4.0]], device=dev, requires_grad=True)
    centroid_distances(x, c, backend=name).sum().backward()
    _, (gx, gc) = grads64(lambda a, b: centroid_distances_reference(a, b).sum(), x, c)
    torch.testing.assert_close(x.grad.cpu().double(), gx)
    torch.testing.assert_close(c.grad.cpu().double(), gc)
    xl, _, ol = large_norm_inputs(16, 2048, 1, 50, torch.float32)
    d = centroid_distances(xl.to(dev), ol.to(dev), backend=name).cpu().numpy()
    assert np.abs(d / distances_np(xl, ol) - 1).max() <= 1e-4


@pytest.mark.parametrize("topk", [0.2, 0.9, 1.0])
def test_loss_matches_reference_and_numpy(be, topk):
    name, dev = be
    B, D, C, K = 16, 300, 20, 50
    x = torch.relu(torch.randn(B, D, device=dev))
    y = torch.rand(B, C, device=dev) < 0.2
    cc, oc = torch.relu(torch.randn(C, D, device=dev)), torch.relu(torch.randn(K, D, device=dev))
    ts = [t.clone().requires_grad_(True) for t in (x, cc, oc)]
    loss = wood_distance_loss(ts[0], y, ts[1], ts[2], topk=topk, backend=name)
    loss.backward()
    assert loss.item() == pytest.approx(wood_loss_np(x, y, cc, oc, topk), rel=1e-5, abs=1e-6)
    if topk < 0.9:  # kk > 0: the official code runs (it raises IndexError when kk = 0)
        official = official_wood_distance_loss(x, y.float(), cc, oc, topk).item()
        assert loss.item() == pytest.approx(official, rel=1e-5, abs=1e-6)
    _, grads = grads64(lambda a, b, e: wood_distance_loss_reference(a, y.cpu(), b, e, topk), x, cc, oc)
    for t, g in zip(ts, grads):
        torch.testing.assert_close(t.grad.cpu().double(), g, rtol=1e-4, atol=1e-6)


def test_loss_ties_and_zero_distances(be):
    name, dev = be
    x = torch.randint(0, 5, (12, 1), device=dev).double()
    oc = torch.randint(0, 5, (9, 1), device=dev).double()
    cc = torch.randint(0, 5, (3, 1), device=dev).double()
    y = torch.rand(12, 3, device=dev) < 0.5
    for topk in (0.2, 0.5, 0.8):
        xa = x.clone().requires_grad_(True)
        loss = wood_distance_loss(xa, y, cc, oc, topk=topk, backend=name)
        loss.backward()
        assert loss.item() == pytest.approx(wood_loss_np(x, y, cc, oc, topk), abs=1e-12)
        _, (gx,) = grads64(lambda a: wood_distance_loss_reference(a, y.cpu(), cc.cpu(), oc.cpu(), topk), x)
        torch.testing.assert_close(xa.grad.cpu(), gx)


def test_kmeans_assignment_equals_reference(be):
    name, dev = be
    centres = torch.randn(5, 24) * 8
    x = (centres[torch.arange(100) % 5] + torch.randn(100, 24)).to(dev)
    c_r, a_r = kmeans(x.cpu(), 5, iters=4, backend="reference")
    c_b, a_b = kmeans(x, 5, iters=4, backend=name)
    assert torch.equal(a_b.cpu(), a_r)
    torch.testing.assert_close(c_b.cpu(), c_r, rtol=1e-5, atol=1e-5)
    e, _ = kmeans(torch.tensor([[0.0], [0.0], [10.0], [11.0]], device=dev), 2, iters=2, backend=name)
    assert e.flatten().tolist() == [0.0, 10.5]


def test_opcheck(be):
    name, dev = be
    from ocr_kernels.wood.csrc_ops import ops

    o = ops()
    x = torch.randn(6, 9, device=dev, requires_grad=True)
    c = torch.randn(4, 9, device=dev, requires_grad=True)
    torch.library.opcheck(o.wood_distances, (x, c))
    torch.library.opcheck(o.wood_assign, (x.detach(), c.detach()))


def test_loss_compiles_in_one_graph(be):
    # no host synchronisation and fake registrations for every op: torch.compile needs no break
    # (once the extension is loaded: loading a library cannot be traced)
    name, dev = be
    from ocr_kernels.wood.csrc_ops import ops

    ops()
    x = torch.randn(8, 32, device=dev, requires_grad=True)
    y = torch.rand(8, 5, device=dev) < 0.3
    cc, oc = torch.randn(5, 32, device=dev), torch.randn(11, 32, device=dev)
    f = torch.compile(lambda a: wood_distance_loss(a, y, cc, oc, backend=name), fullgraph=True)
    loss = f(x)
    loss.backward()
    assert loss.item() == pytest.approx(wood_loss_np(x, y, cc, oc, 0.2), rel=1e-5, abs=1e-6)
    _, (gx,) = grads64(lambda a: wood_distance_loss_reference(a, y.cpu(), cc.cpu(), oc.cpu(), 0.2), x)
    torch.testing.assert_close(x.grad.cpu().double(), gx, rtol=1e-4, atol=1e-6)
