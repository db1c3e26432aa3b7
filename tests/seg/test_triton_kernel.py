"""Triton-specific tests of the segmentation objective's fused maps (the shared matrix is
tests/seg/test_backends.py): (ce_map, ocr_map) against torch's cross-entropy and the float64
reference on one and on many pixel tiles and both layouts, relative precision of tiny cross-entropies and of
gradients at large logits, a bad target, and the torch.library registration.

Runs on CUDA when there is a device, otherwise on the CPU under TRITON_INTERPRET=1.
"""
import pytest
import torch
import torch.nn.functional as F

from helpers import (GROUP_SPLITS, assert_close_rel, comparable_pixels, force_small_tiles,
                     make_ocr_inputs, reference64)
from helpers import small_tiles  # noqa: F401  (a fixture)
from ocr_kernels._options import OCROptions
from ocr_kernels._dispatch import available_backends

if not available_backends()["triton"].available:
    pytest.skip(f"triton: {available_backends()['triton'].reason}", allow_module_level=True)

import ocr_kernels.seg.triton_kernel as sk  # noqa: E402
from ocr_kernels.seg.triton_kernel import seg_ocr_loss_maps_triton  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _seg_reference(logits, target, tags, prior, gce, gocr, ignore_index, **opts):
    z = logits.detach().double().requires_grad_(True)
    ce = F.cross_entropy(z, target, ignore_index=ignore_index, reduction="none")
    from ocr_kernels.ocr.reference import ocr_loss_map_reference
    ocr = ocr_loss_map_reference(z, tags, None if prior is None else prior.double(),
                                 OCROptions(opts.get("margin", 2.0), opts.get("threshold", 0.2),
                                 opts.get("group_split", "ada"), opts.get("pixels", "oc")))
    ((ce * gce.double()).sum() + (ocr * gocr.double()).sum()).backward()
    return ce.detach(), ocr.detach(), z.grad


@pytest.mark.parametrize("path", ["one_tile", "small_tiles"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("group_split", GROUP_SPLITS)
def test_seg_maps_match_cross_entropy_and_reference(request, path, layout, group_split):
    if path == "small_tiles":
        request.getfixturevalue("small_tiles")
    logits, tags, prior = make_ocr_inputs(2, 9, (5, 6), tag_p=0.4)
    if layout == "channels_last":
        logits = logits.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 9, (2, 5, 6))
    target[0, :2] = 255  # ignored
    gce, gocr = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    z = logits.detach().clone().to(DEV).requires_grad_(True)
    ce, ocr = seg_ocr_loss_maps_triton(z, target.to(DEV), tags.to(DEV), prior.to(DEV),
                                       OCROptions(2.0, 0.2,
                                       group_split, "oc", 255))
    torch.autograd.backward([ce, ocr], [gce.to(DEV), gocr.to(DEV)])
    want_ce, want_ocr, want_grad = _seg_reference(logits, target, tags, prior, gce, gocr, 255,
                                                  group_split=group_split)
    keep = comparable_pixels(logits, tags, prior, {"group_split": group_split})
    assert ce.dtype == ocr.dtype == torch.float32
    assert (ce.detach().cpu()[0, :2] == 0).all()
    assert_close_rel(ce.detach().cpu(), want_ce, 1e-5, "ce")
    assert_close_rel(ocr.detach().cpu(), want_ocr, 1e-5, "ocr", keep)
    # softmax_t − 1 cancels in fp32 as in torch's own fp32 cross_entropy, which misses 1e-5 on
    # about 1 in 50 such draws: the summed gradient is held to 1e-4.
    assert_close_rel(z.grad.cpu(), want_grad, 1e-4, "grad", keep.unsqueeze(1).expand_as(want_grad))


@pytest.mark.parametrize("programs", [1, 3])
def test_seg_maps_persistent_tile_loop(monkeypatch, programs):
    # A persistent grid: `programs` programs an image loop over its 4 tiles of 16 pixels (7 x 9
    # = 63 pixels, the last tile moved back to end at pixel 62). Both maps and the gradient are
    # bit-for-bit those of one program a tile.
    import ocr_kernels.ocr.triton_kernel as tk

    logits, tags, prior = make_ocr_inputs(2, 7, (7, 9), tag_p=0.4)
    tags[:, 0] = 0
    logits[:, 1, -1, -1] += 30.0  # an OC pixel in the last tile
    target = torch.randint(0, 7, (2, 7, 9))
    target[0, :2] = 255
    gce, gocr = torch.randn(2, 7, 9), torch.randn(2, 7, 9)
    force_small_tiles(monkeypatch, 16)

    def run():
        z = logits.detach().clone().to(DEV).requires_grad_(True)
        ce, ocr = seg_ocr_loss_maps_triton(z, target.to(DEV), tags.to(DEV), prior.to(DEV),
                                           OCROptions(2.0, 0.2, "ada", "oc", 255))
        torch.autograd.backward([ce, ocr], [gce.to(DEV), gocr.to(DEV)])
        return ce.detach().cpu(), ocr.detach().cpu(), z.grad.cpu()

    want = run()
    monkeypatch.setattr(tk, "_FORCE_PROGRAMS_PER_IMAGE", programs)
    assert tk._launch_args(logits, [(logits, 2)], True)["loop"]
    got = run()
    assert got[1][:, -1, -1].gt(0).all()
    for g, w in zip(got, want):
        assert torch.equal(g, w)


def test_seg_maps_one_term_used_and_bad_target():
    # Only the CE map reaches the loss (the OCR map's gradient is absent), and a target outside
    # [0, C] that is not ignore_index never reads out of bounds; the OCR map is unaffected.
    logits, tags, prior = make_ocr_inputs(2, 5, (3, 4))
    target = torch.randint(0, 5, (2, 3, 4))
    z = logits.detach().clone().to(DEV).requires_grad_(True)
    ce, _ = seg_ocr_loss_maps_triton(z, target.to(DEV), tags.to(DEV), prior.to(DEV),
                                     OCROptions(2.0, 0.2,
                                     "max", "all", -100))
    ce.sum().backward()
    zr = logits.double().requires_grad_(True)
    F.cross_entropy(zr, target, reduction="sum").backward()
    assert_close_rel(z.grad.cpu(), zr.grad, 1e-5, "ce-only grad")

    bad = target.clone()
    bad[0, 0, 0], bad[1, 2, 3] = 10**6, -7
    ce, ocr = seg_ocr_loss_maps_triton(logits.to(DEV), bad.to(DEV), tags.to(DEV), prior.to(DEV),
                                       OCROptions(2.0, 0.2, "max", "all", -100))
    want, _ = reference64(logits, tags, prior, group_split="max", pixels="all")
    assert_close_rel(ocr.cpu(), want, 1e-5, "ocr map with a bad target")


@pytest.mark.parametrize("path", ["one_tile", "small_tiles"])
@pytest.mark.parametrize("C1", [2, 5])
def test_seg_maps_tiny_cross_entropy_at_large_logits(monkeypatch, path, C1):
    # A confident pixel at logits near ±30: CE = log1p(Σ_{k≠t} e^{z_k - z_t}) ~ 1e-7..1e-4. An
    # absolute fp32 log-sum-exp minus z_t carries |z|·2^-24 ~ 2e-6 of error (5 % of
    # CE = 7.26e-6 at z = [30, 18.2]); the kernel must keep CE, and its gradient, to relative
    # precision.
    if path == "small_tiles":
        force_small_tiles(monkeypatch, 16)
    g = torch.Generator().manual_seed(7)
    B, H, W = 2, 4, 8
    target = torch.randint(0, C1, (B, H, W), generator=g)
    base = 30.0 * torch.where(torch.rand(B, 1, H, W, generator=g) < 0.5, -1.0, 1.0)
    base = base + torch.rand(B, 1, H, W, generator=g) * 2 - 1
    gap = 9.0 + 6.0 * torch.rand(B, C1, H, W, generator=g)
    gap[:, 2:] += 20.0  # further classes: terms of e^-29 and below next to the runner-up
    logits = (base - gap).scatter(1, target.unsqueeze(1), base)
    logits[0, :, 0, :2] = -30.0
    logits[0, :2, 0, 0] = torch.tensor([30.0, 18.2])  # the measured case
    target[0, 0, 0] = 0
    logits[0, :2, 0, 1] = 30.0  # a tie: CE = log(2 + tiny)
    target[0, 0, 1] = 1
    tags = torch.ones(B, C1 - 1, dtype=torch.int64)
    z = logits.clone().to(DEV).requires_grad_(True)
    ce, _ = seg_ocr_loss_maps_triton(z, target.to(DEV), tags.to(DEV), None,
                                     OCROptions(2.0, 0.2, "max",
                                     "all", -100))
    gce = torch.randn(B, H, W, generator=g)
    ce.backward(gce.to(DEV))
    zr = logits.double().requires_grad_(True)
    want = F.cross_entropy(zr, target, reduction="none")
    want.backward(gce.double())
    # hand-derived: log1p(e^{18.2f - 30}) with 18.2f = 18.200000762939453 (+ e^-60 terms)
    assert want[0, 0, 0].item() == pytest.approx(7.5045354814e-6, rel=1e-9)
    err = (ce.detach().cpu().double() - want.detach()).abs()
    assert (err <= 1e-5 * want.detach().abs() + 1e-30).all(), (err / want.detach()).max()
    gerr = (z.grad.cpu().double() - zr.grad).abs()
    assert (gerr <= 1e-5 * zr.grad.abs() + 1e-30).all(), (gerr / zr.grad.abs()).max()


@pytest.mark.parametrize("path", ["one_tile", "small_tiles"])
@pytest.mark.parametrize("group_split", GROUP_SPLITS)
def test_seg_maps_gradient_at_logits_of_80(monkeypatch, path, group_split):
    # Logits of ±80: an absolute log-sum-exp is off by ~80·2^-24 = 5e-6, which every softmax
    # term e^{z_k - lse} and σ(lse_ic + lse_oc + margin) inherit; the fused CE + OCR gradient must
    # hold 1e-6 of its largest element everywhere (a should-be-zero entry came out 1.4e-6).
    if path == "small_tiles":
        force_small_tiles(monkeypatch, 16)
    g = torch.Generator().manual_seed(11)
    B, C1, H, W = 2, 7, 4, 5
    logits, tags, prior = make_ocr_inputs(B, C1, (H, W), tag_p=0.4, generator=g)
    sign = torch.where(torch.rand(B, C1, H, W, generator=g) < 0.4, 1.0, -1.0)
    logits = 80.0 * sign + torch.rand(B, C1, H, W, generator=g) * 2 - 1
    target = torch.randint(0, C1, (B, H, W), generator=g)
    gce, gocr = torch.randn(B, H, W, generator=g), torch.randn(B, H, W, generator=g)
    z = logits.clone().to(DEV).requires_grad_(True)
    ce, ocr = seg_ocr_loss_maps_triton(z, target.to(DEV), tags.to(DEV), prior.to(DEV),
                                       OCROptions(2.0, 0.2,
                                       group_split, "all", -100))
    torch.autograd.backward([ce, ocr], [gce.to(DEV), gocr.to(DEV)])
    want_ce, want_ocr, want_grad = _seg_reference(logits, target, tags, prior, gce, gocr, -100,
                                                  group_split=group_split, pixels="all")
    keep = comparable_pixels(logits, tags, prior, {"group_split": group_split}).unsqueeze(1)
    assert (want_ocr > 0).any() and keep.any()
    err = torch.where(keep, (z.grad.cpu().double() - want_grad).abs(), 0.0)
    bound = 1e-6 * want_grad.abs().max()
    assert err.max() <= bound, (err.max().item(), bound.item())
    assert_close_rel(ce.detach().cpu(), want_ce, 1e-5, "ce")


def test_opcheck():
    logits, tags, prior = make_ocr_inputs(2, 6, (4, 5), device=DEV)
    z = logits.clone().requires_grad_(True)
    target = torch.randint(0, 6, (2, 4, 5), device=DEV)
    target[0, 0] = -100
    torch.library.opcheck(sk._seg_maps_op, (z, target, tags, prior, 2.0, 0.2, "ada", "all", -100))


def test_torch_compile_dynamic_shapes_and_seg():
    # Symbolic shapes through the fake kernels (a second spatial size reuses the graph).
    _, tags, prior = make_ocr_inputs(2, 5, (1,), device=DEV)

    def f(z, target):
        ce, ocr = seg_ocr_loss_maps_triton(z, target, tags, prior,
                                           OCROptions(2.0, 0.2, "ada", "all", -100))
        return ce.mean() + 0.5 * ocr.mean()

    cf = torch.compile(f, fullgraph=True, dynamic=True, backend="aot_eager")
    for hw in [(3, 4), (5, 2)]:
        z = (torch.randn(2, 5, *hw, device=DEV) * 3).requires_grad_(True)
        t = torch.randint(0, 5, (2, *hw), device=DEV)
        cf(z, t).backward()
        z2 = z.detach().clone().requires_grad_(True)
        f(z2, t).backward()
        assert torch.allclose(z.grad, z2.grad, rtol=1e-6, atol=1e-8)
