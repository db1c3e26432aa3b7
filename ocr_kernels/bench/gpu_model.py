"""A documented throughput model of one kernel launch on a Hopper GPU, from static facts only
(registers, shared memory, warps, grid, executed SASS per thread, bytes moved). Its outputs are
PREDICTIONS, to be checked against the first timed run on a GPU (benchmarks/gpu/run.sh prints
both side by side).

The time of a launch is the largest of four throughput bounds, plus a launch overhead:
- issue: every warp instruction takes one issue slot of its SM sub-partition's scheduler (4 per
  SM, one instruction per cycle each). With few resident warps a scheduler idles while its warps
  wait on dependences: issue efficiency = min(1, warps per scheduler / WARPS_TO_HIDE_LATENCY);
- MUFU: the special-function units (exp2, log2, rcp, ...) deliver MUFU_PER_SM results per cycle;
- fp64: FP64_PER_SM results per cycle;
- memory: bytes / copy bandwidth, slowed when the SM cannot keep enough bytes in flight
  (Little's law: bandwidth x latency bytes must be outstanding across the GPU); in-flight bytes
  per SM = resident threads x the global-load bytes one thread issues before it waits.
Occupancy (CTAs per SM) comes from the register file, shared memory, and the warp and CTA
limits. Work is counted in waves of (CTAs per SM x SMs) CTAs, so a partial last wave costs a
full one; a grid of at most one wave is spread over the SMs, ceil(CTAs / SMs) an SM (the
resident warps of the issue and memory bounds too), not a full wave of CTAs an SM.

Known approximations: the bounds are taken as perfectly overlapped (max, not sum); caches are
ignored (every byte of `bytes` goes to DRAM once, re-reads of small operands hit L2 for free);
instruction latency is folded into one efficiency factor; dual-issue does not exist on Hopper
and is not modelled.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Optional

# Per-SM limits of compute capability 9.0 (CUDA C++ Programming Guide, "Compute Capabilities",
# technical specifications table).
REGS_PER_SM = 65536
MAX_WARPS_PER_SM = 64
MAX_CTAS_PER_SM = 32
SMEM_PER_SM = 228 * 1024  # bytes, of which each CTA also reserves 1 KB
SMEM_RESERVED_PER_CTA = 1024
REG_ALLOC_UNIT = 256  # registers are allocated per warp in units of 256
SCHEDULERS_PER_SM = 4  # 4 sub-partitions, one warp instruction issued per cycle each
# Arithmetic throughput per SM per cycle (same table, "arithmetic instructions", cc 9.0).
MUFU_PER_SM = 16  # 32-bit exp2 / log2 / rcp / rsqrt / sin / cos results
FP64_PER_SM = 64

# ASSUMPTIONS, not taken from a source in this repository; the first GPU run checks them.
WARPS_TO_HIDE_LATENCY = 4  # warps per scheduler needed to issue every cycle in dependent code
DRAM_LATENCY_S = 700e-9  # loaded DRAM latency (Little's law: bytes in flight = BW x latency)
LAUNCH_OVERHEAD_S = 2e-6  # per kernel launch in a busy stream


@dataclass(frozen=True)
class Gpu:
    name: str
    sms: int
    clock_hz: float
    copy_bytes_per_s: float  # read + write counted, as the bench's floor counts a copy
    sources: str


GPUS: Dict[str, Gpu] = {
    "H200": Gpu("H200", 132, 1.98e9, 4.3e12,
                "/work/.library/device/KINDS.md (2026-10-28 and 2026-11-04 on one H200 here): 132 "
                "multiprocessors read by PyTorch, SM clock 1980 MHz read by nvidia-smi under load, "
                "device-to-device copy about 4.3 TB/s counting reads and writes"),
    "H100": Gpu("H100", 132, 1.98e9, 3.35e12 * 4.3 / 4.8,
                "H100 SXM: same processor as the H200 (/work/.library/device/H200.md), so its SM "
                "count and clock; copy bandwidth = its 3.35 TB/s datasheet HBM figure (H200.md) "
                "scaled by the H200's measured/datasheet ratio 4.3/4.8 (an assumption)"),
}


@dataclass
class Launch:
    """What the model needs of one kernel launch."""

    ctas: int
    warps_per_cta: int
    regs: int
    smem_per_cta: int  # static + dynamic bytes
    instr_per_thread: float  # executed SASS instructions (loop-aware)
    mufu_per_thread: float
    fp64_per_thread: float
    load_bytes_in_flight_per_thread: float
    bytes: float  # DRAM bytes the launch moves


def occupancy(regs: int, warps_per_cta: int, smem: int) -> Dict[str, int]:
    regs_per_warp = math.ceil(max(regs, 1) * 32 / REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    by_regs = (REGS_PER_SM // regs_per_warp) // warps_per_cta
    by_smem = SMEM_PER_SM // (smem + SMEM_RESERVED_PER_CTA) if smem else MAX_CTAS_PER_SM
    by_warps = MAX_WARPS_PER_SM // warps_per_cta
    ctas = max(0, min(by_regs, by_smem, by_warps, MAX_CTAS_PER_SM))
    limiter = min((("registers", by_regs), ("shared memory", by_smem), ("warps", by_warps),
                   ("CTAs", MAX_CTAS_PER_SM)), key=lambda kv: kv[1])[0]
    return {"ctas_per_sm": ctas, "warps_per_sm": ctas * warps_per_cta, "limiter": limiter}


def predict(launch: Launch, gpu: Gpu) -> Dict[str, object]:
    occ = occupancy(launch.regs, launch.warps_per_cta, launch.smem_per_cta)
    if occ["ctas_per_sm"] == 0:
        return {"occupancy": occ, "time_s": None, "bound": "does not fit on an SM"}
    per_wave = occ["ctas_per_sm"] * gpu.sms
    waves = math.ceil(launch.ctas / per_wave)
    ctas_per_sm_total = waves * occ["ctas_per_sm"]  # CTAs one SM runs, the last wave counted full
    resident = occ["ctas_per_sm"]
    if waves == 1:
        # a grid of at most one wave (a persistent grid sized to the SMs) is spread over the SMs
        # at once: none holds more than ceil(ctas / SMs) of its CTAs, whatever room is left
        resident = ctas_per_sm_total = math.ceil(launch.ctas / gpu.sms)
    threads_per_sm = ctas_per_sm_total * launch.warps_per_cta * 32
    warps_per_sched = resident * launch.warps_per_cta / SCHEDULERS_PER_SM
    issue_eff = min(1.0, warps_per_sched / WARPS_TO_HIDE_LATENCY)
    t_issue = (ctas_per_sm_total * launch.warps_per_cta * launch.instr_per_thread
               / (SCHEDULERS_PER_SM * gpu.clock_hz * issue_eff))
    t_mufu = threads_per_sm * launch.mufu_per_thread / (MUFU_PER_SM * gpu.clock_hz)
    t_fp64 = threads_per_sm * launch.fp64_per_thread / (FP64_PER_SM * gpu.clock_hz)
    needed = gpu.copy_bytes_per_s * DRAM_LATENCY_S / gpu.sms
    in_flight = resident * launch.warps_per_cta * 32 * launch.load_bytes_in_flight_per_thread
    mem_eff = min(1.0, in_flight / needed) if in_flight > 0 else 1.0
    t_mem = launch.bytes / (gpu.copy_bytes_per_s * mem_eff)
    bounds = {"issue": t_issue, "mufu": t_mufu, "fp64": t_fp64, "memory": t_mem}
    bound = max(bounds, key=bounds.get)
    return {"occupancy": occ, "waves": waves, "issue_efficiency": round(issue_eff, 3),
            "memory_efficiency": round(mem_eff, 3), "bounds_s": bounds, "bound": bound,
            "time_s": bounds[bound] + LAUNCH_OVERHEAD_S}


def floor_s(nbytes: float, gpu: Gpu) -> float:
    return nbytes / gpu.copy_bytes_per_s


def constants() -> Dict[str, object]:
    """Every constant of the model, for the JSON (so a result names what it assumed)."""
    return {
        "gpus": {k: asdict(v) for k, v in GPUS.items()},
        "per_sm_limits_cc90": {"regs": REGS_PER_SM, "warps": MAX_WARPS_PER_SM, "ctas": MAX_CTAS_PER_SM,
                               "smem_bytes": SMEM_PER_SM, "smem_reserved_per_cta": SMEM_RESERVED_PER_CTA,
                               "schedulers": SCHEDULERS_PER_SM, "mufu_per_cycle": MUFU_PER_SM,
                               "fp64_per_cycle": FP64_PER_SM,
                               "source": "CUDA C++ Programming Guide, compute capability 9.0 tables"},
        "assumed": {"warps_to_hide_latency": WARPS_TO_HIDE_LATENCY, "dram_latency_s": DRAM_LATENCY_S,
                    "launch_overhead_s": LAUNCH_OVERHEAD_S,
                    "note": "assumptions without a source here; the first GPU run checks them"},
    }
