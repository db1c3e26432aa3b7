import pytest
import torch

from helpers import make_ocr_inputs
from ocr_kernels import OCRLoss, oc_error_rate, oc_pixel_mask, ocr_loss, prior_correlation


def test_prior_correlation_by_hand():
    # 4 images over 3 classes; background is in every image.
    tags = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    m = prior_correlation(tags)
    want = torch.tensor(
        [
            [4, 2, 2, 0],  # background co-occurs with each class as often as the class occurs
            [2, 2, 1, 0],
            [2, 1, 2, 0],
            [0, 0, 0, 0],
        ],
        dtype=torch.float32,
    ) / 4
    assert m.dtype == torch.float32 and torch.equal(m, want)
    assert torch.equal(prior_correlation(tags.float() * 3), want)  # nonzero = present


def test_prior_minmax_by_hand():
    tags = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    mm = prior_correlation(tags, normalize="minmax")
    want = torch.tensor(
        [[1, 0.5, 0.5, 0], [1, 1, 0.5, 0], [1, 0.5, 1, 0], [0, 0, 0, 0]], dtype=torch.float32
    )  # row 3 (a class that never occurs) is constant: all zeros
    assert torch.equal(mm, want)


def test_prior_bad_input():
    with pytest.raises(ValueError, match=r"tags must have shape \[L, C\]"):
        prior_correlation(torch.zeros(5))
    with pytest.raises(ValueError, match=r"normalize must be None or \"minmax\"; got 'l1'"):
        prior_correlation(torch.zeros(2, 3), normalize="l1")


def test_oc_mask_and_error_rate_by_hand():
    # image 0: tagged {c1}; pixel 0 predicts c2 (OC), pixel 1 predicts c1 (IC).
    # image 1: tagged {c2}; both pixels predict background (IC).
    logits = torch.tensor(
        [[[0.0, 0.0], [1.0, 2.0], [3.0, 0.0]], [[5.0, 5.0], [1.0, 1.0], [0.0, 0.0]]]
    )
    tags = torch.tensor([[1, 0], [0, 1]])
    assert oc_pixel_mask(logits, tags).tolist() == [[True, False], [False, False]]
    assert oc_error_rate(logits, tags).item() == 0.5


def test_module_matches_function_and_moves_prior():
    logits, tags, prior = make_ocr_inputs(2, 6, (4, 4))
    mod = OCRLoss(prior, loss_weight=0.5, pixels="all", group_split="ada")
    assert mod.loss_name == "loss_ocr"
    assert "prior" in dict(mod.named_buffers())
    want = 0.5 * ocr_loss(logits, tags, prior, pixels="all")
    assert torch.allclose(mod(logits, tags), want)
    mod = mod.to(torch.float64)
    assert mod.prior.dtype == torch.float64
    sd = mod.state_dict()
    assert torch.equal(sd["prior"], prior.double())


def test_ocr_module_size_and_align_corners_reach_the_function():
    import ocr_kernels as ok
    from helpers import make_ocr_inputs

    logits, tags, prior = make_ocr_inputs(2, 5, (3, 4), dtype=torch.float64)
    for ac in (False, True):
        mod = ok.OCRLoss(prior, align_corners=ac, pixels="all", loss_weight=2.0)
        want = 2.0 * ok.ocr_loss(logits, tags, prior, size=(7, 9), align_corners=ac, pixels="all")
        assert torch.allclose(mod(logits, tags, size=(7, 9)), want, rtol=1e-14)
        assert torch.allclose(mod(logits, tags), 2.0 * ok.ocr_loss(logits, tags, prior, pixels="all"),
                              rtol=1e-14)
