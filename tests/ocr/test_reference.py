"""The reference OCR loss against values derived by hand from the equations (Eq. 5-19)."""
import itertools
import math

import pytest
import torch

from helpers import GROUP_SPLITS, PIXEL_MODES, make_ocr_inputs
from ocr_kernels._options import OCROptions
from ocr_kernels import ocr_loss
from ocr_kernels.ocr.reference import ocr_loss_map_reference


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def softplus(x):
    return math.log1p(math.exp(x))


# Three classes (background, c1, c2); the image is tagged with c1: IC = {0, 1}, OC = {2}.
# Pixel a: z = (0, 1, 3): pred 2 is OC; anchor A = 1.
# Pixel b: z = (2, 1, 0): pred 0 is IC; anchor A = 0.
# Pixel c: z = (-1, -2, -3): pred 0 is IC. The appendix's pseudo-code multiplies the untagged
#          logit by 0, so its argmax would be class 2 and flag the pixel OC; Eq. 5 does not.
Z = torch.tensor([[0.0, 2.0, -1.0], [1.0, 1.0, -2.0], [3.0, 0.0, -3.0]], dtype=torch.float64)
LOGITS = Z.view(1, 3, 3)  # [B=1, C+1=3, N=3]
TAGS = torch.tensor([[1, 0]])
DELTA = 2.0


def lse(xs):
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def expected_pixel(z, group, m):
    """Loss and gradient of one pixel from Eq. 19 and its derivative, for a given IC group."""
    s = lse([-z[k] for k in group]) + z[2] + DELTA  # OC = {2}
    loss = m * softplus(s)
    grad = [0.0, 0.0, 0.0]
    if m:
        den_ic = sum(math.exp(-z[k]) for k in group)
        for k in group:
            grad[k] = -sigmoid(s) * math.exp(-z[k]) / den_ic
        grad[2] = sigmoid(s)  # softmax over the single OC class is 1
    return loss, grad


def run(prior=None, **opts):
    z = LOGITS.clone().requires_grad_(True)
    loss = ocr_loss(z, TAGS, prior, margin=DELTA, reduction="none", backend="reference", **opts)
    loss.sum().backward()
    return loss.detach()[0], z.grad[0]


PIXELS_OF = {"oc": (1, 0, 0), "ic": (0, 1, 1), "all": (1, 1, 1)}


@pytest.mark.parametrize("pixels", PIXEL_MODES)
@pytest.mark.parametrize("group_split", ["max", "all"])
def test_hand_computed_max_and_all(group_split, pixels):
    loss, grad = run(group_split=group_split, pixels=pixels)
    anchors = (1, 0, 0)
    for p in range(3):
        z = Z[:, p].tolist()
        group = [anchors[p]] if group_split == "max" else [0, 1]
        e_loss, e_grad = expected_pixel(z, group, PIXELS_OF[pixels][p])
        assert loss[p].item() == pytest.approx(e_loss, rel=1e-12, abs=1e-15)
        assert grad[:, p].tolist() == pytest.approx(e_grad, rel=1e-12, abs=1e-15)


def test_hand_computed_pixel_a_numbers():
    # Pixel a with "max": s = −1 + 3 + 2 = 4, loss = log(1 + e^4) = 4.0181499279...
    loss, grad = run(group_split="max", pixels="oc")
    assert loss[0].item() == pytest.approx(4.018149927917366, rel=1e-12)
    assert grad[:, 0].tolist() == pytest.approx([0.0, -0.9820137900379085, 0.9820137900379085], rel=1e-12)
    assert loss[1].item() == 0.0 and loss[2].item() == 0.0  # IC pixels: masked
    assert grad[:, 1:].abs().max().item() == 0.0


@pytest.mark.parametrize("m10, in_group", [(0.5, True), (0.2, False)])
def test_hand_computed_ada(m10, in_group):
    # Pixel a: P = softmax(0, 1, 3) = (0.04201, 0.11420, 0.84379); A = 1, P_A = 0.11420.
    # Class 0 joins the IC group iff P_A − P_0·M[1, 0] < t. With t = 0.1:
    #   M[1, 0] = 0.5: 0.11420 − 0.02100 = 0.09320 < 0.1 -> in;  M[1, 0] = 0.2: 0.10580 -> out.
    # Pixel b: A = 0, P = (0.66524, 0.24473, 0.09003); class 1 joins iff 0.66524 − 0.24473·M[0, 1] < 0.1:
    #   never (M <= 1), so G_ic = {0}.
    prior = torch.tensor([[1.0, 0.3, 0.3], [m10, 1.0, 0.3], [0.3, 0.3, 1.0]], dtype=torch.float64)
    loss, grad = run(prior, group_split="ada", pixels="all", threshold=0.1)
    p = [math.exp(v) / sum(math.exp(w) for w in (0, 1, 3)) for v in (0, 1, 3)]
    assert (p[1] - p[0] * m10 < 0.1) == in_group
    cases = [([0, 1] if in_group else [1]), [0], [0]]
    for px in range(3):
        e_loss, e_grad = expected_pixel(Z[:, px].tolist(), cases[px], 1)
        assert loss[px].item() == pytest.approx(e_loss, rel=1e-12)
        assert grad[:, px].tolist() == pytest.approx(e_grad, rel=1e-12, abs=1e-15)


def test_reductions_match_hand_sum():
    per_pixel, _ = run(group_split="max", pixels="all")
    total = sum(expected_pixel(Z[:, p].tolist(), [(1, 0, 0)[p]], 1)[0] for p in range(3))
    for reduction, want in (("sum", total), ("mean", total / 3)):
        got = ocr_loss(LOGITS, TAGS, group_split="max", pixels="all", reduction=reduction, margin=DELTA)
        assert got.item() == pytest.approx(want, rel=1e-12)
    assert per_pixel.sum().item() == pytest.approx(total, rel=1e-12)


def test_mean_counts_every_pixel_in_the_denominator():
    logits, tags, prior = make_ocr_inputs(2, 5, (4, 6), dtype=torch.float64)
    m = ocr_loss(logits, tags, prior, reduction="none")
    assert ocr_loss(logits, tags, prior).item() == pytest.approx(m.sum().item() / (2 * 24), rel=1e-12)


@pytest.mark.parametrize("group_split, pixels", list(itertools.product(GROUP_SPLITS, PIXEL_MODES)))
def test_gradcheck_float64(group_split, pixels):
    logits, tags, prior = make_ocr_inputs(2, 5, (3, 2), dtype=torch.float64, tag_p=0.4)
    prior = prior.double()
    tags[1] = 0  # one image with no tag at all: IC = {background}
    # keep the finite-difference step away from the piecewise-constant selections' boundaries
    logits = logits.requires_grad_(True)
    for reduction in ("mean", "sum", "none"):
        f = lambda z: ocr_loss(z, tags, prior, group_split=group_split, pixels=pixels,
                               reduction=reduction, backend="reference")
        assert torch.autograd.gradcheck(f, (logits,), eps=1e-7, atol=1e-6)


def test_all_tagged_image_has_zero_loss_and_gradient():
    logits, tags, prior = make_ocr_inputs(3, 6, (4, 4), dtype=torch.float64)
    tags[1] = 1  # every class tagged: OC is empty
    tags[0, 0] = 0  # and image 0 has an OC class whatever the random tags
    logits.requires_grad_(True)
    loss = ocr_loss(logits, tags, prior, pixels="all", reduction="none")
    loss.sum().backward()
    assert loss[1].abs().max().item() == 0.0
    assert logits.grad[1].abs().max().item() == 0.0
    assert torch.isfinite(logits.grad).all()
    assert loss[0].min().item() > 0  # pixels="all": every pixel of an image with OC classes counts


def test_no_loss_or_gradient_on_ic_pixels_with_pixels_oc():
    logits, tags, prior = make_ocr_inputs(2, 8, (6, 5), dtype=torch.float64)
    # one pixel surely IC (background) and one surely OC (untagged class 1), whatever the draw
    tags[0, 0] = 0
    logits[0, 0, 0, 0] = logits[0, 1, 0, 1] = logits.abs().max() + 5.0
    logits.requires_grad_(True)
    loss = ocr_loss(logits, tags, prior, reduction="none")
    loss.sum().backward()
    from ocr_kernels import oc_pixel_mask

    oc = oc_pixel_mask(logits, tags)
    assert oc.any() and (~oc).any()
    assert loss[~oc].abs().max().item() == 0.0
    assert logits.grad.movedim(1, -1)[~oc].abs().max().item() == 0.0
    assert (loss[oc] > 0).all()


@pytest.mark.parametrize("group_split", GROUP_SPLITS)
def test_gradient_is_zero_outside_the_two_groups(group_split):
    from helpers import reference64
    from ocr_kernels.ocr.reference import ic_mask_from_tags

    logits, tags, prior = make_ocr_inputs(2, 7, (5, 5), tag_p=0.5)
    tags[:, -1] = 0  # at least one OC class per image (an all-tagged image has no gradient)
    _, grad = reference64(logits, tags, prior, group_split=group_split, pixels="all")
    ic = ic_mask_from_tags(tags)[:, :, None, None].expand_as(grad)
    # OC classes get a positive gradient, IC classes a non-positive one; the IC classes outside
    # G_ic get exactly zero: for "max" that is every IC class but the anchor.
    assert (grad[~ic] > 0).all()
    assert (grad[ic] <= 0).all()
    if group_split == "max":
        assert ((grad < 0).sum(1) == 1).all()
    if group_split == "all":
        assert (grad[ic] < 0).all()


def test_large_logits_stay_finite():
    logits, tags, prior = make_ocr_inputs(2, 6, (8, 8), scale=1.0)
    logits = (torch.sign(logits) * 80.0).requires_grad_(True)
    loss = ocr_loss(logits, tags, prior, pixels="all", reduction="none")
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    # with ±80 logits, s ≈ 80 + 80 + 2 on pixels where an OC class is at +80 and an IC class at −80
    # (plus the log of how many classes share ±80 in each group, at most log(6·6)).
    assert 162.0 <= loss.max().item() <= 162.0 + math.log(36)


def test_low_precision_inputs_use_fp32_math():
    logits, tags, prior = make_ocr_inputs(2, 6, (5, 5), dtype=torch.float16)
    z = logits.clone().requires_grad_(True)
    loss = ocr_loss(z, tags, prior)
    assert loss.dtype == torch.float32
    want = ocr_loss(logits.float(), tags, prior)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    loss.backward()
    assert z.grad.dtype == torch.float16


def test_spatial_ranks_1_to_3_and_channels_last():
    for spatial in ((7,), (3, 4), (2, 3, 4)):
        logits, tags, prior = make_ocr_inputs(2, 5, spatial, dtype=torch.float64)
        flat = ocr_loss_map_reference(logits.flatten(2), tags, prior,
                                      OCROptions(2.0, 0.2, "ada", "oc"))
        full = ocr_loss(logits, tags, prior, reduction="none", backend="reference")
        assert full.shape == (2, *spatial)
        # same math on a different shape: torch may reduce in another order (last-bit differences)
        torch.testing.assert_close(full.flatten(1), flat, rtol=1e-13, atol=0)
    logits, tags, prior = make_ocr_inputs(2, 5, (3, 4))
    cl = logits.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(
        ocr_loss(cl, tags, prior, reduction="none", backend="reference"),
        ocr_loss(logits, tags, prior, reduction="none", backend="reference"), rtol=1e-6, atol=0)


def test_ties_resolve_to_the_lowest_index():
    # Equal logits everywhere: pred = 0 (background, IC) -> no OC pixel; anchor = 0.
    z = torch.zeros(1, 4, 3, dtype=torch.float64, requires_grad=True)
    tags = torch.tensor([[0, 1, 0]])
    assert ocr_loss(z, tags, group_split="max").item() == 0.0
    # pixels="all", "max": G_ic = {0} (anchor ties -> 0), OC = {1, 3}: s = 0 + log 2 + 2.
    loss = ocr_loss(z, tags, group_split="max", pixels="all", reduction="none")
    assert loss[0, 0].item() == pytest.approx(softplus(math.log(2) + 2), rel=1e-12)
    loss.sum().backward()
    g = z.grad[0, :, 0].tolist()
    sg = sigmoid(math.log(2) + 2)
    assert g == pytest.approx([-sg, sg / 2, 0.0, sg / 2], rel=1e-12)  # IC = {0, 2}, OC = {1, 3}
    # An OC class tied with the best IC class: argmax takes the lower index.
    z2 = torch.tensor([[[1.0], [1.0], [0.0]]], dtype=torch.float64)  # classes 0 and 1 tie
    assert ocr_loss(z2, torch.tensor([[0, 1]]), group_split="max", reduction="sum").item() == 0.0
    z3 = torch.tensor([[[0.0], [1.0], [1.0]]], dtype=torch.float64)  # OC class 1 ties IC class 2
    assert ocr_loss(z3, torch.tensor([[0, 1]]), group_split="max", reduction="sum").item() > 0.0
