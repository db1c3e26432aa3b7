"""The cpu K-means step (GEMM + exactness guard + carried bounds, csrc/cpu/wood_kmeans.cpp)
against float64 exact arithmetic, and the public kmeans on the cpu backend against the reference
backend (same assignments, bitwise the same centroids)."""
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from wood.wood_np import backend_runs, np64
from ocr_kernels import kmeans

pytestmark = pytest.mark.skipif(backend_runs("cpu") is not None, reason=f"cpu: {backend_runs('cpu')}")


def step_op():
    from ocr_kernels.wood.csrc_ops import ops

    return ops().wood_kmeans_step


def exact_argmin(x, c):
    """float64 argmin of |x - c|^2, lowest index on ties (numpy's argmin)."""
    d = ((np64(x)[:, None, :] - np64(c)[None, :, :]) ** 2).sum(-1)
    return d.argmin(1), d


def gemm_alone(x, c, mu):
    """What the expanded formula picks without the guard (fp32, same centring)."""
    a, b = (x - mu).float(), (c - mu).float()
    s = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.t()
    return s.argmin(1).numpy()


@pytest.mark.parametrize("N, D, K", [(1, 1, 1), (7, 3, 2), (200, 16, 8), (301, 65, 17), (97, 300, 50),
                                     (50, 2048, 50), (130, 40, 70)])
def test_step_matches_exact_argmin_and_row_order_sums(N, D, K):
    g = torch.Generator().manual_seed(N * 1000 + D + K)
    x = torch.randn(N, D, generator=g) * 3
    c = torch.randn(K, D, generator=g)
    idx, mind, sums, counts, bounds = step_op()(x, c, x.mean(0), True)
    e, d = exact_argmin(x, c)
    assert (idx.numpy() == e).all()
    np.testing.assert_allclose(mind.numpy(), d.min(1), rtol=1e-4, atol=1e-4)
    # bitwise the index_add_ (row-order fp32) sums, exact counts
    assert torch.equal(sums, torch.zeros(K, D).index_add_(0, idx, x))
    assert torch.equal(counts, torch.bincount(idx, minlength=K).float())
    # the bounds hold: upper >= exact distance to the assigned, lower <= exact distance to the others
    own = np.sqrt(d[np.arange(N), e])
    other = np.sqrt(np.where(np.arange(K)[None, :] == e[:, None], np.inf, d).min(1))
    b = bounds.numpy()
    assert (b[:, 0] >= own).all() and (b[:, 1] <= other).all()


def test_guard_fixes_what_the_gemm_alone_gets_wrong():
    # Uncentred (mu = 0) points with a large common offset: the expanded formula loses all of
    # fp32's digits to cancellation, the guard must send (nearly) every point to the fp64 re-check.
    g = torch.Generator().manual_seed(0)
    off = torch.rand(64, generator=g, dtype=torch.float64) * 1e3 + 1e3
    x = (off + torch.randn(300, 64, generator=g, dtype=torch.float64) * 0.05).float()
    c = (off + torch.randn(12, 64, generator=g, dtype=torch.float64) * 0.05).float()
    mu = torch.zeros(64)
    e, _ = exact_argmin(x, c)
    wrong = gemm_alone(x, c, mu) != e
    assert wrong.mean() > 0.3  # the GEMM alone is wrong for many points here
    idx = step_op()(x, c, mu, False)[0]
    assert (idx.numpy() == e).all()


def test_exact_ties_go_to_the_lowest_index_under_a_large_offset():
    # integer coordinates on a 4096 offset: every distance is exact in fp64, many tie exactly
    g = torch.Generator().manual_seed(1)
    x = (torch.randint(-3, 4, (500, 24), generator=g) + 4096).float()
    c = (torch.randint(-3, 4, (16, 24), generator=g) + 4096).float()
    c[5] = c[2]  # a duplicated centroid: only the lower index may win
    e, d = exact_argmin(x, c)
    srt = np.sort(d, 1)
    assert (srt[:, 0] == srt[:, 1]).mean() > 0.05  # exact ties are common
    for mu in (x.mean(0), torch.zeros(24)):
        idx = step_op()(x, c, mu, False)[0]
        assert (idx.numpy() == e).all()
    assert not (idx == 5).any()


def test_near_ties_and_low_precision_points():
    # pairs of centroids mirrored about points' hyperplane, shifted by 1e-4: gaps far below the
    # expanded formula's error, above fp64's
    g = torch.Generator().manual_seed(2)
    base = torch.randn(128, generator=g, dtype=torch.float64) * 50 + 200
    v = torch.randn(10, 128, generator=g, dtype=torch.float64)
    c = torch.cat([base + v, base - v]).float()
    x = (base + torch.randn(400, 128, generator=g, dtype=torch.float64) * 1e-3).float()
    e, _ = exact_argmin(x, c)
    assert (step_op()(x, c, x.mean(0), False)[0].numpy() == e).all()
    for dt in (torch.float16, torch.bfloat16):
        xh, ch = torch.randn(300, 48, generator=g).to(dt), torch.randn(9, 48, generator=g).to(dt)
        idx, _, sums, _, _ = step_op()(xh, ch, xh.float().mean(0), True)
        assert (idx.numpy() == exact_argmin(xh, ch)[0]).all()
        assert torch.equal(sums, torch.zeros(9, 48).index_add_(0, idx, xh.float()))


def test_carried_bounds_skip_points_and_keep_exact_assignments():
    g = torch.Generator().manual_seed(3)
    centres = torch.randn(10, 32, generator=g) * 6
    x = centres[torch.arange(2000) % 10] + torch.randn(2000, 32, generator=g)
    c0 = x[:10].clone()
    op = step_op()
    mu = x.mean(0)
    i0, _, s0, n0, b0 = op(x, c0, mu, True)
    c1 = s0 / n0[:, None]
    moved = (c1.double() - c0.double()).norm(dim=1)
    i1, m1, _, _, b1 = op(x, c1, mu, True, i0, b0, moved)
    e, d = exact_argmin(x, c1)
    assert (i1.numpy() == e).all()
    # a point whose carried bounds already separate keeps its centroid without being read: its
    # squared distance is then reported as the upper bound (>= the exact one)
    skipped = ((b0[:, 0] + moved[i0]) < (b0[:, 1] - moved.max())).numpy()
    assert skipped.mean() > 0.5
    assert (m1.numpy()[skipped] >= d[np.arange(2000), e][skipped] * (1 - 1e-6)).all()


@pytest.mark.parametrize("init", ["first", "k-means++"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_public_kmeans_cpu_equals_reference_bitwise(init, dtype):
    g = torch.Generator().manual_seed(4)
    centres = torch.randn(12, 40, generator=g) * 5
    x = (centres[torch.randint(0, 12, (900,), generator=g)] + torch.randn(900, 40, generator=g)).to(dtype)
    c_r, a_r = kmeans(x, 12, iters=6, init=init, seed=7, backend="reference")
    c_c, a_c = kmeans(x, 12, iters=6, init=init, seed=7, backend="cpu")
    assert torch.equal(a_c, a_r)
    assert torch.equal(c_c, c_r)


def test_public_kmeans_large_offset_and_empty_clusters():
    # a large common offset (cancellation-prone), and first-k init with duplicated points so that
    # clusters come out empty and are re-seeded
    g = torch.Generator().manual_seed(5)
    off = torch.rand(64, generator=g, dtype=torch.float64) * 1e3 + 1e3
    centres = torch.randn(9, 64, generator=g, dtype=torch.float64)
    lab = torch.arange(450) % 9
    x = (off + centres[lab] + torch.randn(450, 64, generator=g, dtype=torch.float64) * 0.05).float()
    x[1:4] = x[0]  # four identical first points: clusters 1-3 are empty after the first step
    for iters in (1, 2, 5):
        c_r, a_r = kmeans(x, 9, iters=iters, backend="reference")
        c_c, a_c = kmeans(x, 9, iters=iters, backend="cpu")
        assert torch.isfinite(c_c).all()
        assert torch.equal(a_c, a_r) and torch.equal(c_c, c_r)
    e, _ = exact_argmin(x, c_c)
    assert (a_c.numpy() == e).all()


def test_returned_assignments_are_one_step_fresher_than_the_official_loop():
    # the official K-means returns the assignments it computed before its last update, i.e.
    # ours with one iteration less
    g = torch.Generator().manual_seed(6)
    centres = torch.randn(8, 24, generator=g) * 2
    x = centres[torch.randint(0, 8, (600,), generator=g)] + torch.randn(600, 24, generator=g)
    xn = np64(x)
    c = xn[:8].copy()
    for _ in range(10):
        a = ((xn[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        c = np.stack([xn[a == j].mean(0) if (a == j).any() else c[j] for j in range(8)])
    _, a9 = kmeans(x, 8, iters=9, backend="cpu")
    assert (a9.numpy() == a).all()


def _distributed_worker(rank, world, init_file, x, k, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        part = x[: x.shape[0] // 2] if rank == 0 else x[x.shape[0] // 2:]
        c, a = kmeans(part, k, iters=4, distributed=True, backend="cpu")
        torch.save({"c": c, "a": a}, os.path.join(out_dir, f"r{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_distributed_gemm_step_clusters_as_one_set():
    g = torch.Generator().manual_seed(8)
    centres = torch.randn(8, 32, generator=g) * 6
    x = centres[torch.arange(400) % 8] + torch.randn(400, 32, generator=g)
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_distributed_worker, args=(2, os.path.join(tmp, "init"), x, 8, tmp), nprocs=2, join=True)
        r0, r1 = (torch.load(os.path.join(tmp, f"r{r}.pt")) for r in (0, 1))
    c, a = kmeans(x, 8, iters=4, backend="cpu")
    torch.testing.assert_close(r0["c"], c, rtol=1e-5, atol=1e-5)
    assert torch.equal(r0["c"], r1["c"])
    assert torch.equal(torch.cat([r0["a"], r1["a"]]), a)


@pytest.mark.skipif(os.environ.get("OCR_KERNELS_CPU_ISA") not in (None, "", "auto", "avx512"),
                    reason="already capped")
def test_blas_fallback_without_avx512():
    """OCR_KERNELS_CPU_ISA=avx2 turns the AVX-512 product kernel off (at::mm computes the
    products): the file's tests again in such a process."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, OCR_KERNELS_CPU_ISA="avx2")
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist",
         os.path.abspath(__file__), "-k", "not distributed and not fallback"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail, tail
