"""The fused bilinear upsampling (``ocr_loss(size=...)``, ``seg_ocr_loss(upsample=True)``) against
the unfused path a training loop runs today: ``F.interpolate`` to the label size, then the same
backend's loss. ``python -m ocr_kernels bench-upsample``.

Time: forward and forward+backward of each path, interleaved repeat by repeat (the fused and the
unfused call alternate, so a load change on a shared machine hits both), median over repeats.

Peak extra memory: what one forward+backward allocates above what was allocated before it (the
inputs), measured in a fresh subprocess per path so that no freed memory of another run is
reused. CPU: the process's peak resident set (Linux VmHWM, reset through /proc/self/clear_refs
just before the call) minus its resident set then; a one-off warm-up call on a small input first
loads the extension and starts the thread pool. CUDA: torch.cuda.max_memory_allocated above the
allocation before the call.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Sequence, Tuple

import torch

# (op, low-resolution logits shape, output size): the cases (VOC / COCO at 1/8 scale of
# 321 crops) and the CPU target shape.
CASES: List[Tuple[str, Tuple[int, int, int, int], Tuple[int, int]]] = [
    ("seg_ocr_loss", (8, 21, 41, 41), (321, 321)),
    ("seg_ocr_loss", (16, 21, 41, 41), (321, 321)),
    ("seg_ocr_loss", (16, 81, 41, 41), (321, 321)),
    ("ocr_loss", (16, 21, 41, 41), (321, 321)),
    ("ocr_loss", (16, 81, 41, 41), (321, 321)),
]


def make_inputs(op: str, shape, size, dtype=torch.float32, device="cpu", seed: int = 0) -> Dict:
    import ocr_kernels as ok

    g = torch.Generator().manual_seed(seed)
    B, C1 = shape[:2]
    logits = (torch.randn(shape, generator=g) * 3).to(dtype=dtype, device=device)
    tags = (torch.rand(B, C1 - 1, generator=g) < 0.15).to(device)
    prior = ok.prior_correlation(torch.rand(1464, C1 - 1, generator=g) < 0.1).to(device)
    out = dict(logits=logits.requires_grad_(True), tags=tags, prior=prior, size=tuple(size))
    if op == "seg_ocr_loss":
        out["target"] = torch.randint(0, C1, (B, *size), generator=g).to(device)
    return out


def call(op: str, fused: bool, backend: str, i: Dict) -> torch.Tensor:
    """One loss call: fused (the resize inside the kernel) or unfused (F.interpolate, then the
    same backend's loss on the full-resolution logits)."""
    import torch.nn.functional as F

    import ocr_kernels as ok

    z = i["logits"]
    if not fused:
        z = F.interpolate(z, size=i["size"], mode="bilinear", align_corners=False)
    if op == "seg_ocr_loss":
        return ok.seg_ocr_loss(z, i["target"], i["tags"], i["prior"], upsample=fused,
                               backend=backend)
    return ok.ocr_loss(z, i["tags"], i["prior"], size=i["size"] if fused else None,
                       backend=backend)


def _step(op, fused, backend, i, backward: bool) -> Tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    sync = torch.cuda.synchronize if i["logits"].is_cuda else (lambda: None)
    i["logits"].grad = None
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    loss = call(op, fused, backend, i)
    if backward:
        loss.backward()
    sync()
    return time.perf_counter() - t0, time.process_time() - c0


def time_case(op, shape, size, backend, repeats: int, device="cpu") -> Dict[str, float]:
    """Median seconds of fwd and fwd+bwd for the fused and unfused paths, interleaved: wall time
    ("<path> <pass>") and process CPU time ("<path> <pass> cpu", all threads; on a shared CPU
    other processes disturb it less than the wall time)."""
    i = make_inputs(op, shape, size, device=device)
    runs: Dict[str, List[float]] = {}
    for fused in (True, False):  # warm-up: build, first-touch of the buffers
        _step(op, fused, backend, i, True)
    for _ in range(repeats):
        for fused in (True, False):
            for backward in (False, True):
                key = f"{'fused' if fused else 'unfused'} {'fwd+bwd' if backward else 'fwd'}"
                wall, cpu = _step(op, fused, backend, i, backward)
                runs.setdefault(key, []).append(wall)
                runs.setdefault(key + " cpu", []).append(cpu)
    return {k: statistics.median(v) for k, v in runs.items()}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _child(spec: str) -> None:
    """Subprocess body of peak_extra_bytes: prints {"extra": bytes} as JSON."""
    op, shape, size, fused, backend, device = json.loads(spec)
    i = make_inputs(op, shape, size, device=device)
    # loads the extension and starts the thread pool (large enough for the kernels to go parallel)
    small = make_inputs(op, (shape[0], shape[1], 9, 9), (72, 72), device=device)
    call(op, fused, backend, small).backward()
    del small
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        call(op, fused, backend, i).backward()
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        base = _status_kb("VmRSS")
        call(op, fused, backend, i).backward()
        extra = (_status_kb("VmHWM") - base) * 1024
    print(json.dumps({"extra": extra}))


def peak_extra_bytes(op: str, shape, size, fused: bool, backend: str = "cpu",
                     device: str = "cpu", threads: int = 1) -> int:
    """Peak memory one forward+backward allocates above its inputs, in a fresh subprocess."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    spec = json.dumps([op, list(shape), list(size), fused, backend, device])
    code = f"from ocr_kernels.bench.upsample import _child; _child({spec!r})"
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True).stdout
    return int(json.loads(out.strip().splitlines()[-1])["extra"])


def run(args) -> int:
    device = "cuda" if args.backend in ("cuda", "triton") else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"backend {args.backend}, fp32, {args.repeats} interleaved repeats (medians)")
    cases = [c for c in CASES if not args.op or c[0] in args.op]
    rows = []
    for op, shape, size in cases:
        t = time_case(op, shape, size, args.backend, args.repeats, device)
        row = dict(op=op, shape=list(shape), size=list(size), **{f"{k} s": v for k, v in t.items()})
        if not args.no_memory:
            mem_f = peak_extra_bytes(op, shape, size, True, args.backend, device, torch.get_num_threads())
            mem_u = peak_extra_bytes(op, shape, size, False, args.backend, device, torch.get_num_threads())
            row.update({"fused peak extra MB": mem_f / 2**20, "unfused peak extra MB": mem_u / 2**20})
        rows.append(row)
        line = (f"{op}{tuple(shape)}->{tuple(size)}: fwd+bwd fused {t['fused fwd+bwd'] * 1e3:.1f} ms, "
                f"unfused {t['unfused fwd+bwd'] * 1e3:.1f} ms "
                f"({t['unfused fwd+bwd'] / t['fused fwd+bwd']:.2f}x); fwd fused "
                f"{t['fused fwd'] * 1e3:.1f} ms, unfused {t['unfused fwd'] * 1e3:.1f} ms "
                f"({t['unfused fwd'] / t['fused fwd']:.2f}x); process CPU time fwd+bwd fused "
                f"{t['fused fwd+bwd cpu'] * 1e3:.0f} ms, unfused {t['unfused fwd+bwd cpu'] * 1e3:.0f} ms "
                f"({t['unfused fwd+bwd cpu'] / t['fused fwd+bwd cpu']:.2f}x)")
        if not args.no_memory:
            line += (f"; peak extra fused {row['fused peak extra MB']:.1f} MB, unfused "
                     f"{row['unfused peak extra MB']:.1f} MB "
                     f"({row['fused peak extra MB'] / row['unfused peak extra MB']:.1%})")
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="cpu", help="the backend of both paths (default cpu)")
    p.add_argument("--op", nargs="*", choices=sorted({c[0] for c in CASES}),
                   help="only these ops (default: every case)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--json", help="also write the rows to this JSON file")


def main(argv: Sequence[str] = None) -> int:
    p = argparse.ArgumentParser(prog="ocr-kernels bench-upsample", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))
