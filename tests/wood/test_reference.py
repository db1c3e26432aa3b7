"""The reference W-OoD loss and distances against hand-derived numbers and float64 numpy, and the
official re-creation against both."""
import numpy as np
import pytest
import torch

from wood.wood_np import distances_np, large_norm_inputs, wood_loss_np
from ocr_kernels import centroid_distances, wood_distance_loss
from ocr_kernels.wood.official import official_wood_distance_loss
from ocr_kernels.wood.reference import (centroid_distances_reference, kept_count,
                                        wood_distance_loss_reference)


def hand_case(dtype=torch.float64):
    # d_in = [[1], [2]]; d_ood = [[0, 4, 6], [3, 1, 3]]: n = 5 nonzero, kk = int(5 * 0.8) = 4,
    # sorted 6 4 3 3 1 -> thresh = 3 (a tie: both 3s stay unselected); selected: the 0 and the 1.
    x = torch.tensor([[0.0], [3.0]], dtype=dtype)
    y = torch.tensor([[1.0], [1.0]], dtype=dtype)
    cc = torch.tensor([[1.0]], dtype=dtype)
    oc = torch.tensor([[0.0], [4.0], [6.0]], dtype=dtype)
    return x, y, cc, oc


def test_hand_derived_value_and_gradient():
    x, y, cc, oc = hand_case()
    x.requires_grad_(True)
    loss = wood_distance_loss_reference(x, y, cc, oc, 0.2)
    # (1 + 2) / (B*K = 6) - (0 + 1) / 6 = 1/3
    assert loss.item() == pytest.approx(1 / 3, abs=1e-15)
    loss.backward()
    # x0: d_in slope -1, the OoD zero distance gives 0; x1: d_in +1, selected d = |3 - 4| gives
    # -(-1) -> (1 + 1) / 6
    assert x.grad.flatten().tolist() == pytest.approx([-1 / 6, 1 / 3], abs=1e-15)
    assert official_wood_distance_loss(*hand_case(), 0.2).item() == pytest.approx(1 / 3, abs=1e-15)


def test_kk_zero_selects_nothing():
    x, y, cc, oc = hand_case()
    # topk = 0.9: int(5 * 0.1) = 0 -> nothing selected, loss = the class term alone
    assert wood_distance_loss_reference(x, y, cc, oc, 0.9).item() == pytest.approx(0.5, abs=1e-15)
    assert wood_distance_loss_reference(x, y, cc, oc, 1.0).item() == pytest.approx(0.5, abs=1e-15)
    # the official code indexes an empty topk result there
    with pytest.raises(IndexError):
        official_wood_distance_loss(x, y, cc, oc, 0.9)


def test_all_ood_distances_zero():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    oc = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    cc = torch.tensor([[1.0, 5.0]], dtype=torch.float64)
    y = torch.ones(2, 1)
    loss = wood_distance_loss_reference(x, y, cc, oc, 0.2)  # n = 0 -> kk = 0
    assert loss.item() == pytest.approx(3.0, abs=1e-15)  # (3 + 3) / (2 * 1)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.tolist() == [[0.0, -0.5], [0.0, -0.5]]


@pytest.mark.parametrize("n, topk", [(5, 0.2), (800, 0.2), (1000, 0.2), (7, 0.3), (3, 0.7),
                                     (10, 0.1), (49, 0.58), (2**40 + 3, 0.2)])
def test_kept_count_matches_python_int(n, topk):
    assert kept_count(torch.tensor(n), topk).item() == int(n * (1 - topk))


def test_kept_count_matches_python_on_many_values():
    n = torch.arange(0, 5000)
    for topk in (0.2, 0.1, 0.3, 0.7, 0.15, 1 / 3):
        got = kept_count(n, topk).tolist()
        assert got == [int(i * (1 - topk)) for i in range(5000)]


@pytest.mark.parametrize("shape", [(16, 64, 20, 50), (3, 5, 2, 7), (1, 1, 1, 1), (9, 33, 4, 13)])
@pytest.mark.parametrize("topk", [0.2, 0.0, 0.5])
def test_against_numpy_float64(shape, topk):
    B, D, C, K = shape
    x = torch.randn(B, D, dtype=torch.float64) * 2 + 1
    y = (torch.rand(B, C) < 0.4).to(torch.float64)
    cc, oc = torch.randn(C, D, dtype=torch.float64), torch.randn(K, D, dtype=torch.float64)
    expected = wood_loss_np(x, y, cc, oc, topk)
    assert wood_distance_loss_reference(x, y, cc, oc, topk).item() == pytest.approx(expected, rel=1e-12, abs=1e-12)
    got32 = wood_distance_loss(x.float(), y, cc.float(), oc.float(), topk=topk, backend="reference")
    assert got32.dtype == torch.float32
    assert got32.item() == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_ties_at_the_threshold():
    # integer 1-D data: many OoD distances equal the threshold; strict < leaves all of them out
    x = torch.randint(0, 6, (12, 1)).to(torch.float64)
    # centroids >= 1: the official code treats a centroid whose entries sum to 0 as absent
    oc = torch.randint(1, 7, (9, 1)).to(torch.float64)
    cc = torch.randint(1, 7, (3, 1)).to(torch.float64)
    y = (torch.rand(12, 3) < 0.5).to(torch.float64)
    for topk in (0.2, 0.35, 0.5, 0.8):
        expected = wood_loss_np(x, y, cc, oc, topk)
        assert wood_distance_loss_reference(x, y, cc, oc, topk).item() == pytest.approx(expected, abs=1e-12)
        d = distances_np(x, oc)
        nz = d[d != 0]
        if int(nz.size * (1 - topk)) > 0:
            assert official_wood_distance_loss(x, y, cc, oc, topk).item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_official_recreation_equals_our_loss(dtype):
    B, D, C, K = 16, 256, 20, 50
    x = torch.relu(torch.randn(B, D, dtype=dtype)) * 3
    y = (torch.rand(B, C) < 0.2).to(dtype)
    cc = torch.relu(torch.randn(C, D, dtype=dtype)) * 3
    oc = torch.relu(torch.randn(K, D, dtype=dtype)) * 3
    ours = wood_distance_loss(x, y, cc, oc, topk=0.2, backend="reference")
    theirs = official_wood_distance_loss(x, y, cc, oc, 0.2)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert ours.item() == pytest.approx(theirs.item(), rel=tol, abs=tol)
    # and the gradients (away from zero distances, where the official sqrt gives NaN)
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    wood_distance_loss(xa, y, cc, oc, topk=0.2, backend="reference").backward()
    official_wood_distance_loss(xb, y, cc, oc, 0.2).backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=tol * 10, atol=tol)


def test_official_treats_a_zero_sum_centroid_as_distance_zero():
    x = torch.tensor([[1.0, 1.0], [2.0, 0.0]], dtype=torch.float64)
    cc = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    oc = torch.tensor([[1.0, -1.0], [3.0, 3.0], [0.5, 0.5]], dtype=torch.float64)  # oc[0] sums to 0
    y = torch.ones(2, 1, dtype=torch.float64)
    ours = wood_distance_loss_reference(x, y, cc, oc, 0.2).item()
    assert ours == pytest.approx(wood_loss_np(x, y, cc, oc, 0.2), abs=1e-14)
    oc_absent = oc.clone()
    d = distances_np(x, oc)
    d[:, 0] = 0  # what the official code computes for the zero-sum centroid
    nz = np.sort(d[d != 0])[::-1]
    kk = int(nz.size * 0.8)
    sel = d < nz[kk - 1]
    expected_official = (distances_np(x, cc).sum() - (d * sel).sum()) / 6
    assert official_wood_distance_loss(x, y, cc, oc_absent, 0.2).item() == pytest.approx(expected_official, abs=1e-14)
    assert expected_official != pytest.approx(ours)


def test_official_gradient_is_nan_at_zero_distance_ours_is_not():
    x, y, cc, _ = hand_case()
    x = x + 1.0  # x0 coincides with OoD centroid 0, whose distance 0 is selected
    oc = torch.tensor([[1.0], [4.0], [6.0]], dtype=torch.float64)
    xa = x.clone().requires_grad_(True)
    official_wood_distance_loss(xa, y, cc, oc, 0.2).backward()
    assert torch.isnan(xa.grad).any()
    xb = x.clone().requires_grad_(True)
    wood_distance_loss_reference(xb, y, cc, oc, 0.2).backward()
    assert torch.isfinite(xb.grad).all()


def test_distances_large_norms_small_differences():
    x, cc, oc = large_norm_inputs(16, 2048, 4, 50, torch.float32)
    assert x.norm(dim=1).min() > 1e3
    expected = distances_np(x, oc)
    assert 1e-3 < expected.min() and expected.max() < 0.1
    got = centroid_distances(x, oc, backend="reference").numpy()
    assert np.abs(got / expected - 1).max() <= 1e-4
    # the test can fail: the expanded formula is useless here
    naive = (x.pow(2).sum(1)[:, None] + oc.pow(2).sum(1)[None] - 2 * x @ oc.t()).clamp_min(0).sqrt()
    assert np.abs(naive.numpy() / expected - 1).max() > 1e-2


def test_gradcheck_distances_and_loss():
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    c = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(centroid_distances_reference, (x, c))
    y = (torch.rand(4, 3) < 0.5).to(torch.float64)
    cc = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    oc = torch.randn(7, 6, dtype=torch.float64, requires_grad=True)
    f = lambda a, b, e: wood_distance_loss(a, y, b, e, topk=0.2, backend="reference")  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, cc, oc))


def test_distance_gradient_zero_at_zero_distance():
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    c = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, requires_grad=True)
    d = centroid_distances_reference(x, c)
    assert d[0, 0].item() == 0.0 and d[1, 1].item() == 5.0
    d.sum().backward()
    # row 0: only the pair (0, 1) contributes: (x0 - c1)/|.| = (-2, -2)/sqrt(8)
    s = 2 / 8 ** 0.5
    assert x.grad.flatten().tolist() == pytest.approx([-s, -s, -(1 / 5**0.5) - 0.6, -(2 / 5**0.5) - 0.8])
    assert torch.isfinite(c.grad).all()


def test_compiles_without_graph_breaks():
    x = torch.randn(8, 32)
    y = (torch.rand(8, 5) < 0.3).float()
    cc, oc = torch.randn(5, 32), torch.randn(11, 32)
    compiled = torch.compile(wood_distance_loss_reference, fullgraph=True)
    torch.testing.assert_close(compiled(x, y, cc, oc, 0.2), wood_distance_loss_reference(x, y, cc, oc, 0.2))
