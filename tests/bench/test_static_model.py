"""bench --static: the static sm_90 model on its smoke cases, cross-checked against ptxas -v run
here on the same PTX (no GPU needed; skipped without Triton's NVIDIA backend)."""
import json
import math
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _triton_bin(name):
    import importlib.util

    spec = importlib.util.find_spec("triton")
    root = os.path.dirname(spec.origin) if spec and spec.origin else ""
    path = os.path.join(root, "backends", "nvidia", "bin", name)
    return path if os.path.exists(path) else None


def triton_ptxas():
    from triton.backends.nvidia.compiler import get_ptxas

    try:
        return get_ptxas(90).path  # newer Triton: a ptxas per architecture
    except TypeError:
        return get_ptxas().path


pytestmark = pytest.mark.skipif(not all(_triton_bin(n) for n in ("ptxas", "nvdisasm", "cuobjdump")),
                                reason="triton's NVIDIA backend (ptxas, nvdisasm, cuobjdump) is absent")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("static")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env["TRITON_CACHE_DIR"] = str(out / "triton-cache")
    # through the CLI with TRITON_INTERPRET=1 set, as `make test` has it: it re-runs itself without
    proc = subprocess.run([sys.executable, "-m", "ocr_kernels", "bench", "--static", "--static-cases", "smoke",
                           "--static-backends", "triton", "--static-asm", "--out", str(out), "--name", "smoke"],
                          env=dict(env, TRITON_INTERPRET="1"), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PREDICTIONS" in proc.stdout
    with open(out / "smoke.json") as f:
        return out, json.load(f)


def test_records_have_the_timed_bench_keys(smoke):
    _, doc = smoke
    assert not doc["errors"]
    rows = doc["records"]
    for r in rows:
        for key in ("kernel", "case", "regs", "spills", "predicted_pct_of_floor"):
            assert key in r
        assert 0 < r["predicted_pct_of_floor"] <= 100 and r["regs"] > 0
    passes = {(r["case"], r["pass"]) for r in rows if r.get("total")}
    assert {p for _, p in passes} == {"fwd", "bwd", "fwd+bwd"}
    assert doc["constants"]["gpus"]["H200"]["sms"] == 132


def test_loop_aware_counts_and_launch_config(smoke):
    _, doc = smoke
    # One code path at any C+1: the class loops run over each image's class list, IC classes
    # first (nic of them: the mean of the case's tag draw, a hint, since a captured launch writes
    # the lists), then OC; helper loops take their ranges from the call site they were inlined from.
    rows = [r for r in doc["records"] if r["case"].startswith("ocr_loss 1x300x16x16") and not r.get("total")]
    fwd = next(r for r in rows if r["pass"] == "fwd" and r["kernel"].endswith("_fwd_kernel"))
    nic = fwd["hints"]["nic"]
    assert 2 <= nic <= 4
    assert fwd["grid"] == [math.ceil(256 / fwd["constexprs"]["BLOCK_P"]), 1, 1]
    assert fwd["loops"] and "unmapped" not in fwd["loops"]
    trips = sorted(float(s.rsplit("= ", 1)[1]) for s in fwd["loops"])
    assert trips[0] == nic and trips[-1] == 300 - nic
    sa = fwd["sass"]
    assert sa["static_in_loops"] > 0 and sa["executed"] > sa["static"] + (300 - nic - 1) * 10
    threads = math.prod(fwd["grid"]) * fwd["num_warps"] * 32
    assert fwd["sass_per_logit"] == pytest.approx(fwd["sass"]["executed"] * threads / (300 * 256))
    # the backward writes zeros over all C+1 classes in programs without a gradient
    bwd = next(r for r in rows if r["pass"] == "bwd")
    assert any(s.endswith("range(0, C1) = 300") for s in bwd["loops"])
    # OC pixels in blobs: some programs hold none and take the zero side of the branches
    blk = next(r for r in doc["records"] if r["case"].startswith("ocr_loss 2x21x64x64") and r["pass"] == "fwd"
               and r["kernel"].endswith("_fwd_kernel"))
    assert 0 < blk["active_programs"] < 1 and not blk["spills"]
    # fwd+bwd is the sum of its launches; its floor is one read + one write of the logits
    tot = next(r for r in doc["records"] if r["case"] == blk["case"] and r["pass"] == "fwd+bwd")
    assert tot["floor_bytes"] == 2 * 2 * 21 * 64 * 64 * 4
    parts = [r for r in doc["records"] if r["case"] == blk["case"] and not r.get("total")]
    assert tot["predicted"]["H200"]["time_s"] == pytest.approx(sum(r["predicted"]["H200"]["time_s"] for r in parts))


def _ptxas_v(ptx_path):
    # the ptxas and the flags Triton's NVIDIA backend uses for sm_90 (it built the cubin the model read)
    proc = subprocess.run([triton_ptxas(), "-lineinfo", "-v", "--regAllocOptLevel=2", "--gpu-name=sm_90a",
                           str(ptx_path), "-o", os.devnull], capture_output=True, text=True, check=True)
    text = proc.stderr + proc.stdout
    regs = int(re.search(r"Used (\d+) registers", text).group(1))
    st, ld = (int(v) for v in re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text).groups())
    return regs, st, ld


def test_registers_and_spills_match_ptxas(smoke):
    out, doc = smoke
    rows = [r for r in doc["records"] if not r.get("total")]
    checked = 0
    for r in rows:
        name = r["kernel"].split(":", 1)[1]
        regs, st, ld = _ptxas_v(out / "asm" / f"{name}-{r['kernel_hash'][:12]}.ptx")
        assert (r["regs"], r["spill_store_bytes"], r["spill_load_bytes"]) == (regs, st, ld), r["case"]
        checked += 1
    assert checked == 6  # per case: the class lists, the forward, the backward


def test_cpp_loop_extents_and_bounds(tmp_path):
    # The CUDA kernels' trip counts come from their C++ loops: extent by braces or by the single
    # statement, bound from the condition.
    from ocr_kernels.bench.static import _cpp_loops

    src = tmp_path / "k.h"
    src.write_text("""void f(int C1, long total) {
  for (int64_t k = 0; k < C1; ++k) {
    a(k);
    if (x) { b(k); }
  }
  for (int64_t k = 0; k < C1; ++k) store(k, 0);
  for (int64_t i = start; i < total;
       i += step) {
    for (int j = 0; j < D; ++j)
      acc += g(j);
  }
}
""")
    assert _cpp_loops(str(src)) == [(2, 5, "C1"), (6, 6, "C1"), (7, 11, "total"), (9, 10, "D")]
