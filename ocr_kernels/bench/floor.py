"""The memory floor: the device's measured copy bandwidth, and what it makes of a timing.

The bandwidth is that of a large device-to-device copy (GPU: 1 GiB, timed with CUDA events;
CPU: 256 MiB with torch.utils.benchmark), counting bytes read plus bytes written, as a copy
kernel's own GB/s are counted. A case that must move `bytes` cannot finish faster than
bytes / bandwidth: that is its floor, and "% of floor" is floor time over measured time.
"""
from __future__ import annotations

from typing import Optional

import torch


def gbps(nbytes: int, seconds: float) -> float:
    """Achieved bandwidth in GB/s (10^9 bytes per second)."""
    return nbytes / seconds / 1e9


def floor_seconds(nbytes: int, bandwidth_gbps: float) -> float:
    return nbytes / (bandwidth_gbps * 1e9)


def pct_of_floor(nbytes: int, seconds: float, bandwidth_gbps: Optional[float]) -> Optional[float]:
    """100 x floor time / measured time (100 = at the copy-bandwidth limit)."""
    if not bandwidth_gbps:
        return None
    return 100.0 * floor_seconds(nbytes, bandwidth_gbps) / seconds


def measure_copy_bandwidth(device: torch.device, nbytes: Optional[int] = None) -> dict:
    """{"gbps": ..., "bytes": ..., "method": ...} for a device-to-device copy of `nbytes`."""
    from .timing import time_fn

    if nbytes is None:
        nbytes = (1 << 30) if device.type == "cuda" else (256 << 20)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            nbytes = min(nbytes, free // 4)
    n = nbytes // 4
    src = torch.rand(n, device=device)  # random data, never zeros
    dst = torch.empty_like(src)
    t = time_fn(lambda _: dst.copy_(src), [None], device, min_time=0.5 if device.type == "cuda" else 1.0,
                flush_l2=False)
    moved = 2 * n * 4
    return {"gbps": gbps(moved, t["median_s"]), "bytes": moved, "median_s": t["median_s"],
            "method": f"{'CUDA events' if device.type == 'cuda' else 'torch.utils.benchmark'} median of "
                      f"{len(t['times_s'])} copies of {n * 4 / 2**20:.0f} MiB (read + write counted)"}
