"""The PNG: median time per shape and implementation, log scale, the copy-bandwidth floor drawn.

One panel per (op, pass); along x the workloads (shape, dtype, scenario), one marker per
implementation, and a black bar at the floor time of each workload.
"""
from __future__ import annotations

from typing import List, Optional


def plot_results(records: List[dict], bandwidth_gbps: Optional[float], path: str, title: str) -> bool:
    """Writes the PNG; False when matplotlib is missing (the JSON and table still hold everything)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ok = [r for r in records if r["status"] == "ok"]
    panels = list(dict.fromkeys((r["op"], r["pass"]) for r in ok))
    if not panels:
        return False
    labels = list(dict.fromkeys(r["backend"] for r in ok))
    markers = "osD^v<>pP*Xh"
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.4 * len(panels)), squeeze=False)
    for ax, (op, pass_) in zip(axes[:, 0], panels):
        rs = [r for r in ok if (r["op"], r["pass"]) == (op, pass_)]
        cats = list(dict.fromkeys((r["shape"], r["dtype"], r["scenario"]) for r in rs))
        xs = {c: i for i, c in enumerate(cats)}
        for j, lab in enumerate(labels):
            pts = [(xs[(r["shape"], r["dtype"], r["scenario"])], r["median_s"] * 1e3) for r in rs if r["backend"] == lab]
            if pts:
                off = (j - (len(labels) - 1) / 2) * 0.06
                # One colour and marker per implementation across every panel.
                ax.scatter([p[0] + off for p in pts], [p[1] for p in pts], marker=markers[j % len(markers)],
                           color=plt.get_cmap("tab10")(j % 10), label=lab, zorder=3)
        if bandwidth_gbps:
            fl = {}
            for r in rs:
                fl[xs[(r["shape"], r["dtype"], r["scenario"])]] = r["bytes"] / (bandwidth_gbps * 1e9) * 1e3
            for x, t in fl.items():
                ax.hlines(t, x - 0.35, x + 0.35, colors="black", linewidth=2,
                          label="floor (copy bandwidth)" if x == min(fl) else None, zorder=2)
        ax.set_yscale("log")
        ax.set_ylabel("median time (ms)")
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels([f"{s}\n{d} {sc if sc != '-' else ''}" for s, d, sc in cats], fontsize=7)
        ax.set_title(f"{op} {pass_}", fontsize=10)
        ax.grid(True, which="both", axis="y", alpha=0.3)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
