"""C++/CUDA-specific W-OoD tests (the shared matrix is tests/wood/test_backends.py): the
torch.library registration and the CPU instruction-set variants."""
import os
import subprocess
import sys

import pytest
import torch

from wood.wood_np import backend_runs


@pytest.fixture(params=["cpu", "cuda"])
def be(request):
    name = request.param
    dev = "cuda" if name == "cuda" and torch.cuda.is_available() else "cpu"
    reason = backend_runs(name, dev)
    if reason is not None:
        pytest.skip(f"{name}: {reason}")
    return name, dev


def test_opcheck(be):
    name, dev = be
    from ocr_kernels.wood.csrc_ops import ops

    o = ops()
    x = torch.randn(6, 9, device=dev, requires_grad=True)
    c = torch.randn(4, 9, device=dev, requires_grad=True)
    torch.library.opcheck(o.wood_distances, (x, c))
    torch.library.opcheck(o.wood_assign, (x.detach(), c.detach()))
    d = torch.rand(6, 4, device=dev) + 0.1
    torch.library.opcheck(o.wood_weighted_diff, (x.detach(), c.detach(), torch.randn(6, 4, device=dev),
                                                 d, torch.ones((), device=dev)))


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_every_cpu_isa_variant_passes_the_shared_matrix(isa):
    """OCR_KERNELS_CPU_ISA caps the W-OoD CPU kernels' runtime-picked variant as it caps OCR's
    (csrc/cpu/isa.h): run the shared W-OoD matrix in a process capped at each lower variant."""
    if backend_runs("cpu", "cpu") is not None:
        pytest.skip(f"cpu: {backend_runs('cpu', 'cpu')}")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, OCR_KERNELS_CPU_ISA=isa)
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/wood/test_backends.py", "-k", "cpu"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )
    tail = (proc.stdout + proc.stderr)[-3000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail, tail


def test_the_isa_cap_reaches_the_wood_kernels():
    # An invalid cap is refused by the first kernel that reads it: here a W-OoD one.
    if backend_runs("cpu", "cpu") is not None:
        pytest.skip(f"cpu: {backend_runs('cpu', 'cpu')}")
    script = ("import torch\nfrom ocr_kernels import centroid_distances\n"
              "centroid_distances(torch.randn(3, 40), torch.randn(2, 40), backend='cpu')\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, OCR_KERNELS_CPU_ISA="sse9")
    proc = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    assert "OCR_KERNELS_CPU_ISA must be auto, avx512, avx2 or baseline; got 'sse9'" in proc.stderr
