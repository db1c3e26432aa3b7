"""Predicted beside measured: ``python -m ocr_kernels.bench.compare BENCH.json STATIC.json``.

Matches each timed Triton case of a bench run (op, shape, dtype, scenario, pass; the bench runs
group_split="ada") with the static model's case and prints measured time, predicted H200 time,
their ratio and the bound the model named, so the model can be checked case by case."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Dict, List, Optional

from .inputs import scenarios


def rows(bench: dict, static: dict, backend: str = "triton") -> List[List[str]]:
    pred: Dict[tuple, dict] = {(r["case"], r["pass"]): r for r in static["records"]
                               if r.get("total") and r.get("backend", "triton") == backend}
    frac = bench.get("options", {}).get("oc_fraction", 0.1)
    layouts = {sc.name: sc.layout or "all-pixels" for sc in scenarios(frac)}
    out = []
    for r in bench.get("results", []):
        if r.get("backend") != backend or r.get("status") != "ok":
            continue
        layout: Optional[str] = layouts.get(r.get("scenario"))
        if layout is None:
            continue
        case = f"{r['op']} {r['shape']} {r['dtype']} ada {layout}"
        p = pred.get((case, r["pass"]))
        if p is None:
            continue
        t_pred = p["predicted"]["H200"]["time_s"]
        out.append([r["op"], r["shape"], r["dtype"], r["scenario"], r["pass"],
                    f"{r['median_s'] * 1e6:.0f}", f"{t_pred * 1e6:.0f}", f"{r['median_s'] / t_pred:.2f}",
                    p["predicted"]["H200"]["bound"]])
    return out


COLUMNS = ["op", "shape", "dtype", "scenario", "pass", "measured us", "predicted us (H200)",
           "measured/predicted", "model's bound"]


def format_rows(table: List[List[str]]) -> str:
    if not table:
        return "no timed Triton case matches a static case (nothing to compare)\n"
    widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(COLUMNS)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(COLUMNS)] + [fmt(r) for r in table]) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ocr_kernels.bench.compare", description=__doc__)
    p.add_argument("bench_json")
    p.add_argument("static_json")
    p.add_argument("--backend", default="triton")
    a = p.parse_args(argv)
    with open(a.bench_json) as f:
        bench = json.load(f)
    with open(a.static_json) as f:
        static = json.load(f)
    print(f"measured ({bench.get('device', {}).get('name', '?')}) beside the static model's PREDICTION "
          f"(H200, {static.get('target')}, tools {static.get('tools', {}).get('triton', '?')})")
    print(format_rows(rows(bench, static, a.backend)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
