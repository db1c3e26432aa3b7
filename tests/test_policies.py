"""The rules every backend and op share (README "Errors" and "Limits"), checked on each backend:

- a NaN or infinite logit/feature gives NaN at its pixel/sample (loss and gradient), never a
  silent 0 or a finite number, and the backends agree;
- an empty batch with reduction "mean" gives 0 with a zero gradient;
- a second backward through a fast backend raises, naming the op; the reference differentiates
  twice;
- extreme logit gaps (hundreds to 1e5, fp32 and fp64) stay finite and match the reference;
- target values are compared in int64, whatever the target's dtype;
- torch.compile(fullgraph=True, dynamic=True) traces every public op and module;
- sparse inputs, float8 and numpy scalars get the documented treatment.

The float64 reference is the oracle for |logit| < 1e6 only (helpers.ORACLE_MAX_ABS_LOGIT): beyond
that, torch's logsumexp backward itself loses the gradient, so no test compares there.
"""
import math

import numpy as np
import pytest
import torch

from helpers import (FAST_BACKENDS, GROUP_SPLITS, PIXEL_MODES, ambiguous_pixels, assert_close_rel,
                     device_for, make_ocr_inputs, reference64, require_backend)
import ocr_kernels as ok
from ocr_kernels.ocr.backends import OCR_LOSS_MAP_IMPLS
from ocr_kernels.seg.backends import SEG_OCR_IMPLS
from ocr_kernels.wood.backends import LOSS_IMPLS

ALL = ("reference",) + tuple(b for b in FAST_BACKENDS if b != "reference")


@pytest.fixture(params=ALL)
def ocr_backend(request):
    return require_backend(request.param, OCR_LOSS_MAP_IMPLS, "ocr_loss")


@pytest.fixture(params=ALL)
def seg_backend(request):
    return require_backend(request.param, SEG_OCR_IMPLS, "seg_ocr_loss")


@pytest.fixture(params=ALL)
def wood_backend(request):
    return require_backend(request.param, LOSS_IMPLS, "wood_distance_loss")


def skip_fp64(backend):
    if backend == "triton":
        pytest.skip("triton has no fp64")


def seg_inputs(B=2, C1=5, spatial=(4, 6), dtype=torch.float32):
    logits, tags, prior = make_ocr_inputs(B, C1, spatial, dtype=dtype)
    target = torch.randint(0, C1, (B, *spatial))
    target[0, 0, :2] = 255
    return logits, target, tags, prior


# ---------------------------------------------------------------------------------------------
# Double backward


def _check_double_backward(op, fn, x, backend):
    """The reference differentiates twice (gradgradcheck); a fast backend gives the reference's
    first-order gradient under create_graph=True and raises, naming the op, on the second."""
    x64 = x.detach().double().requires_grad_(True)
    if backend == "reference":
        torch.autograd.gradgradcheck(fn, (x64,))
        (g64,) = torch.autograd.grad(fn(x64), x64, create_graph=True)
        assert torch.autograd.grad(g64.pow(2).sum(), x64)[0].abs().sum() > 0
        return
    x = x.detach().to(device_for(backend)).requires_grad_(True)
    (g,) = torch.autograd.grad(fn(x), x, create_graph=True)
    (want,) = torch.autograd.grad(fn(x64, "reference"), x64)
    assert_close_rel(g.cpu(), want, 1e-5, "first-order gradient under create_graph")
    with pytest.raises(RuntimeError, match=rf"{op} on backend .* first-order gradients only.*"
                                           r'backend="reference"'):
        torch.autograd.grad(g.pow(2).sum(), x)


def test_double_backward_ocr(ocr_backend):
    logits, tags, prior = make_ocr_inputs(1, 4, (3, 3))
    tags[0] = torch.tensor([1, 0, 0])

    def fn(z, backend=ocr_backend):
        return ok.ocr_loss(z, tags.to(z.device), group_split="all", pixels="all",
                           backend=backend)

    _check_double_backward("ocr_loss", fn, logits, ocr_backend)


def test_double_backward_seg(seg_backend):
    logits, target, tags, prior = seg_inputs(1, 4, (3, 3))

    def fn(z, backend=seg_backend):
        return ok.seg_ocr_loss(z, target.to(z.device), tags.to(z.device), group_split="all",
                               pixels="all", backend=backend)

    _check_double_backward("seg_ocr_loss", fn, logits, seg_backend)


@pytest.mark.parametrize("op", ["ocr_loss", "seg_ocr_loss"])
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_double_backward_fused_upsampling(backend, op):
    # the fused-upsampling ops (reference and cpu only) follow the same rule
    require_backend(backend, OCR_LOSS_MAP_IMPLS, op)
    logits, target, tags, prior = seg_inputs(1, 4, (3, 3))
    target = torch.randint(0, 4, (1, 5, 5), generator=torch.Generator().manual_seed(0))
    # pin an out-of-candidate prediction: random tags can tag every class (no OC class) or no
    # pixel may predict one, and then the OCR term and its second derivative are exactly 0
    tags[0] = torch.tensor([1, 0, 0])
    logits[0, 2, 0, 0] = logits[0].abs().max() + 5.0

    def fn(z, backend=backend):
        if op == "ocr_loss":
            return ok.ocr_loss(z, tags, size=(5, 5), group_split="all", pixels="all",
                               backend=backend)
        return ok.seg_ocr_loss(z, target, tags, upsample=True, group_split="all", pixels="all",
                               backend=backend)

    _check_double_backward(op, fn, logits, backend)


@pytest.mark.parametrize("op", ["centroid_distances", "wood_distance_loss"])
def test_double_backward_wood(wood_backend, op):
    x = torch.randn(6, 5)
    cc, oc = torch.randn(3, 5), torch.randn(4, 5)
    labels = torch.randint(0, 2, (6, 3))

    def fn(f, backend=wood_backend):
        c, o, y = cc.to(f), oc.to(f), labels.to(f.device)
        if op == "centroid_distances":
            return ok.centroid_distances(f, c, backend=backend).sum()
        return ok.wood_distance_loss(f, y, c, o, backend=backend)

    # the cuda loss runs on its distance op, which the message names (the cpu loss is one op)
    name = "centroid_distances" if wood_backend == "cuda" or (
        wood_backend == "cpu" and op == "centroid_distances") else op
    _check_double_backward(name, fn, x, wood_backend)


# ---------------------------------------------------------------------------------------------
# NaN / inf


def _run_ocr(backend, z, tags, prior, grad_map=None, **opts):
    dev = device_for(backend)
    z = z.detach().to(dev).requires_grad_(True)
    loss = ok.ocr_loss(z, tags.to(dev), prior.to(dev), reduction="none", backend=backend, **opts)
    loss.backward(torch.ones_like(loss) if grad_map is None else grad_map.to(dev))
    return loss.detach().cpu(), z.grad.cpu()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("group_split", GROUP_SPLITS)
@pytest.mark.parametrize("pixels", PIXEL_MODES)
def test_non_finite_logit_gives_nan_at_its_pixel_only(ocr_backend, bad, group_split, pixels):
    logits, tags, prior = make_ocr_inputs(2, 5, (3, 4), tag_p=0.5)
    tags[0] = torch.tensor([1, 0, 0, 0])
    bad_pixels = [(0, 0, 0, 0), (0, 1, 1, 1), (0, 2, 2, 3), (1, 3, 0, 2)]  # bg, IC, OC, any
    for b, k, i, j in bad_pixels:
        logits[b, k, i, j] = bad
    # a zero upstream gradient at a non-finite pixel still gives NaN there (0 * NaN), and exactly
    # 0 at a finite pixel
    grad_map = torch.ones(2, 3, 4)
    grad_map[0, 0, 0] = grad_map[1, 2, 1] = 0.0
    loss, grad = _run_ocr(ocr_backend, logits, tags, prior, grad_map, group_split=group_split,
                          pixels=pixels)
    assert (grad[1, :, 2, 1] == 0).all()
    hit = torch.zeros_like(loss, dtype=torch.bool)
    for b, _, i, j in bad_pixels:
        hit[b, i, j] = True
    assert loss[hit].isnan().all(), loss
    assert grad.movedim(1, -1)[hit].isnan().all()
    clean = logits.clone()
    clean[hit.unsqueeze(1).expand_as(clean)] = 0.0  # the other pixels must not notice
    want_loss, want_grad = reference64(clean, tags, prior, grad_map, group_split=group_split,
                                       pixels=pixels)
    keep = ~hit
    if group_split == "ada":
        keep &= ~ambiguous_pixels(clean, tags, prior)
    assert_close_rel(loss, want_loss, 1e-5, "loss", keep)
    assert_close_rel(grad, want_grad, 1e-5, "grad", keep.unsqueeze(1).expand_as(grad))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_per_pixel_code_nan_and_extreme_gaps(dtype):
    """ocr_thread.h's thread_forward/thread_backward (what the CUDA kernel runs per thread), through
    its CPU hook: the NaN policy and logit gaps far past exp's range, against the reference."""
    require_backend("cpu", OCR_LOSS_MAP_IMPLS, "ocr_loss")
    from ocr_kernels._options import GROUP_SPLITS as CODES, PIXEL_MODES as PIX
    from ocr_kernels.seg.csrc_ops import ops

    B, C1, N = 2, 6, 8
    z = torch.randn(B, C1, N, dtype=torch.float64)
    for p, gap in enumerate([90., 200., 710., 745., 800., 1e4, 1e5]):
        z[:, p % (C1 - 1) + 1, p] -= gap if p % 2 else -gap
    z[1, 3, 7] = float("nan")
    tags = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 1, 0, 1]])
    prior = torch.full((C1, C1), 0.5, dtype=torch.float64)
    target = torch.randint(0, C1, (B, N))
    g = torch.ones(B, N, dtype=dtype)
    for split in GROUP_SPLITS:
        _, ocr, grad = ops()._pixelwise_seg_ocr(
            z.to(dtype), target, tags, prior.to(dtype) if split == "ada" else None, g * 0, g,
            2.0, 0.2, CODES[split], PIX["all"], 255)
        assert ocr[1, 7].isnan() and grad[1, :, 7].isnan().all()
        clean = z.clone()
        clean[1, :, 7] = 0.0
        want, want_grad = reference64(clean.to(dtype), tags, prior, group_split=split,
                                      pixels="all")
        keep = torch.ones(B, N, dtype=torch.bool) if split != "ada" \
            else ~ambiguous_pixels(clean, tags, prior)
        keep[1, 7] = False
        rtol = 1e-5 if dtype == torch.float32 else 1e-10
        assert_close_rel(ocr, want, rtol, f"{split} loss", keep)
        assert_close_rel(grad, want_grad, rtol, f"{split} grad", keep.unsqueeze(1).expand_as(grad))


def test_all_nan_network_output_is_nan_not_zero(ocr_backend, seg_backend):
    z = torch.full((2, 3, 4, 4), float("nan"))
    tags = torch.tensor([[1, 0], [0, 1]])
    dev = device_for(ocr_backend)
    assert ok.ocr_loss(z.to(dev), tags.to(dev), group_split="max",
                       backend=ocr_backend).isnan().item()
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    dev = device_for(seg_backend)
    assert ok.seg_ocr_loss(z.to(dev), target.to(dev), tags.to(dev), group_split="max",
                           backend=seg_backend).isnan().item()


def test_one_nan_pixel_same_on_every_backend(ocr_backend):
    x = torch.randn(1, 3, 4, 4) * 3
    x[0, 2, 1, 1] = float("nan")
    loss = ok.ocr_loss(x.to(device_for(ocr_backend)), torch.tensor([[1, 0]]).to(device_for(ocr_backend)),
                       group_split="max", pixels="all", reduction="none", backend=ocr_backend).cpu()
    ref = ok.ocr_loss(x, torch.tensor([[1, 0]]), group_split="max", pixels="all",
                      reduction="none", backend="reference")
    assert loss[0, 1, 1].isnan() and ref[0, 1, 1].isnan()
    keep = ~loss.isnan()
    assert keep.sum() == 15
    torch.testing.assert_close(loss[keep], ref[keep], rtol=1e-5, atol=1e-6)


def test_nan_feature_row_gives_nan(wood_backend):
    dev = device_for(wood_backend)
    feats = torch.randn(4, 8)
    feats[1] = float("nan")
    feats = feats.to(dev).requires_grad_(True)
    cc, oc = torch.randn(2, 8, device=dev), torch.randn(5, 8, device=dev)
    d = ok.centroid_distances(feats, cc, backend=wood_backend)
    assert d[1].isnan().all() and torch.isfinite(d[[0, 2, 3]]).all()
    labels = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]], device=dev)
    loss = ok.wood_distance_loss(feats, labels, cc, oc, backend=wood_backend)
    assert loss.isnan()
    loss.backward()
    assert feats.grad[1].isnan().all()


# ---------------------------------------------------------------------------------------------
# Empty batches


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 3, 0, 4)])
def test_empty_batch_mean_is_zero_with_zero_gradient(ocr_backend, seg_backend, shape):
    for backend, op in ((ocr_backend, "ocr"), (seg_backend, "seg")):
        dev = device_for(backend)
        z = torch.randn(shape, device=dev, requires_grad=True)
        tags = torch.ones(shape[0], 2, dtype=torch.long, device=dev)
        if op == "ocr":
            loss = ok.ocr_loss(z, tags, group_split="max", backend=backend)
            assert ok.ocr_loss(z, tags, group_split="max", reduction="sum",
                               backend=backend).item() == 0.0
            assert ok.ocr_loss(z, tags, group_split="max", reduction="none",
                               backend=backend).shape == (shape[0], *shape[2:])
        else:
            target = torch.zeros((shape[0], *shape[2:]), dtype=torch.long, device=dev)
            loss = ok.seg_ocr_loss(z, target, tags, group_split="max", backend=backend)
        assert loss.item() == 0.0, (backend, op)
        loss.backward()
        assert z.grad.shape == z.shape and (z.grad == 0).all()


def test_empty_wood_batch_is_rejected(wood_backend):
    with pytest.raises(ValueError, match="features must be a non-empty"):
        ok.wood_distance_loss(torch.randn(0, 4), torch.zeros(0, 2), torch.randn(2, 4),
                              torch.randn(3, 4), backend=wood_backend)


# ---------------------------------------------------------------------------------------------
# Extreme logit gaps


def test_fp64_ada_ic_logit_far_below_the_group(ocr_backend):
    skip_fp64(ocr_backend)
    z = torch.tensor([0., -710, 0, 0, 0, 0], dtype=torch.float64).view(1, 6, 1)
    got = ok.ocr_loss(z, torch.tensor([[1, 0, 0, 1, 0]]), torch.ones(6, 6, dtype=torch.float64),
                      pixels="all", backend=ocr_backend)
    assert abs(got.item() - 3.8140647275638826) < 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("group_split", GROUP_SPLITS)
def test_extreme_logit_gaps_match_the_reference(ocr_backend, seg_backend, dtype, group_split):
    if dtype == torch.float64:
        skip_fp64(ocr_backend)
    gaps = torch.tensor([20., 90., 200., 709., 710., 745., 800., 3e3, 1e4, 1e5])
    B, C1 = 2, 6
    g = torch.Generator().manual_seed(0)
    z = torch.randn(B, C1, gaps.numel(), generator=g, dtype=torch.float64)
    for p, gap in enumerate(gaps):  # one class per pixel pushed far below or above the rest
        z[:, (p % (C1 - 1)) + 1, p] -= gap if p % 2 == 0 else -gap
    tags = torch.tensor([[1, 0, 0, 1, 0], [0, 1, 1, 0, 1]])
    prior = torch.full((C1, C1), 0.5, dtype=torch.float64)
    z = z.to(dtype)
    loss, grad = _run_ocr(ocr_backend, z, tags, prior.to(dtype), group_split=group_split,
                          pixels="all")
    want_loss, want_grad = reference64(z, tags, prior, group_split=group_split, pixels="all")
    rtol = 1e-5 if dtype == torch.float32 else 1e-10
    keep = ~ambiguous_pixels(z, tags, prior) if group_split == "ada" else None
    assert_close_rel(loss, want_loss, rtol, "loss", keep)
    assert_close_rel(grad, want_grad, rtol, "grad",
                     None if keep is None else keep.unsqueeze(1).expand_as(grad))
    if dtype == torch.float64:
        skip_fp64(seg_backend)
    target = torch.randint(0, C1, (B, gaps.numel()), generator=g)
    dev = device_for(seg_backend)
    got = ok.seg_ocr_loss(z.to(dev), target.to(dev), tags.to(dev), prior.to(dtype).to(dev),
                          group_split=group_split, pixels="all", backend=seg_backend)
    want = ok.seg_ocr_loss(z.double(), target, tags, prior, group_split=group_split,
                           pixels="all", backend="reference")
    assert math.isfinite(got.item())
    assert abs(got.item() - want.item()) <= rtol * abs(want.item())


# ---------------------------------------------------------------------------------------------
# Target dtypes


def test_target_values_are_compared_in_int64(seg_backend):
    dev = device_for(seg_backend)
    x = torch.randn(1, 3, 2, 2, device=dev)
    tags = torch.tensor([[1, 0]], device=dev)
    u8 = torch.tensor([[[0, 255], [1, 2]]], dtype=torch.uint8, device=dev)
    with pytest.raises(ValueError, match="ignore_index=-1; got 1 pixel.* value 255"):
        ok.seg_ocr_loss(x, u8, tags, group_split="max", ignore_index=-1, backend=seg_backend)
    i8 = torch.tensor([[[0, -1], [1, 2]]], dtype=torch.int8, device=dev)
    with pytest.raises(ValueError, match="ignore_index=255; got 1 pixel.* value -1"):
        ok.seg_ocr_loss(x, i8, tags, group_split="max", ignore_index=255, backend=seg_backend)
    # the same values with a matching ignore_index: the int64 target's result
    for t, ii in ((u8, 255), (i8, -1)):
        got = ok.seg_ocr_loss(x, t, tags, group_split="max", ignore_index=ii, backend=seg_backend)
        want = ok.seg_ocr_loss(x.cpu(), t.long().cpu(), tags.cpu(), group_split="max",
                               ignore_index=ii, backend="reference")
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# torch.compile(dynamic=True)

COMPILE_BACKENDS = ("reference", "cpu")


@pytest.fixture(params=COMPILE_BACKENDS)
def compile_backend(request):
    return require_backend(request.param, OCR_LOSS_MAP_IMPLS, "ocr_loss")


def _public_calls(backend):
    logits, target, tags, prior = seg_inputs(2, 4, (3, 5))
    x, cc, oc = torch.randn(6, 5), torch.randn(3, 5), torch.randn(4, 5)
    labels = torch.randint(0, 2, (6, 3))
    return {
        "ocr_loss": (lambda z, t, p: ok.ocr_loss(z, t, p, backend=backend), (logits, tags, prior)),
        "seg_ocr_loss": (lambda z, y, t, p: ok.seg_ocr_loss(z, y, t, p, backend=backend),
                         (logits, target, tags, prior)),
        "centroid_distances": (lambda a, c: ok.centroid_distances(a, c, backend=backend), (x, cc)),
        "wood_distance_loss": (lambda a, y, c, o: ok.wood_distance_loss(a, y, c, o, backend=backend),
                               (x, labels, cc, oc)),
        "wood_classifier_loss": (
            lambda li, y, lo, a, c, o: ok.wood_classifier_loss(li, y, lo, a, c, o, backend=backend),
            (torch.randn(6, 3), labels, torch.randn(4, 3), x, cc, oc)),
        "OCRLoss": (ok.OCRLoss(prior, backend=backend), (logits, tags)),
        "SegOCRLoss": (ok.SegOCRLoss(prior, backend=backend), (logits, target, tags)),
        "WOoDLoss": (ok.WOoDLoss(cc, oc, backend=backend), (x, labels)),
        "oc_error_rate": (ok.oc_error_rate, (logits, tags)),
    }


@pytest.mark.parametrize("name", ["ocr_loss", "seg_ocr_loss", "centroid_distances",
                                  "wood_distance_loss", "wood_classifier_loss", "OCRLoss",
                                  "SegOCRLoss", "WOoDLoss", "oc_error_rate"])
def test_compile_dynamic_fullgraph(compile_backend, name):
    torch._dynamo.reset()
    fn, args = _public_calls(compile_backend)[name]
    differentiable = name != "oc_error_rate"

    def run(f):
        x = args[0].detach().requires_grad_(differentiable)
        out = f(x, *args[1:])
        grad = torch.autograd.grad(out.sum(), x)[0] if differentiable else None
        return out.detach(), grad

    eager = run(fn)  # first: loads the extension outside the trace (README)
    compiled = run(torch.compile(fn, fullgraph=True, dynamic=True))
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Small input rules


def test_sparse_input_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="logits must be a dense"):
        ok.ocr_loss(torch.randn(1, 3, 4, 4).to_sparse(), torch.tensor([[1, 0]]), group_split="max")
    with pytest.raises(TypeError, match="features must be a dense"):
        ok.wood_distance_loss(torch.randn(3, 4).to_sparse(), torch.ones(3, 2), torch.randn(2, 4),
                              torch.randn(2, 4))


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_float8_is_rejected_the_same_way_by_auto_and_reference(backend):
    z = torch.randn(1, 3, 4, 4).to(torch.float8_e4m3fn)
    with pytest.raises(TypeError, match="logits must be .* float16, bfloat16, float32 or float64"):
        ok.ocr_loss(z, torch.tensor([[1, 0]]), group_split="max", backend=backend)


def test_numpy_scalar_options_are_accepted_like_python_numbers(ocr_backend):
    dev = device_for(ocr_backend)
    z, tags, prior = make_ocr_inputs(2, 4, (3, 3), device=dev)
    a = ok.ocr_loss(z, tags, prior, margin=np.float32(1.5), threshold=np.float64(0.25),
                    backend=ocr_backend)
    b = ok.ocr_loss(z, tags, prior, margin=1.5, threshold=0.25, backend=ocr_backend)
    torch.testing.assert_close(a, b)
    ok.OCRLoss(prior, margin=np.float32(1.5), loss_weight=np.int64(2))
    ok.SegOCRLoss(prior, ignore_index=np.int64(255), alpha=np.float32(0.5))
    with pytest.raises(ValueError, match="margin must be a finite number"):
        ok.ocr_loss(z, tags, prior, margin=np.float32("nan"))
