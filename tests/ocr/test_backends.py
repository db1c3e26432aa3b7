"""Every fast OCR backend against the float64 reference: one test matrix for all of them.

A backend that cannot run here is skipped with its reason (on a CPU-only machine: "cuda"; Triton
runs on the CPU through TRITON_INTERPRET=1). Selections near the "ada" threshold are left out of
the comparison (see helpers.ambiguous_pixels): there an fp32 kernel may legitimately choose
differently from fp64.
"""
import itertools
import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from helpers import (FAST_BACKENDS, GROUP_SPLITS, PIXEL_MODES, REDUCTIONS, ambiguous_pixels, assert_close_rel,
                     comparable_pixels, device_for, hypothesis_cases, make_ocr_inputs, ocr_strategies,
                     RESIZE_CASES, reference64, require_backend, resize_reach, resize_tie_tol,
                     resized_dtypes_and_layouts, resized_grad_atol, resized_logit_err,
                     skip_unless_computes,
                     upsampled64)
from ocr_kernels import ocr_loss
from ocr_kernels._dispatch import BACKEND_DTYPES

HYPOTHESIS_EXAMPLES = int(os.environ.get("OCR_HYPOTHESIS_EXAMPLES", "200"))


@pytest.fixture(params=FAST_BACKENDS)
def backend(request):
    from ocr_kernels.ocr.backends import OCR_LOSS_MAP_IMPLS

    return require_backend(request.param, OCR_LOSS_MAP_IMPLS, "ocr_loss")


def run(backend, logits, tags, prior, grad_map=None, reduction="none", **opts):
    dev = device_for(backend)
    z = logits.detach().to(dev).requires_grad_(True)
    loss = ocr_loss(z, tags.to(dev), None if prior is None else prior.to(dev),
                    reduction=reduction, backend=backend, **opts)
    if reduction == "none":
        g = torch.ones_like(loss) if grad_map is None else grad_map.to(dev)
        loss.backward(g)
    else:
        loss.backward()
    return loss.detach().cpu(), z.grad.cpu()


def check(backend, logits, tags, prior, rtol=1e-5, grad_map=None, **opts):
    loss, grad = run(backend, logits, tags, prior, grad_map=grad_map, **opts)
    want_loss, want_grad = reference64(logits, tags, prior, grad_map=grad_map, **opts)
    keep = ~ambiguous_pixels(logits, tags, prior, opts.get("threshold", 0.2)) \
        if opts.get("group_split", "ada") == "ada" else torch.ones_like(want_loss, dtype=torch.bool)
    assert loss.dtype == torch.float32 and grad.dtype == logits.dtype
    assert_close_rel(loss, want_loss, rtol, "loss", keep)
    assert_close_rel(grad, want_grad, rtol, "grad", keep.unsqueeze(1).expand_as(want_grad))


@pytest.mark.parametrize("group_split, pixels", list(itertools.product(GROUP_SPLITS, PIXEL_MODES)))
def test_every_option_fp32(backend, group_split, pixels):
    logits, tags, prior = make_ocr_inputs(3, 7, (5, 6), tag_p=0.4)
    tags[0] = 0  # no tag
    tags[1] = 1  # every class tagged
    check(backend, logits, tags, prior, group_split=group_split, pixels=pixels)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_reductions(backend, reduction):
    logits, tags, prior = make_ocr_inputs(2, 5, (4, 9))
    loss, grad = run(backend, logits, tags, prior, reduction=reduction, pixels="all")
    z = logits.double().requires_grad_(True)
    want = ocr_loss(z, tags, prior.double(), reduction=reduction, pixels="all", backend="reference")
    (want if reduction != "none" else want.sum()).backward()
    keep = ~ambiguous_pixels(logits, tags, prior)
    if keep.all():  # an ambiguous pixel's loss is in every reduced value
        assert_close_rel(loss, want.detach(), 1e-5, "loss")
    elif reduction == "none":
        assert_close_rel(loss, want.detach(), 1e-5, "loss", keep)
    # a pixel's gradient depends on its own logits only: compared at every other pixel
    assert_close_rel(grad, z.grad, 1e-5, "grad", keep.unsqueeze(1).expand_as(grad))


def test_none_with_random_upstream_gradient(backend):
    # "not last layer": a per-pixel grad_output of any sign and scale
    logits, tags, prior = make_ocr_inputs(2, 6, (7, 5))
    g = torch.randn(2, 7, 5) * 10
    check(backend, logits, tags, prior, grad_map=g, pixels="all")


def test_fp16_inputs(backend):
    logits, tags, prior = make_ocr_inputs(2, 9, (6, 6), dtype=torch.float16)
    # fp16 values upcast exactly; the only fp16 rounding is the gradient's store
    check(backend, logits, tags, prior, rtol=2e-3, pixels="all")


@pytest.mark.parametrize("spatial", [(11,), (3, 4, 5), (1, 1)])
def test_spatial_ranks(backend, spatial):
    logits, tags, prior = make_ocr_inputs(2, 5, spatial)
    check(backend, logits, tags, prior, pixels="all")


def test_channels_last(backend):
    logits, tags, prior = make_ocr_inputs(2, 6, (5, 7))
    cl = logits.contiguous(memory_format=torch.channels_last)
    loss, grad = run(backend, cl, tags, prior, pixels="all")
    want_loss, want_grad = reference64(logits, tags, prior, pixels="all")
    keep = ~ambiguous_pixels(logits, tags, prior)
    assert_close_rel(loss, want_loss, 1e-5, "loss", keep)
    assert_close_rel(grad, want_grad, 1e-5, "grad", keep.unsqueeze(1).expand_as(want_grad))


@pytest.mark.parametrize("C1", [2, 300, 1030])
def test_class_counts(backend, C1):
    logits, tags, prior = make_ocr_inputs(2, C1, (3, 5), tag_p=0.05)
    check(backend, logits, tags, prior, pixels="all")
    check(backend, logits, tags, prior, pixels="oc", group_split="all")


def test_confident_logits(backend):
    logits, tags, prior = make_ocr_inputs(2, 8, (6, 6))
    logits = torch.sign(logits) * 80.0
    for split in GROUP_SPLITS:
        check(backend, logits, tags, prior, group_split=split, pixels="all")


def test_ties(backend):
    # all-equal logits and exact ties between an IC and an OC class: argmax takes the lowest index
    logits = torch.zeros(2, 5, 3, 4)
    logits[1, 2] = 1.0
    logits[1, 3] = 1.0
    tags = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 0]])
    prior = torch.full((5, 5), 0.5)
    for split in GROUP_SPLITS:
        for pix in PIXEL_MODES:
            check(backend, logits, tags, prior, group_split=split, pixels=pix)


@hypothesis_cases(HYPOTHESIS_EXAMPLES)
@given(**ocr_strategies())
def test_hypothesis(backend, B, C1, spatial, scale, tag_p, group_split, pixels, margin, threshold, seed):
    g = torch.Generator().manual_seed(seed)
    logits, tags, prior = make_ocr_inputs(B, C1, spatial, scale=scale, tag_p=tag_p, generator=g)
    check(backend, logits, tags, prior, group_split=group_split, pixels=pixels, margin=margin,
          threshold=threshold)


# ---- the bilinear upsampling fused into the loss (ocr_loss(size=...)) --------------------------
# Every backend with a fused path (OCR_LOSS_MAP_RESIZED_IMPLS) against the float64 composition
# F.interpolate + reference; the others are skipped as not implemented.



@pytest.fixture(params=FAST_BACKENDS)
def resized_backend(request):
    from ocr_kernels.ocr.backends import OCR_LOSS_MAP_RESIZED_IMPLS

    return require_backend(request.param, OCR_LOSS_MAP_RESIZED_IMPLS, "ocr_loss with size=")


def check_resized(backend, logits, tags, prior, size, align_corners, rtol=1e-5, grad_map=None,
                  reduction="none", **opts):
    loss, grad = run(backend, logits, tags, prior, grad_map=grad_map, size=size,
                     align_corners=align_corners, reduction=reduction, **opts)
    # the upstream gradient of every output pixel: grad_map, or d(reduced)/d(map)
    n_out = logits.shape[0] * size[0] * size[1]
    g = grad_map if grad_map is not None else \
        torch.full((logits.shape[0], *size), 1.0 / n_out if reduction == "mean" else 1.0)
    want_loss, want_grad = reference64(logits, tags, prior, grad_map=g, size=size,
                                       align_corners=align_corners, **opts)
    want_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    assert loss.dtype == want_dtype and grad.dtype == logits.dtype
    want_shape = (logits.shape[0], *size) if reduction == "none" else ()
    assert grad.shape == logits.shape and loss.shape == want_shape
    up = upsampled64(logits, size, align_corners)
    keep = comparable_pixels(up, tags, prior, opts,
                             resize_tie_tol(up, logits.shape[-2:], logits.dtype))
    # The kernel's sampling weights are computed in the math dtype, as torch's own grid is, so its
    # interpolated logits are exact only to a few ulps of their magnitude; the loss is a difference
    # of log-sum-exps of such values (a tiny loss at large logits is only that exact in absolute).
    eps = 2.0 ** -53 if logits.dtype == torch.float64 else 2.0 ** -24
    # (and the interpolated logits are off by up to resized_logit_err; the loss's gradient has an
    # L1 norm of at most 2)
    atol = 16 * eps * (up.abs().amax(dim=1) + 1.0) + 2 * resized_logit_err(logits)
    if reduction == "none":
        assert_close_rel(loss, want_loss, rtol, "loss", keep, atol=atol)
    elif keep.all():  # a near-tie pixel's loss is in the reduced value
        want = want_loss.mean() if reduction == "mean" else want_loss.sum()
        assert_close_rel(loss, want, rtol, "loss", atol=float((atol * g).sum()))
    # Each low-resolution gradient sums the terms g·dL/du of the output pixels it feeds: terms of
    # either sign (grad_map), whose sum can be far smaller than they are, so the allowance is
    # their fp32 rounding (helpers.resized_grad_atol), not a fraction of the result. A pixel left
    # out (a near-tie) feeds the low-resolution pixels its taps read: compared everywhere else.
    grad_atol = resized_grad_atol(up, logits.shape[-2:], torch.zeros_like(g), g, eps=eps)
    fed = resize_reach(~keep, logits.shape[-2:], align_corners)
    assert_close_rel(grad, want_grad, rtol, "grad", (~fed).unsqueeze(1).expand_as(grad),
                     atol=grad_atol)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("hw, size", RESIZE_CASES)
def test_resized_scales(resized_backend, hw, size, align_corners):
    logits, tags, prior = make_ocr_inputs(2, 6, hw)
    check_resized(resized_backend, logits, tags, prior, size, align_corners, pixels="all")


@pytest.mark.parametrize("group_split, pixels", list(itertools.product(GROUP_SPLITS, PIXEL_MODES)))
def test_resized_every_option(resized_backend, group_split, pixels):
    logits, tags, prior = make_ocr_inputs(3, 7, (4, 5), tag_p=0.4)
    tags[0] = 0
    tags[1] = 1
    check_resized(resized_backend, logits, tags, prior, (13, 9), False, group_split=group_split,
                  pixels=pixels)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_resized_reductions_and_upstream_gradient(resized_backend, reduction):
    logits, tags, prior = make_ocr_inputs(2, 5, (3, 4))
    grad_map = torch.randn(2, 10, 9) * 10 if reduction == "none" else None
    check_resized(resized_backend, logits, tags, prior, (10, 9), False, grad_map=grad_map,
                  reduction=reduction, pixels="all")


@resized_dtypes_and_layouts[0]
@resized_dtypes_and_layouts[1]
def test_resized_dtypes_and_layouts(resized_backend, dtype, rtol, memory_format):
    skip_unless_computes(resized_backend, dtype)
    logits, tags, prior = make_ocr_inputs(2, 9, (5, 6), dtype=dtype)
    logits = logits.contiguous(memory_format=memory_format)
    # the low-precision values upcast exactly and are interpolated in fp32; the gradient's store
    # is the only low-precision rounding
    check_resized(resized_backend, logits, tags, prior, (39, 47), memory_format is torch.channels_last,
                  rtol=rtol, pixels="all")


def test_resized_gradcheck_float64(resized_backend):
    if torch.float64 not in BACKEND_DTYPES[resized_backend]:
        pytest.skip(f"{resized_backend} does not compute in float64")
    logits, tags, prior = make_ocr_inputs(2, 4, (3, 4), dtype=torch.float64)
    z = logits.to(device_for(resized_backend)).requires_grad_(True)
    for split, ac in (("ada", False), ("all", True), ("max", False)):
        fn = lambda x: ocr_loss(x, tags, prior, size=(7, 9), align_corners=ac, group_split=split,  # noqa: E731
                                pixels="all", reduction="none", backend=resized_backend)
        assert torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-8, rtol=1e-6)


@hypothesis_cases(max(1, HYPOTHESIS_EXAMPLES // 4))
@given(**ocr_strategies(), hw=st.tuples(st.integers(1, 7), st.integers(1, 7)),
       size=st.tuples(st.integers(1, 30), st.integers(1, 30)), align_corners=st.booleans())
def test_resized_hypothesis(resized_backend, B, C1, spatial, scale, tag_p, group_split, pixels,
                            margin, threshold, seed, hw, size, align_corners):
    g = torch.Generator().manual_seed(seed)
    logits, tags, prior = make_ocr_inputs(B, C1, hw, scale=scale, tag_p=tag_p, generator=g)
    check_resized(resized_backend, logits, tags, prior, size, align_corners,
                  group_split=group_split, pixels=pixels, margin=margin, threshold=threshold)
