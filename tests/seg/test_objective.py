"""seg_ocr_loss with the gradient written by the forward (ocr_kernels/seg/objective.py) on each
GPU backend that has it (triton here under the interpreter; cuda where a GPU is; its code on the
CPU is tests/seg/test_csrc.py's `_pixelwise_seg_objective`): the loss and the gradient against
the float64 reference and against the same backend's maps ops, at upstream gradients of 1 and
not 1, and the path rules (when the maps ops run instead), the buffer handed on without a copy,
a second backward, a non-finite logit and the in-place scale.
"""
import pytest
import torch

from helpers import (GROUP_SPLITS, assert_close_rel, comparable_pixels, device_for,
                     require_backend)
from ocr_kernels import seg_ocr_loss
from ocr_kernels.seg import backends as seg_backends
from ocr_kernels.seg import objective
from ocr_kernels.seg.backends import SEG_OBJECTIVE_IMPLS
from seg.seg_helpers import make_seg_inputs


@pytest.fixture(params=["triton", "cuda"])
def backend(request):
    return require_backend(request.param, SEG_OBJECTIVE_IMPLS, "seg_ocr_objective")


def _inputs(seed=0, B=2, C1=6, spatial=(9, 13), **kw):
    g = torch.Generator().manual_seed(seed)
    logits, target, tags, prior = make_seg_inputs(B, C1, spatial, generator=g, **kw)
    w = torch.rand(target.shape, generator=g) + 0.25
    return logits, target, tags, prior, w


def _run(backend, logits, target, tags, prior, upstream=1.0, maps=False, monkeypatch=None,
         **kw):
    """(loss, gradient) of seg_ocr_loss on `backend`; maps=True forces the maps ops."""
    dev = device_for(backend)
    z = logits.detach().to(dev).requires_grad_(True)
    if maps:
        monkeypatch.setattr("ocr_kernels.seg.api.use_objective", lambda *a: False)
    w = kw.pop("ce_weight", None)
    loss = seg_ocr_loss(z, target.to(dev), tags.to(dev), prior.to(dev), backend=backend,
                        ce_weight=None if w is None else w.to(dev), **kw)
    (loss * upstream).backward() if upstream != 1.0 else loss.backward()
    if maps:
        monkeypatch.undo()
    return loss.detach().cpu(), z.grad.cpu()


def _reference(logits, target, tags, prior, upstream=1.0, **kw):
    z = logits.detach().double().requires_grad_(True)
    w = kw.pop("ce_weight", None)
    loss = seg_ocr_loss(z, target, tags, prior.double(), backend="reference",
                        ce_weight=None if w is None else w.double(), **kw)
    (loss * upstream).backward()
    return loss.detach(), z.grad


OPTION_CASES = [
    dict(),
    dict(ce_weight=True),
    dict(alpha=0.3, ce_average="all"),
    dict(group_split="max", pixels="all"),
    dict(group_split="all", pixels="ic"),
    dict(global_mean=True, ce_weight=True),
    dict(alpha=0.0),
]


@pytest.mark.parametrize("upstream", [1.0, 2.5])
@pytest.mark.parametrize("case", range(len(OPTION_CASES)))
def test_objective_against_reference(backend, case, upstream):
    kw = dict(OPTION_CASES[case])
    logits, target, tags, prior, w = _inputs(case)
    if kw.pop("ce_weight", False):
        kw["ce_weight"] = w
    loss, grad = _run(backend, logits, target, tags, prior, upstream, **kw)
    want_loss, want_grad = _reference(logits, target, tags, prior, upstream, **kw)
    assert_close_rel(loss.double(), want_loss, 1e-5, "loss")
    keep = comparable_pixels(logits, tags, prior, kw, tie_tol=1e-5)
    assert keep.float().mean() > 0.9  # the draw leaves the comparison most pixels
    assert_close_rel(grad.double(), want_grad, 1e-4, "gradient",
                     mask=keep.unsqueeze(1).expand_as(grad))
    assert grad.abs().max() > 0


@pytest.mark.parametrize("group_split", GROUP_SPLITS)
def test_objective_matches_maps_ops(backend, group_split, monkeypatch):
    """The same backend's two paths: the loss bit for bit (the same map formulas, the same
    reduction), the gradient to fp32 rounding (the factors come from the coefficients instead of
    autograd's upstream gradients of the maps)."""
    logits, target, tags, prior, w = _inputs(7, spatial=(11, 17))
    kw = dict(group_split=group_split, ce_weight=w, alpha=0.7)
    loss, grad = _run(backend, logits, target, tags, prior, **kw)
    loss_m, grad_m = _run(backend, logits, target, tags, prior, maps=True,
                          monkeypatch=monkeypatch, **kw)
    assert torch.equal(loss, loss_m)
    assert_close_rel(grad.double(), grad_m.double(), 1e-6, "gradient")


def _spy(monkeypatch, backend):
    """Wraps the backend's objective entry: records the address of each call's gradient buffer
    (not the buffer: a reference held here would make autograd copy it)."""
    calls = []
    run, scale = SEG_OBJECTIVE_IMPLS[backend]

    def spy(*args):
        out = run(*args)
        calls.append(out[2].data_ptr())
        return out

    monkeypatch.setitem(seg_backends.SEG_OBJECTIVE_IMPLS, backend, (spy, scale))
    return calls


def test_objective_path_rules(backend, monkeypatch):
    """Taken when a gradient will be taken; not without one, for fp16 logits, for a ce_weight
    that requires a gradient, or under torch.compile (the maps ops then give the same loss)."""
    logits, target, tags, prior, w = _inputs(3)
    dev = device_for(backend)
    calls = _spy(monkeypatch, backend)
    args = (target.to(dev), tags.to(dev), prior.to(dev))

    def loss_of(z, **kw):
        return seg_ocr_loss(z, *args, backend=backend, **kw)

    z = logits.to(dev).clone().requires_grad_(True)
    want = loss_of(z)
    assert len(calls) == 1
    with torch.no_grad():
        assert torch.equal(loss_of(z), want)
    assert torch.equal(loss_of(logits.to(dev)), want)  # no requires_grad
    assert len(calls) == 1
    wg = w.to(dev).requires_grad_(True)
    loss_of(z, ce_weight=wg).backward()
    assert len(calls) == 1 and wg.grad is not None and wg.grad.abs().max() > 0
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert torch.equal(loss_of(z), want)
    assert len(calls) == 1
    monkeypatch.undo()
    calls = _spy(monkeypatch, backend)
    if dev == "cuda":  # fp16 needs a GPU for the Triton kernels (the interpreter has no fp16 math)
        loss_of(logits.to(dev).half().requires_grad_(True)).backward()
        assert len(calls) == 0


def test_gradient_buffer_handed_on(backend, monkeypatch):
    """At an upstream gradient of 1 the leaf's .grad is the forward's buffer itself: no copy and
    no scaling pass over it (the scale kernel returns on the device)."""
    logits, target, tags, prior, _ = _inputs(4)
    dev = device_for(backend)
    calls = _spy(monkeypatch, backend)
    z = logits.to(dev).requires_grad_(True)
    seg_ocr_loss(z, target.to(dev), tags.to(dev), prior.to(dev), backend=backend).backward()
    assert len(calls) == 1
    assert z.grad.data_ptr() == calls[0]


def test_second_backward_recomputes(backend):
    """retain_graph=True: the first backward hands its buffer on, scaled; the second computes the
    gradient again, so the accumulated gradient is (g1 + g2) times the gradient."""
    logits, target, tags, prior, _ = _inputs(5)
    dev = device_for(backend)
    z = logits.to(dev).requires_grad_(True)
    loss = seg_ocr_loss(z, target.to(dev), tags.to(dev), prior.to(dev), backend=backend)
    loss.backward(torch.tensor(3.0, device=dev), retain_graph=True)
    once = z.grad.clone()
    loss.backward(torch.tensor(0.5, device=dev))
    _, want = _reference(logits, target, tags, prior)
    keep = comparable_pixels(logits, tags, prior, {}, tie_tol=1e-5).unsqueeze(1).expand_as(want)
    assert_close_rel(once.cpu().double(), 3.0 * want, 1e-4, "first", mask=keep)
    assert_close_rel(z.grad.cpu().double(), 3.5 * want, 1e-4, "accumulated", mask=keep)


def test_create_graph_gradient_is_first_order(backend):
    logits, target, tags, prior, _ = _inputs(6)
    dev = device_for(backend)
    z = logits.to(dev).requires_grad_(True)
    loss = seg_ocr_loss(z, target.to(dev), tags.to(dev), prior.to(dev), backend=backend)
    (g,) = torch.autograd.grad(loss, z, create_graph=True)
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        g.sum().backward()


def test_non_finite_logit_poisons_its_pixel(backend, monkeypatch):
    """A NaN or inf logit: NaN at every class of its pixel, as the maps ops give, and the other
    pixels' gradients as the maps ops give them."""
    logits, target, tags, prior, _ = _inputs(8)
    logits[0, 2, 3, 4] = float("nan")
    logits[1, 0, 5, 6] = float("inf")
    loss, grad = _run(backend, logits, target, tags, prior)
    loss_m, grad_m = _run(backend, logits, target, tags, prior, maps=True, monkeypatch=monkeypatch)
    assert loss.isnan() and loss_m.isnan()
    bad = torch.zeros(grad.shape[0], *grad.shape[2:], dtype=torch.bool)
    bad[0, 3, 4] = bad[1, 5, 6] = True
    assert grad.isnan().any(1).eq(bad).all()
    assert torch.equal(grad.isnan(), grad_m.isnan())
    fin = ~bad.unsqueeze(1).expand_as(grad)
    assert_close_rel(grad[fin].double(), grad_m[fin].double(), 1e-6, "finite pixels")


@pytest.mark.parametrize("g", [1.0, 2.5, 0.0, -1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_scale_in_place(backend, g, dtype):
    dev = device_for(backend)
    x = (torch.randn(3, 5, 7, 11, generator=torch.Generator().manual_seed(1)) * 4).to(dtype)
    x = x.to(dev).to(memory_format=torch.channels_last)
    want = (x.float() * g).to(dtype)
    ptr = x.data_ptr()
    SEG_OBJECTIVE_IMPLS[backend][1](x, torch.tensor(g, device=dev))
    assert x.data_ptr() == ptr
    assert torch.equal(x, want)


def test_coefficients_are_the_reductions():
    """coefficients() against the reduction's own gradient: d loss / d map at one pixel."""
    from ocr_kernels.seg.api import reduce_seg_maps, seg_denominators

    target = torch.tensor([[0, 255, 2], [1, 1, 255]])
    for ce_average, global_mean in [("valid", False), ("all", False), ("valid", True)]:
        den = seg_denominators(target, target.numel(), torch.float32, ignore_index=255,
                               ce_average=ce_average, global_mean=global_mean)
        ce = torch.rand(2, 3, requires_grad=True)
        oc = torch.rand(2, 3, requires_grad=True)
        reduce_seg_maps(ce, oc, den, 0.4).backward()
        coef = objective.coefficients(den, 0.4, torch.zeros(1))
        assert torch.allclose(coef, torch.stack([ce.grad[0, 0], oc.grad[0, 0]]), rtol=1e-6)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_triton_tiles_loop_and_offsets(layout, monkeypatch):
    """The Triton objective kernel's code paths against its maps ops: tiles of 16 pixels (tail
    lanes, a FULL image's last tile moved back), the persistent tile loop (3 programs an image),
    64-bit offsets, and the logits' layouts (the single-stride path and per-dim strides)."""
    import ocr_kernels.ocr.triton_kernel as tk
    from helpers import force_small_tiles

    require_backend("triton", SEG_OBJECTIVE_IMPLS, "seg_ocr_objective")
    force_small_tiles(monkeypatch, 16)
    monkeypatch.setattr(tk, "_FORCE_PROGRAMS_PER_IMAGE", 3)
    monkeypatch.setattr(tk, "_FORCE_INT64", layout == "contiguous")
    logits, target, tags, prior, w = _inputs(9, spatial=(7, 11))
    if layout == "channels_last":
        logits = logits.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        logits = torch.cat([logits, logits], 3)[..., ::2]
    kw = dict(ce_weight=w)
    loss, grad = _run("triton", logits, target, tags, prior, **kw)
    want_loss, want_grad = _reference(logits, target, tags, prior, **kw)
    assert_close_rel(loss.double(), want_loss, 1e-5, "loss")
    keep = comparable_pixels(logits, tags, prior, {}, tie_tol=1e-5)
    assert_close_rel(grad.double(), want_grad, 1e-4, "gradient",
                     mask=keep.unsqueeze(1).expand_as(grad))
