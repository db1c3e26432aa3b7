"""Tests specific to the csrc backend (C++ CPU kernel, CUDA kernel sources, build and fallback).

The shared value matrix (every option, layout, class count, hypothesis) is tests/ocr/test_backends.py,
which runs on "cpu" too. Here: gradcheck in float64, bf16/fp16/fp64, opcheck, torch.compile, the
per-pixel code path the CUDA kernel runs (on the CPU), odd layouts, nvcc compile checks of every
.cu file, and the fallback when the extension cannot be built. The fused segmentation maps:
tests/seg/test_csrc.py.
"""
import glob
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import (GROUP_SPLITS, PIXEL_MODES, ambiguous_pixels, assert_close_rel, csrc_ops,
                     make_ocr_inputs, reference64)
from ocr_kernels import ocr_loss
from ocr_kernels._extension import csrc_dir
from ocr_kernels._options import GROUP_SPLITS as GROUP_CODES, PIXEL_MODES as PIXEL_CODES, OCROptions

ROOT = Path(__file__).resolve().parents[2]
CU_FILES = sorted(glob.glob(str(ROOT / "csrc" / "**" / "*.cu"), recursive=True))
# d ce/dz_t = softmax_t - 1 cancels when softmax_t is near 1: an fp32 softmax good to a few ulp
# leaves a relative error of a few 1e-7 / (1 - softmax_t) in the difference.
CE_GRAD_RTOL = 1e-4
NVCC = shutil.which("nvcc") or (os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc")
                                if os.environ.get("CUDA_HOME") else None)


@pytest.fixture(scope="module")
def ops():
    from ocr_kernels.ocr.csrc_ops import ops as load_ops

    return csrc_ops(load_ops)


def keep_mask(logits, tags, prior, group_split, threshold=0.2):
    if group_split != "ada":
        return torch.ones((logits.shape[0], *logits.shape[2:]), dtype=torch.bool)
    return ~ambiguous_pixels(logits, tags, prior, threshold)


def run_cpu(logits, tags, prior, grad_map=None, **opts):
    from ocr_kernels.ocr.csrc_ops import ocr_loss_map_csrc

    z = logits.detach().clone().requires_grad_(True)
    split = opts.get("group_split", "ada")
    loss = ocr_loss_map_csrc(z, tags, prior if split == "ada" else None,
                             OCROptions(opts.get("margin", 2.0),
                             opts.get("threshold", 0.2), split, opts.get("pixels", "oc")))
    loss.backward(torch.ones_like(loss) if grad_map is None else grad_map)
    return loss.detach(), z.grad


@pytest.mark.parametrize("group_split", GROUP_SPLITS)
@pytest.mark.parametrize("pixels", PIXEL_MODES)
def test_gradcheck_fp64(ops, group_split, pixels):
    from ocr_kernels.ocr.csrc_ops import ocr_loss_map_csrc

    logits, tags, prior = make_ocr_inputs(2, 6, (3, 4), dtype=torch.float64, scale=2.0, tag_p=0.4)
    tags[1, :2] = 1  # two images with different tag sets
    z = logits.clone().requires_grad_(True)
    pr = prior.double() if group_split == "ada" else None

    def fn(x):
        return ocr_loss_map_csrc(x, tags, pr, OCROptions(2.0, 0.2, group_split, pixels))

    assert torch.autograd.gradcheck(fn, (z,), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-11), (torch.bfloat16, 1e-2),
                                         (torch.float16, 2e-3)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_dtypes_against_reference(ops, dtype, rtol, layout):
    logits, tags, prior = make_ocr_inputs(3, 9, (6, 7), dtype=dtype, tag_p=0.3)
    if layout == "channels_last":
        logits = logits.contiguous(memory_format=torch.channels_last)
    g = torch.randn(3, 6, 7, dtype=torch.float64)
    for split in GROUP_SPLITS:
        want_loss, want_grad = reference64(logits, tags, prior, grad_map=g, group_split=split,
                                           pixels="all")
        loss, grad = run_cpu(logits, tags, prior, grad_map=g.to(torch.float64 if dtype == torch.float64 else torch.float32),
                             group_split=split, pixels="all")
        assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        assert grad.dtype == dtype and grad.stride() == logits.stride()
        keep = keep_mask(logits, tags, prior, split)
        # the loss map is fp32 from exactly-upcast inputs; only the gradient is rounded to dtype
        assert_close_rel(loss, want_loss, 1e-11 if dtype == torch.float64 else 1e-5, f"{split} loss", keep)
        assert_close_rel(grad, want_grad, rtol, f"{split} grad", keep.unsqueeze(1).expand_as(want_grad))


def test_hand_computed_pixel(ops):
    # One pixel, C+1 = 4, tags {2}: IC = {0, 2}, OC = {1, 3}. z = (0, 3, 1, -1): pred = 1 (OC).
    # "max": anchor 2, s = -1 + log(e^3 + e^-1) + 2; loss = softplus(s).
    import math

    z = torch.tensor([[[0.0], [3.0], [1.0], [-1.0]]], dtype=torch.float64)
    tags = torch.tensor([[0, 1, 0]])
    loss, grad = run_cpu(z, tags, None, group_split="max", pixels="oc")
    s = -1.0 + math.log(math.exp(3) + math.exp(-1)) + 2.0
    assert loss.item() == pytest.approx(math.log1p(math.exp(s)), rel=1e-14)
    sig = 1 / (1 + math.exp(-s))
    oc_soft = [math.exp(3) / (math.exp(3) + math.exp(-1)), math.exp(-1) / (math.exp(3) + math.exp(-1))]
    want = [0.0, sig * oc_soft[0], -sig, sig * oc_soft[1]]
    assert grad[0, :, 0].tolist() == pytest.approx(want, rel=1e-12)


def test_odd_layouts_and_zero_sizes(ops):
    logits, tags, prior = make_ocr_inputs(2, 5, (4, 6))
    # [B, H, C, W] memory permuted to [B, C, H, W]: H and W do not collapse to one stride
    odd = logits.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    big = torch.zeros(2, 5, 4, 12)
    big[..., ::2] = logits
    sliced = big[..., ::2]  # pixel stride 2
    want_loss, want_grad = reference64(logits, tags, prior, pixels="all")
    keep = keep_mask(logits, tags, prior, "ada")
    for x in (odd, sliced):
        loss, grad = run_cpu(x, tags, prior, pixels="all")
        assert_close_rel(loss, want_loss, 1e-5, "loss", keep)
        assert_close_rel(grad, want_grad, 1e-5, "grad", keep.unsqueeze(1).expand_as(want_grad))
    empty = torch.zeros(2, 5, 0, 3)
    loss, grad = run_cpu(empty, tags, prior)
    assert loss.shape == (2, 0, 3) and grad.shape == empty.shape


@pytest.mark.parametrize("group_split", GROUP_SPLITS)
def test_cuda_thread_code_warps_with_and_without_gradient(ops, group_split):
    # ocr_thread.h as the CUDA kernel runs it (the hook walks the kernel's 128-pixel warps): 40
    # classes (two 32-class words of tags), 3 images of 19x23 = 437 pixels (3 full warps and a
    # partial one), an upstream gradient that is zero on whole warps (they write zeros without
    # reading) and on single pixels inside warps that have work (they read nothing either).
    logits, tags, prior = make_ocr_inputs(3, 40, (19, 23), tag_p=0.1)
    tags[2, 31:] = 1
    g = torch.randn(3, 19, 23)
    flat = g.view(3, -1)
    flat[0, :128] = 0  # the image's first warp
    flat[1, 128:256] = 0
    flat[2, 300:437:3] = 0
    _, ocr, grad = ops._pixelwise_seg_ocr(logits, None, tags, prior if group_split == "ada" else None,
                                          None, g, 2.0, 0.2, GROUP_CODES[group_split],
                                          PIXEL_CODES["all"], -100)
    want_loss, want_grad = reference64(logits, tags, prior, grad_map=g, group_split=group_split,
                                       pixels="all")
    keep = keep_mask(logits, tags, prior, group_split)
    assert_close_rel(ocr, want_loss, 1e-5, "loss", keep)
    assert_close_rel(grad, want_grad, 1e-5, "grad", keep.unsqueeze(1).expand_as(want_grad))
    assert (grad.view(3, 40, -1)[0, :, :128] == 0).all() and (grad.view(3, 40, -1)[1, :, 128:256] == 0).all()


# Pixels with a gradient per 128-pixel warp of the CUDA backward (ocr_thread.h's compaction):
# none, one, a round minus/plus one, two rounds (the most that compact: kCompactRounds) and one
# past them (the warp then runs 4 pixels a lane), all; the image's last warp is partial.
WARP_GRADIENT_PIXELS = (0, 1, 31, 32, 33, 64, 65, 128)


def _warp_gradient_map(B, spatial, counts, generator):
    """An upstream gradient [B, *spatial] that is 0 except at counts[w] random pixels of warp w
    (pixels 128·w .. 128·w + 127 of each image; the last warp takes what the image has left)."""
    n = math.prod(spatial)
    g = torch.zeros(B, n)
    for b in range(B):
        for w, k in enumerate(counts):
            lo, hi = 128 * w, min(128 * w + 128, n)
            k = min(k, hi - lo)
            idx = lo + torch.randperm(hi - lo, generator=generator)[:k]
            g[b, idx] = torch.randn(k, generator=generator).abs() + 0.5
    return g.view(B, *spatial)


@pytest.mark.parametrize("group_split", GROUP_SPLITS)
def test_cuda_backward_compaction_warp_counts(ops, group_split):
    # every pixel has a loss (pixels "all", an OC class pinned in each image), so a pixel has a
    # gradient exactly where the upstream gradient is not 0: each warp of the first two tiles
    # (pixels 0 .. 1023) gets a pinned count of them; the image's last tile (pixels 635 .. 1146
    # of 31·37 = 1147, the unit-stride path's: it ends at the last pixel) mixes the counts of
    # warps 4 .. 8, the last (partial, 123 pixels) with all of its pixels.
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    spatial = (31, 37)
    logits, tags, prior = make_ocr_inputs(2, 9, spatial, tag_p=0.3)
    tags[:, 0] = 0  # class 1 is OC in both images
    g = _warp_gradient_map(2, spatial, WARP_GRADIENT_PIXELS + (128,), gen)
    _, ocr, grad = ops._pixelwise_seg_ocr(logits, None, tags, prior if group_split == "ada" else None,
                                          None, g, 2.0, 0.2, GROUP_CODES[group_split],
                                          PIXEL_CODES["all"], -100)
    want_loss, want_grad = reference64(logits, tags, prior, grad_map=g, group_split=group_split,
                                       pixels="all")
    assert (ocr > 0).all()
    keep = keep_mask(logits, tags, prior, group_split)
    assert_close_rel(ocr, want_loss, 1e-5, "loss", keep)
    assert_close_rel(grad, want_grad, 1e-5, "grad", keep.unsqueeze(1).expand_as(want_grad))
    # the pixels without a gradient are written as exact zeros, in compacted and full warps alike
    assert (grad.movedim(1, -1)[g == 0] == 0).all()
    assert (grad.movedim(1, -1)[g != 0] != 0).any(-1).all()


def test_cuda_backward_compaction_nan_pixel(ops):
    # a NaN logit makes its pixel's loss NaN: that pixel takes a slot (its gradient is NaN at every
    # class, whatever its upstream gradient) beside the finite pixels of its warp
    spatial = (9, 20)  # one full warp and a partial one
    logits, tags, prior = make_ocr_inputs(1, 6, spatial, tag_p=0.3)
    tags[:, 0] = 0
    g = torch.zeros(1, 180)
    g[0, [3, 40, 130]] = 1.0
    flat = logits.view(1, 6, -1)
    flat[0, 2, 7] = float("nan")  # no upstream gradient there
    flat[0, 4, 40] = float("nan")  # an upstream gradient there
    _, ocr, grad = ops._pixelwise_seg_ocr(logits, None, tags, prior, None, g.view(1, *spatial),
                                          2.0, 0.2, GROUP_CODES["ada"], PIXEL_CODES["all"], -100)
    gf = grad.view(1, 6, -1)
    assert torch.isnan(ocr.view(-1)[[7, 40]]).all()
    assert torch.isnan(gf[0, :, 7]).all() and torch.isnan(gf[0, :, 40]).all()
    finite = torch.ones(180, dtype=torch.bool)
    finite[[7, 40]] = False
    assert torch.isfinite(gf[0][:, finite]).all()
    assert (gf[0][:, finite & (g[0] == 0)] == 0).all()
    assert (gf[0, :, 3] != 0).any() and (gf[0, :, 130] != 0).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_thread_code_ada_group_ties_and_non_finite(ops, dtype):
    # ocr_thread.h's "ada" group pass keeps the run of -z as a run of the minimum of z and reads
    # the prior through the anchor's row: logits from 4 values (ties everywhere, in the IC group's
    # minimum and between the IC and OC maxima, as bf16 makes them common), 3 IC classes pinned
    # per image, and one +inf / -inf / NaN IC logit each at a pixel whose maximum is finite
    # elsewhere (an infinity after a finite maximum adds exp(-inf) = 0 to a run; the pixel must
    # still be NaN); 2 images of 16x16 (two 128-pixel warps each).
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    B, C1, spatial = 2, 9, (16, 16)
    values = torch.tensor([-1.0, 0.0, 0.5, 1.0], dtype=torch.float64)
    logits = values[torch.randint(0, 4, (B, C1, *spatial), generator=gen)].to(dtype)
    tags = torch.zeros(B, C1 - 1, dtype=torch.int64)
    tags[:, [1, 4, 6]] = 1  # IC: 0, 2, 5, 7; OC: the other five
    _, _, prior = make_ocr_inputs(B, C1, (1, 1), generator=gen)
    flat = logits.view(B, C1, -1)
    bad = {(0, 5, 10): float("inf"), (0, 7, 200): -float("inf"), (1, 2, 77): float("nan"),
           (1, 5, 130): -float("inf")}
    for (b, k, q), v in bad.items():
        flat[b, 0, q] = 4.0  # a finite maximum (class 0, IC) before the bad IC class
        flat[b, k, q] = v
    g = torch.rand(B, *spatial, generator=gen) + 0.5
    _, ocr, grad = ops._pixelwise_seg_ocr(logits, None, tags, prior, None, g, 2.0, 0.2,
                                          GROUP_CODES["ada"], PIXEL_CODES["all"], -100)
    hit = torch.zeros(B, math.prod(spatial), dtype=torch.bool)
    for (b, _, q) in bad:
        hit[b, q] = True
    hit = hit.view(B, *spatial)
    assert ocr[hit].isnan().all()
    assert grad.movedim(1, -1)[hit].isnan().all()
    clean = logits.clone()
    clean.movedim(1, -1)[hit] = 0
    want_loss, want_grad = reference64(clean, tags, prior, grad_map=g, group_split="ada",
                                       pixels="all")
    keep = keep_mask(clean, tags, prior, "ada") & ~hit
    assert keep.sum() > 100  # most pixels are compared
    assert torch.isfinite(ocr[~hit]).all() and (ocr[~hit] > 0).all()
    assert_close_rel(ocr, want_loss, 1e-5, "loss", keep)
    assert_close_rel(grad, want_grad, 1e-5 if dtype == torch.float32 else 1e-2, "grad",
                     keep.unsqueeze(1).expand_as(want_grad))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_pixelwise_path_the_cuda_kernel_runs(ops, dtype):
    # ocr_thread.h's thread_forward/thread_backward, in the CUDA kernel's warps, on the CPU
    logits, tags, prior = make_ocr_inputs(2, 7, (5, 6), dtype=dtype, tag_p=0.35)
    tags[0] = 1  # every class tagged: no OC class, no loss
    B, C1 = logits.shape[:2]
    target = torch.randint(0, C1, (B, 5, 6))
    target[0, 0, :3] = 255
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    g_ocr, g_ce = torch.randn(B, 5, 6, dtype=acc), torch.randn(B, 5, 6, dtype=acc)
    for split in GROUP_SPLITS:
        for pix in PIXEL_MODES:
            ce, ocr, grad = ops._pixelwise_seg_ocr(
                logits, target, tags, prior if split == "ada" else None, g_ce, g_ocr, 2.0, 0.2,
                GROUP_CODES[split], PIXEL_CODES[pix], 255)
            z = logits.detach().to(torch.float64).requires_grad_(True)
            want_ce = F.cross_entropy(z, target, ignore_index=255, reduction="none")
            want_ocr, _ = reference64(logits, tags, prior, group_split=split, pixels=pix)
            from ocr_kernels.ocr.reference import ocr_loss_map_reference
            ref = ocr_loss_map_reference(z, tags, prior.double() if split == "ada" else None,
                                         OCROptions(2.0, 0.2, split, pix))
            (want_grad,) = torch.autograd.grad((want_ce * g_ce.double()).sum() + (ref * g_ocr.double()).sum(), z)
            keep = keep_mask(logits, tags, prior, split)
            tol = 1e-11 if dtype == torch.float64 else 1e-5
            assert_close_rel(ocr, want_ocr, tol, f"{split}/{pix} ocr", keep)
            assert_close_rel(ce, want_ce, tol, f"{split}/{pix} ce", keep)
            # the CE gradient softmax_t - 1 cancels: fp32 keeps ~1e-7 of the softmax, not of the
            # difference, hence CE_GRAD_RTOL for fp32
            assert_close_rel(grad, want_grad, {torch.bfloat16: 1e-2, torch.float32: CE_GRAD_RTOL}.get(dtype, tol),
                             f"{split}/{pix} grad", keep.unsqueeze(1).expand_as(want_grad))


def test_opcheck(ops):
    logits, tags, prior = make_ocr_inputs(2, 5, (3, 4))
    z = logits.requires_grad_(True)
    loss, mask = ops.ocr_loss_map(logits.detach(), tags, prior, 2.0, 0.2, 0, 0)
    cases = [
        (ops.ocr_loss_map.default, (z, tags, prior, 2.0, 0.2, 0, 0)),
        (ops.ocr_loss_map.default, (z, tags, None, 2.0, 0.2, 1, 2)),
        (ops.ocr_loss_map_backward.default,
         (torch.ones_like(loss), logits.detach(), tags, prior, loss, mask, 2.0, 0.2, 0, 0)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def _packed_mask(loss):
    """ocr_loss_map's mask from its loss map, bit q % 32 of word q / 32 set where loss != 0."""
    flat = (loss.reshape(loss.shape[0], -1) != 0).long()
    B, N = flat.shape
    W = (N + 31) // 32
    bits = torch.zeros(B, W * 32, dtype=torch.long)
    bits[:, :N] = flat
    words = (bits.view(B, W, 32) << torch.arange(32)).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


@pytest.mark.parametrize("spatial", [(5, 6), (31, 37), (8, 64), (3, 2, 7)])
def test_loss_mask_output(ops, spatial):
    # the forward's second output, saved for the backward: a bit a pixel where the loss is not 0
    # (NaN included); pixel counts below one word, not a multiple of 32 (the last word partial)
    # and a multiple of 32; pixels "oc" so that many losses are 0, one pinned OC pixel, one NaN
    logits, tags, prior = make_ocr_inputs(2, 6, spatial, tag_p=0.4)
    tags[:, 0] = 0  # class 1 is OC in both images
    flat = logits.view(2, 6, -1)
    flat[0, 1, 3] = flat[0, :, 3].max() + 5.0  # an OC pixel: a loss > 0
    flat[0, 0, 4] = flat[0, :, 4].max() + 5.0  # background predicted: an IC pixel, loss 0
    flat[1, 2, 0] = float("nan")
    loss, mask = ops.ocr_loss_map(logits, tags, prior, 2.0, 0.2, GROUP_CODES["ada"], PIXEL_CODES["oc"])
    n = math.prod(spatial)
    assert mask.dtype == torch.int32 and mask.shape == (2, (n + 31) // 32)
    lf = loss.view(2, -1)
    assert lf[0, 3] > 0 and lf[0, 4] == 0 and torch.isnan(lf[1, 0])
    assert torch.equal(mask, _packed_mask(loss))


@pytest.mark.parametrize("spatial", [(23, 29), (24, 40)])
def test_cuda_thread_code_loss_mask_tiles(ops, spatial):
    # the hook walks the unit-stride path's tiles (512 pixels, the last one ending at the image's
    # last pixel): 23·29 = 667 pixels, a last tile starting at 155 (not a multiple of 32: its mask
    # words are funnel shifts of its ballots), 24·40 = 960 (a last tile at 448, aligned). Pixels
    # "oc": many pixels have no loss, hence a clear mask bit; the hook checks its mask against
    # its loss map, and the backward reads the maps only where a bit is set.
    logits, tags, prior = make_ocr_inputs(2, 7, spatial, tag_p=0.3)
    tags[:, 0] = 0
    flat = logits.view(2, 7, -1)
    n = flat.shape[-1]
    flat[:, 1, n - 1] = flat[:, :, n - 1].amax(1) + 5.0  # the last pixel is OC: a loss > 0
    flat[:, 1, 200] = flat[:, :, 200].amax(1) + 5.0  # one inside the overlap of the last two tiles
    flat[:, 0, 201] = flat[:, :, 201].amax(1) + 5.0  # background: no loss
    g = torch.randn(2, *spatial)
    _, ocr, grad = ops._pixelwise_seg_ocr(logits, None, tags, prior, None, g, 2.0, 0.2,
                                          GROUP_CODES["ada"], PIXEL_CODES["oc"], -100)
    want_loss, want_grad = reference64(logits, tags, prior, grad_map=g, group_split="ada", pixels="oc")
    of = ocr.view(2, -1)
    assert (of[:, [n - 1, 200]] > 0).all() and (of[:, 201] == 0).all()
    keep = keep_mask(logits, tags, prior, "ada")
    assert_close_rel(ocr, want_loss, 1e-5, "loss", keep)
    assert_close_rel(grad, want_grad, 1e-5, "grad", keep.unsqueeze(1).expand_as(want_grad))
    assert (grad.movedim(1, -1)[ocr == 0] == 0).all()


def test_backward_checks_the_mask(ops):
    logits, tags, prior = make_ocr_inputs(2, 5, (3, 4))
    loss, mask = ops.ocr_loss_map(logits, tags, prior, 2.0, 0.2, 0, 0)
    g = torch.ones_like(loss)
    for bad, match in ((mask[:, :0], "mask must be"), (mask.long(), "mask must be"),
                       (mask[:1], "mask must be")):
        with pytest.raises(RuntimeError, match=match):
            ops.ocr_loss_map_backward(g, logits, tags, prior, loss, bad, 2.0, 0.2, 0, 0)
    # the backward of the op with its own mask is the autograd one
    want = ops.ocr_loss_map_backward(g, logits, tags, prior, loss, mask, 2.0, 0.2, 0, 0)
    z = logits.clone().requires_grad_(True)
    ops.ocr_loss_map(z, tags, prior, 2.0, 0.2, 0, 0)[0].backward(g)
    assert torch.equal(z.grad, want)


def test_torch_compile(ops):
    from ocr_kernels.ocr.csrc_ops import ocr_loss_map_csrc

    logits, tags, prior = make_ocr_inputs(2, 6, (5, 5))

    def f(z):
        return ocr_loss_map_csrc(z, tags, prior, OCROptions(2.0, 0.2, "ada", "all")).mean()

    compiled = torch.compile(f, fullgraph=True)
    z1 = logits.clone().requires_grad_(True)
    z2 = logits.clone().requires_grad_(True)
    f(z1).backward()
    out = compiled(z2)
    out.backward()
    assert torch.allclose(out, f(z1.detach()), rtol=1e-6)
    assert torch.allclose(z2.grad, z1.grad, rtol=1e-6, atol=1e-9)


def test_bad_arguments_raise_before_the_kernel(ops):
    logits, tags, prior = make_ocr_inputs(2, 5, (3, 3))
    with pytest.raises(ValueError, match="tags must have shape"):
        ocr_loss(logits, tags[:, :3], prior, backend="cpu")
    with pytest.raises(ValueError, match="prior must have shape"):
        ocr_loss(logits, tags, prior[:4, :4], backend="cpu")
    with pytest.raises(TypeError, match="logits must be a floating-point"):
        ocr_loss(logits.long(), tags, prior, backend="cpu")
    # the op itself checks shapes too, for callers that bypass ocr_loss
    with pytest.raises(RuntimeError, match="tags must be"):
        ops.ocr_loss_map(logits, tags[:, :3], prior, 2.0, 0.2, 0, 0)


def test_auto_picks_cpu_for_cpu_tensors(ops):
    from ocr_kernels._dispatch import resolve_backend

    x = torch.zeros(1, 3, 2)
    assert resolve_backend("auto", x, op="ocr_loss", implemented=("reference", "cpu")) == "cpu"


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("cu", CU_FILES, ids=lambda p: os.path.relpath(p, ROOT / "csrc"))
def test_nvcc_compiles(cu, arch, tmp_path):
    # The kernel translation units include only CUDA headers and ours, so they compile without a
    # GPU and without a CUDA build of torch (docs/kernel-notes.md).
    cmd = [NVCC, "-c", "-std=c++17", "-O1", f"-arch={arch}", "-I", str(ROOT / "csrc"), cu,
           "-o", str(tmp_path / "k.o")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stdout}\n{res.stderr}"


def test_every_cu_file_is_compile_checked():
    assert CU_FILES, "no .cu file found under csrc/"
    assert csrc_dir() is not None


_FALLBACK_SCRIPT = r"""
import torch, ocr_kernels
from ocr_kernels import ocr_loss, BackendUnavailableError
st = ocr_kernels.available_backends()["cpu"]
assert not st.available, st
print("REASON:", st.reason)
z = torch.randn(2, 4, 3, 3, requires_grad=True)
tags = torch.tensor([[1, 0, 0], [0, 1, 1]])
loss = ocr_loss(z, tags, group_split="max")  # auto -> reference
loss.backward()
assert torch.isfinite(z.grad).all()
try:
    ocr_loss(z, tags, group_split="max", backend="cpu")
except BackendUnavailableError as exc:
    print("RAISED:", exc)
else:
    raise SystemExit("backend='cpu' did not raise")
"""


def test_imports_and_falls_back_without_a_toolchain(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path), CXX=str(tmp_path / "no-such-compiler"),
               OCR_KERNELS_BUILD_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", _FALLBACK_SCRIPT], capture_output=True, text=True,
                         env=env, cwd=str(tmp_path), timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "REASON: no C++ compiler was found" in res.stdout
    assert "RAISED: backend='cpu' cannot run ocr_loss" in res.stdout and "compiler" in res.stdout


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_every_cpu_isa_variant_passes_the_shared_matrices(isa):
    """The CPU kernels are compiled for several instruction sets and pick the best at run time, so
    on one machine the suite only exercises one of them: run the shared OCR and seg matrices again
    in a process capped at each lower variant (OCR_KERNELS_CPU_ISA)."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, OCR_KERNELS_CPU_ISA=isa, OCR_HYPOTHESIS_EXAMPLES="50")
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/ocr/test_backends.py", "tests/seg/test_backends.py", "-k", "cpu"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail, tail
