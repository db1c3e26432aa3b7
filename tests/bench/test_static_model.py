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
    rows = [r for r in doc["records"] if not r.get("total")]
    looped = 0
    for r in rows:
        sa = r["sass"]
        threads = math.prod(r["grid"]) * r["num_warps"] * 32
        B, C1, H, W = (int(v) for v in r["shape"].split("x"))
        assert r["sass_per_logit"] == pytest.approx(sa["executed"] * threads / (B * C1 * H * W))
        if not r["loops"]:
            assert sa["executed"] == sa["static"]  # straight-line code runs once
            continue
        # every SASS loop is mapped to a source loop and runs its trip count for the case
        assert all(src != "unmapped" for src in r["loops"]), r["loops"]
        trips = [float(src.rsplit("= ", 1)[1]) for src in r["loops"]]
        assert sa["static_in_loops"] > 0
        if max(trips) > 1:
            assert sa["executed"] > sa["static"]
            looped += 1
    # C+1 = 300 needs class loops (chunks of classes, or one class at a time): a thread executes
    # more than the binary holds; ceil(300 / chunk) or 300-ish trips, never 1
    assert looped >= 1 and any(r["shape"] == "1x300x16x16" for r in rows)
    # fwd+bwd is the sum of its launches; its floor is one read + one write of the logits
    case = next(r["case"] for r in rows if r["shape"] == "2x21x64x64")
    tot = next(r for r in doc["records"] if r["case"] == case and r.get("total") and r["pass"] == "fwd+bwd")
    assert tot["floor_bytes"] == 2 * 2 * 21 * 64 * 64 * 4
    parts = [r for r in rows if r["case"] == case]
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
    assert checked == len(rows) >= 4  # every launch of both passes of both cases


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


@pytest.mark.parametrize("C1, trips", [(100, 4), (33, 2), (32, 1)])
def test_loop_trips_and_executed_counts_by_hand(C1, trips):
    # A kernel with one loop over classes in chunks of 32: ceil(C1 / 32) trips. Each trip
    # exponentiates a [64 x 32] tile over 4 warps: 64 * 32 / 128 = 16 MUFU ops per thread.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "bench", "static_loop_probe.py"), str(C1)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["trips"] == [trips] and r["loops"][0].endswith(f"= {trips}") and not r["notes"]
    assert r["executed"] == r["static"] - r["in_loops"] + trips * r["in_loops"]
    assert r["mufu_static"] == 16 and r["mufu_executed"] == 16 * trips


def test_fused_upsampling_slots_of_the_resize_model():
    # the cell columns of csrc/ocr_resize_thread.h (output columns sharing a left tap) at 41 -> 321,
    # align_corners=False: the first also takes the clamped border columns, the last only the
    # columns up to the edge; every other one 7 or 8 (321 / 41 = 7.83); a slot is up to 4 of them
    import torch
    import torch.nn.functional as F

    from ocr_kernels.bench.static import Case, _resize_i0, _resize_slots

    i0 = _resize_i0(41, 321)
    # the top tap of F.interpolate's own grid: where each output index's weight on a source row
    # first appears (a one-hot source row upsampled)
    eye = torch.eye(41).reshape(41, 1, 41, 1)
    w = F.interpolate(eye, size=(321, 1), mode="bilinear", align_corners=False)[:, 0, :, 0]
    assert torch.equal(i0, (w > 0).float().argmax(0))
    n = torch.bincount(i0, minlength=41).tolist()
    assert n[0] == 12 and n[-1] == 4 and set(n[1:-1]) == {7, 8} and sum(n) == 321
    case = Case("seg_ocr_loss", (1, 21, 41, 41), "fp32", "ada", "blobs", size=(321, 321))
    slots = sum(math.ceil(a / 4) for a in n)
    assert slots == 3 + 39 * 2 + 1 and _resize_slots(case) == (slots, 96)
    assert case.name == "seg_ocr_loss 1x21x41x41->321x321 fp32 ada blobs"


def test_upstream_gradients_are_expanded_and_cost_no_bytes(monkeypatch):
    # The model counts the map's upstream gradient as the bench's fwd+bwd delivers it: a real
    # autograd run of the mean reduction (CPU, the Triton backend under the interpreter) hands
    # the backward op the stride-0 expand of a scalar, and kernel_bytes then drops exactly the
    # bytes a dense gradient would cost (4 a pixel in the loss sectors), for the Triton and the
    # CUDA rows alike.
    import types

    import torch

    from ocr_kernels import ocr_loss
    from ocr_kernels.bench import static as st

    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        import ocr_kernels.ocr.triton_kernel as tk

        seen = []
        orig = tk._backward

        def spy(grad_ocr, grad_ce, *args):
            seen.append((grad_ocr.stride(), None if grad_ce is None else grad_ce.stride()))
            return orig(grad_ocr, grad_ce, *args)

        monkeypatch.setattr(tk, "_backward", spy)
        B, C1, H, W = 2, 5, 6, 7
        z = torch.randn(B, C1, H, W, requires_grad=True)
        tags = torch.zeros(B, C1 - 1)
        tags[:, 0] = 1
        ocr_loss(z, tags, group_split="max", backend="triton").backward()
        assert seen == [((0, 0, 0), None)]
        assert z.grad is not None and bool(torch.isfinite(z.grad).all())

    case = st.Case("ocr_loss", (16, 21, 321, 321), "fp32", "ada", "blobs")
    P = 16 * 321 * 321
    dense_bytes = 4 * P * st._sector_fraction(case, 4)
    up = st.upstream_grad(case)
    assert up.shape == (16, 321, 321) and up.stride() == (0, 0, 0)
    dense = torch.empty(up.shape, device="meta")

    def cap(g):
        fn = types.SimpleNamespace(fn=types.SimpleNamespace(__name__="_bwd_kernel"))
        return types.SimpleNamespace(fn=fn, args={"BLOCK_P": 512, "gl_ptr": g, "gce_ptr": g})

    drop = st.kernel_bytes(case, "bwd", cap(dense)) - st.kernel_bytes(case, "bwd", cap(up))
    assert drop == pytest.approx(dense_bytes, rel=1e-12)
    cuda_expanded = st.kernel_bytes(case, "bwd", None)
    monkeypatch.setattr(st, "upstream_grad", lambda c: dense)
    assert st.kernel_bytes(case, "bwd", None) - cuda_expanded == pytest.approx(dense_bytes, rel=1e-12)


def test_seg_training_step_is_the_objective_and_a_scale(monkeypatch):
    # What the model captures for seg_ocr_loss (the forward writes the gradient, the backward
    # scales it unless g == 1) is what a training step runs: under the interpreter, one objective
    # launch with the reduction's coefficients and one scale with g = 1, no maps backward; the
    # model's bytes: the logits read and the gradient written, the maps and the target; the
    # scale moves g alone.
    import types

    import torch

    from ocr_kernels import seg_ocr_loss
    from ocr_kernels.bench import static as st

    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        import ocr_kernels.ocr.triton_kernel as tk
        import ocr_kernels.seg.triton_kernel as sk

        seen = []
        # each where its op calls it: the seg ops' module imported _objective and _scale by name
        for mod, name in ((sk, "_objective"), (sk, "_scale"), (tk, "_backward")):
            def spy(*args, _orig=getattr(mod, name), _name=name):
                seen.append((_name, args))
                return _orig(*args)

            monkeypatch.setattr(mod, name, spy)
        B, C1, H, W = 2, 5, 6, 7
        z = torch.randn(B, C1, H, W, requires_grad=True)
        tags = torch.zeros(B, C1 - 1)
        tags[:, 0] = 1
        target = torch.randint(0, C1, (B, H, W))
        target[0, 0] = 255
        seg_ocr_loss(z, target, tags, group_split="max", backend="triton").backward()
        assert [n for n, _ in seen] == ["_objective", "_scale"]
        coef = seen[0][1][5]
        valid = int((target != 255).sum())
        assert torch.allclose(coef, torch.tensor([1.0 / valid, 1.0 / (B * H * W)]))
        g = seen[1][1][1]
        assert g.dim() == 0 and float(g) == 1.0
        assert z.grad is not None and bool(torch.isfinite(z.grad).all())

    case = st.Case("seg_ocr_loss", (16, 21, 321, 321), "fp32", "ada", "blobs")
    P = 16 * 321 * 321

    def cap(name, **args):
        fn = types.SimpleNamespace(fn=types.SimpleNamespace(__name__=name))
        return types.SimpleNamespace(fn=fn, args=args, grid=(528, 1, 1))

    assert st.kernel_bytes(case, "fwd", cap("_obj_kernel")) == 2 * P * 21 * 4 + 16 * P
    assert st.kernel_bytes(case, "bwd", cap("_scale_kernel")) == 4 * 528


def test_fully_unrolled_source_loops_are_not_loop_candidates(tmp_path):
    # a loop under a bare `#pragma unroll` leaves no SASS loop; code inlined into it carries its
    # line, so the resize kernels' mapping skips it (`#pragma unroll 1` and plain loops stay)
    from ocr_kernels.bench.static import _cpp_loops, _fully_unrolled

    src = tmp_path / "k.h"
    src.write_text("""void f(int n, int count) {
#pragma unroll
  for (int i = 0; i < PPT; ++i) {
    store(i);
  }
#pragma unroll 1
  for (int m = 0; m < count; ++m) g(m);
  for (int j = 0; j < n; ++j) h(j);
}
""")
    loops = _cpp_loops(str(src))
    assert [b for _, _, b in loops] == ["PPT", "count", "n"]
    assert [_fully_unrolled(str(src), lo) for lo, _, _ in loops] == [True, False, False]


def test_resize_backward_combine_and_gather_loops_get_their_trips():
    # the x-combine (one (column, class) item a thread, csrc/ocr_resize_thread.h): a slots'-path
    # row's class loop (resize_combine, bound `count`) runs kResizeClassChunk / per trips, per =
    # threads // w classes at once (96 threads over 41 columns: 2 -> 2.0), its column loop
    # (`mine_cols`) once, and the loops past the kResizeUnrolledSlots unrolled chunk columns (n0,
    # n1) never (a cell of 41 -> 321 has 2 slots); a compacted row's (resize_combine_span, ocr_loss
    # only) gets _compact_rows' span trips; the gather's class loop C1 / groups times inside its
    # (image, group) loop
    from ocr_kernels.bench.static import (Case, _compact_rows, _nvcc, _resize_header_int,
                                          analyse_cuda_resized)

    if _nvcc() is None:
        pytest.skip("needs nvcc")

    def trips(loops, bound):
        return [s.rsplit(": ", 1)[1] for s in loops if f" i < {bound}, " in s]

    chunk, threads, w = _resize_header_int("kResizeClassChunk"), 96, 41
    seg = Case("seg_ocr_loss", (16, 81, w, w), "fp32", "ada", "blobs", size=(321, 321))
    a, _ = analyse_cuda_resized(seg, "backward")
    assert not any(": PPT" in s or "i < PPT" in s for s in a["loops"])
    # one combine a flush site: the OC class loop's two copies (with and without the target
    # compare: oc_stores_any_target, oc_stores_ic_targets), the IC loop's and the last one's
    want = f"{chunk / (threads // w):.1f}"
    assert want == "2.0" and trips(a["loops"], "count") == [want] * 4
    assert trips(a["loops"], "mine_cols") == ["1.0"] * 4
    assert trips(a["loops"], "n0") == trips(a["loops"], "n1") == ["0.0"] * 4
    assert not trips(a["loops"], "span_classes")  # the seg kernels do not compact
    case = Case("ocr_loss", (16, 81, w, w), "fp32", "ada", "blobs", size=(321, 321))
    a, _ = analyse_cuda_resized(case, "backward")
    rows = _compact_rows(case, threads, 1)
    assert 1.0 < rows["span_trips"] < chunk and 0.0 < rows["span_lanes"] < 1.0
    span_classes, span_end = trips(a["loops"], "span_classes"), trips(a["loops"], "span_end")
    assert len(span_classes) >= 3 and set(span_classes) == {f"{rows['span_trips']:.1f}"}
    assert len(span_end) >= 3 and set(span_end) == {f"{rows['span_lanes']:.1f}"}
    g, _ = analyse_cuda_resized(seg, "gather")
    assert any("i < rows" in s and s.endswith(": 1.0") for s in g["loops"])
    assert any("i < classes" in s and s.endswith(": 7.4") for s in g["loops"])


def test_oc_target_rows_share(monkeypatch):
    # the share of the fused seg backward's rows whose OC class loop compares with the targets:
    # none with inputs.seg_target's pseudo-labels (IC classes only); with every target the last
    # class, the rows of the images that do not tag it
    import torch

    from ocr_kernels.bench import static
    from ocr_kernels.bench.static import Case, _oc_target_rows
    from ocr_kernels.bench.inputs import voc_like_tags

    seg = Case("seg_ocr_loss", (4, 21, 9, 9), "fp32", "ada", "blobs", size=(33, 33))
    assert _oc_target_rows(seg) == 0.0
    assert _oc_target_rows(Case("ocr_loss", (4, 21, 9, 9), "fp32", "ada", "blobs", size=(33, 33))) == 0.0
    monkeypatch.setattr(static, "seg_target",
                        lambda logits, tags, g: torch.full((4, 33, 33), 20, dtype=torch.int64))
    tags = voc_like_tags(4, 20, torch.Generator().manual_seed(0))
    want = float((tags[:, 19] == 0).double().mean())
    assert 0.0 < want < 1.0
    assert _oc_target_rows(seg) == want
