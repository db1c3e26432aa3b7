"""Shared inputs and comparisons for the tests of every backend."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import pytest
import torch

from ocr_kernels._dispatch import unavailable_reason
from ocr_kernels._options import OCROptions
from ocr_kernels.ocr.prior import prior_correlation
from ocr_kernels.ocr.reference import ic_mask_from_tags, ocr_loss_map_reference

GROUP_SPLITS = ("ada", "max", "all")
PIXEL_MODES = ("oc", "ic", "all")
REDUCTIONS = ("mean", "sum", "none")

# The fast backends the shared matrices run (OCR_TEST_BACKENDS=reference runs a matrix on the fp32
# reference itself: a check of the tolerances).
FAST_BACKENDS = tuple(os.environ.get("OCR_TEST_BACKENDS", "triton,cpu,cuda").split(","))


def device_for(backend):
    return "cuda" if backend in ("triton", "cuda") and torch.cuda.is_available() else "cpu"


def require_backend(name, impls, op):
    """`name`, or skip the test with the reason: not registered in `impls`, or cannot run here."""
    if name not in impls:
        pytest.skip(f"{name}: {op} is not implemented in this build")
    dev = device_for(name)
    probe = torch.zeros(1, device=dev)
    reason = unavailable_reason(name, probe)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    return name


def make_ocr_inputs(
    B: int = 2,
    C1: int = 6,
    spatial: Sequence[int] = (5, 7),
    *,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    scale: float = 3.0,
    tag_p: float = 0.3,
    prior_images: int = 64,
    generator: Optional[torch.Generator] = None,
):
    """Random logits [B, C1, *spatial], tags [B, C1-1] and a prior from random dataset tags."""
    g = generator
    logits = (torch.randn((B, C1, *spatial), generator=g, dtype=torch.float64) * scale).to(dtype)
    tags = (torch.rand((B, C1 - 1), generator=g) < tag_p).to(torch.int64)
    ds = torch.rand((prior_images, C1 - 1), generator=g) < 0.3
    prior = prior_correlation(ds)
    return logits.to(device), tags.to(device), prior.to(device)


# The float64 reference is an oracle for finite logits below this magnitude. From |logit| ~ 1e6
# on, torch's logsumexp backward (exp(x - lse) with lse rounded to ~1e-10 absolute) is off in
# the gradient itself, so no test compares a backend against it there.
ORACLE_MAX_ABS_LOGIT = 1e6


def reference64(logits, tags, prior, grad_map=None, size=None, align_corners=False, **opts):
    """Loss map and logits gradient of the float64 reference at the given logits' values; with
    size, of the composition F.interpolate + reference (the oracle of the fused upsampling)."""
    z = logits.detach().to(torch.float64).requires_grad_(True)
    finite = z.detach()[torch.isfinite(z.detach())]
    assert finite.numel() == 0 or finite.abs().max() < ORACLE_MAX_ABS_LOGIT, \
        "the float64 reference is an oracle for |logit| < 1e6 only"
    loss = ocr_loss_map_reference(
        z if size is None else upsampled64(z, size, align_corners), tags, None if prior is None else prior.to(torch.float64),
        OCROptions(opts.get("margin", 2.0), opts.get("threshold", 0.2),
                   opts.get("group_split", "ada"), opts.get("pixels", "oc")),
    )
    g = torch.ones_like(loss) if grad_map is None else grad_map.to(torch.float64)
    (grad,) = torch.autograd.grad(loss, z, g)
    return loss.detach(), grad


# Fused upsampling cases of the backend matrices, (low-resolution h, w) -> (H, W): scale factors
# 2, 4, 8 and 7.83, odd sizes, different scales per axis, downsampling, the identity and
# single-pixel edges.
# The resized matrices' dtype x layout cases: (dtype, relative tolerance) and memory formats.
resized_dtypes_and_layouts = [
    pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last]),
    pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float16, 2e-3),
                                            (torch.bfloat16, 1.6e-2), (torch.float64, 1e-10)]),
]


def skip_unless_computes(backend, dtype):
    """Skip where `backend` has no `dtype` path (or, for the Triton interpreter, no bfloat16)."""
    from ocr_kernels._dispatch import BACKEND_DTYPES
    if dtype not in BACKEND_DTYPES[backend]:
        pytest.skip(f"{backend} does not compute in {dtype}")
    if backend == "triton" and dtype == torch.bfloat16 and device_for("triton") == "cpu":
        pytest.skip("the Triton interpreter does not support bfloat16")


RESIZE_CASES = [
    ((5, 6), (10, 12)),
    ((4, 5), (16, 20)),
    ((3, 4), (24, 32)),
    ((6, 5), (47, 39)),
    ((7, 3), (11, 17)),
    ((9, 11), (4, 5)),
    ((5, 9), (13, 4)),
    ((5, 6), (5, 6)),
    ((1, 1), (5, 3)),
    ((4, 4), (1, 1)),
]


def resize_reach(out_mask, low_hw, align_corners):
    """The low-resolution pixels [B, h, w] that the output pixels in out_mask [B, H, W] read
    through their bilinear taps (a tap of weight 0 excluded): where their gradient has a term
    from one of those output pixels (the adjoint of F.interpolate applied to the mask)."""
    import torch.nn.functional as F

    B = out_mask.shape[0]
    x = torch.zeros(B, 1, *low_hw, dtype=torch.float64, requires_grad=True)
    y = F.interpolate(x, size=tuple(out_mask.shape[-2:]), mode="bilinear",
                      align_corners=align_corners)
    (g,) = torch.autograd.grad(y, x, out_mask.to(torch.float64).unsqueeze(1))
    return g[:, 0] != 0


def upsampled64(logits, size, align_corners):
    """The logits bilinearly upsampled to size in float64: the oracle's input for the fused
    upsampling (the same F.interpolate the references compose with)."""
    import torch.nn.functional as F

    return F.interpolate(logits.to(torch.float64), size=tuple(size), mode="bilinear",
                         align_corners=align_corners)


def ambiguous_pixels(logits, tags, prior, threshold=0.2, eps=1e-4):
    """bool [B, *spatial]: pixels whose "ada" IC group changes under a perturbation of eps in the
    threshold test (P_A − P_k·M[A, k] within eps of t). An fp32 kernel and the fp64 reference may
    legitimately choose differently there, so comparisons leave those pixels out."""
    z = logits.detach().to(torch.float64)
    B, C1 = z.shape[:2]
    bshape = (B, C1) + (1,) * (z.dim() - 2)
    ic = ic_mask_from_tags(tags).view(bshape)
    anchor = z.masked_fill(~ic, float("-inf")).argmax(1, keepdim=True)
    p = torch.softmax(z, 1)
    pa = p.gather(1, anchor)
    ma = prior.to(torch.float64)[anchor.squeeze(1)].movedim(-1, 1)
    near = ((pa - p * ma - threshold).abs() < eps) & ic
    return near.any(1)


def comparable_pixels(logits, tags, prior, opts, tie_tol=None):
    """bool [B, *spatial]: the pixels a fp32 kernel and the fp64 reference must agree on (all of
    them but the ambiguous "ada" ones; see ambiguous_pixels). tie_tol ([B, *spatial] or a float):
    also leave out the pixels whose anchor or predicted class is a tie within it (near_ties)."""
    keep = torch.ones((logits.shape[0],) + tuple(logits.shape[2:]), dtype=torch.bool)
    if opts.get("group_split", "ada") == "ada" and prior is not None:
        keep &= ~ambiguous_pixels(logits, tags, prior, opts.get("threshold", 0.2))
    if tie_tol is not None:
        keep &= ~near_ties(logits, tags, tie_tol)
    return keep


def near_ties(logits, tags, tol):
    """bool [B, *spatial]: pixels whose IC maximum (the anchor) or overall maximum (the predicted
    class, which decides OC pixels) is within tol of the runner-up. Ties are broken to the lowest
    index by every backend, but only between values that are equal in the math dtype: where the
    logits themselves are computed (the fused upsampling interpolates them in fp32, its grid
    included, as F.interpolate does), an exact fp64 tie can come out of the kernel as a strict
    order either way, and the anchor or the OC set with it (seen with bf16 logits, whose values
    collide often: two IC classes at 2.3125 on a row the fp64 grid hits exactly)."""
    z = logits.detach().to(torch.float64)
    ic = ic_mask_from_tags(tags).view((z.shape[0], z.shape[1]) + (1,) * (z.dim() - 2))

    def gap(v):
        top = v.topk(2, dim=1).values
        return top[:, 0] - top[:, 1]

    return (gap(z.masked_fill(~ic, float("-inf"))) <= tol) | (gap(z) <= tol)


def resize_tie_tol(up, low_hw, dtype):
    """The tie tolerance (near_ties) of logits interpolated in dtype's math dtype to `up`
    (float64, [B, C+1, H, W]) from a [h, w] grid: a source position near n carries a weight error of
    up to n ulps per axis, times the step between two taps (bounded by twice the magnitude)."""
    eps = 2.0 ** -53 if dtype == torch.float64 else 2.0 ** -24
    return 8 * eps * max(low_hw) * (up.abs().amax(dim=1) + 1.0)


def resized_logit_err(logits):
    """[B, 1, 1] float64: how far logits interpolated in the math dtype (the kernels' grid, like
    F.interpolate's, is computed in it) can be from their float64 interpolation. A source position
    x = scale·X is off by up to 2 ulps of the source size an axis, which moves the value by that
    times the step between the two taps (up to twice the image's largest |logit|, and not bounded
    by the interpolated value: CI's seed 2331600762 drew a logit of 1.29 between taps far apart,
    off by 1.4e-4 in torch's own fp32 F.interpolate at 150 source columns); the blend adds a few
    ulps."""
    eps = 2.0 ** -53 if logits.dtype == torch.float64 else 2.0 ** -24
    h, w = logits.shape[-2:]
    big = logits.detach().to(torch.float64).abs().amax(dim=(1, 2, 3)).view(-1, 1, 1)
    return 4 * eps * (h + w + 2) * (big + 1.0)


def assert_close_rel(actual, expected, rtol, what="", mask=None, atol=0.0):
    """|actual − expected| <= rtol · (|expected| + max|expected|·1e-2) + atol elementwise, in float64
    (atol may be a tensor: a per-element allowance).

    A relative bound per element, with a floor of 1% of the largest magnitude so that entries that
    are tiny compared with the rest (and carry rounding of the large ones) are not held to a
    relative bound they cannot meet in fp32."""
    a = actual.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    if mask is not None:
        a = torch.where(mask, a, torch.zeros_like(a))
        e = torch.where(mask, e, torch.zeros_like(e))
    assert torch.isfinite(a).all(), f"{what}: non-finite values in the result"
    floor = e.abs().max() * 1e-2 if e.numel() else 0.0
    err = (a - e).abs()
    bound = rtol * (e.abs() + floor) + atol + 1e-30
    bad = err > bound
    if bad.any():
        i = int(torch.argmax((err / bound).flatten()))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {e.numel()} elements off; worst at flat index {i}: "
            f"got {a.flatten()[i].item():.9g}, expected {e.flatten()[i].item():.9g}, allowed error "
            f"{bound.flatten()[i].item():.3g} (rtol={rtol})"
        )


def csrc_ops(load_ops):
    """torch.ops.ocr_kernels through a slice's csrc_ops.ops (its registrations made), or a skip
    with the reason the C++ extension cannot be built here."""
    from ocr_kernels._extension import extension_unavailable_reason

    reason = extension_unavailable_reason("cpu")
    if reason is not None:
        pytest.skip(f"the C++ extension cannot be built here: {reason}")
    return load_ops()


def hypothesis_cases(max_examples: int):
    """The Hypothesis settings of the backend matrices (fixtures are per test, not per example:
    they are backend names)."""
    from hypothesis import HealthCheck, settings

    return settings(max_examples=max_examples, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def ocr_strategies():
    """Hypothesis strategies of the OCR inputs and options, shared by the OCR and seg matrices."""
    from hypothesis import strategies as st

    return dict(
        B=st.integers(1, 3), C1=st.integers(2, 40),
        spatial=st.lists(st.integers(1, 6), min_size=1, max_size=3),
        scale=st.sampled_from([0.1, 1.0, 4.0, 30.0]), tag_p=st.floats(0.0, 1.0),
        group_split=st.sampled_from(GROUP_SPLITS), pixels=st.sampled_from(PIXEL_MODES),
        margin=st.floats(0.0, 5.0), threshold=st.floats(0.0, 1.0), seed=st.integers(0, 2**31 - 1),
    )


def force_small_tiles(monkeypatch, block_p):
    """The Triton OCR kernels on tiles of block_p pixels (GPU and interpreter alike)."""
    import ocr_kernels.ocr.triton_kernel as tk

    monkeypatch.setattr(tk, "BLOCK_P", block_p)
    monkeypatch.setattr(tk, "INTERPRET_BLOCK_P", block_p)


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 16 pixels: several programs per image, tail lanes, and (in the backward) tiles
    without a gradient, which write zeros only, beside tiles with one."""
    force_small_tiles(monkeypatch, 16)


def fp32_term_atol(logits, grad_ce=None, grad_ocr=None, ulps: float = 16.0, eps: float = 2.0 ** -24):
    """Per-element absolute error allowed in a fused fp32 gradient: `ulps` fp32 ulps of the terms
    that meet in it, scaled by the logits' magnitude.

    The gradient of a pixel sums a CE term g_ce·(softmax − onehot) and an OCR term g_ocr·σ·q of
    magnitude up to |g_ce| and |g_ocr|, which can cancel (the target class is often the anchor). A
    kernel that forms softmax as exp(z − lse) with lse held in fp32 has a relative error of about
    (|z| + 1)·2^-24 in each term (torch's log_softmax is more precise), so after cancellation the
    absolute error can exceed a bound relative to the (small) result. Bugs give errors of the size
    of the terms, far above this. eps: the unit roundoff of the math dtype (2^-53 for float64)."""
    z = logits.detach().to(torch.float64)
    B = z.shape[0]
    spatial = z.shape[2:]
    gce = torch.ones((B, *spatial), dtype=torch.float64) if grad_ce is None else grad_ce.to(torch.float64).abs()
    goc = torch.ones((B, *spatial), dtype=torch.float64) if grad_ocr is None else grad_ocr.to(torch.float64).abs()
    scale = (z.abs().amax(dim=1) + 1.0) * (gce + goc)
    return (ulps * eps * scale).unsqueeze(1).expand_as(z)


def fp32_map_atol(logits, ulps: float = 16.0):
    """Per-pixel absolute error allowed in a fused fp32 loss map: ce = lse − z[target] is the
    difference of two numbers of size |z| (the OCR softplus argument is a sum of such), so a kernel
    holding lse in fp32 is exact only to about |z|·2^-24 -- which can be a large relative error
    for a tiny loss (a confident correct pixel). torch's log_softmax is more precise there."""
    z = logits.detach().to(torch.float64)
    return ulps * 2.0 ** -24 * (z.abs().amax(dim=1) + 1.0)


def resized_grad_atol(up, low_shape, grad_ce=None, grad_ocr=None, eps: float = 2.0 ** -24) -> float:
    """Absolute error allowed in a fused-upsampling gradient of the low-resolution logits: each
    sums the terms of the output pixels it feeds (up to 4·max(1, H·W/(h·w)) of them, weighted: a
    downsampled pixel still takes up to 2 taps an axis), each as exact as fp32_term_atol of the
    upsampled logits `up`."""
    import torch.nn.functional as F

    term = fp32_term_atol(up, grad_ce, grad_ocr, eps=eps)[:, :1]
    atol = F.interpolate(term, size=tuple(low_shape), mode="area").amax() * \
        max(1.0, (up.shape[-2] * up.shape[-1]) / (low_shape[0] * low_shape[1]))
    return float(atol) * 4
