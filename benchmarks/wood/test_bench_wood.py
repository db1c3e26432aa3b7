"""W-OoD: the distance loss vs the official loop and torch.compile; K-means vs eager torch."""
import pytest

from ocr_kernels.bench.suite import cases, run_case

LOSS = cases("wood_distance_loss")
KMEANS = cases("kmeans")


@pytest.mark.parametrize("w, pass_, impl", [c[1:] for c in LOSS], ids=[c[0] for c in LOSS])
def test_wood_distance_loss(benchmark, w, pass_, impl):
    benchmark.group = f"wood_distance_loss {w.shape} {pass_}"
    run_case(benchmark, w, pass_, impl)


@pytest.mark.parametrize("w, pass_, impl", [c[1:] for c in KMEANS], ids=[c[0] for c in KMEANS])
def test_kmeans(benchmark, w, pass_, impl):
    benchmark.group = f"kmeans {w.shape}"
    run_case(benchmark, w, pass_, impl)
