"""C++/CUDA-specific tests of the segmentation objective's fused maps (the shared matrix is
tests/seg/test_backends.py, which runs on "cpu" too): the vectorised CPU tiles against the
per-pixel code path the CUDA kernel runs, the CUDA fused-upsampling kernels' code run on the CPU, relative precision of tiny cross-entropies and of
gradients at saturated logits, layouts, a bad target, and the torch.library registration.
"""
import pytest
import torch
import torch.nn.functional as F

from helpers import (GROUP_SPLITS, RESIZE_CASES, assert_close_rel, comparable_pixels, csrc_ops,
                     make_ocr_inputs, reference64, resize_reach, resize_tie_tol)
from ocr_kernels._options import GROUP_SPLITS as GROUP_CODES, PIXEL_MODES as PIXEL_CODES, OCROptions
from ocr_kernels.ocr.reference import ic_mask_from_tags

# d ce/dz_t = softmax_t - 1 cancels when softmax_t is near 1: an fp32 softmax good to a few ulp
# leaves a relative error of a few 1e-7 / (1 - softmax_t) in the difference.
CE_GRAD_RTOL = 1e-4


@pytest.fixture(scope="module")
def ops():
    from ocr_kernels.seg.csrc_ops import ops as load_ops

    return csrc_ops(load_ops)


def _seg_csrc_and_pixelwise(ops, logits, target, tags, prior, split, g_ce, g_ocr, ignore_index):
    """(ce_map, grad) of the cpu backend (vectorised tiles) and of ocr_thread.h (the CUDA code)."""
    from ocr_kernels.seg.csrc_ops import seg_ocr_loss_maps_csrc

    z = logits.detach().clone().requires_grad_(True)
    ce, ocr = seg_ocr_loss_maps_csrc(z, target, tags, prior,
                                     OCROptions(2.0, 0.2, split, "oc", ignore_index))
    (ce * g_ce + ocr * g_ocr).sum().backward()
    ce_p, _, grad_p = ops._pixelwise_seg_ocr(logits, target, tags, prior, g_ce, g_ocr, 2.0, 0.2,
                                             GROUP_CODES[split], PIXEL_CODES["oc"], ignore_index)
    return {"cpu": (ce.detach(), z.grad), "pixelwise": (ce_p, grad_p)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_seg_tiny_cross_entropy_is_relatively_accurate(ops, dtype):
    # Confident pixels, logits near ±30: CE = log1p(e^{z_o − z_t}) down to ~1e-7 (fp32) or ~1e-13
    # (fp64). Rounding logsumexp to one absolute number ~30 costs 30·2^-24 ≈ 2e-6 (2e-15 in fp64),
    # the whole loss; the kernels keep (max, log Σ) apart (the case found: [30.0, 18.2] gave
    # 7.63e-6 for 7.50e-6).
    n = 48
    g = torch.Generator().manual_seed(3)
    top = 28 + 4 * torch.rand(n, generator=g, dtype=torch.float64)
    gap = (9 + 6 * torch.rand(n, generator=g, dtype=torch.float64)) * (1 if dtype == torch.float32 else 2)
    z = torch.stack([top, top - gap]).to(dtype)
    z[:, 0] = torch.tensor([30.0, 18.2], dtype=dtype)
    z[:, 1::2] = -z[:, 1::2].flip(0)  # around −30 as well
    z[:, 2::3] = z[:, 2::3].flip(0)  # the target is class 1 there
    logits = torch.stack([z, z])  # [2, 2, n]: tags differ (an OC class in one image, none in the other)
    tags = torch.tensor([[1], [0]])
    target = logits.argmax(1)
    zero = torch.zeros(target.shape, dtype=dtype)
    z64 = logits.double()
    if dtype == torch.float32:
        want = F.cross_entropy(z64, target, reduction="none")
    else:  # the float64 reference rounds ~2e-15 itself: C1 = 2 has the closed form
        want = torch.log1p(torch.exp(z64.min(1).values - z64.max(1).values))
    assert want.min() > 1e-14 and want.max() < 2e-4
    for name, (ce, _) in _seg_csrc_and_pixelwise(ops, logits, target, tags, None, "max", zero, zero,
                                                 255).items():
        rel = ((ce.double() - want).abs() / want.clamp_min(1e-30)).max().item()
        assert rel <= 1e-5, f"{name}: relative error of ce_map {rel:.3g}"


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("group_split", GROUP_SPLITS)
def test_seg_gradient_at_saturated_logits(ops, dtype, atol, group_split):
    # Logits of ±80: softmax_t − 1 and the OCR softmaxes must not go through e^{z − lse} with lse
    # rounded to ~80·2^-24 (that left 1.4e-6 where ~0 was due); the fused CE+OCR gradient with a
    # random upstream gradient, within atol·max|grad| per element of the float64 reference.
    from ocr_kernels.seg.reference import seg_ocr_loss_maps_reference

    g = torch.Generator().manual_seed(4)
    B, C1, H, W = 2, 6, 6, 7
    logits = ((torch.rand(B, C1, H, W, generator=g, dtype=torch.float64) * 2 - 1) * 80).to(dtype)
    logits[0, :, 0, :3] = torch.tensor([80.0, 79.0, 65.0, -80.0, 70.0, 10.0], dtype=dtype)[:, None]
    # a runner-up 0.3 .. 9 below 80: log Σ is not negligible next to 80, so lse = 80 + log Σ rounds
    logits[0, :, 1] = -80.0
    logits[0, 0, 1] = 80.0
    logits[0, 1, 1] = 80.0 - torch.tensor([0.3, 0.7, 1.3, 2.1, 3.4, 5.5, 8.9], dtype=dtype)
    tags = (torch.rand(B, C1 - 1, generator=g) < 0.4).to(torch.int64)
    tags[0, 1] = 1
    tags[1, 0] = 0
    prior = make_ocr_inputs(1, C1, (1,), generator=g)[2].to(dtype) if group_split == "ada" else None
    target = logits.argmax(1)  # mostly confident and right: d ce/dz_t = softmax_t − 1 ≈ −1e-30
    target[1, 0] = torch.randint(0, C1, (W,), generator=g)
    target[1, 1, :2] = 255
    g_ce = torch.randn(B, H, W, generator=g, dtype=torch.float64).to(dtype)
    g_ocr = torch.randn(B, H, W, generator=g, dtype=torch.float64).to(dtype)
    g_ce[0, 1] = 4.0
    z64 = logits.detach().double().requires_grad_(True)
    ce, ocr = seg_ocr_loss_maps_reference(z64, target, tags, None if prior is None else prior.double(),
                                          OCROptions(2.0, 0.2, group_split, "oc", 255))
    (want,) = torch.autograd.grad((ce * g_ce.double() + ocr * g_ocr.double()).sum(), z64)
    keep = comparable_pixels(logits, tags, prior, {"group_split": group_split}).unsqueeze(1).expand_as(want)
    bound = atol * want.abs().max().item()
    for name, (_, grad) in _seg_csrc_and_pixelwise(ops, logits, target, tags, prior, group_split,
                                                   g_ce, g_ocr, 255).items():
        assert grad.dtype == dtype
        err = torch.where(keep, grad.double() - want, torch.zeros_like(want)).abs().max().item()
        assert err <= bound, f"{name}: gradient error {err:.3g} > {bound:.3g}"


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_seg_fused_maps(ops, layout):
    from ocr_kernels.seg.csrc_ops import seg_ocr_loss_maps_csrc

    logits, tags, prior = make_ocr_inputs(2, 6, (5, 7), tag_p=0.4)
    if layout == "channels_last":
        logits = logits.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 6, (2, 5, 7))
    target[1, 2] = -100
    g_ce, g_ocr = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    for split in GROUP_SPLITS:
        z = logits.detach().clone().requires_grad_(True)
        ce, ocr = seg_ocr_loss_maps_csrc(z, target, tags, prior if split == "ada" else None,
                                         OCROptions(2.0,
                                         0.2, split, "oc", -100))
        assert ce.dtype == ocr.dtype == torch.float32 and ce.shape == ocr.shape == (2, 5, 7)
        (ce * g_ce + ocr * g_ocr).sum().backward()
        z64 = logits.detach().double().requires_grad_(True)
        want_ce = F.cross_entropy(z64, target, ignore_index=-100, reduction="none")
        from ocr_kernels.ocr.reference import ocr_loss_map_reference

        want_ocr = ocr_loss_map_reference(z64, tags, prior.double() if split == "ada" else None,
                                          OCROptions(2.0, 0.2, split, "oc"))
        (want_grad,) = torch.autograd.grad((want_ce * g_ce.double() + want_ocr * g_ocr.double()).sum(), z64,
                                           retain_graph=True)
        keep = comparable_pixels(logits, tags, prior, {"group_split": split})
        assert (ce[1, 2] == 0).all()
        assert_close_rel(ce, want_ce, 1e-5, "ce")
        assert_close_rel(ocr, want_ocr, 1e-5, "ocr", keep)
        assert_close_rel(z.grad, want_grad, CE_GRAD_RTOL, "grad", keep.unsqueeze(1).expand_as(want_grad))
        # only the CE term: the OCR map's gradient may be absent (materialised as zeros)
        z2 = logits.detach().clone().requires_grad_(True)
        ce2, _ = seg_ocr_loss_maps_csrc(z2, target, tags, prior,
                                        OCROptions(2.0, 0.2, "ada", "oc", -100))
        ce2.sum().backward()
        (want_ce_grad,) = torch.autograd.grad(want_ce.sum(), z64)
        assert_close_rel(z2.grad, want_ce_grad, CE_GRAD_RTOL, "ce-only grad")


def test_seg_bad_target_does_not_read_out_of_bounds(ops):
    from ocr_kernels.seg.csrc_ops import seg_ocr_loss_maps_csrc

    logits, tags, prior = make_ocr_inputs(1, 4, (3, 3))
    target = torch.full((1, 3, 3), 10**9)
    target[0, 0, 0] = -(10**9)
    ce, ocr = seg_ocr_loss_maps_csrc(logits, target, tags, prior,
                                     OCROptions(2.0, 0.2, "ada", "oc", 255))
    want_ocr, _ = reference64(logits, tags, prior)
    assert_close_rel(ocr, want_ocr, 1e-5, "ocr", comparable_pixels(logits, tags, prior, {"group_split": "ada"}))
    assert ce.shape == (1, 3, 3)


def test_opcheck(ops):
    logits, tags, prior = make_ocr_inputs(2, 5, (3, 4))
    z = logits.requires_grad_(True)
    target = torch.randint(0, 5, (2, 3, 4))
    loss = torch.rand(2, 3, 4)
    cases = [
        (ops.seg_ocr_loss_maps.default, (z, target, tags, prior, 2.0, 0.2, 0, 0, 255)),
        (ops.seg_ocr_loss_maps_backward.default, (torch.ones_like(loss), torch.ones_like(loss), logits.detach(), target, tags, prior, loss, 2.0, 0.2, 0, 0, 255)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


# ---- fused bilinear upsampling (csrc/cpu/ocr_resize.cpp) ---------------------------------------

def _resized_fwd_bwd(logits, target, tags, prior, align_corners, g_ce, g_ocr):
    from ocr_kernels.seg.csrc_ops import seg_ocr_loss_maps_resized_csrc

    z = logits.detach().clone().requires_grad_(True)
    ce, ocr = seg_ocr_loss_maps_resized_csrc(z, target, tags, prior,
                                             OCROptions(2.0, 0.2, "ada", "all", 255), align_corners)
    torch.autograd.backward((ce, ocr), (g_ce, g_ocr))
    return ce.detach(), ocr.detach(), z.grad


@pytest.mark.parametrize("align_corners", [False, True])
def test_resized_backward_is_bitwise_deterministic_across_thread_counts(ops, align_corners):
    # Large enough that the kernels go parallel (several chunks per image); the chunking is set by
    # the shape, so the gradient must be bitwise the same for any thread count and scheduling.
    logits, tags, prior = make_ocr_inputs(3, 21, (20, 23))
    target = torch.randint(0, 21, (3, 157, 180))
    g_ce, g_ocr = torch.randn(target.shape), torch.randn(target.shape)
    threads = torch.get_num_threads()
    try:
        torch.use_deterministic_algorithms(True)
        results = []
        for n in (1, 2, 3, 1, 2):
            torch.set_num_threads(n)
            results.append(_resized_fwd_bwd(logits, target, tags, prior, align_corners, g_ce,
                                            g_ocr))
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)
    for maps_and_grad in results[1:]:
        for got, first in zip(maps_and_grad, results[0]):
            assert torch.equal(got, first)
    assert results[0][2].abs().sum() > 0


def test_resized_allocates_no_full_resolution_tensor(ops):
    # Peak memory of one forward+backward above its inputs, in fresh subprocesses (peak resident
    # set; see ocr_kernels/bench/upsample.py). The unfused composition must show at least its two
    # full-resolution tensors (the upsampled logits and their gradient): the measurement sees them.
    # The fused path must stay below one of them (its own maps are [B, H, W], 1/C1 of that).
    from ocr_kernels.bench.upsample import peak_extra_bytes

    shape, size = (2, 21, 41, 41), (321, 321)
    full = 2 * 21 * 321 * 321 * 4
    unfused = peak_extra_bytes("seg_ocr_loss", shape, size, fused=False)
    fused = peak_extra_bytes("seg_ocr_loss", shape, size, fused=True)
    assert unfused >= 1.9 * full, (unfused, full)
    assert fused < 0.5 * full, (fused, full)
    assert fused <= 0.15 * unfused, (fused, unfused)


def test_resized_opcheck_and_compile(ops):
    from ocr_kernels import ocr_loss, seg_ocr_loss
    from ocr_kernels.ocr.csrc_ops import ops as ocr_ops

    ocr_ops()  # the OCR op's fake/autograd registrations

    logits, tags, prior = make_ocr_inputs(2, 5, (3, 4))
    z = logits.requires_grad_(True)
    target = torch.randint(0, 5, (2, 7, 9))
    _, loss = ops.seg_ocr_loss_maps_resized(logits.detach(), target, tags, prior, False, 2.0, 0.2, 0, 0, 255)
    g = torch.ones_like(loss)
    cases = [
        (ops.seg_ocr_loss_maps_resized.default, (z, target, tags, prior, True, 2.0, 0.2, 0, 0, 255)),
        (ops.seg_ocr_loss_maps_resized_backward.default,
         (g, g, logits.detach(), target, tags, prior, loss, False, 2.0, 0.2, 0, 0, 255)),
        (ops.ocr_loss_map_resized.default, (z, tags, None, [7, 9], False, 2.0, 0.2, 1, 2)),
        (ops.ocr_loss_map_resized_backward.default,
         (g, logits.detach(), tags, prior, loss, True, 2.0, 0.2, 0, 0)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)
    # fullgraph: the fused op is one node, no graph break
    f = torch.compile(lambda x: seg_ocr_loss(x, target, tags, prior, upsample=True, backend="cpu",
                                             validate=False)
                      + ocr_loss(x, tags, prior, size=(5, 6), backend="cpu"), fullgraph=True)
    want = seg_ocr_loss(logits, target, tags, prior, upsample=True, backend="cpu") \
        + ocr_loss(logits, tags, prior, size=(5, 6), backend="cpu")
    assert torch.allclose(f(logits), want, rtol=1e-6)


# ---- the CUDA fused-upsampling kernels' code (csrc/ocr_resize_thread.h, ocr_resize_pixel.h) on the CPU
# _pixelwise_seg_ocr_resized runs the CUDA kernels' code on the CPU: on the fast path
# (csrc/ocr_resize_thread.h) their block functions with one CPU thread per CUDA thread and a real
# barrier, then the gather; on the generic path (csrc/ocr_resize_pixel.h, shapes whose block would
# need more than 96 KB of shared memory) one thread at a time. So CI checks the GPU's code against
# the float64 composition F.interpolate + reference.

def check_cuda_resized_code(ops, logits, target, tags, prior, size, align_corners, rtol=1e-5,
                            grad_ce=None, grad_ocr=None, ignore_index=255, **opts):
    from helpers import upsampled64
    from helpers import fp32_map_atol, resized_grad_atol, resized_logit_err
    from seg.seg_helpers import reference_maps64

    split, pix = opts.get("group_split", "ada"), opts.get("pixels", "oc")
    acc = torch.float64 if logits.dtype == torch.float64 else torch.float32
    B = logits.shape[0]
    g_ocr = torch.ones(B, *size, dtype=acc) if grad_ocr is None else grad_ocr.to(acc)
    g_ce = None
    if target is not None:
        g_ce = torch.ones(B, *size, dtype=acc) if grad_ce is None else grad_ce.to(acc)
    ce, oc, grad = ops._pixelwise_seg_ocr_resized(
        logits, target, tags, prior if split == "ada" else None, g_ce, g_ocr, list(size),
        align_corners, float(opts.get("margin", 2.0)), float(opts.get("threshold", 0.2)),
        GROUP_CODES[split], PIXEL_CODES[pix], ignore_index)
    assert oc.dtype == acc and grad.dtype == logits.dtype and grad.shape == logits.shape
    assert grad.stride() == logits.stride()  # written in the logits' layout
    up = upsampled64(logits, size, align_corners)
    keep = comparable_pixels(up, tags, prior, opts,
                             resize_tie_tol(up, logits.shape[-2:], logits.dtype))
    # the grid is computed in the math dtype (docs/semantics.md §1c): the interpolated logits are
    # off by up to resized_logit_err, and the maps' gradient has an L1 norm of at most 2
    map_atol = fp32_map_atol(up) + 2 * resized_logit_err(logits)
    if target is None:
        want_oc, want_grad = reference64(logits, tags, prior, grad_map=g_ocr, size=size,
                                         align_corners=align_corners, **opts)
        g_ce = torch.zeros_like(g_ocr)
    else:
        want_ce, want_oc, want_grad = reference_maps64(
            logits, target, tags, prior, g_ce, g_ocr, ignore_index, upsample=True,
            align_corners=align_corners, **opts)
        assert_close_rel(ce, want_ce, rtol, "ce_map", atol=map_atol)
        assert torch.all(ce[target == ignore_index] == 0)
    assert_close_rel(oc, want_oc, rtol, "ocr_map", keep, atol=map_atol)
    # a pixel left out (a near-tie) feeds the gradient of the low-resolution pixels its taps
    # read: the gradient is compared everywhere else
    fed = resize_reach(~keep, logits.shape[-2:], align_corners)
    assert_close_rel(grad, want_grad, rtol, "grad", (~fed).unsqueeze(1).expand_as(grad),
                     atol=resized_grad_atol(up, logits.shape[-2:], g_ce, g_ocr))
    return ce, oc, grad


@pytest.mark.parametrize("with_ce", [True, False])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("hw, size", RESIZE_CASES)
def test_cuda_resized_code_scales(ops, hw, size, align_corners, with_ce):
    # scale factors 2, 4, 8 (cells of 64 pixels: two warp batches), 7.83, odd sizes, downsampling
    # (empty cells), the identity and single-pixel edges; 37 classes: two per lane for some lanes
    logits, tags, prior = make_ocr_inputs(2, 37, hw, tag_p=0.2)
    target = torch.randint(0, 37, (2, *size))
    target[0, 0] = 255
    g = torch.Generator().manual_seed(1)
    check_cuda_resized_code(ops, logits, target if with_ce else None, tags, prior, size,
                            align_corners, grad_ce=torch.randn(2, *size, generator=g),
                            grad_ocr=torch.randn(2, *size, generator=g), pixels="all")


def test_cuda_resized_code_target_case(ops):
    # (41, 41) -> (321, 321) as in training (scale 7.83, cells of 49-64 pixels), small batch
    logits, tags, prior = make_ocr_inputs(1, 21, (41, 41), tag_p=0.2)
    target = torch.randint(0, 21, (1, 321, 321))
    check_cuda_resized_code(ops, logits, target, tags, prior, (321, 321), False, group_split="all",
                            pixels="all")


def test_cuda_resized_code_forward_max_ties(ops):
    # Exact ties between the IC and OC maxima: the prediction is the lower class (as argmax),
    # which the forward resolves only for those pixels (resize_oc_tie_args: its OC runs keep no
    # argmax). Per image, two or three class planes are the same and above the others, so every
    # output pixel ties (interpolating equal values gives equal values, in fp32 and in fp64):
    # image 0: background (IC) = class 3 (OC): IC predicted, no loss with pixels="oc";
    # image 1: class 1 (OC) = class 2 (IC): OC predicted, a loss;
    # image 2: class 1 (OC) = class 3 (IC) = class 4 (OC): the first OC class, 1, wins: a loss.
    C1, (h, w), size = 6, (5, 41), (7, 321)
    logits = torch.randn(3, C1, h, w, generator=torch.Generator().manual_seed(5)) - 8.0
    tags = torch.tensor([[0, 0, 0, 0, 1], [0, 1, 0, 0, 1], [0, 0, 1, 0, 0]])  # classes 1..5
    top = torch.randn(h, w, generator=torch.Generator().manual_seed(6))
    for b, tied in enumerate([(0, 3), (1, 2), (1, 3, 4)]):
        for k in tied:
            logits[b, k] = top
    prior = torch.full((C1, C1), 0.5)
    loss = ops._pixelwise_seg_ocr_resized(
        logits, None, tags, prior, None, torch.ones(3, *size), list(size), False, 2.0, 0.2,
        GROUP_CODES["ada"], PIXEL_CODES["oc"], 255)[1]
    want, _ = reference64(logits, tags, prior, size=size, align_corners=False, group_split="ada",
                          pixels="oc")
    assert torch.all(loss[0] == 0) and torch.all(loss[1:] > 0)
    assert_close_rel(loss, want, 1e-5, "ocr_map")


@pytest.mark.parametrize("group_split", ["ada", "max"])
def test_cuda_resized_code_ic_targets(ops, group_split):
    # Targets drawn from each image's IC classes (pseudo-labels keep to the tags): a row with
    # none among the OC classes runs the OC class loop without the target compare
    # (oc_stores_ic_targets). Rows 2 and 6 get one pixel whose target is an OC class (first and
    # last column), row 4 one ignored pixel: those rows alone compare, in the same blocks.
    # Inputs pinned to a draw whose pixels are all comparable (no near-tie), so that
    # check_cuda_resized_code compares the gradient; that is asserted.
    H, W = 9, 321
    logits, tags, prior = make_ocr_inputs(2, 13, (5, 41), tag_p=0.3,
                                          generator=torch.Generator().manual_seed(12))
    from helpers import upsampled64

    up = upsampled64(logits, (H, W), False)
    assert comparable_pixels(up, tags, prior, {"group_split": group_split, "pixels": "all"},
                             resize_tie_tol(up, (5, 41), logits.dtype)).all()
    ic = ic_mask_from_tags(tags)
    g = torch.Generator().manual_seed(13)
    target = torch.multinomial(ic.double(), H * W, replacement=True, generator=g).view(2, H, W)
    oc_class = [int((~ic[b]).nonzero()[0]) for b in range(2)]  # each image has an OC class
    target[0, 2, 0] = oc_class[0]
    target[1, 6, W - 1] = oc_class[1]
    target[0, 4, 100] = 255
    ce, _, _ = check_cuda_resized_code(ops, logits, target, tags, prior, (H, W), False,
                                       grad_ce=torch.randn(2, H, W, generator=g),
                                       grad_ocr=torch.randn(2, H, W, generator=g),
                                       group_split=group_split, pixels="all")
    assert ce[0, 2, 0] > 0 and ce[1, 6, W - 1] > 0 and ce[0, 4, 100] == 0


@pytest.mark.parametrize("with_ce", [True, False])
def test_cuda_resized_code_generic_path(ops, with_ce):
    # 260 classes x 40 source columns: the fast path's shared memory (R, top and bottom rows:
    # 3 x 260 x 40 fp32 = 125 KB) exceeds kResizeFastSmem (96 KB), so the kernels' generic path runs
    logits, tags, prior = make_ocr_inputs(1, 260, (3, 40), tag_p=0.05)
    target = torch.randint(0, 260, (1, 5, 83))
    g = torch.Generator().manual_seed(3)
    check_cuda_resized_code(ops, logits, target if with_ce else None, tags, prior, (5, 83), False,
                            grad_ce=torch.randn(1, 5, 83, generator=g),
                            grad_ocr=torch.randn(1, 5, 83, generator=g), pixels="all")


@pytest.mark.parametrize("with_ce", [False, True])
def test_cuda_resized_code_compacted_rows(ops, with_ce):
    # 41 -> 321 columns (82 slots, a block of 96 threads): rows whose pixels with a gradient sit
    # in slots filling fewer warps than the block's take resize_backward_compact (the active slots
    # by rank, the ranks' combine), the others the slots' path, a row with none is skipped. Each
    # row of the gradient map pins one case (active slots of 82): empty, one pixel, the two edges,
    # clusters (9), the right edge's run (19), every other group of 4 columns (72: three warps,
    # the slots' path), the first 170 columns (two busy warps), every pixel, two small runs.
    H, W = 9, 321
    logits, tags, prior = make_ocr_inputs(1, 9, (5, 41), tag_p=0.3)
    g = torch.Generator().manual_seed(6)
    keep = torch.zeros(1, H, W, dtype=torch.bool)
    keep[0, 1, 150] = True
    keep[0, 2, [0, W - 1]] = True
    keep[0, 3, 40:70] = True
    keep[0, 3, 200:203] = True
    keep[0, 4, 250:W] = True
    x = torch.arange(W)
    slot4 = (x // 4) % 2 == 0  # about every other slot (slots start at each cell's column)
    keep[0, 5] = slot4
    keep[0, 6, :170] = True
    keep[0, 7] = True
    keep[0, 8, 5:9] = True
    keep[0, 8, 311:316] = True
    g_ocr = torch.randn(1, H, W, generator=g) * keep
    target = g_ce = None
    if with_ce:
        # the cross-entropy's gradient reaches every pixel whose target is not ignored; the seg
        # kernels do not compact (ocr_resize_thread.h): every row takes the slots' path
        target = torch.randint(0, 9, (1, H, W), generator=g)
        target[~keep] = 255
        g_ce = torch.randn(1, H, W, generator=g)
    _, _, grad = check_cuda_resized_code(ops, logits, target, tags, prior, (H, W), False,
                                         grad_ce=g_ce, grad_ocr=g_ocr, pixels="all")
    # no gradient at all: zeros, and the gradient is linear in the maps' upstream values
    zero = torch.zeros(1, H, W)
    _, _, g0 = ops._pixelwise_seg_ocr_resized(
        logits, target, tags, prior, zero if with_ce else None, zero, [H, W], False, 2.0, 0.2,
        GROUP_CODES["ada"], PIXEL_CODES["all"], 255)
    assert torch.all(g0 == 0)


def test_cuda_resized_code_compacted_span_lanes(ops):
    # Compacted rows whose active slots reach all 41 source columns (the two edges; 5:9 and
    # 311:316) in a block of 96 threads: resize_span_lane lays the combine's (column, class) items
    # out per = 96 // 41 = 2 classes at once, and threads 82 .. 95 (past per x 41) must hold none.
    # r16 had them take class 2 of each chunk for columns 0 .. 13, which threads 0 .. 13 take too:
    # that gradient added twice at the left edge (CI seed 2422665671: 8 of 1845 elements off).
    # Inputs pinned to that seed's, whose classes at those chunk positions have a large gradient
    # at the left edge (a random draw often has a negligible one there).
    H, W = 9, 321
    logits, tags, prior = make_ocr_inputs(1, 9, (5, 41), tag_p=0.3,
                                          generator=torch.Generator().manual_seed(2422665671))
    keep = torch.zeros(1, H, W, dtype=torch.bool)
    keep[0, 2, [0, W - 1]] = True
    keep[0, 8, 5:9] = True
    keep[0, 8, 311:316] = True
    g_ocr = torch.randn(1, H, W, generator=torch.Generator().manual_seed(6)) * keep
    check_cuda_resized_code(ops, logits, None, tags, prior, (H, W), False, grad_ocr=g_ocr,
                            pixels="all")
    # the same rows, each alone: the gradient is each row's, whatever the other rows do
    for y in (2, 8):
        one = torch.zeros_like(g_ocr)
        one[0, y] = g_ocr[0, y]
        check_cuda_resized_code(ops, logits, None, tags, prior, (H, W), False, grad_ocr=one,
                                pixels="all")


def test_cuda_resized_code_slot_groups(ops):
    # 150 source columns at scale 8: 300 slots (two a cell), more than a block's 256 threads, so
    # each output row is walked in two slot groups whose partial sums meet in the cells' rows
    logits, tags, prior = make_ocr_inputs(1, 5, (2, 150), tag_p=0.4)
    target = torch.randint(0, 5, (1, 7, 1200))
    g = torch.Generator().manual_seed(4)
    check_cuda_resized_code(ops, logits, target, tags, prior, (7, 1200), True,
                            grad_ce=torch.randn(1, 7, 1200, generator=g),
                            grad_ocr=torch.randn(1, 7, 1200, generator=g), pixels="all")


@pytest.mark.parametrize("group_split, pixels", [(s, p) for s in GROUP_SPLITS
                                                 for p in ("oc", "ic", "all")])
def test_cuda_resized_code_every_option(ops, group_split, pixels):
    logits, tags, prior = make_ocr_inputs(3, 7, (4, 5), tag_p=0.4)
    tags[0] = 0
    tags[1] = 1
    target = torch.randint(0, 7, (3, 13, 9))
    target[2, :3] = 255
    g = torch.Generator().manual_seed(2)
    check_cuda_resized_code(ops, logits, target, tags, prior, (13, 9), False,
                            grad_ce=torch.randn(3, 13, 9, generator=g),
                            grad_ocr=torch.randn(3, 13, 9, generator=g),
                            group_split=group_split, pixels=pixels)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float16, 2e-3),
                                         (torch.bfloat16, 1.6e-2), (torch.float64, 1e-10)])
def test_cuda_resized_code_dtypes_and_layouts(ops, dtype, rtol, memory_format):
    logits, tags, prior = make_ocr_inputs(2, 9, (5, 6), dtype=dtype)
    logits = logits.contiguous(memory_format=memory_format)
    target = torch.randint(0, 9, (2, 39, 47))
    ac = memory_format is torch.channels_last
    check_cuda_resized_code(ops, logits, target, tags, prior, (39, 47), ac, rtol=rtol, pixels="all")
    check_cuda_resized_code(ops, logits, None, tags, prior, (39, 47), not ac, rtol=rtol,
                            pixels="all")


def test_cuda_resized_code_gradcheck_float64(ops):
    # the hook's gradient is the Jacobian-vector product of its own maps: check it against finite
    # differences of the maps, for both align_corners
    logits, tags, prior = make_ocr_inputs(2, 4, (3, 4), dtype=torch.float64)
    target = torch.randint(0, 4, (2, 7, 9))
    g = torch.Generator().manual_seed(5)
    g_ce, g_ocr = torch.randn(2, 7, 9, generator=g, dtype=torch.float64), \
        torch.randn(2, 7, 9, generator=g, dtype=torch.float64)
    for ac in (False, True):
        def f(z):
            ce, oc, _ = ops._pixelwise_seg_ocr_resized(z, target, tags, prior, g_ce, g_ocr, [7, 9],
                                                       ac, 2.0, 0.2, 0, 2, 255)
            return (ce * g_ce).sum() + (oc * g_ocr).sum()
        _, _, grad = ops._pixelwise_seg_ocr_resized(logits, target, tags, prior, g_ce, g_ocr,
                                                    [7, 9], ac, 2.0, 0.2, 0, 2, 255)
        d = torch.randn(logits.shape, generator=g, dtype=torch.float64)
        eps = 1e-6
        fd = (f(logits + eps * d) - f(logits - eps * d)) / (2 * eps)
        assert abs(float(fd) - float((grad * d).sum())) <= 1e-6 * (1 + abs(float(fd)))


def test_seg_cuda_backward_compaction(ops):
    # ocr_thread.h's compaction with the CE term: a pixel has a gradient where its target is not
    # ignored or its OCR loss and upstream gradient are not 0. Targets are ignored and the OCR
    # gradient is 0 except at pinned pixels per 128-pixel warp (0, 1, 33, 64, 65, 128; the last
    # warp of 8·128 + 123 pixels partial), so warps compact and warps run 4 pixels a lane.
    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    spatial = (31, 37)
    B, C1 = 2, 7
    logits, tags, prior = make_ocr_inputs(B, C1, spatial, tag_p=0.3)
    tags[:, 0] = 0  # an OC class in each image
    n = 31 * 37
    target = torch.full((B, n), 255, dtype=torch.int64)
    g_ocr = torch.zeros(B, n)
    for b in range(B):
        for w, k in enumerate((0, 1, 33, 64, 65, 128, 0, 20, 123)):
            lo, hi = 128 * w, min(128 * w + 128, n)
            idx = lo + torch.randperm(hi - lo, generator=gen)[:min(k, hi - lo)]
            half = idx[: len(idx) // 2]
            target[b, half] = torch.randint(0, C1, (len(half),), generator=gen)
            g_ocr[b, idx[len(idx) // 2:]] = 1.0
    target, g_ocr = target.view(B, *spatial), g_ocr.view(B, *spatial)
    g_ce = torch.randn(B, *spatial, generator=gen)
    ce, ocr, grad = ops._pixelwise_seg_ocr(logits, target, tags, prior, g_ce, g_ocr, 2.0, 0.2,
                                           GROUP_CODES["ada"], PIXEL_CODES["all"], 255)
    z = logits.detach().to(torch.float64).requires_grad_(True)
    want_ce = F.cross_entropy(z, target, ignore_index=255, reduction="none")
    from ocr_kernels.ocr.reference import ocr_loss_map_reference
    ref = ocr_loss_map_reference(z, tags, prior.double(), OCROptions(2.0, 0.2, "ada", "all"))
    (want_grad,) = torch.autograd.grad((want_ce * g_ce.double()).sum() + (ref * g_ocr.double()).sum(), z)
    keep = comparable_pixels(logits, tags, prior, {}).unsqueeze(1).expand_as(want_grad)
    assert_close_rel(grad, want_grad, CE_GRAD_RTOL, "grad", keep)
    none = (target == 255) & (g_ocr == 0)
    assert (grad.movedim(1, -1)[none] == 0).all()


# ---- seg_ocr_objective: maps and gradient from one read (csrc/ocr_thread.h thread_objective) ----
# _pixelwise_seg_objective runs thread_objective exactly as the CUDA objective_kernel does (its
# warps, 4 pixels a lane, the per-warp split of the OC loop on "a non-ignored OC target").

def _objective_inputs(dtype, spatial=(23, 29), weighted=True, seed=5):
    """Image 0: targets over every class (OC targets in every warp); image 1: IC targets only but
    for one pixel (its warp compares, the others take the split's IC-targets loop). Ignored pixels
    in both; N = 667 is not a multiple of a 512-pixel tile (the last tile overlaps)."""
    g = torch.Generator().manual_seed(seed)
    logits, tags, prior = make_ocr_inputs(2, 7, spatial, dtype=dtype, tag_p=0.4, generator=g)
    tags[:, 0] = 0  # an OC class in each image
    tags[:, 1] = 1
    B, C1 = logits.shape[:2]
    n = logits[0, 0].numel()
    target = torch.randint(0, C1, (B, n), generator=g)
    ic1 = torch.nonzero(ic_mask_from_tags(tags)[1]).flatten()
    target[1] = ic1[torch.randint(0, len(ic1), (n,), generator=g)]
    target[:, ::7] = 255
    target[1, n // 3] = 1  # class 1 (tag 0) is OC
    target = target.view(B, *spatial)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    w = torch.rand(B, *spatial, generator=g, dtype=torch.float64).to(acc) + 0.5 if weighted else None
    coef = torch.tensor([0.7, 1.3], dtype=acc)
    return logits, target, tags, prior, w, coef


def _objective_reference(logits, target, tags, prior, w, coef, split, pix):
    from ocr_kernels.seg.reference import seg_ocr_loss_maps_reference

    z64 = logits.detach().double().requires_grad_(True)
    ce, ocr = seg_ocr_loss_maps_reference(z64, target, tags, None if prior is None else prior.double(),
                                          OCROptions(2.0, 0.2, split, pix, 255))
    wc = 1.0 if w is None else w.double()
    (grad,) = torch.autograd.grad(float(coef[0]) * (ce * wc).sum() + float(coef[1]) * ocr.sum(), z64)
    return ce.detach(), ocr.detach(), grad


@pytest.mark.parametrize("dtype, tol, grad_tol", [(torch.float32, 1e-5, CE_GRAD_RTOL),
                                                  (torch.float64, 1e-11, 1e-9),
                                                  (torch.bfloat16, 1e-5, 1e-2)])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("spatial", [(23, 29), (5, 7)])
def test_objective_thread_code_against_reference(ops, dtype, tol, grad_tol, weighted, spatial):
    logits, target, tags, prior, w, coef = _objective_inputs(dtype, spatial, weighted)
    oc = ~ic_mask_from_tags(tags)
    is_oc_target = (target != 255) & oc.gather(1, target.clamp(0, 6).flatten(1)).view(target.shape)
    assert is_oc_target[0].any() and is_oc_target[1].sum() == 1  # both sides of the split run
    for split in GROUP_SPLITS:
        for pix in ("oc", "ic", "all"):
            p = prior if split == "ada" else None
            ce, ocr, grad = ops._pixelwise_seg_objective(logits, target, tags, p, w, coef, 2.0, 0.2,
                                                         GROUP_CODES[split], PIXEL_CODES[pix], 255)
            acc = torch.float64 if dtype == torch.float64 else torch.float32
            assert ce.dtype == ocr.dtype == acc and grad.dtype == dtype
            assert grad.shape == logits.shape and grad.stride() == logits.stride()
            want_ce, want_ocr, want_grad = _objective_reference(logits, target, tags, p, w, coef,
                                                                split, pix)
            keep = comparable_pixels(logits, tags, prior, {"group_split": split})
            assert (ce[target == 255] == 0).all()
            assert_close_rel(ce, want_ce, tol, f"{split}/{pix} ce", keep)
            assert_close_rel(ocr, want_ocr, tol, f"{split}/{pix} ocr", keep)
            assert want_ocr[keep].abs().max() > 0
            assert_close_rel(grad, want_grad, grad_tol, f"{split}/{pix} grad",
                             keep.unsqueeze(1).expand_as(want_grad))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_objective_thread_code_matches_the_maps_path(ops, dtype):
    # the same maps as the maps kernels' code (thread_forward), bitwise, and the same gradient as
    # their backward (thread_backward) given g_ce = coef0·w (0 where ignored) and g_ocr = coef1
    logits, target, tags, prior, w, coef = _objective_inputs(dtype, seed=6)
    logits[0, 3, 4, 5] = float("inf")  # a non-finite logit: NaN loss, NaN at every class
    logits[1, 0, 2, 2] = float("nan")
    for split in GROUP_SPLITS:
        for pix in ("oc", "all"):
            p = prior if split == "ada" else None
            ce, ocr, grad = ops._pixelwise_seg_objective(logits, target, tags, p, w, coef, 2.0, 0.2,
                                                         GROUP_CODES[split], PIXEL_CODES[pix], 255)
            g_ocr = torch.full_like(w, float(coef[1]))
            ce2, ocr2, grad2 = ops._pixelwise_seg_ocr(logits, target, tags, p, coef[0] * w, g_ocr,
                                                      2.0, 0.2, GROUP_CODES[split],
                                                      PIXEL_CODES[pix], 255)
            for what, a, b in (("ce", ce, ce2), ("ocr", ocr, ocr2), ("grad", grad, grad2)):
                torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=f"{split}/{pix} {what}")
            assert ocr[0, 4, 5].isnan() and ocr[1, 2, 2].isnan()
            assert grad[0, :, 4, 5].isnan().all() and grad[1, :, 2, 2].isnan().all()
            finite = torch.ones(w.shape, dtype=torch.bool)
            finite[0, 4, 5] = finite[1, 2, 2] = False
            assert torch.isfinite(grad.movedim(1, -1)[finite]).all()
            assert torch.isfinite(ocr[finite]).all()


def test_objective_ce_term_and_ignored_pixels(ops):
    # coef = (1, 0): the gradient is the weighted cross-entropy's alone, 0 at ignored pixels; a
    # weight of 0 zeroes a pixel's gradient
    logits, target, tags, prior, w, _ = _objective_inputs(torch.float32, seed=7)
    w[0, 1] = 0
    coef = torch.tensor([1.0, 0.0])
    ce, _, grad = ops._pixelwise_seg_objective(logits, target, tags, prior, w, coef, 2.0, 0.2,
                                               GROUP_CODES["ada"], PIXEL_CODES["oc"], 255)
    z = logits.detach().double().requires_grad_(True)
    want_ce = F.cross_entropy(z, target, ignore_index=255, reduction="none")
    (want,) = torch.autograd.grad((want_ce * w.double()).sum(), z)
    assert_close_rel(grad, want, CE_GRAD_RTOL, "ce grad")
    assert_close_rel(ce, want_ce, 1e-5, "ce")
    assert (grad.movedim(1, -1)[target == 255] == 0).all()
    assert (grad[0, :, 1] == 0).all()
    assert (grad.movedim(1, -1)[(target != 255) & (w != 0)] != 0).any(-1).all()


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
def test_objective_thread_code_layouts(ops, layout):
    # the logits and gradient through their own strides, ce_weight of any strides
    logits, target, tags, prior, w, coef = _objective_inputs(torch.float32, seed=8)
    if layout == "channels_last":
        z = logits.contiguous(memory_format=torch.channels_last)
        wz = w.transpose(1, 2).contiguous().transpose(1, 2)
    else:  # a class stride of 2·H·W, and a weight of pixel stride 2
        z = torch.stack([logits, logits], 2)[:, :, 0]
        wz = torch.stack([w, w], -1)[..., 0]
    assert torch.equal(z, logits) and torch.equal(wz, w) and wz.stride() != w.stride()
    ce, ocr, grad = ops._pixelwise_seg_objective(z, target, tags, prior, wz, coef, 2.0, 0.2,
                                                 GROUP_CODES["ada"], PIXEL_CODES["all"], 255)
    ce2, ocr2, grad2 = ops._pixelwise_seg_objective(logits, target, tags, prior, w, coef, 2.0, 0.2,
                                                    GROUP_CODES["ada"], PIXEL_CODES["all"], 255)
    assert torch.equal(ce, ce2) and torch.equal(ocr, ocr2) and torch.equal(grad, grad2)
    assert grad.stride() == torch.empty_like(z).stride()


def test_objective_bad_arguments(ops):
    logits, target, tags, prior, w, coef = _objective_inputs(torch.float32, spatial=(3, 4))
    run = lambda **kw: ops._pixelwise_seg_objective(  # noqa: E731
        kw.get("logits", logits), target, tags, prior, kw.get("w", w), kw.get("coef", coef), 2.0,
        0.2, 0, 0, 255)
    with pytest.raises(RuntimeError, match="coef"):
        run(coef=torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(RuntimeError, match="coef"):
        run(coef=coef.double())
    with pytest.raises(RuntimeError, match="ce_weight"):
        run(w=w[:, :2])
    with pytest.raises(RuntimeError, match="ce_weight"):
        run(w=w.double())


def test_objective_opcheck(ops):
    logits, target, tags, prior, w, coef = _objective_inputs(torch.float32, spatial=(3, 4))
    torch.library.opcheck(ops._pixelwise_seg_objective.default,
                          (logits, target, tags, prior, w, coef, 2.0, 0.2, 0, 0, 255))
    torch.library.opcheck(ops._pixelwise_seg_objective.default,
                          (logits, target, tags, None, None, coef, 2.0, 0.2, 1, 2, 255))
    torch.library.opcheck(ops.scale_grad_.default, (torch.randn(2, 3, 4), torch.tensor(2.5)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_scale_grad_cpu(ops, dtype):
    from ocr_kernels.seg.csrc_ops import scale_grad_csrc

    acc = torch.float64 if dtype == torch.float64 else torch.float32
    grad = torch.randn(3, 5, 7, dtype=torch.float64).to(dtype)
    keep = grad.clone()
    ptr = grad.data_ptr()
    assert scale_grad_csrc(grad, torch.tensor(1.0, dtype=acc)) is None
    assert grad.data_ptr() == ptr and torch.equal(grad.view(torch.uint8), keep.view(torch.uint8))
    scale_grad_csrc(grad, torch.tensor(2.5, dtype=acc))
    assert grad.data_ptr() == ptr
    assert torch.equal(grad, (keep.to(acc) * 2.5).to(dtype))
    # a channels_last gradient (dense, non-overlapping) and a g of shape [1]
    cl = torch.randn(2, 3, 4, 5, dtype=torch.float64).to(dtype).contiguous(memory_format=torch.channels_last)
    want = (cl.to(acc) * -0.5).to(dtype)
    scale_grad_csrc(cl, torch.tensor([-0.5], dtype=acc))
    assert torch.equal(cl, want)
    with pytest.raises(RuntimeError, match="g must"):
        scale_grad_csrc(grad, torch.tensor(2.0, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="g must"):
        scale_grad_csrc(grad, torch.tensor([1.0, 2.0], dtype=acc))
