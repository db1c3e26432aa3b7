"""The benchmark harness and `python -m ocr_kernels bench`: arithmetic on known numbers, the
inputs' OC-fraction knob, the table and the JSON of a tiny run. No timing is asserted."""
import json
import os

import pytest
import torch

from ocr_kernels.__main__ import main
from ocr_kernels.bench import report
from ocr_kernels.bench.cases import bytes_moved
from ocr_kernels.bench.floor import floor_seconds, gbps, pct_of_floor
from ocr_kernels.bench.inputs import bias_for_oc_fraction, blob_mask, ocr_inputs, oc_fraction_of, scenarios
from ocr_kernels.bench.shapes import PRESETS, shapes_for
from ocr_kernels.ocr.reference import ic_mask_from_tags


def test_bandwidth_arithmetic():
    assert gbps(3_000_000_000, 1.5) == pytest.approx(2.0)
    assert floor_seconds(2_000_000_000, 4.0) == pytest.approx(0.5)
    # 1 GB at 40 GB/s takes 25 ms; measured 50 ms -> half the copy bandwidth.
    assert pct_of_floor(1_000_000_000, 0.05, 40.0) == pytest.approx(50.0)
    assert pct_of_floor(1_000_000_000, 0.05, None) is None


def test_bytes_moved_by_hand():
    # OCR logits 2*5*8*8 = 640 elements: fwd one read, fwd+bwd one read + one gradient write.
    assert bytes_moved("ocr_loss", (2, 5, 8, 8), torch.float32, "fwd") == 2560
    assert bytes_moved("ocr_loss", (2, 5, 8, 8), torch.float32, "fwd+bwd") == 5120
    assert bytes_moved("ocr_loss", (2, 5, 8, 8), torch.bfloat16, "fwd+bwd") == 2560
    # seg adds the int64 target [2, 8, 8]: 128 * 8 bytes.
    assert bytes_moved("seg_ocr_loss", (2, 5, 8, 8), torch.float32, "fwd+bwd") == 5120 + 1024
    # W-OoD (B, D, C, K) = (4, 16, 3, 5): features 64 + centroids 8*16 floats, labels 12 floats,
    # and the features' gradient (64 floats) for fwd+bwd.
    assert bytes_moved("wood_distance_loss", (4, 16, 3, 5), torch.float32, "fwd") == (64 + 128) * 4 + 48
    assert bytes_moved("wood_distance_loss", (4, 16, 3, 5), torch.float32, "fwd+bwd") == (64 + 128) * 4 + 48 + 256
    # K-means (N, D, k) = (64, 8, 4): 10 reads of the points plus int64 assignments.
    assert bytes_moved("kmeans", (64, 8, 4), torch.float32, "fwd") == 10 * 512 * 4 + 64 * 8


def _rec(backend, role, median, status="ok"):
    return {"op": "ocr_loss", "shape": "2x5x8x8", "dtype": "fp32", "scenario": "oc=10%", "pass": "fwd+bwd",
            "backend": backend, "role": role, "status": status, "reason": None if status == "ok" else "why",
            "bytes": 1_000_000_000, "median_s": median if status == "ok" else None, "times_s": [],
            "peak_mem_bytes": None}


def test_derived_columns_on_known_numbers():
    rs = [_rec("eager", "eager", 0.2), _rec("compile", "compile", 0.1), _rec("cpu", "backend", 0.05),
          _rec("cuda", "backend", None, status="skipped")]
    report.add_derived(rs, 40.0)
    eager, comp, cpu, cuda = rs
    assert cpu["gbps"] == pytest.approx(20.0)
    assert cpu["pct_of_floor"] == pytest.approx(50.0)
    assert cpu["speedup_vs_eager"] == pytest.approx(4.0)
    assert cpu["speedup_vs_compile"] == pytest.approx(2.0)
    assert comp["speedup_vs_eager"] == pytest.approx(2.0) and eager["speedup_vs_eager"] == pytest.approx(1.0)
    assert cuda["gbps"] is None and cuda["speedup_vs_eager"] is None
    text = report.format_table(rs, 40.0)
    header = text.splitlines()[0].split()
    for col in ("op", "shape", "dtype", "scenario", "pass", "backend", "median", "GB/s", "peak", "vs"):
        assert col in header
    cpu_line = next(line for line in text.splitlines()[2:] if line.split()[5] == "cpu")
    assert "50.00 ms" in cpu_line and "20.0" in cpu_line and "50.0%" in cpu_line and "4.00x" in cpu_line
    floor_line = next(line for line in text.splitlines()[2:] if line.split()[5] == "floor")
    assert "25.00 ms" in floor_line  # 1 GB at 40 GB/s
    assert "cuda: why" in report.skipped_summary(rs)
    md = report.format_table(rs, 40.0, markdown=True).splitlines()
    assert md[0].count("|") == len(report.COLUMNS) + 1 and len(md) == 2 + 1 + 3  # header, rule, floor, 3 rows


@pytest.mark.parametrize("target", [0.1, 0.3])
@pytest.mark.parametrize("layout", ["blobs", "indep"])
def test_oc_fraction_knob(target, layout):
    g = torch.Generator().manual_seed(1)
    sc = next(s for s in scenarios(target) if s.layout == layout)
    d, frac = ocr_inputs((4, 21, 48, 48), torch.float32, "cpu", sc, g)
    assert abs(frac - target) < 0.02
    ic = ic_mask_from_tags(d["tags"]).view(4, 21, 1, 1)
    assert float(oc_fraction_of(d["logits"].detach(), ic)) == pytest.approx(frac)
    assert d["logits"].requires_grad and d["logits"].is_leaf
    # Unbiased random logits are mostly OC: the reason the knob exists.
    z = torch.randn(4, 21, 48, 48, generator=g)
    assert float(oc_fraction_of(z, ic)) > 0.6
    assert bias_for_oc_fraction(z, ic, target) > 0


def test_blob_mask_is_spatially_clustered():
    # The realistic scenario's OC pixels come in blobs: exactly the fraction asked, and far fewer
    # 32-byte sectors (8 fp32 pixels along W) touched than an independent draw's 1 - 0.9^8 = 57%.
    g = torch.Generator().manual_seed(0)
    m = blob_mask((4, 96, 128), 0.1, g)
    assert m.sum(dim=(1, 2)).tolist() == [round(0.1 * 96 * 128)] * 4
    sectors = m.view(4, 96, 16, 8).any(-1).float().mean().item()
    assert 0.1 <= sectors < 0.25
    # neighbours agree far more often than independent pixels would (2 * 0.1 * 0.9 = 18% differ)
    differ = (m[:, :, 1:] != m[:, :, :-1]).float().mean().item()
    assert differ < 0.05


def test_shapes_option():
    assert shapes_for("quick", ["ocr_loss"]) == {"ocr_loss": PRESETS["quick"]["ocr_loss"]}
    assert shapes_for("ocr_loss:2x5x8x8,kmeans:64x8x4", ["ocr_loss", "kmeans"]) == {
        "ocr_loss": [(2, 5, 8, 8)], "kmeans": [(64, 8, 4)]}
    with pytest.raises(ValueError, match="kmeans shapes have"):
        shapes_for("kmeans:2x5x8x8", ["kmeans"])
    with pytest.raises(ValueError, match="preset"):
        shapes_for("bogus", ["kmeans"])


def test_bad_option_names_the_argument(tmp_path):
    with pytest.raises(SystemExit, match="--ops: unknown"):
        main(["bench", "--ops", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--backends: unknown"):
        main(["bench", "--backends", "gpu", "--out", str(tmp_path)])


def _run_tiny(tmp_path, *extra):
    rc = main(["bench", "--shapes", "tiny", "--backends", "eager,triton,cpu,cuda,reference", "--min-time", "0.01",
               "--copy-mib", "8", "--threads", "1", "--device", "cpu", "--name", "run", "--out", str(tmp_path), *extra])
    with open(tmp_path / "run.json") as f:
        return rc, json.load(f)


def test_cli_tiny_run_writes_table_json_and_plot(tmp_path, capsys):
    rc, doc = _run_tiny(tmp_path)
    assert rc == 0
    for key in ("date", "device", "versions", "git", "copy_bandwidth", "options", "results", "wall_time_s"):
        assert key in doc
    assert doc["device"]["type"] == "cpu" and doc["device"]["name"]
    assert doc["versions"]["torch"] == torch.__version__
    assert doc["partial"] is False
    bw = doc["copy_bandwidth"]["gbps"]
    assert bw > 0
    rs = doc["results"]
    assert {r["op"] for r in rs} == {"ocr_loss", "seg_ocr_loss", "wood_distance_loss", "kmeans"}
    # Both OCR scenarios, both passes; the eager anchor always runs.
    ocr = [r for r in rs if r["op"] == "ocr_loss" and r["backend"] == "eager"]
    assert {(r["scenario"], r["pass"]) for r in ocr} == {
        (s, p) for s in ("oc=10%-blobs", "oc=10%-indep", "all-pixels") for p in ("fwd", "fwd+bwd")}
    assert all(r["status"] == "ok" for r in ocr)
    for r in rs:
        assert r["status"] in ("ok", "skipped", "error")
        if r["status"] == "ok":
            t = r["times_s"]  # raw timings, stored to 6 significant digits
            assert r["median_s"] > 0 and t and min(t) * (1 - 1e-5) <= r["median_s"] <= max(t) * (1 + 1e-5)
            assert r["gbps"] == pytest.approx(r["bytes"] / r["median_s"] / 1e9)
            assert r["pct_of_floor"] == pytest.approx(100 * r["bytes"] / (bw * 1e9) / r["median_s"])
            assert r["floor_s"] == pytest.approx(r["bytes"] / (bw * 1e9))
            assert r["peak_mem_bytes"] is None  # CPU: n/a
        else:
            assert r["reason"]  # every case not measured says why
    # A backend not in this build or not for CPU tensors is skipped, never an error.
    assert not [r for r in rs if r["status"] == "error"]
    assert [r for r in rs if r["backend"] == "cuda" and "CUDA" in r["reason"]]
    out = capsys.readouterr().out
    assert "GB/s" in out and "% of floor" in out and "vs compile" in out
    for ext in ("txt", "md", "png"):
        assert os.path.getsize(tmp_path / f"run.{ext}") > 0


def test_time_budget_skips_the_rest_and_still_writes(tmp_path):
    rc, doc = _run_tiny(tmp_path, "--time-budget", "0", "--ops", "ocr_loss", "--no-plot")
    assert rc == 0
    assert doc["results"] and all(r["status"] == "skipped" for r in doc["results"])
    assert {r["reason"] for r in doc["results"] if r["backend"] == "eager"} == {"time budget spent"}


def test_gpu_case_list_defers_max_autotune(monkeypatch):
    """The GPU case list, built without a GPU: compile-max only at the target shapes, and after
    every other case (a time budget cuts it first)."""
    from ocr_kernels.bench import cases, impls

    monkeypatch.setattr(impls, "backend_reason", lambda name, device, dtype: None)
    shapes = {"ocr_loss": [(16, 21, 321, 321), (16, 21, 41, 41)], "kmeans": [(64, 8, 4)]}
    ws = cases.workloads(torch.device("cuda"), shapes, [torch.float32], ["eager", "compile", "compile-max", "triton"], 0.1)
    labels = [[i.label for i in w.impls] for w in ws]
    assert labels[0] == ["eager", "compile", "triton"]  # (16, 21, 321, 321), oc=10%
    small = [w for w in ws if w.shape == (16, 21, 41, 41)]
    assert all(i.fn is None and "target shapes" in i.reason for w in small for i in w.impls if i.label == "compile-max")
    tail = ws[-3:]
    assert [(w.shape, [i.label for i in w.impls]) for w in tail] == [((16, 21, 321, 321), ["compile-max"])] * 3
    assert {w.scenario_name for w in tail} == {"oc=10%-blobs", "oc=10%-indep", "all-pixels"}
    # The GPU runner's preset (defer_max=False): OCR/seg before K-means, the first dtype and the
    # realistic scenario first, the backends before the anchors, compile-max kept in place but
    # only for ocr_loss in the realistic scenario at the first dtype, no compile anchor for
    # all-pixels (another graph to compile).
    shapes = {"ocr_loss": [(16, 21, 321, 321)], "seg_ocr_loss": [(16, 21, 321, 321)], "kmeans": [(64, 8, 4)]}
    ws = cases.workloads(torch.device("cuda"), shapes, [torch.float32, torch.bfloat16],
                         ["eager", "compile", "compile-max", "triton"], 0.1, defer_max=False)
    got = [(w.op, w.dtype, w.scenario_name, [i.label for i in w.impls]) for w in ws]
    assert got[0] == ("ocr_loss", torch.float32, "oc=10%-blobs", ["triton", "eager", "compile", "compile-max"])
    assert got[-1][0] == "kmeans" and [g[1] for g in got[:-1]] == [torch.float32] * 6 + [torch.bfloat16] * 6
    assert sum("compile-max" in g[3] for g in got) == 1
    assert all("compile" not in g[3] for g in got if g[2] == "all-pixels")
    # The table puts a deferred case back with its workload.
    rs = [_rec("eager", "eager", 0.2), _rec("cpu", "backend", 0.1)]
    rs[1]["shape"] = "other"
    rs.append(_rec("compile-max", "compile-max", 0.3))
    report.add_derived(rs, None)
    order = [line.split()[5] for line in report.format_table(rs, None).splitlines()[2:]]
    assert order == ["eager", "compile-max", "cpu"]
