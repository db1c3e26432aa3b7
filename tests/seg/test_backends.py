"""Every fused seg_ocr_loss backend (triton, cpu, cuda) against the float64 reference.

One parametrisation for all of them, like tests/ocr/test_backends.py: a backend that cannot run
here is skipped with the reason. OCR_TEST_BACKENDS=reference runs the matrix on the fp32 reference (a check
of the tests and tolerances themselves). Pixels near the "ada" threshold are left out of the OCR
comparisons (helpers.ambiguous_pixels).
"""
import itertools
import os

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from helpers import (FAST_BACKENDS, GROUP_SPLITS, PIXEL_MODES, RESIZE_CASES, ambiguous_pixels,
                     assert_close_rel, comparable_pixels, device_for, fp32_map_atol,
                     fp32_term_atol, hypothesis_cases, near_ties, ocr_strategies, require_backend,
                     resize_reach, resize_tie_tol,
                     resized_dtypes_and_layouts, resized_grad_atol, resized_logit_err,
                     skip_unless_computes,
                     upsampled64)
from ocr_kernels import seg_ocr_loss
from ocr_kernels._dispatch import BACKEND_DTYPES
from ocr_kernels._options import OCROptions
from ocr_kernels.seg import seg_ocr_loss_reference
from ocr_kernels.seg.backends import SEG_OCR_IMPLS, SEG_OCR_RESIZED_IMPLS
from seg.seg_helpers import make_seg_inputs, reference_maps64


@pytest.fixture(params=FAST_BACKENDS)
def backend(request):
    return require_backend(request.param, SEG_OCR_IMPLS, "seg_ocr_loss_maps")


def run_maps(backend, logits, target, tags, prior, grad_ce=None, grad_ocr=None, ignore_index=255,
             align_corners=None, **opts):
    """The backend's (ce, ocr) maps and logits gradient; with align_corners (True/False) through
    the fused-upsampling op to the target's size."""
    dev = device_for(backend)
    z = logits.detach().to(dev).requires_grad_(True)
    split = opts.get("group_split", "ada")
    resized = () if align_corners is None else (align_corners,)
    impls = SEG_OCR_IMPLS if align_corners is None else SEG_OCR_RESIZED_IMPLS
    ce, oc = impls[backend](
        z, target.long().to(dev), tags.to(dev), prior.to(dev) if split == "ada" else None,
        OCROptions(float(opts.get("margin", 2.0)), float(opts.get("threshold", 0.2)), split,
                   opts.get("pixels", "oc"), ignore_index),
        *resized,
    )
    gce = torch.ones_like(ce) if grad_ce is None else grad_ce.to(dev)
    goc = torch.ones_like(oc) if grad_ocr is None else grad_ocr.to(dev)
    # the "random grad via a weighted sum": per-pixel upstream gradients for both maps at once
    ((gce * ce).sum() + (goc * oc).sum()).backward()
    return ce.detach().cpu(), oc.detach().cpu(), z.grad.cpu(), z.grad


def check(backend, logits, target, tags, prior, rtol=1e-5, grad_ce=None, grad_ocr=None,
          ignore_index=255, **opts):
    ce, oc, grad, _ = run_maps(backend, logits, target, tags, prior, grad_ce, grad_ocr,
                               ignore_index, **opts)
    want_ce, want_oc, want_grad = reference_maps64(logits, target, tags, prior, grad_ce, grad_ocr,
                                                   ignore_index, **opts)
    want_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    assert ce.dtype == want_dtype and oc.dtype == want_dtype and grad.dtype == logits.dtype
    keep = ~ambiguous_pixels(logits, tags, prior, opts.get("threshold", 0.2)) \
        if opts.get("group_split", "ada") == "ada" else torch.ones_like(want_oc, dtype=torch.bool)
    map_atol = fp32_map_atol(logits)
    assert_close_rel(ce, want_ce, rtol, "ce_map", atol=map_atol)
    assert torch.all(ce[target == ignore_index] == 0), "ce_map must be exactly 0 where ignored"
    assert_close_rel(oc, want_oc, rtol, "ocr_map", keep, atol=map_atol)
    assert_close_rel(grad, want_grad, rtol, "grad", keep.unsqueeze(1).expand_as(want_grad), atol=fp32_term_atol(logits, grad_ce, grad_ocr))


@pytest.mark.parametrize("group_split, pixels", list(itertools.product(GROUP_SPLITS, PIXEL_MODES)))
def test_every_option_with_ignore_regions(backend, group_split, pixels):
    logits, target, tags, prior = make_seg_inputs(3, 7, (5, 6), ignore_p=0.3)
    tags[0] = 0  # no tag
    tags[1] = 1  # every class tagged: OCR is 0 there, CE is not
    target[2, :2] = 255  # an ignored band
    check(backend, logits, target, tags, prior, group_split=group_split, pixels=pixels)


def test_random_upstream_gradients_of_both_maps(backend):
    logits, target, tags, prior = make_seg_inputs(2, 6, (7, 5))
    check(backend, logits, target, tags, prior, grad_ce=torch.randn(2, 7, 5) * 10,
          grad_ocr=torch.randn(2, 7, 5) * 10, pixels="all")
    # one map without gradient: the fused backward must not leak the other's
    check(backend, logits, target, tags, prior, grad_ce=torch.zeros(2, 7, 5),
          grad_ocr=torch.randn(2, 7, 5), pixels="all")
    check(backend, logits, target, tags, prior, grad_ce=torch.randn(2, 7, 5),
          grad_ocr=torch.zeros(2, 7, 5), pixels="all")


def test_all_ignored_batch(backend):
    logits, target, tags, prior = make_seg_inputs(2, 5, (4, 6))
    target = torch.full_like(target, 255)
    check(backend, logits, target, tags, prior, pixels="all")
    dev = device_for(backend)
    z = logits.detach().to(dev).requires_grad_(True)
    loss = seg_ocr_loss(z, target.to(dev), tags.to(dev), prior.to(dev), alpha=0.5, pixels="all",
                        backend=backend)
    loss.backward()
    want = seg_ocr_loss_reference(logits.double(), target, tags, prior.double(), alpha=0.5, pixels="all")
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    keep = ~ambiguous_pixels(logits, tags, prior)
    if keep.all():
        assert_close_rel(loss.detach().cpu(), want, 1e-5, "loss")


@pytest.mark.parametrize("ignore_index", [-100, 0, 3])
def test_ignore_index_values(backend, ignore_index):
    # 0 ignores the background class; 3 a foreground class; -100 is torch's default
    logits, target, tags, prior = make_seg_inputs(2, 5, (4, 5), ignore_index=ignore_index)
    check(backend, logits, target, tags, prior, ignore_index=ignore_index, pixels="all")


def test_channels_last(backend):
    logits, target, tags, prior = make_seg_inputs(2, 6, (5, 7))
    cl = logits.contiguous(memory_format=torch.channels_last)
    ce, oc, grad, grad_dev = run_maps(backend, cl, target, tags, prior, pixels="all")
    want_ce, want_oc, want_grad = reference_maps64(logits, target, tags, prior, pixels="all")
    keep = ~ambiguous_pixels(logits, tags, prior)
    assert_close_rel(ce, want_ce, 1e-5, "ce_map")
    assert_close_rel(oc, want_oc, 1e-5, "ocr_map", keep)
    assert_close_rel(grad, want_grad, 1e-5, "grad", keep.unsqueeze(1).expand_as(want_grad), atol=fp32_term_atol(logits))
    if backend != "reference":  # BRIEF: the gradient has the logits' layout
        assert grad_dev.is_contiguous(memory_format=torch.channels_last)


def test_fp16_inputs(backend):
    logits, target, tags, prior = make_seg_inputs(2, 9, (6, 6), dtype=torch.float16)
    # fp16 values upcast exactly; the only fp16 rounding is the gradient's store
    check(backend, logits, target, tags, prior, rtol=2e-3, pixels="all")


@pytest.mark.parametrize("spatial", [(11,), (3, 4, 5), (1, 1)])
def test_spatial_ranks(backend, spatial):
    logits, target, tags, prior = make_seg_inputs(2, 5, spatial)
    check(backend, logits, target, tags, prior, pixels="all")


@pytest.mark.parametrize("C1", [2, 300])
def test_class_counts(backend, C1):
    logits, target, tags, prior = make_seg_inputs(2, C1, (3, 5), tag_p=0.05)
    check(backend, logits, target, tags, prior, pixels="all")


def test_confident_logits(backend):
    logits, target, tags, prior = make_seg_inputs(2, 8, (6, 6))
    logits = torch.sign(logits) * 80.0  # CE of a wrong confident class is ~160: no overflow
    # CE and OCR gradients of opposite sign cancel on the same class here (fp32_term_atol)
    for split in GROUP_SPLITS:
        check(backend, logits, target, tags, prior, group_split=split, pixels="all")


@pytest.mark.parametrize("ce_average", ["valid", "all"])
def test_public_scalar_and_its_expanded_gradient(backend, ce_average):
    # the mean reductions hand the kernels a stride-0 (expanded) gradient for each map
    logits, target, tags, prior = make_seg_inputs(3, 6, (5, 4))
    dev = device_for(backend)
    z = logits.detach().to(dev).requires_grad_(True)
    loss = seg_ocr_loss(z, target.to(dev), tags.to(dev), prior.to(dev), alpha=0.7,
                        ce_average=ce_average, backend=backend)
    loss.backward()
    z64 = logits.detach().double().requires_grad_(True)
    want = seg_ocr_loss(z64, target, tags, prior.double(), alpha=0.7, ce_average=ce_average,
                        backend="reference")
    want.backward()
    keep = ~ambiguous_pixels(logits, tags, prior)
    if keep.all():  # an ambiguous pixel's loss is in the reduced value
        assert_close_rel(loss.detach().cpu(), want.detach(), 1e-5, "loss")
    # a pixel's gradient depends on its own logits only: compared at every other pixel
    n_ce = max(int((target != 255).sum()), 1) if ce_average == "valid" else target.numel()
    per_pixel = torch.ones(target.shape)
    atol = fp32_term_atol(logits, per_pixel / n_ce, per_pixel * 0.7 / target.numel())
    assert_close_rel(z.grad.cpu(), z64.grad, 1e-5, atol=atol,
                     mask=keep.unsqueeze(1).expand_as(z64.grad))


def test_bad_targets_are_never_read_out_of_bounds(backend):
    # validate=False hands bad values to the kernel: it must clamp (no crash, no out-of-bounds
    # read); the OCR map and the CE on the good pixels must be unaffected.
    if backend == "reference":
        pytest.skip("the reference is torch's cross_entropy, which raises on bad targets")
    logits, target, tags, prior = make_seg_inputs(2, 5, (4, 6), ignore_p=0.0)
    bad = target.clone()
    bad[0, 0, :3] = torch.tensor([5, 10_000_000, -7])
    ce, oc, grad, _ = run_maps(backend, logits, bad, tags, prior, pixels="all")
    want_ce, want_oc, _ = reference_maps64(logits, target, tags, prior, pixels="all")
    good = torch.ones_like(want_ce, dtype=torch.bool)
    good[0, 0, :3] = False
    keep = ~ambiguous_pixels(logits, tags, prior)
    assert_close_rel(ce, want_ce, 1e-5, "ce_map (good pixels)", good)
    assert_close_rel(oc, want_oc, 1e-5, "ocr_map", keep)


def test_float64_gradcheck_where_supported(backend):
    if torch.float64 not in BACKEND_DTYPES[backend]:
        pytest.skip(f"{backend} does not compute in float64")
    logits, target, tags, prior = make_seg_inputs(2, 5, (3, 4), dtype=torch.float64, scale=1.5)
    tags[0] = 0
    dev = device_for(backend)
    target, tags, prior = target.to(dev), tags.to(dev), prior.double().to(dev)

    def f(z):
        ce, oc = SEG_OCR_IMPLS[backend](z, target, tags, prior,
                                        OCROptions(0.5, 0.2, "ada", "oc", 255))
        return ce, oc

    z = logits.detach().to(dev).requires_grad_(True)
    assert torch.autograd.gradcheck(f, (z,), eps=1e-6, atol=1e-7)


HYPOTHESIS_EXAMPLES = int(os.environ.get("OCR_SEG_HYPOTHESIS_EXAMPLES", "25"))


@hypothesis_cases(HYPOTHESIS_EXAMPLES)
@given(**ocr_strategies(), ignore_p=st.sampled_from([0.0, 0.3, 1.0]),
       ignore_index=st.sampled_from([255, -100, 0]))
def test_hypothesis(backend, B, C1, spatial, scale, tag_p, ignore_p, ignore_index, group_split,
                    pixels, margin, threshold, seed):
    g = torch.Generator().manual_seed(seed)
    logits, target, tags, prior = make_seg_inputs(B, C1, spatial, scale=scale, tag_p=tag_p,
                                                  ignore_p=ignore_p, ignore_index=ignore_index,
                                                  generator=g)
    grad_ce = torch.randn(target.shape, generator=g)
    grad_ocr = torch.randn(target.shape, generator=g)
    check(backend, logits, target, tags, prior, grad_ce=grad_ce, grad_ocr=grad_ocr,
          ignore_index=ignore_index, group_split=group_split, pixels=pixels, margin=margin,
          threshold=threshold)


# ---- the bilinear upsampling fused into the loss (seg_ocr_loss(upsample=True)) -----------------
# Every backend with a fused path (SEG_OCR_RESIZED_IMPLS) against the float64 composition
# F.interpolate + reference; the others are skipped as not implemented.

@pytest.fixture(params=FAST_BACKENDS)
def resized_backend(request):
    return require_backend(request.param, SEG_OCR_RESIZED_IMPLS, "seg_ocr_loss with upsample=True")


def check_resized(backend, logits, target, tags, prior, align_corners, rtol=1e-5, grad_ce=None,
                  grad_ocr=None, ignore_index=255, **opts):
    ce, oc, grad, _ = run_maps(backend, logits, target, tags, prior, grad_ce, grad_ocr,
                               ignore_index, align_corners, **opts)
    want_ce, want_oc, want_grad = reference_maps64(
        logits, target, tags, prior, grad_ce, grad_ocr, ignore_index, upsample=True,
        align_corners=align_corners, **opts)
    want_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    assert ce.dtype == want_dtype and oc.dtype == want_dtype and grad.dtype == logits.dtype
    assert grad.shape == logits.shape and ce.shape == target.shape
    up = upsampled64(logits, target.shape[-2:], align_corners)
    keep = comparable_pixels(up, tags, prior, opts,
                             resize_tie_tol(up, logits.shape[-2:], logits.dtype))
    # the maps' gradient has an L1 norm of at most 2: twice the interpolated logits' error
    map_atol = fp32_map_atol(up) + 2 * resized_logit_err(logits)
    assert_close_rel(ce, want_ce, rtol, "ce_map", atol=map_atol)
    assert torch.all(ce[target == ignore_index] == 0), "ce_map must be exactly 0 where ignored"
    assert_close_rel(oc, want_oc, rtol, "ocr_map", keep, atol=map_atol)
    # a pixel left out (a near-tie) feeds the low-resolution pixels its taps read: the gradient
    # is compared everywhere else
    fed = resize_reach(~keep, logits.shape[-2:], align_corners)
    assert_close_rel(grad, want_grad, rtol, "grad", (~fed).unsqueeze(1).expand_as(grad),
                     atol=resized_grad_atol(up, logits.shape[-2:], grad_ce, grad_ocr))


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("hw, size", RESIZE_CASES)
def test_resized_scales(resized_backend, hw, size, align_corners):
    logits, target, tags, prior = make_seg_inputs(2, 6, size)
    logits = make_seg_inputs(2, 6, hw)[0]
    check_resized(resized_backend, logits, target, tags, prior, align_corners, pixels="all")


@pytest.mark.parametrize("group_split, pixels", list(itertools.product(GROUP_SPLITS, PIXEL_MODES)))
def test_resized_every_option_with_upstream_gradients(resized_backend, group_split, pixels):
    logits = make_seg_inputs(3, 7, (4, 5))[0]
    _, target, tags, prior = make_seg_inputs(3, 7, (13, 9), ignore_p=0.3)
    tags[0] = 0
    tags[1] = 1
    check_resized(resized_backend, logits, target, tags, prior, False,
                  grad_ce=torch.randn(3, 13, 9), grad_ocr=torch.randn(3, 13, 9),
                  group_split=group_split, pixels=pixels)


@resized_dtypes_and_layouts[0]
@resized_dtypes_and_layouts[1]
def test_resized_dtypes_and_layouts(resized_backend, dtype, rtol, memory_format):
    skip_unless_computes(resized_backend, dtype)
    logits = make_seg_inputs(2, 9, (5, 6), dtype=dtype)[0]
    _, target, tags, prior = make_seg_inputs(2, 9, (39, 47))
    check_resized(resized_backend, logits.contiguous(memory_format=memory_format), target, tags,
                  prior, memory_format is torch.channels_last, rtol=rtol, pixels="all")


def test_resized_bf16_exact_fp64_ties(resized_backend):
    # CI's seed 1546600720 drew bf16 logits where two IC classes hold 2.3125 on the low-resolution
    # row that output row 19 hits exactly in fp64 (source y = 2.0): a tie there, broken to the
    # lowest class by the reference, while the fp32 grid (as F.interpolate's) puts y a few ulps
    # off and orders the two classes strictly; the anchor, and the loss, differ at those pixels.
    # Both are right; the comparison leaves such ties out (helpers.near_ties) and checks the rest.
    skip_unless_computes(resized_backend, torch.bfloat16)
    torch.manual_seed(1546600720)
    logits = make_seg_inputs(2, 9, (5, 6), dtype=torch.bfloat16)[0]
    _, target, tags, prior = make_seg_inputs(2, 9, (39, 47))
    up = upsampled64(logits, (39, 47), False)
    ties = near_ties(up, tags, resize_tie_tol(up, (5, 6), torch.bfloat16))
    assert ties[0, 19, 43:47].all() and int(ties.sum()) < 40  # the case is still drawn, and rare
    check_resized(resized_backend, logits, target, tags, prior, False, rtol=0.016, pixels="all")


@pytest.mark.parametrize("ce_average", ["valid", "all"])
def test_resized_public_scalar(resized_backend, ce_average):
    # upsample=True through seg_ocr_loss: the reductions over the full-resolution maps
    logits = make_seg_inputs(3, 6, (5, 4))[0]
    _, target, tags, prior = make_seg_inputs(3, 6, (17, 31))
    dev = device_for(resized_backend)
    z = logits.detach().to(dev).requires_grad_(True)
    loss = seg_ocr_loss(z, target.to(torch.uint8).to(dev), tags.to(dev), prior.to(dev), alpha=0.7,
                        upsample=True, ce_average=ce_average, backend=resized_backend)
    loss.backward()
    z64 = logits.detach().double().requires_grad_(True)
    want = seg_ocr_loss(upsampled64(z64, (17, 31), False), target, tags, prior.double(), alpha=0.7,
                        ce_average=ce_average, backend="reference")
    want.backward()
    up = upsampled64(logits, (17, 31), False)
    if comparable_pixels(up, tags, prior, {},
                         resize_tie_tol(up, logits.shape[-2:], logits.dtype)).all():
        assert_close_rel(loss.detach().cpu(), want.detach(), 1e-5, "loss")
        assert_close_rel(z.grad.cpu(), z64.grad, 1e-5, "grad", atol=1e-9)


def test_resized_gradcheck_float64(resized_backend):
    if torch.float64 not in BACKEND_DTYPES[resized_backend]:
        pytest.skip(f"{resized_backend} does not compute in float64")
    logits = make_seg_inputs(2, 5, (3, 4), dtype=torch.float64, scale=1.5)[0]
    _, target, tags, prior = make_seg_inputs(2, 5, (7, 6))
    tags[0] = 0
    dev = device_for(resized_backend)
    target, tags, prior = target.to(dev), tags.to(dev), prior.double().to(dev)
    for split, ac in (("ada", False), ("all", True)):
        def f(z):
            return SEG_OCR_RESIZED_IMPLS[resized_backend](
                z, target, tags, prior, OCROptions(0.5, 0.2, split, "oc", 255), ac)

        z = logits.detach().to(dev).requires_grad_(True)
        assert torch.autograd.gradcheck(f, (z,), eps=1e-6, atol=1e-7)


@hypothesis_cases(max(1, HYPOTHESIS_EXAMPLES // 2))
@given(**ocr_strategies(), ignore_p=st.sampled_from([0.0, 0.3, 1.0]),
       hw=st.tuples(st.integers(1, 7), st.integers(1, 7)),
       size=st.tuples(st.integers(1, 30), st.integers(1, 30)), align_corners=st.booleans())
def test_resized_hypothesis(resized_backend, B, C1, spatial, scale, tag_p, ignore_p, group_split,
                            pixels, margin, threshold, seed, hw, size, align_corners):
    g = torch.Generator().manual_seed(seed)
    logits = make_seg_inputs(B, C1, hw, scale=scale, generator=g)[0]
    _, target, tags, prior = make_seg_inputs(B, C1, size, tag_p=tag_p, ignore_p=ignore_p,
                                             generator=g)
    check_resized(resized_backend, logits, target, tags, prior, align_corners,
                  grad_ce=torch.randn(target.shape, generator=g),
                  grad_ocr=torch.randn(target.shape, generator=g), group_split=group_split,
                  pixels=pixels, margin=margin, threshold=threshold)
