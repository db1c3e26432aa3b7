"""The GPU set (``pytest -m gpu``, run by benchmarks/gpu/run.sh): every fast backend on CUDA
tensors at small sizes against the float64 reference (the public API with backend="reference"
on float64 CPU copies), bf16, channels_last, offsets past 2^31 elements, CUDA graph capture and
no host synchronisation. Skipped without a CUDA device; a backend not built here is skipped with
its reason."""
import pytest
import torch

from helpers import ambiguous_pixels, assert_close_rel, make_ocr_inputs, require_backend
from ocr_kernels import ocr_loss, seg_ocr_loss, wood_distance_loss
from ocr_kernels.wood.kmeans import kmeans

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

BACKENDS = ("triton", "cuda")
RTOL = {torch.float32: 1e-5, torch.bfloat16: 1e-2}  # bf16: the gradient is stored in bf16


def _backend(name, op):
    if op in ("ocr_loss", "seg_ocr_loss"):
        from ocr_kernels.ocr.backends import OCR_LOSS_MAP_IMPLS as impls
    else:
        from ocr_kernels.wood.backends import LOSS_IMPLS as impls
    return require_backend(name, impls, op)


def _seg_inputs(B, C1, spatial, dtype, g):
    logits, tags, prior = make_ocr_inputs(B, C1, spatial, dtype=dtype, tag_p=0.4, generator=g)
    target = torch.randint(0, C1, (B, *spatial), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.1] = 255
    return logits, target, tags, prior


def _run(fn, logits, layout, *args, **kw):
    """(loss, grad) of fn on a CUDA copy of logits in `layout`; the gradient keeps the layout."""
    z = logits.detach().cuda()
    if layout == "channels_last":
        z = z.contiguous(memory_format=torch.channels_last)
    z.requires_grad_(True)
    loss = fn(z, *[a.cuda() if isinstance(a, torch.Tensor) else a for a in args], **kw)
    loss.backward(torch.ones_like(loss))
    if layout == "channels_last":
        assert z.grad.is_contiguous(memory_format=torch.channels_last)
    return loss.detach().cpu(), z.grad.cpu()


def _ref(fn, logits, *args, **kw):
    z = logits.detach().to(torch.float64).requires_grad_(True)
    kw = dict(kw, backend="reference")
    loss = fn(z, *[a.to(torch.float64) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                   for a in args], **kw)
    loss.backward(torch.ones_like(loss))
    return loss.detach(), z.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("group_split", ["ada", "max", "all"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("C1", [21, 300])  # one code path at any C+1; 300 as many classes
def test_ocr_loss_matrix(backend, group_split, dtype, layout, C1):
    _backend(backend, "ocr_loss")
    g = torch.Generator().manual_seed(C1)
    logits, tags, prior = make_ocr_inputs(2, C1, (17, 19), dtype=dtype, tag_p=0.3, generator=g)
    opts = dict(group_split=group_split, pixels="all", reduction="none")
    loss, grad = _run(ocr_loss, logits, layout, tags, prior, backend=backend, **opts)
    want_loss, want_grad = _ref(ocr_loss, logits, tags, prior, **opts)
    keep = (~ambiguous_pixels(logits, tags, prior) if group_split == "ada"
            else torch.ones_like(want_loss, dtype=torch.bool))
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    assert_close_rel(loss, want_loss, 1e-5, "loss", keep)
    assert_close_rel(grad, want_grad, RTOL[dtype], "grad", keep.unsqueeze(1).expand_as(want_grad))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("group_split", ["ada", "max"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_seg_ocr_loss_matrix(backend, group_split, dtype, layout):
    _backend(backend, "seg_ocr_loss")
    g = torch.Generator().manual_seed(7)
    logits, target, tags, prior = _seg_inputs(2, 21, (13, 11), dtype, g)
    keep = ~ambiguous_pixels(logits, tags, prior) if group_split == "ada" else None
    if keep is not None and not bool(keep.all()):
        pytest.skip("a pixel sits on the 'ada' threshold in this draw (fp32 and fp64 may disagree)")
    opts = dict(group_split=group_split, ignore_index=255)
    loss, grad = _run(seg_ocr_loss, logits, layout, target, tags, prior, backend=backend, **opts)
    want_loss, want_grad = _ref(seg_ocr_loss, logits, target, tags, prior, **opts)
    assert_close_rel(loss, want_loss, 1e-5, "loss")
    assert_close_rel(grad, want_grad, RTOL[dtype], "grad", atol=1e-7)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_seg_ocr_loss_fused_upsampling_cuda(align_corners, dtype, layout):
    # the fused-upsampling CUDA kernels (scale 7.83 and 8.4; 37 classes: two per lane in the
    # backward's reduce) against the float64 composition, and their backward bitwise reproducible
    from ocr_kernels.seg.backends import SEG_OCR_RESIZED_IMPLS

    require_backend("cuda", SEG_OCR_RESIZED_IMPLS, "seg_ocr_loss with upsample=True")
    g = torch.Generator().manual_seed(11)
    logits, _, tags, prior = _seg_inputs(2, 37, (6, 5), dtype, g)
    _, target, _, _ = _seg_inputs(2, 37, (47, 42), dtype, g)
    opts = dict(upsample=True, align_corners=align_corners, group_split="all", pixels="all")
    loss, grad = _run(seg_ocr_loss, logits, layout, target, tags, prior, backend="cuda", **opts)
    _, grad2 = _run(seg_ocr_loss, logits, layout, target, tags, prior, backend="cuda", **opts)
    assert torch.equal(grad, grad2)
    want_loss, want_grad = _ref(seg_ocr_loss, logits, target, tags, prior, **opts)
    assert_close_rel(loss, want_loss, 1e-5, "loss")
    assert_close_rel(grad, want_grad, RTOL[dtype], "grad", atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_wood_distance_loss(backend):
    _backend(backend, "wood_distance_loss")
    g = torch.Generator().manual_seed(3)
    B, D, C, K = 16, 256, 20, 50
    x = torch.randn(B, D, generator=g).abs() * 1.5
    y = (torch.rand(B, C, generator=g) < 0.15).float()
    cc, oc = torch.randn(C, D, generator=g).abs(), torch.randn(K, D, generator=g).abs() + 0.1
    ts = [t.clone().cuda().requires_grad_(True) for t in (x, cc, oc)]
    loss = wood_distance_loss(ts[0], y.cuda(), ts[1], ts[2], backend=backend)
    loss.backward()
    rs = [t.clone().double().requires_grad_(True) for t in (x, cc, oc)]
    want = wood_distance_loss(rs[0], y.double(), rs[1], rs[2], backend="reference")
    want.backward()
    assert_close_rel(loss.detach().cpu(), want.detach(), 1e-5, "loss")
    for t, r, what in zip(ts, rs, ("features", "class centroids", "OoD centroids")):
        assert_close_rel(t.grad.cpu(), r.grad, 1e-4, f"grad {what}")


def test_kmeans_assignments_match_reference():
    g = torch.Generator().manual_seed(5)
    centres = torch.randn(16, 64, generator=g) * 8  # well separated: no near ties
    x = centres[torch.randint(0, 16, (4096,), generator=g)] + torch.randn(4096, 64, generator=g) * 0.1
    c_ref, a_ref = kmeans(x.double(), 16, iters=5, backend="reference")
    for backend in ("triton", "cuda"):
        try:
            c, a = kmeans(x.cuda(), 16, iters=5, backend=backend)
        except Exception as exc:  # not built here: say so
            if "BackendUnavailable" in type(exc).__name__:
                continue
            raise
        assert torch.equal(a.cpu(), a_ref), backend
        assert_close_rel(c.cpu(), c_ref, 1e-5, f"centroids {backend}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_offsets_past_2_31_elements(backend):
    # 3 x (2^30 + 1024) bf16 logits > 2^31 elements (6.4 GB): the last pixels, reached only with
    # 64-bit offsets, against the reference on those pixels alone.
    _backend(backend, "ocr_loss")
    C1, N = 3, 2**30 + 1024
    z = torch.zeros(1, C1, N, device="cuda", dtype=torch.bfloat16)
    assert z.numel() > 2**31
    g = torch.Generator().manual_seed(11)
    tail = (torch.randn(1, C1, 64, generator=g) * 3).to(torch.bfloat16)
    z[..., -64:] = tail.cuda()
    tags = torch.tensor([[1, 0]])
    z.requires_grad_(True)
    loss = ocr_loss(z, tags.cuda(), None, group_split="all", pixels="all", reduction="none",
                    backend=backend)
    loss.backward(torch.ones_like(loss))
    want_loss, want_grad = _ref(ocr_loss, tail.float(), tags, None, group_split="all", pixels="all",
                                reduction="none")
    assert_close_rel(loss.detach()[..., -64:].cpu(), want_loss, 1e-5, "loss")
    assert_close_rel(z.grad[..., -64:].float().cpu(), want_grad, 1e-2, "grad")
    del z, loss


def _step(backend):
    g = torch.Generator().manual_seed(2)
    logits, target, tags, prior = _seg_inputs(2, 21, (32, 32), torch.float32, g)
    z = logits.cuda().requires_grad_(True)
    args = (target.cuda(), tags.cuda(), prior.cuda())

    def step():
        loss = ocr_loss(z, args[1], args[2], backend=backend) + seg_ocr_loss(z, *args, backend=backend)
        (grad,) = torch.autograd.grad(loss, z)
        return loss, grad

    return step


@pytest.mark.parametrize("backend", BACKENDS)
def test_cuda_graph_capture(backend):
    _backend(backend, "ocr_loss")
    step = _step(backend)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm up (builds, compiles) outside the capture
        want = step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out[0], want[0]) and torch.equal(out[1], want[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_host_sync(backend):
    _backend(backend, "ocr_loss")
    step = _step(backend)
    step()  # builds and compiles first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
