"""The shared W-OoD backend matrix: every fast backend (triton, cpu, cuda) against the float64
reference, numpy and the official code. A backend that cannot run here is skipped with its reason
(CPU-only CI: "cuda"; triton runs under TRITON_INTERPRET=1). Backend-specific checks (opcheck,
the assignment kernel, the CPU instruction sets) live in test_triton_kernel.py and test_csrc.py."""
import numpy as np
import pytest
import torch

from ocr_kernels import centroid_distances, kmeans, wood_distance_loss
from ocr_kernels._dispatch import BACKEND_DTYPES, unavailable_reason
from ocr_kernels.wood.official import official_wood_distance_loss
from ocr_kernels.wood.reference import centroid_distances_reference, wood_distance_loss_reference
from wood.wood_np import backend_runs, distances_np, large_norm_inputs, wood_loss_np


@pytest.fixture(params=["triton", "cpu", "cuda"])
def be(request):
    name = request.param
    dev = "cuda" if name in ("cuda", "triton") and torch.cuda.is_available() else "cpu"
    reason = backend_runs(name, dev)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    return name, dev


def runs_in(name, dev, dtype):
    return unavailable_reason(name, torch.zeros(1, device=dev, dtype=dtype)) is None


def grads64(fn, *tensors, g=None):
    """fn on float64 CPU copies of tensors: (value, gradients of <value, g> (g = ones if None))."""
    ts = [t.detach().cpu().to(torch.float64).requires_grad_(True) for t in tensors]
    out = fn(*ts)
    g = torch.ones_like(out) if g is None else g.detach().cpu().to(torch.float64)
    return out.detach(), torch.autograd.grad(out, ts, g)


@pytest.mark.parametrize("N, K, D", [(1, 1, 1), (5, 3, 7), (17, 33, 65), (40, 50, 128),
                                     (16, 70, 2048)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distances_and_gradients(be, N, K, D, dtype):
    name, dev = be
    if dtype not in BACKEND_DTYPES[name]:
        pytest.skip(f"{name} computes in {BACKEND_DTYPES[name]}")
    x = torch.randn(N, D, device=dev, dtype=dtype) * 3
    c = torch.randn(K, D, device=dev, dtype=dtype)
    xa, ca = x.clone().requires_grad_(True), c.clone().requires_grad_(True)
    d = centroid_distances(xa, ca, backend=name)
    assert d.dtype == dtype
    g = torch.randn_like(d)  # not the last layer
    d.backward(g)
    d64, (gx, gc) = grads64(centroid_distances_reference, x, c, g=g)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(d.cpu().double(), d64, rtol=tol, atol=tol)
    torch.testing.assert_close(xa.grad.cpu().double(), gx, rtol=tol * 10, atol=tol * 10)
    torch.testing.assert_close(ca.grad.cpu().double(), gc, rtol=tol * 10, atol=tol * 10)


def test_gradcheck_fp64(be):
    name, dev = be
    if torch.float64 not in BACKEND_DTYPES[name]:
        pytest.skip(f"{name} computes in fp32 only")
    x = torch.randn(4, 6, dtype=torch.float64, device=dev, requires_grad=True)
    c = torch.randn(5, 6, dtype=torch.float64, device=dev, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: centroid_distances(a, b, backend=name), (x, c))
    y = (torch.rand(4, 3, device=dev) < 0.5)
    cc = torch.randn(3, 6, dtype=torch.float64, device=dev, requires_grad=True)
    f = lambda a, b, e: wood_distance_loss(a, y, b, e, backend=name)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, cc, c))


def test_half_and_strided_inputs(be):
    name, dev = be
    layouts = [
        (torch.randn(20, 96, device=dev)[:, ::2], torch.randn(48, 30, device=dev).t()),
        (torch.randn(20, 48, device=dev).t().contiguous().t(),  # column-major
         torch.randn(30, 96, device=dev)[:, ::2]),  # strided view
    ]
    for x, c in layouts:
        d = centroid_distances(x, c, backend=name)
        np.testing.assert_allclose(d.cpu().numpy(), distances_np(x, c), rtol=1e-5, atol=1e-5)
        for dt in (torch.float16, torch.bfloat16):
            if not runs_in(name, dev, dt):
                continue
            xh = x.to(dt).requires_grad_(True)
            dh = centroid_distances(xh, c.to(dt), backend=name)
            assert dh.dtype == torch.float32
            np.testing.assert_allclose(dh.detach().cpu().numpy(), distances_np(xh, c.to(dt)),
                                       rtol=1e-5, atol=1e-5)
            dh.sum().backward()
            assert xh.grad.dtype == dt and torch.isfinite(xh.grad.float()).all()


def test_zero_distance_and_large_norms(be):
    name, dev = be
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]], device=dev, requires_grad=True)
    c = torch.tensor([[1.0, 2.0], [3.0, 4.0]], device=dev, requires_grad=True)
    d = centroid_distances(x, c, backend=name)
    d.sum().backward()
    assert d[0, 0].item() == 0.0
    _, (gx, gc) = grads64(centroid_distances_reference, x, c)
    torch.testing.assert_close(x.grad.cpu().double(), gx)
    torch.testing.assert_close(c.grad.cpu().double(), gc)
    xl, _, ol = large_norm_inputs(16, 2048, 1, 50, torch.float32)
    d = centroid_distances(xl.to(dev), ol.to(dev), backend=name).cpu().numpy()
    assert np.abs(d / distances_np(xl, ol) - 1).max() <= 1e-4


@pytest.mark.parametrize("shape", [(16, 300, 20, 50), (16, 256, 20, 50), (3, 5, 2, 7),
                                   (1, 1, 1, 1), (33, 40, 7, 100)])
@pytest.mark.parametrize("topk", [0.2, 0.9, 0.0, 1.0])
def test_loss_matches_reference_numpy_and_official(be, shape, topk):
    name, dev = be
    B, D, C, K = shape
    x = torch.relu(torch.randn(B, D, device=dev)) * 2
    y = torch.rand(B, C, device=dev) < 0.3
    cc, oc = torch.relu(torch.randn(C, D, device=dev)), torch.relu(torch.randn(K, D, device=dev))
    ts = [t.clone().requires_grad_(True) for t in (x, cc, oc)]
    loss = wood_distance_loss(ts[0], y, ts[1], ts[2], topk=topk, backend=name)
    gout = torch.rand((), device=dev) + 0.5
    (loss * gout).backward()
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert loss.item() == pytest.approx(wood_loss_np(x, y, cc, oc, topk), rel=1e-5, abs=1e-5)
    if D >= 64 and topk < 0.9:  # no all-zero (zero-sum) centroid, kk > 0: the official code applies
        official = official_wood_distance_loss(x, y.float(), cc, oc, topk).item()
        assert loss.item() == pytest.approx(official, rel=1e-5, abs=1e-5)
    _, grads = grads64(lambda a, b, e: wood_distance_loss_reference(a, y.cpu(), b, e, topk),
                       x, cc, oc, g=gout)
    for t, g in zip(ts, grads):
        torch.testing.assert_close(t.grad.cpu().double(), g, rtol=1e-4, atol=1e-5)


def test_loss_ties_zero_distances_and_kk_zero(be):
    name, dev = be
    dtype = torch.float64 if torch.float64 in BACKEND_DTYPES[name] else torch.float32
    x = torch.randint(0, 5, (12, 1), device=dev).to(dtype)
    oc = torch.randint(0, 5, (9, 1), device=dev).to(dtype)
    cc = torch.randint(0, 5, (3, 1), device=dev).to(dtype)
    y = torch.rand(12, 3, device=dev) < 0.5
    for topk in (0.2, 0.5, 0.8, 1.0):
        xa = x.clone().requires_grad_(True)
        loss = wood_distance_loss(xa, y, cc, oc, topk=topk, backend=name)
        loss.backward()
        tol = 1e-12 if dtype == torch.float64 else 1e-6
        assert loss.item() == pytest.approx(wood_loss_np(x, y, cc, oc, topk), abs=tol)
        _, (gx,) = grads64(lambda a: wood_distance_loss_reference(a, y.cpu(), cc.cpu(), oc.cpu(), topk), x)
        assert torch.isfinite(xa.grad).all()
        torch.testing.assert_close(xa.grad.cpu().double(), gx, rtol=tol * 10, atol=tol)


def test_loss_large_norms(be):
    name, dev = be
    x, cc, oc = large_norm_inputs(16, 2048, 20, 50, torch.float32)
    y = torch.rand(16, 20) < 0.2
    got = wood_distance_loss(x.to(dev), y.to(dev), cc.to(dev), oc.to(dev), backend=name).item()
    expected = wood_loss_np(x, y, cc, oc, 0.2)
    # the loss is a difference of sums of ~1e-2 distances: compare with the scale of its terms
    scale = (distances_np(x, cc) * y.numpy()).sum() / (16 * 50) + distances_np(x, oc).mean()
    assert abs(got - expected) <= 1e-4 * scale


def test_kmeans_equals_reference(be):
    name, dev = be
    centres = torch.randn(5, 24) * 8
    x = (centres[torch.arange(100) % 5] + torch.randn(100, 24)).to(dev)
    c_r, a_r = kmeans(x.cpu(), 5, iters=4, backend="reference")
    c_b, a_b = kmeans(x, 5, iters=4, backend=name)
    assert torch.equal(a_b.cpu(), a_r)
    torch.testing.assert_close(c_b.cpu(), c_r, rtol=1e-5, atol=1e-5)
    blobs = torch.randn(6, 40) * 10
    x = (blobs[torch.arange(90) % 6] + torch.randn(90, 40)).to(dev)
    c_b, a_b = kmeans(x, 6, iters=5, backend=name)
    c_r, a_r = kmeans(x, 6, iters=5, backend="reference")
    assert torch.equal(a_b, a_r)
    torch.testing.assert_close(c_b, c_r, rtol=1e-5, atol=1e-5)
    e, _ = kmeans(torch.tensor([[0.0], [0.0], [10.0], [11.0]], device=dev), 2, iters=2, backend=name)
    assert e.flatten().tolist() == [0.0, 10.5]


def _load(name):
    # Loading a library or importing triton cannot be traced: do it before compiling.
    if name == "triton":
        import ocr_kernels.wood.triton_kernel  # noqa: F401
    else:
        from ocr_kernels.wood.csrc_ops import ops

        ops()


def test_training_step_compiles_in_one_graph(be):
    # fullgraph=True raises on any graph break: validation, dispatch, every op (fake and autograd
    # registrations) and the on-device threshold trace.
    name, dev = be
    _load(name)
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 32).to(dev)
    x = torch.randn(8, 16, device=dev)
    y = torch.rand(8, 5, device=dev) < 0.3
    cc, oc = torch.randn(5, 32, device=dev), torch.randn(11, 32, device=dev)

    def step(a):
        return wood_distance_loss(lin(a), y, cc, oc, backend=name)

    loss = torch.compile(step, fullgraph=True, backend="aot_eager")(x)
    loss.backward()
    got = [p.grad.clone() for p in lin.parameters()]
    feats = lin(x).detach()
    assert loss.item() == pytest.approx(wood_loss_np(feats, y, cc, oc, 0.2), rel=1e-5, abs=1e-6)
    lin.zero_grad()
    step(x).backward()
    for a, b in zip(got, (p.grad for p in lin.parameters())):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    _, (gx,) = grads64(lambda a: wood_distance_loss_reference(a, y.cpu(), cc.cpu(), oc.cpu(), 0.2),
                       feats)
    f = torch.compile(lambda a: wood_distance_loss(a, y, cc, oc, backend=name), fullgraph=True)
    xa = feats.clone().requires_grad_(True)
    f(xa).backward()
    torch.testing.assert_close(xa.grad.cpu().double(), gx, rtol=1e-4, atol=1e-6)
