"""Public W-OoD API: bad inputs name the argument, WOoDLoss, class_centroids, the classifier
objective, backend selection."""
import pytest
import torch

from wood.wood_np import wood_loss_np
from ocr_kernels import (BackendUnavailableError, WOoDLoss, centroid_distances, class_centroids,
                         kmeans, wood_classifier_loss, wood_distance_loss)


def good():
    return (torch.randn(4, 8), torch.rand(4, 3) < 0.5, torch.randn(3, 8), torch.randn(5, 8))


BAD_LOSS = [
    (dict(features=[[1.0]]), TypeError, r"features must be a floating-point tensor \[B, D\]; got list"),
    (dict(features=torch.zeros(4, 8, dtype=torch.int64)), TypeError, r"features must be a floating.*int64"),
    (dict(features=torch.zeros(4, 8, 1)), ValueError, r"features must be a floating-point tensor \[B, D\]; got .*\(4, 8, 1\)"),
    (dict(features=torch.zeros(0, 8)), ValueError, r"features must be a non-empty"),
    (dict(labels=torch.zeros(4, 2)), ValueError, r"labels must be a tensor \[B, C\] = \[4, 3\].*\(4, 2\)"),
    (dict(labels=torch.zeros(4, 3, dtype=torch.complex64)), TypeError, r"labels must be a tensor"),
    (dict(class_centroids=torch.zeros(3, 7)), ValueError, r"class_centroids must be a floating-point tensor \[C, D\] with D = 8"),
    (dict(ood_centroids=torch.zeros(0, 8)), ValueError, r"ood_centroids must be .*at least one row"),
    (dict(ood_centroids=torch.zeros(5, 8, dtype=torch.float64)), TypeError, r"ood_centroids must have the dtype of features \(torch.float32\)"),
    (dict(ood_centroids="c"), TypeError, r"ood_centroids must be a floating-point tensor \[K, D\].*got str"),
    (dict(topk=1.5), ValueError, r"topk must be a fraction in \[0, 1\].*1.5"),
    (dict(topk=float("nan")), ValueError, r"topk must be a finite number"),
    (dict(backend="gpu"), ValueError, r"backend must be one of .*got 'gpu'"),
]


@pytest.mark.parametrize("change, exc, pattern", BAD_LOSS, ids=[p for _, _, p in BAD_LOSS])
def test_bad_loss_input_is_named(change, exc, pattern):
    x, y, cc, oc = good()
    args = dict(features=x, labels=y, class_centroids=cc, ood_centroids=oc)
    opts = {k: change.pop(k) for k in list(change) if k not in args}
    args.update(change)
    with pytest.raises(exc, match=pattern):
        wood_distance_loss(*args.values(), **opts)


BAD_OTHER = [
    (lambda: centroid_distances(torch.zeros(3), torch.zeros(2, 3)), ValueError, r"x must be a floating-point tensor \[N, D\]"),
    (lambda: centroid_distances(torch.zeros(3, 2), torch.zeros(2, 3)), ValueError, r"centroids must be .*D = 2"),
    (lambda: centroid_distances(torch.zeros(3, 2), torch.zeros(2, 2), backend="cuda"), BackendUnavailableError, r"backend='cuda'"),
    (lambda: kmeans(torch.zeros(3, 2), 4), ValueError, r"k must be at most the number of points N = 3; got 4"),
    (lambda: kmeans(torch.zeros(3, 2), 0), ValueError, r"k must be a positive int"),
    (lambda: kmeans(torch.zeros(3, 2), 2, iters=-1), ValueError, r"iters must be a non-negative int"),
    (lambda: kmeans(torch.zeros(3, 2), 2, init="random"), ValueError, r"init must be one of \['first', 'k-means\+\+'\]; got 'random'"),
    (lambda: kmeans(torch.zeros(3, 2), 2, seed=1.5), TypeError, r"seed must be None or an int"),
    (lambda: kmeans(torch.zeros(3, 2, dtype=torch.int32), 2), TypeError, r"x must be a floating-point"),
    (lambda: class_centroids(torch.zeros(3, 2), torch.zeros(4, 2)), ValueError, r"labels must be a tensor \[N, C\] with N = 3"),
    (lambda: class_centroids(torch.zeros(3, 2), torch.tensor([[1, 0], [1, 0], [1, 0]])), ValueError, r"classes \[1\] have no image"),
    (lambda: wood_classifier_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4), *good()[0:1], *good()[2:]), ValueError, r"logits_ood must be .*C = 3"),
    (lambda: WOoDLoss(torch.zeros(2, 3), torch.zeros(2, 3), loss_name="wood"), ValueError, r"loss_name must be a string starting with \"loss_\""),
    (lambda: WOoDLoss(torch.zeros(2, 3), torch.zeros(2, 3), topk=-0.1), ValueError, r"topk must be a fraction"),
]


@pytest.mark.parametrize("call, exc, pattern", BAD_OTHER, ids=[p for _, _, p in BAD_OTHER])
def test_bad_input_of_other_functions(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_class_centroids_multilabel_mean():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])
    labels = torch.tensor([[1, 0], [1, 1], [0, 1]])
    assert class_centroids(f, labels).tolist() == [[2.0, 3.0], [4.0, 6.5]]
    big = torch.randn(50, 16, dtype=torch.float64) * 1e4
    lab = torch.rand(50, 4) < 0.5
    lab[0] = True
    expected = torch.stack([big[lab[:, c]].mean(0) for c in range(4)])
    torch.testing.assert_close(class_centroids(big, lab), expected, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(class_centroids(big.float(), lab), expected.float(), rtol=1e-6, atol=1e-2)


def test_module_buffers_weight_and_state_dict():
    x, y, cc, oc = good()
    m = WOoDLoss(cc, oc)
    assert m.loss_name == "loss_wood" and m.loss_weight == 0.007
    names = dict(m.named_buffers())
    assert set(names) == {"class_centroids", "ood_centroids"} and not list(m.parameters())
    assert set(m.state_dict()) == {"class_centroids", "ood_centroids"}
    xr = x.clone().requires_grad_(True)
    out = m(xr, y)
    assert out.item() == pytest.approx(0.007 * wood_loss_np(x, y, cc, oc, 0.2), rel=1e-5)
    out.backward()
    assert xr.grad is not None
    m64 = WOoDLoss(cc, oc, topk=0.5, loss_weight=2.0).double()
    assert m64(x.double(), y).item() == pytest.approx(2.0 * wood_loss_np(x, y, cc, oc, 0.5), rel=1e-12)


def test_classifier_loss_is_bce_in_plus_bce_ood_plus_lambda_ld():
    x, y, cc, oc = good()
    li, lo = torch.randn(4, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    got = wood_classifier_loss(li, y, lo, x.double(), cc.double(), oc.double(), lambda_=0.5, topk=0.2)
    p_in, p_ood, yy = torch.sigmoid(li), torch.sigmoid(lo), y.double()
    bce_in = -(yy * p_in.log() + (1 - yy) * (1 - p_in).log()).mean()
    bce_ood = -(1 - p_ood).log().mean()
    expected = bce_in + bce_ood + 0.5 * wood_loss_np(x, y, cc, oc, 0.2)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


def test_auto_backend_on_cpu_and_fp64():
    x, y, cc, oc = good()
    # auto runs whatever is usable here; the value is the definition's in any case
    assert wood_distance_loss(x, y, cc, oc).item() == pytest.approx(wood_loss_np(x, y, cc, oc, 0.2), rel=1e-5)
    assert wood_distance_loss(x.double(), y, cc.double(), oc.double()).dtype == torch.float64
    with pytest.raises(BackendUnavailableError, match="triton"):
        wood_distance_loss(x.double(), y, cc.double(), oc.double(), backend="triton")
