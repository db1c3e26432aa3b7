"""The reference segmentation objective: hand-derived values, the torch composition, gradcheck."""
import math

import pytest
import torch
import torch.nn.functional as F

from seg.seg_helpers import make_seg_inputs
from ocr_kernels._options import OCROptions
from ocr_kernels import ocr_loss, seg_ocr_loss
from ocr_kernels.seg import seg_ocr_loss_reference
from ocr_kernels.seg.reference import seg_ocr_loss_maps_reference


def hand_case():
    # 1 image, C = 2 classes (C+1 = 3 channels), 2 pixels; class 1 tagged, class 2 out of candidate.
    # pixel 0: z = (0, 0, 0), target 1, predicts background (IC): CE = ln 3, OCR = 0.
    # pixel 1: z = (0, ln 2, ln 4), target ignored, predicts class 2 (OC); "max" split:
    #   G_ic = {1} (the IC argmax), G_oc = {2}: s = -ln 2 + ln 4 + 2 = ln 2 + 2,
    #   OCR = log(1 + e^s) = log(1 + 2e^2), CE = 0 (ignored).
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(2)]], [[0.0, math.log(4)]]]],
                          dtype=torch.float64)
    target = torch.tensor([[[1, 255]]])
    tags = torch.tensor([[1, 0]])
    return logits, target, tags


def test_hand_derived_value_and_gradient():
    logits, target, tags = hand_case()
    alpha = 0.7
    z = logits.clone().requires_grad_(True)
    loss = seg_ocr_loss(z, target, tags, group_split="max", alpha=alpha, backend="reference")
    ocr1 = math.log(1 + 2 * math.e ** 2)
    # CE: mean over the 1 non-ignored pixel; OCR: mean over both pixels
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(math.log(3) + alpha * ocr1 / 2, rel=1e-12)
    loss.backward()
    sig = 2 * math.e ** 2 / (1 + 2 * math.e ** 2)  # σ(s)
    want = torch.zeros_like(logits)
    want[0, :, 0, 0] = torch.tensor([1 / 3, 1 / 3 - 1, 1 / 3], dtype=torch.float64)  # softmax - onehot
    want[0, 1, 0, 1] = -alpha / 2 * sig
    want[0, 2, 0, 1] = alpha / 2 * sig
    assert torch.allclose(z.grad, want, rtol=1e-12, atol=1e-15)

    # mmseg's avg_non_ignore=False: the CE mean counts the ignored pixel in its denominator
    all_px = seg_ocr_loss(logits, target, tags, group_split="max", alpha=alpha, ce_average="all")
    assert all_px.item() == pytest.approx(math.log(3) / 2 + alpha * ocr1 / 2, rel=1e-12)

    ce, oc = seg_ocr_loss_maps_reference(logits, target, tags, None,
                                         OCROptions(2.0, 0.2, "max", "oc", 255))
    assert torch.allclose(ce, torch.tensor([[[math.log(3), 0.0]]], dtype=torch.float64))
    assert torch.allclose(oc, torch.tensor([[[0.0, ocr1]]], dtype=torch.float64))


@pytest.mark.parametrize("group_split", ["ada", "max", "all"])
@pytest.mark.parametrize("pixels", ["oc", "all"])
@pytest.mark.parametrize("ignore_index", [255, -100, 0])
def test_equals_torch_composition(group_split, pixels, ignore_index):
    logits, target, tags, prior = make_seg_inputs(3, 7, (6, 5), dtype=torch.float64,
                                                  ignore_index=ignore_index)
    opts = dict(group_split=group_split, pixels=pixels, margin=1.5, threshold=0.3)
    z1 = logits.clone().requires_grad_(True)
    got = seg_ocr_loss(z1, target, tags, prior, alpha=0.4, ignore_index=ignore_index, **opts)
    got.backward()
    z2 = logits.clone().requires_grad_(True)
    want = F.cross_entropy(z2, target, ignore_index=ignore_index) + 0.4 * ocr_loss(
        z2, tags, prior, backend="reference", **opts)
    want.backward()
    assert torch.allclose(got, want, rtol=1e-12)
    assert torch.allclose(z1.grad, z2.grad, rtol=1e-10, atol=1e-14)
    public = seg_ocr_loss_reference(logits, target, tags, prior, alpha=0.4,
                                    ignore_index=ignore_index, **opts)
    assert torch.allclose(public, want, rtol=1e-12)


def test_all_ignored_batch_gives_zero_cross_entropy_not_nan():
    logits, target, tags, prior = make_seg_inputs(2, 5, (4, 4), dtype=torch.float64)
    target = torch.full_like(target, 255)
    assert torch.isnan(F.cross_entropy(logits, target, ignore_index=255))  # torch: 0/0
    z = logits.clone().requires_grad_(True)
    got = seg_ocr_loss(z, target, tags, prior, alpha=2.0, pixels="all")
    got.backward()
    z2 = logits.clone().requires_grad_(True)
    want = 2.0 * ocr_loss(z2, tags, prior, pixels="all")
    want.backward()
    assert torch.allclose(got, want, rtol=1e-12)
    assert torch.allclose(z.grad, z2.grad, rtol=1e-10, atol=1e-15)
    assert seg_ocr_loss_reference(logits, target, tags, prior, alpha=0.0).item() == 0.0


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64])
def test_integer_target_dtypes(dtype):
    logits, target, tags, prior = make_seg_inputs(2, 4, (3, 5))
    want = seg_ocr_loss(logits, target, tags, prior)
    assert torch.equal(seg_ocr_loss(logits, target.to(dtype), tags, prior), want)


def test_low_precision_logits_use_fp32_math_and_keep_their_gradient_dtype():
    logits, target, tags, prior = make_seg_inputs(2, 6, (4, 6), dtype=torch.float16)
    z = logits.clone().requires_grad_(True)
    loss = seg_ocr_loss(z, target, tags, prior)
    loss.backward()
    assert loss.dtype == torch.float32 and z.grad.dtype == torch.float16
    z32 = logits.float().requires_grad_(True)
    want = seg_ocr_loss(z32, target, tags, prior)
    want.backward()
    assert torch.allclose(loss, want, rtol=1e-6)
    assert torch.allclose(z.grad.float(), z32.grad, rtol=1e-3, atol=1e-6)


def test_global_mean_without_distributed_is_the_local_mean():
    logits, target, tags, prior = make_seg_inputs(2, 5, (4, 4), dtype=torch.float64)
    for avg in ("valid", "all"):
        a = seg_ocr_loss(logits, target, tags, prior, ce_average=avg)
        b = seg_ocr_loss(logits, target, tags, prior, ce_average=avg, global_mean=True)
        assert torch.allclose(a, b, rtol=1e-14)


@pytest.mark.parametrize("group_split, pixels", [("ada", "oc"), ("max", "all"), ("all", "ic")])
def test_gradcheck_float64(group_split, pixels):
    logits, target, tags, prior = make_seg_inputs(2, 5, (3, 4), dtype=torch.float64, scale=1.5)
    # pixel "oc" with a random init has few OC pixels: make the first image's tags sparse
    tags[0] = 0

    def f(z):
        return seg_ocr_loss(z, target, tags, prior, alpha=0.8, margin=0.5,
                            group_split=group_split, pixels=pixels, backend="reference")

    assert torch.autograd.gradcheck(f, (logits.requires_grad_(True),), eps=1e-6, atol=1e-7)
