"""K-means against a float64 numpy Lloyd loop, the empty-cluster rule, k-means++ seeding and the
distributed mode (2 gloo processes on the CPU)."""
import os
import tempfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wood.wood_np import backend_runs, np64
from ocr_kernels import kmeans

BACKENDS = ["reference"] + (["triton"] if backend_runs("triton") is None else [])


def lloyd_np(x, k, iters):
    x = np64(x)
    c = x[:k].copy()
    for _ in range(iters):
        a = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        c = np.stack([x[a == j].mean(0) for j in range(k)])  # the test data has no empty cluster
    return c, ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)


def blobs(n=120, d=16, k=5, spread=8.0, dtype=torch.float32):
    centres = torch.randn(k, d, dtype=torch.float64) * spread
    # the first k points come one from each blob, so "first" init leaves no cluster empty
    lab = torch.arange(n) % k
    return (centres[lab] + torch.randn(n, d, dtype=torch.float64)).to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_first_init_matches_numpy_lloyd(backend, dtype):
    if backend == "triton" and dtype == torch.float64:
        pytest.skip("triton computes in fp32 only")
    x = blobs(dtype=dtype)
    c, a = kmeans(x, 5, iters=4, backend=backend)
    ce, ae = lloyd_np(x, 5, 4)
    assert c.dtype == dtype and a.dtype == torch.int64
    np.testing.assert_allclose(np64(c), ce, rtol=1e-5, atol=1e-5)
    assert (a.numpy() == ae).all()


def test_iters_zero_returns_the_first_points():
    x = torch.randn(10, 3)
    c, a = kmeans(x, 4, iters=0)
    assert torch.equal(c, x[:4])
    assert torch.equal(a, torch.cdist(x.double(), x[:4].double()).argmin(1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_cluster_is_reseeded_from_the_farthest_point(backend):
    # first-k init gives two identical centroids; ties go to the lowest index, so cluster 1 is
    # empty after the first assignment. Hand-derived: iteration 1 -> c0 = mean(0, 0, 10, 11)
    # = 5.25 and c1 = the point farthest from its centroid (11); iteration 2 -> c0 = 0, c1 = 10.5.
    x = torch.tensor([[0.0], [0.0], [10.0], [11.0]])
    c1, _ = kmeans(x, 2, iters=1, backend=backend)
    assert c1.flatten().tolist() == [5.25, 11.0]
    c2, a2 = kmeans(x, 2, iters=2, backend=backend)
    assert c2.flatten().tolist() == [0.0, 10.5]
    assert a2.tolist() == [0, 0, 1, 1]


def test_several_empty_clusters_get_distinct_points_and_never_nan():
    x = torch.cat([torch.zeros(6, 2), torch.tensor([[5.0, 0.0], [0.0, 7.0], [9.0, 9.0]])])
    c, a = kmeans(x, 4, iters=1)  # init: four copies of the origin -> clusters 1, 2, 3 empty
    assert torch.isfinite(c).all()
    # re-seeded in index order with the farthest, second and third farthest points
    assert c[1:].tolist() == [[9.0, 9.0], [0.0, 7.0], [5.0, 0.0]]
    assert c[0].tolist() == pytest.approx([14 / 9, 16 / 9])
    c5, _ = kmeans(x, 4, iters=5)
    assert torch.isfinite(c5).all()


def test_kmeanspp_is_seeded_and_picks_data_points():
    x = blobs(n=200, d=8, k=6, spread=500.0)
    c1, _ = kmeans(x, 6, iters=0, init="k-means++", seed=3)
    c2, _ = kmeans(x, 6, iters=0, init="k-means++", seed=3)
    assert torch.equal(c1, c2)
    member = (c1[:, None, :] == x[None]).all(-1)
    assert member.any(1).all()
    # D^2 sampling on blobs ~500 apart (unit spread) puts one seed in each blob (the chance of a
    # second seed in an already-seeded blob is below 1e-5 per pick)
    blob_of = torch.cdist(c1.double(), x[:6].double()).argmin(1)
    assert sorted(blob_of.tolist()) == list(range(6))
    c3, a3 = kmeans(x, 6, iters=3, init="k-means++", seed=4)
    assert sorted(torch.bincount(a3, minlength=6).tolist()) == [33, 33, 33, 33, 34, 34]


def test_large_norms_assign_correctly():
    base = torch.rand(64, dtype=torch.float64) * 1e3 + 1e3
    centres = torch.randn(3, 64, dtype=torch.float64)
    lab = torch.arange(60) % 3
    x = (base + centres[lab] + torch.randn(60, 64, dtype=torch.float64) * 0.05).float()
    for backend in BACKENDS:
        c, a = kmeans(x, 3, iters=3, backend=backend)
        assert torch.equal(a, lab)


def _distributed_worker(rank, world, init_file, x, k, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        part = x[:50] if rank == 0 else x[50:]
        c, a = kmeans(part, k, iters=4, distributed=True)
        cp, _ = kmeans(part, k, iters=2, init="k-means++", seed=11, distributed=True)
        torch.save({"c": c, "a": a, "cp": cp}, os.path.join(out_dir, f"r{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_distributed_two_gloo_ranks_cluster_as_one_set():
    x = blobs(n=90, d=6, k=4)
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_distributed_worker, args=(2, init_file, x, 4, tmp), nprocs=2, join=True)
        r0, r1 = (torch.load(os.path.join(tmp, f"r{r}.pt")) for r in (0, 1))
    c, a = kmeans(x, 4, iters=4)
    torch.testing.assert_close(r0["c"], c, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r1["c"], c, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.cat([r0["a"], r1["a"]]), a)
    assert torch.equal(r0["cp"], r1["cp"]) and torch.isfinite(r0["cp"]).all()


def test_distributed_needs_an_initialised_process_group():
    with pytest.raises(ValueError, match="distributed=True needs torch.distributed"):
        kmeans(torch.randn(5, 2), 2, distributed=True)
