"""The results: one record per timed (or skipped) case, the text/markdown table and the JSON."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
from typing import Dict, List, Optional

import torch

from .floor import gbps, pct_of_floor

COLUMNS = ("op", "shape", "dtype", "scenario", "pass", "backend", "median", "GB/s", "% of floor",
           "peak mem", "vs eager", "vs compile")


# The JSON has a speed-up against each; the table shows eager and compile.
SPEEDUP_ROLES = ("eager", "compile", "compile-max", "faiss", "official-1t")


def add_derived(records: List[dict], bandwidth_gbps: Optional[float]) -> None:
    """Fill GB/s, % of floor and the speed-ups (eager or compile anchor of the same workload and
    pass over this time; > 1 means faster than the anchor)."""
    anchors: Dict[tuple, Dict[str, float]] = {}
    for r in records:
        if r["status"] == "ok" and r["role"] in SPEEDUP_ROLES:
            anchors.setdefault(_group(r), {})[r["role"]] = r["median_s"]
    for r in records:
        ok = r["status"] == "ok"
        r["gbps"] = gbps(r["bytes"], r["median_s"]) if ok else None
        r["pct_of_floor"] = pct_of_floor(r["bytes"], r["median_s"], bandwidth_gbps) if ok else None
        a = anchors.get(_group(r), {})
        for role in SPEEDUP_ROLES:
            key = "speedup_vs_" + role.replace("-", "_")
            r[key] = a[role] / r["median_s"] if ok and role in a else None


def _group(r) -> tuple:
    return (r["op"], r["shape"], r["dtype"], r["scenario"], r["pass"])


def _fmt_time(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"


def _fmt_gbps(v: Optional[float]) -> str:
    return "-" if v is None else (f"{v:.1f}" if v >= 1 else f"{v:.3f}")


def _fmt(v: Optional[float], spec: str, suffix: str = "") -> str:
    return "-" if v is None else f"{v:{spec}}{suffix}"


def row_cells(r: dict) -> List[str]:
    if r["status"] != "ok":
        tail = [f"{r['status']}: {r.get('reason') or ''}"[:70]] + [""] * 5
    else:
        mem = r.get("peak_mem_bytes")
        tail = [
            _fmt_time(r["median_s"]),
            _fmt_gbps(r["gbps"]),
            _fmt(r["pct_of_floor"], ".1f", "%"),
            "n/a" if mem is None else f"{mem / 2**20:.1f} MiB",
            _fmt(r["speedup_vs_eager"], ".2f", "x"),
            _fmt(r["speedup_vs_compile"], ".2f", "x"),
        ]
    return [r["op"], r["shape"], r["dtype"], r["scenario"], r["pass"], r["backend"]] + tail


def floor_cells(group: tuple, nbytes: int, bandwidth_gbps: float) -> List[str]:
    op, shape, dtype, scen, pass_ = group
    t = nbytes / (bandwidth_gbps * 1e9)
    return [op, shape, dtype, scen, pass_, "floor", _fmt_time(t), f"{bandwidth_gbps:.1f}", "100.0%", "", "", ""]


def table_rows(records: List[dict], bandwidth_gbps: Optional[float]) -> List[List[str]]:
    """Rows of the measured (and failed) cases in run order, with a "floor" row ahead of each
    workload pass when a bandwidth is known. Skipped cases are listed by skipped_summary."""
    rows, seen = [], set()
    first = {}
    for k, r in enumerate(records):
        first.setdefault(_group(r), k)
    # Cases of one workload pass together (deferred compile-max cases join their group).
    records = sorted(records, key=lambda r: first[_group(r)])
    for r in records:
        if r["status"] == "skipped":
            continue
        g = _group(r)
        if bandwidth_gbps and g not in seen:
            seen.add(g)
            rows.append(floor_cells(g, r["bytes"], bandwidth_gbps))
        rows.append(row_cells(r))
    return rows


def skipped_summary(records: List[dict]) -> str:
    """One line per (backend, reason) of the cases not measured, with the ops it concerns."""
    seen: Dict[tuple, Dict[str, int]] = {}
    for r in records:
        if r["status"] == "skipped":
            ops = seen.setdefault((r["backend"], r.get("reason") or ""), {})
            ops[r["op"]] = ops.get(r["op"], 0) + 1
    if not seen:
        return ""
    lines = ["not measured (backend: reason [ops]):"]
    for (b, why), ops in seen.items():
        lines.append(f"  {b}: {why} [{', '.join(ops)}; {sum(ops.values())} cases]")
    return "\n".join(lines) + "\n"


def inertia_summary(records: List[dict]) -> str:
    """K-means inertia (sum of squared distances of the points to their nearest returned
    centroid, fp64) of every implementation measured, so that speeds compare equal results."""
    rows = [r for r in records if r.get("inertia") is not None]
    if not rows:
        return ""
    lines = ["K-means inertia (fp64, first input set):"]
    lines += [f"  {r['shape']} {r['backend']}: {r['inertia']:.9g}" for r in rows]
    return "\n".join(lines) + "\n"


def format_table(records: List[dict], bandwidth_gbps: Optional[float], markdown: bool = False) -> str:
    rows = table_rows(records, bandwidth_gbps)
    if markdown:
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(c)) for c in col) for col in zip(COLUMNS, *rows)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(COLUMNS), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]) + "\n"


# --- environment ----------------------------------------------------------------------------------

def git_commit() -> dict:
    """The checkout's commit; OCR_BENCH_GIT_COMMIT names it where the tree is a copy without .git
    (the GPU machine receives the working tree only)."""
    if os.environ.get("OCR_BENCH_GIT_COMMIT"):
        return {"commit": os.environ["OCR_BENCH_GIT_COMMIT"], "dirty": None, "source": "OCR_BENCH_GIT_COMMIT"}
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": sha or None, "dirty": bool(dirty)}
    except Exception:  # no git, or not a checkout (an installed wheel)
        return {"commit": None, "dirty": None}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> Optional[List[float]]:
    """The 1/5/15-minute load of the machine: other jobs make CPU timings noisy."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def device_info(device: torch.device) -> dict:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return {"type": "cuda", "name": p.name, "multiprocessors": p.multi_processor_count,
                "memory_bytes": p.total_memory, "l2_bytes": int(getattr(p, "L2_cache_size", 0) or 0),
                "capability": f"{p.major}.{p.minor}"}
    return {"type": "cpu", "name": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads()}


def versions() -> dict:
    try:
        import triton

        tv = triton.__version__
    except Exception:
        tv = None
    from .. import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "triton": tv,
            "cuda": torch.version.cuda, "ocr_kernels": __version__, "platform": platform.platform()}


def device_slug(info: dict) -> str:
    name = info["name"] if info["type"] == "cuda" else f"cpu-{info['cores']}core-{info['name']}"
    name = re.sub(r"\(r\)|\(tm\)|cpu @.*|processor", "", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:60]


def build_document(*, device: torch.device, bandwidth: Optional[dict], records: List[dict], options: dict,
                   started: _dt.datetime, wall_s: float, partial: bool, load_start=None) -> dict:
    info = device_info(device)
    info["load_average_start"], info["load_average_end"] = load_start, load_average()
    return {
        "schema": 1,
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": info,
        "versions": versions(),
        "git": git_commit(),
        "copy_bandwidth": bandwidth,
        "options": options,
        "wall_time_s": round(wall_s, 1),
        "partial": partial,
        "columns": list(COLUMNS),
        "results": records,
    }


def write_json(doc: dict, path: str) -> None:
    """Indented header, one line per result (raw timings to 6 significant digits), written
    atomically so that a run killed mid-write leaves the previous complete file."""
    head = json.dumps({k: v for k, v in doc.items() if k != "results"}, indent=1)
    rows = []
    for r in doc.get("results", []):
        r = dict(r, times_s=[float(f"{t:.6g}") for t in r.get("times_s") or []])
        rows.append("  " + json.dumps(r))
    text = head[: -len("\n}")] + ',\n "results": [\n' + ",\n".join(rows) + "\n ]\n}\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
