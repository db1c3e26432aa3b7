"""Forward+backward time of the OCR loss on the CPU: the csrc "cpu" backend against the eager
reference and torch.compile(reference), measured in the same run (issue 4's target: >= 10x eager,
>= 3x compiled, fp32, (8, 21, 128, 128) and (2, 81, 128, 128), 2 threads).

    python benchmarks/ocr/measure_cpu_backend.py [--threads 2] [--repeats 5] [--min-run-time 1.0]

Prints one line per (shape, implementation) with the median over the repeats (each repeat is a
torch.utils.benchmark blocked_autorange median), and the speedup ratios. Then, as a number that a
loaded (shared) machine disturbs less, the median CPU time (time.process_time, all threads) of one
forward+backward with ONE thread, and the same ratios.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch
import torch.utils.benchmark as tb

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import ocr_kernels  # noqa: E402
from ocr_kernels.ocr.prior import prior_correlation  # noqa: E402
from ocr_kernels.ocr.reference import ocr_loss_map_reference  # noqa: E402
from ocr_kernels.ocr.csrc_ops import ocr_loss_map_csrc  # noqa: E402

SHAPES = ((8, 21, 128, 128), (2, 81, 128, 128))


def make(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, C1 = shape[:2]
    logits = torch.randn(shape, generator=g) * 3
    tags = (torch.rand(B, C1 - 1, generator=g) < 0.1).to(torch.int64)
    prior = prior_correlation(torch.rand(1464, C1 - 1, generator=g) < 0.1)
    return logits, tags, prior


def fwd_bwd(fn, logits, tags, prior):
    z = logits.detach().requires_grad_(True)
    fn(z, tags, prior, 2.0, 0.2, "ada", "oc").mean().backward()
    return z.grad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-run-time", type=float, default=1.0)
    ap.add_argument("--cpu-time-runs", type=int, default=15,
                    help="runs of the one-thread CPU-time measurement (0: skip it)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{args.threads} threads, load average {os.getloadavg()}")
    compiled = torch.compile(ocr_loss_map_reference)
    impls = {"eager": ocr_loss_map_reference, "compiled": compiled, "cpu": ocr_loss_map_csrc}
    for shape in SHAPES:
        logits, tags, prior = make(shape)
        for fn in impls.values():  # warm up: build, compile, check agreement
            fwd_bwd(fn, logits, tags, prior)
        ref = fwd_bwd(ocr_loss_map_reference, logits, tags, prior)
        got = fwd_bwd(ocr_loss_map_csrc, logits, tags, prior)
        err = ((got - ref).abs().max() / ref.abs().max()).item()
        med = {}
        for name, fn in impls.items():
            runs = []
            for _ in range(args.repeats):
                t = tb.Timer("fwd_bwd(fn, logits, tags, prior)",
                             globals=dict(fwd_bwd=fwd_bwd, fn=fn, logits=logits, tags=tags, prior=prior),
                             num_threads=args.threads)
                runs.append(t.blocked_autorange(min_run_time=args.min_run_time).median)
            med[name] = statistics.median(runs)
            print(f"{str(shape):20s} {name:9s} median {med[name] * 1e3:8.2f} ms  "
                  f"(runs: {', '.join(f'{r * 1e3:.2f}' for r in runs)})", flush=True)
        print(f"{str(shape):20s} cpu speedup: {med['eager'] / med['cpu']:.1f}x vs eager, "
              f"{med['compiled'] / med['cpu']:.1f}x vs torch.compile  (max rel grad diff {err:.1e})")
    if args.cpu_time_runs:
        torch.set_num_threads(1)
        for shape in SHAPES:
            logits, tags, prior = make(shape)
            cpu = {}
            for name, fn in impls.items():
                fwd_bwd(fn, logits, tags, prior)
                runs = []
                for _ in range(args.cpu_time_runs):
                    t0 = time.process_time()
                    fwd_bwd(fn, logits, tags, prior)
                    runs.append(time.process_time() - t0)
                cpu[name] = statistics.median(runs)
            print(f"{str(shape):20s} 1 thread, CPU time: eager {cpu['eager'] * 1e3:.1f} ms, compiled "
                  f"{cpu['compiled'] * 1e3:.1f} ms, cpu {cpu['cpu'] * 1e3:.1f} ms -> "
                  f"{cpu['eager'] / cpu['cpu']:.1f}x vs eager, {cpu['compiled'] / cpu['cpu']:.1f}x vs "
                  f"torch.compile", flush=True)
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
