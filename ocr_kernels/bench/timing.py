"""Timers: CUDA events on a GPU, torch.utils.benchmark on a CPU; peak memory from the allocator.

GPU: warm-up calls first (compilation, autotuning, module loads stay out of the numbers); then
each timed call runs between two CUDA events on the current stream, cycling through input sets
whose total size passes twice the L2 cache; when the sets are smaller than that, a buffer of
twice the L2 size is written before each call (outside the events), so no call finds its inputs
in cache. The median over the calls is reported.
CPU: torch.utils.benchmark.Timer.blocked_autorange after the warm-up; its per-block times are the
raw timings and their median is reported.
Peak memory (GPU only): torch.cuda.max_memory_allocated during one call minus the memory
allocated before it (the inputs), i.e. the extra memory the call needs at its peak. The CPU
allocator keeps no such statistics: "n/a".
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, List, Optional, Sequence

import torch


def l2_bytes(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "L2_cache_size", 50 << 20) or (50 << 20))


def rotation_count(set_bytes: int, device: torch.device, cap: int = 32) -> int:
    """Input sets to cycle through so that together they pass twice the L2 size (at most cap)."""
    if device.type != "cuda" or set_bytes <= 0:
        return 1
    need = -(-2 * l2_bytes(device) // set_bytes)
    return max(1, min(cap, need))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable, sets: Sequence, device: torch.device, *, min_time: float = 0.5,
            warmup: int = 2, max_reps: int = 500, flush_l2: bool = True) -> dict:
    """{"median_s", "times_s"}: fn(set) timed after `warmup` calls per set."""
    for i in range(max(warmup, 1) * len(sets)):
        fn(sets[i % len(sets)])
    _sync(device)
    if device.type == "cuda":
        return _time_cuda(fn, sets, device, min_time, max_reps, flush_l2)
    return _time_cpu(fn, sets, min_time)


def _time_cuda(fn, sets, device, min_time, max_reps, flush_l2) -> dict:
    flush = None
    if flush_l2:
        flush = torch.empty(2 * l2_bytes(device) // 4, dtype=torch.float32, device=device)
    # A first estimate sets the number of repetitions.
    est = _cuda_calls(fn, sets, device, 3, flush)
    reps = int(min(max_reps, max(10, min_time / max(statistics.median(est), 1e-7))))
    times = _cuda_calls(fn, sets, device, reps, flush)
    return {"median_s": statistics.median(times), "times_s": times}


def _cuda_calls(fn, sets, device, reps, flush) -> List[float]:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for r in range(reps):
        if flush is not None:
            flush.fill_(float(r))
        starts[r].record()
        fn(sets[r % len(sets)])
        ends[r].record()
    torch.cuda.synchronize(device)
    return [s.elapsed_time(e) * 1e-3 for s, e in zip(starts, ends)]


def _time_cpu(fn, sets, min_time) -> dict:
    import torch.utils.benchmark as tb

    state = {"r": 0}

    def call():
        fn(sets[state["r"] % len(sets)])
        state["r"] += 1

    m = tb.Timer(stmt="call()", globals={"call": call}, num_threads=torch.get_num_threads()).blocked_autorange(
        min_run_time=min_time)
    return {"median_s": m.median, "times_s": list(m.times)}


def cpu_seconds(fn: Callable, sets: Sequence, runs: int = 15) -> float:
    """Median process CPU time (all threads, time.process_time) of one call. On a shared machine
    it is disturbed less than wall time by other processes; with --threads 1 it is the work of
    one call, comparable across runs."""
    times = []
    for r in range(runs):
        t0 = time.process_time()
        fn(sets[r % len(sets)])
        times.append(time.process_time() - t0)
    return statistics.median(times)


def peak_extra_bytes(fn: Callable, one_set, device: torch.device) -> Optional[int]:
    """Extra allocator memory at the peak of one call, beyond what was allocated before it."""
    if device.type != "cuda":
        return None
    _sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn(one_set)
    _sync(device)
    return int(torch.cuda.max_memory_allocated(device) - before)
