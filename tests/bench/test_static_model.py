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
                           "--static-asm", "--out", str(out), "--name", "smoke"],
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
    # 1 x 300 x 16 x 16: C+1 = 300 > 256 takes the chunked path, 64 classes a chunk: every class
    # loop runs ceil(300 / 64) = 5 times, so a thread executes far more than the binary holds.
    rows = [r for r in doc["records"] if r["case"].startswith("ocr_loss 1x300x16x16") and not r.get("total")]
    fwd = next(r for r in rows if r["pass"] == "fwd")
    assert fwd["constexprs"]["CHUNKED"] and fwd["constexprs"]["BLOCK_C"] == 64
    assert fwd["grid"] == [math.ceil(256 / fwd["constexprs"]["BLOCK_P"]), 1, 1]
    assert fwd["loops"] and all(s.endswith("= 5") for s in fwd["loops"])
    sa = fwd["sass"]
    assert sa["static_in_loops"] > 0
    assert sa["executed"] == (sa["static"] - sa["static_in_loops"]) + 5 * sa["static_in_loops"]
    threads = math.prod(fwd["grid"]) * fwd["num_warps"] * 32
    assert fwd["sass_per_logit"] == pytest.approx(fwd["sass"]["executed"] * threads / (300 * 256))
    # the block path (C+1 = 21) has no loop: executed == static
    blk = next(r for r in doc["records"] if r["case"].startswith("ocr_loss 2x21x64x64") and r["pass"] == "fwd"
               and not r.get("total"))
    assert blk["sass"]["executed"] == blk["sass"]["static"] and not blk["constexprs"]["CHUNKED"]
    # fwd+bwd is the sum of its two launches; its floor is one read + one write of the logits
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
    assert checked == 4
