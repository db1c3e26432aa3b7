"""SegOCRLoss: mmsegmentation's conventions, the prior buffer."""
import pytest
import torch

from seg.seg_helpers import make_seg_inputs
from ocr_kernels import SegOCRLoss, ocr_loss, seg_ocr_loss


def test_module_matches_the_function_for_both_averages():
    logits, target, tags, prior = make_seg_inputs(2, 6, (4, 5), dtype=torch.float64)
    for avg, ce_average in ((False, "all"), (True, "valid")):
        mod = SegOCRLoss(prior, alpha=0.3, loss_weight=0.5, avg_non_ignore=avg, pixels="all")
        want = 0.5 * seg_ocr_loss(logits, target, tags, prior, alpha=0.3, pixels="all",
                                  ce_average=ce_average)
        assert torch.allclose(mod(logits, target, tags), want, rtol=1e-14)


def test_avg_non_ignore_false_is_mmseg_cross_entropy():
    # mmseg's CrossEntropyLoss(avg_non_ignore=False): F.cross_entropy(reduction="none") with
    # ignored pixels at 0, averaged over every pixel.
    logits, target, tags, prior = make_seg_inputs(2, 6, (4, 5), dtype=torch.float64, ignore_p=0.4)
    mmseg_ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255,
                                                 reduction="none").mean()
    mod = SegOCRLoss(group_split="max", alpha=0.0)
    assert torch.allclose(mod(logits, target, tags), mmseg_ce, rtol=1e-14)
    mod = SegOCRLoss(group_split="max", alpha=0.0, avg_non_ignore=True)
    torch_ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(mod(logits, target, tags), torch_ce, rtol=1e-14)


def test_forward_ignore_index_overrides_like_mmseg_decode_heads():
    logits, target, tags, prior = make_seg_inputs(2, 5, (3, 3), ignore_index=-1)
    mod = SegOCRLoss(prior)  # ignore_index=255 by default
    got = mod(logits, target, tags, weight=None, ignore_index=-1)
    want = seg_ocr_loss(logits, target, tags, prior, ignore_index=-1, ce_average="all")
    assert torch.allclose(got, want)


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_weight_is_mmseg_seg_weight_on_the_cross_entropy(avg_non_ignore):
    # mmseg's CrossEntropyLoss with OHEM's seg_weight: CE(reduction="none") * weight, averaged
    # over every pixel (avg_non_ignore=False) or summed over the non-ignored count; OCR untouched.
    logits, target, tags, prior = make_seg_inputs(2, 6, (4, 5), dtype=torch.float64, ignore_p=0.3)
    logits.requires_grad_(True)
    weight = (torch.rand(2, 4, 5) < 0.5).double()
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none") * weight
    ce = ce.mean() if not avg_non_ignore else ce.sum() / (target != 255).sum()
    want = 0.5 * (ce + 0.3 * ocr_loss(logits, tags, prior))
    mod = SegOCRLoss(prior, alpha=0.3, loss_weight=0.5, avg_non_ignore=avg_non_ignore)
    got = mod(logits, target, tags, weight=weight, ignore_index=255)
    assert torch.allclose(got, want, rtol=1e-12)
    g_got, = torch.autograd.grad(got, logits)
    g_want, = torch.autograd.grad(want, logits)
    assert torch.allclose(g_got, g_want, rtol=1e-10, atol=1e-14)


def test_forward_refuses_what_it_does_not_support():
    logits, target, tags, prior = make_seg_inputs(2, 5, (3, 3))
    mod = SegOCRLoss(prior)
    with pytest.raises(ValueError, match=r"ce_weight must have the target's shape \[2, 3, 3\]"):
        mod(logits, target, tags, weight=torch.ones(2, 9))
    with pytest.raises(TypeError, match=r"ce_weight must be a floating-point tensor"):
        mod(logits, target, tags, weight=torch.ones(2, 3, 3, dtype=torch.long))
    with pytest.raises(TypeError, match=r"unsupported arguments \['avg_factor'\]"):
        mod(logits, target, tags, avg_factor=10)
    mod(logits, target, tags, avg_factor=None)  # mmseg passes None for what it does not use


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(loss_name="seg_ocr"), ValueError, r'loss_name must be a string starting with "loss_"'),
        (dict(prior=None), ValueError, r"prior is required for group_split=\"ada\""),
        (dict(prior=[[1.0]]), TypeError, r"prior must be a tensor"),
        (dict(avg_non_ignore=1), TypeError, r"avg_non_ignore must be a bool; got int 1"),
        (dict(ignore_index=255.0), TypeError, r"ignore_index must be an int"),
        (dict(alpha=float("inf")), ValueError, r"alpha must be a finite number"),
        (dict(pixels="some"), ValueError, r"pixels must be one of"),
    ],
)
def test_constructor_checks(kwargs, exc, pattern):
    args = dict(prior=torch.eye(3))
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        SegOCRLoss(args.pop("prior"), **args)


def test_prior_is_a_buffer_that_moves_and_is_saved():
    logits, target, tags, prior = make_seg_inputs(2, 6, (4, 4))
    mod = SegOCRLoss(prior, loss_name="loss_wsss")
    assert mod.loss_name == "loss_wsss" and "prior" in dict(mod.named_buffers())
    mod = mod.double()
    assert mod.prior.dtype == torch.float64
    assert torch.equal(mod.state_dict()["prior"], prior.double())
    fresh = SegOCRLoss(torch.zeros_like(prior))
    fresh.load_state_dict(mod.state_dict())
    assert torch.allclose(fresh(logits, target, tags), mod(logits, target, tags))
    assert "avg_non_ignore=False" in repr(mod)


def test_module_upsample_and_align_corners_reach_the_function():
    logits, target, tags, prior = make_seg_inputs(2, 6, (9, 7), dtype=torch.float64)
    low = logits[:, :, ::3, ::2]
    for ac in (False, True):
        mod = SegOCRLoss(prior, alpha=0.3, upsample=True, align_corners=ac, pixels="all")
        want = seg_ocr_loss(low, target, tags, prior, alpha=0.3, upsample=True, align_corners=ac,
                            pixels="all", ce_average="all")
        assert torch.allclose(mod(low, target, tags), want, rtol=1e-14)
        assert f"upsample=True, align_corners={ac}" in repr(mod)
    with pytest.raises(TypeError, match="upsample must be a bool; got str 'yes'"):
        SegOCRLoss(prior, upsample="yes")


