"""``python -m ocr_kernels bench``: every op on every backend beside its anchors, then a table,
a JSON file and a PNG plot in --out."""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import os
import signal
import sys
import time
from typing import List, Optional

import torch

from .. import BackendUnavailableError
from . import report, static
from .cases import LEAF, PASSES, bytes_moved, pass_fn, workloads
from .floor import floor_seconds, measure_copy_bandwidth
from .impls import ANCHORS, FAST_BACKENDS
from .inputs import DEFAULT_OC_FRACTION
from .plot import plot_results
from .shapes import OPS, shape_str, shapes_for
from .timing import cpu_seconds, l2_bytes, peak_extra_bytes, rotation_count, time_fn

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
DEFAULT_IMPLS = ANCHORS + FAST_BACKENDS  # "reference" (the eager anchor through ocr_loss) on request
SKIP_ERRORS = (BackendUnavailableError, NotImplementedError)
TIMING_METHOD = {
    "cuda": "CUDA events around each call after warm-up; inputs rotated past 2x L2 (or L2 flushed "
            "between calls); times_s are per-call times, median_s their median",
    "cpu": "torch.utils.benchmark blocked_autorange after warm-up; times_s are per-call means of "
           "each block, median_s their median; peak memory n/a (the CPU allocator keeps no statistics)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true",
                   help="small shapes and short timings (the default on a CPU; about 3 minutes on 2 cores)")
    p.add_argument("--full", action="store_true", help="the full shapes of every op (the default on a GPU)")
    p.add_argument("--gpu-preset", action="store_true",
                   help="the GPU runner's run, sized for one call of a few minutes: the target shapes "
                        "(16x21x321x321, 16x81x321x321) fp32 and bf16 with every anchor, compile-max "
                        "in the realistic scenario at fp32 (not deferred), then W-OoD and K-means")
    p.add_argument("--ops", default=",".join(OPS), help=f"comma list of ops (default: all of {','.join(OPS)})")
    p.add_argument("--shapes", default=None,
                   help="a preset (quick, full, tiny) or op:AxBx... items, e.g. ocr_loss:16x21x321x321,kmeans:100000x2048x50")
    p.add_argument("--dtype", default=None,
                   help="comma list of fp32,bf16,fp16,fp64 (default fp32 on a CPU, fp32,bf16 on a GPU; "
                        "W-OoD and K-means always run fp32)")
    p.add_argument("--backends", default=",".join(DEFAULT_IMPLS),
                   help="comma list of implementations: anchors eager,compile,compile-max and backends "
                        "triton,cuda,cpu,reference (default: %(default)s)")
    p.add_argument("--oc-fraction", type=float, default=DEFAULT_OC_FRACTION,
                   help="fraction of OC pixels in the realistic OCR scenario (default 0.1; the worst case, "
                        "pixels='all', is always run beside it)")
    p.add_argument("--out", default="bench-out", help="folder for the JSON, PNG and tables (default bench-out)")
    p.add_argument("--name", default=None, help="file stem of the outputs (default <device>-<date>)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of timed calls per case (default 0.3 quick / 1.0 full on a CPU, 0.2 / 0.5 on a GPU)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="stop starting new cases after this many seconds; the rest is reported as skipped")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's own choice). On a loaded machine 2 threads "
                        "can be far slower than 1: OpenMP workers wait on descheduled peers")
    p.add_argument("--cpu-time", action="store_true",
                   help="CPU runs: also record the median process CPU time of one call (cpu_time_s in the "
                        "JSON; with --threads 1, the work of one call, little disturbed by other processes)")
    p.add_argument("--copy-mib", type=int, default=None,
                   help="size of the copy that measures the bandwidth floor (default 1024 on a GPU, 256 on a CPU)")
    p.add_argument("--note", default=None, help="free text stored in the JSON (e.g. what else ran on the machine)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--seed", type=int, default=0)
    static.add_arguments(p)


def _options(args, device) -> dict:
    quick = args.quick or (not args.full and not args.gpu_preset and device.type == "cpu")
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    bad = [o for o in ops if o not in OPS]
    if bad:
        raise SystemExit(f"--ops: unknown {bad}; choose from {list(OPS)}")
    impls = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in impls if b not in ANCHORS + FAST_BACKENDS + ("reference",)]
    if bad:
        raise SystemExit(f"--backends: unknown {bad}; choose from {list(ANCHORS + FAST_BACKENDS + ('reference',))}")
    dtype_spec = args.dtype or ("fp32" if device.type == "cpu" else "fp32,bf16")
    try:
        dtypes = [DTYPES[d.strip()] for d in dtype_spec.split(",") if d.strip()]
    except KeyError as exc:
        raise SystemExit(f"--dtype: unknown {exc}; choose from {list(DTYPES)}") from None
    try:
        shapes = shapes_for(args.shapes or ("gpu" if args.gpu_preset else "quick" if quick else "full"), ops)
    except ValueError as exc:
        raise SystemExit(f"--shapes: {exc}") from None
    if not 0.0 <= args.oc_fraction <= 1.0:
        raise SystemExit(f"--oc-fraction must be within [0, 1]; got {args.oc_fraction}")
    min_time = args.min_time or {(True, "cpu"): 0.3, (False, "cpu"): 1.0}.get(
        (quick, device.type), 0.2 if quick or args.gpu_preset else 0.5)
    return {"quick": quick, "ops": ops, "impls": impls, "dtypes": dtypes, "shapes": shapes,
            "min_time": min_time, "oc_fraction": args.oc_fraction, "time_budget": args.time_budget,
            "defer_max": not args.gpu_preset}


def _record(w, pass_, impl, nbytes, status, reason=None, **extra) -> dict:
    r = {"op": w.op, "shape": shape_str(w.shape), "dtype": DTYPE_NAMES[w.dtype], "scenario": w.scenario_name,
         "pass": pass_, "backend": impl.label, "role": impl.role, "status": status, "reason": reason,
         "bytes": nbytes, "median_s": None, "times_s": [], "peak_mem_bytes": None}
    r.update(extra)
    return r


def _progress(total: int):
    try:
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="case", file=sys.stderr, mininterval=1.0, dynamic_ncols=True)
    except ImportError:  # tqdm is optional: a plain line per case
        class _Plain:
            n = 0

            def set_description_str(self, s):
                print(f"[{self.n + 1}/{total}] {s}", file=sys.stderr, flush=True)

            def update(self, k=1):
                self.n += k

            def close(self):
                pass

        return _Plain()


def measure(device, opts, bar, deadline: Optional[float], records: List[dict], on_workload_done=None) -> None:
    """Appends one record per case to `records` (so that an interrupt keeps what was measured)."""
    gen = torch.Generator().manual_seed(opts["seed"])
    for w in opts["workloads"]:
        passes = PASSES[w.op]
        sets, meta, setup_error = [], {}, None
        runnable = [i for i in w.impls if i.fn is not None]
        if runnable and not (deadline is not None and time.monotonic() > deadline):
            try:
                n = rotation_count(w.input_bytes(), device)
                for _ in range(n):
                    s, meta = w.make_inputs(device, gen)
                    sets.append(s)
            except Exception as exc:  # e.g. out of memory at a large shape
                setup_error = f"making inputs failed: {type(exc).__name__}: {exc}"
                sets = []
        flush = device.type == "cuda" and len(sets) * w.input_bytes() < 2 * l2_bytes(device)
        for pass_ in passes:
            nbytes = bytes_moved(w.op, w.shape, w.dtype, pass_)
            for impl in w.impls:
                bar.set_description_str(f"{w.op} {shape_str(w.shape)} {DTYPE_NAMES[w.dtype]} {w.scenario_name} "
                                        f"{pass_} {impl.label}")
                extra = dict(meta, n_input_sets=len(sets))
                if impl.fn is None:
                    rec = _record(w, pass_, impl, nbytes, "skipped", impl.reason)
                elif setup_error:
                    rec = _record(w, pass_, impl, nbytes, "error", setup_error)
                elif deadline is not None and time.monotonic() > deadline:
                    rec = _record(w, pass_, impl, nbytes, "skipped", "time budget spent")
                else:
                    rec = _time_one(w, pass_, impl, nbytes, sets, device, opts, flush, extra)
                records.append(rec)
                bar.update(1)
        del sets
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if on_workload_done:
            on_workload_done(records)


def _time_one(w, pass_, impl, nbytes, sets, device, opts, flush, extra) -> dict:
    fn = pass_fn(w.op, pass_, impl.fn)
    try:
        t = time_fn(fn, sets, device, min_time=opts["min_time"], flush_l2=flush)
        if opts.get("cpu_time") and device.type == "cpu":
            extra = dict(extra, cpu_time_s=cpu_seconds(fn, sets))
        leaf = LEAF[w.op]
        if leaf is not None:
            for s in sets:
                s[leaf].grad = None
        peak = peak_extra_bytes(fn, sets[0], device)
    except SKIP_ERRORS as exc:
        return _record(w, pass_, impl, nbytes, "skipped", f"{type(exc).__name__}: {exc}", **extra)
    except Exception as exc:  # one failing case must not stop the run; the JSON keeps the message
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return _record(w, pass_, impl, nbytes, "error", f"{type(exc).__name__}: {str(exc)[:300]}", **extra)
    return _record(w, pass_, impl, nbytes, "ok", median_s=t["median_s"], times_s=t["times_s"],
                   peak_mem_bytes=peak, **extra)


def run(args) -> int:
    if args.static:
        return static.run(args)
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.monotonic()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    opts = _options(args, device)
    opts["seed"] = args.seed
    opts["cpu_time"] = args.cpu_time
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    info = report.device_info(device)
    stem = args.name or f"{report.device_slug(info)}-{started:%Y-%m-%d}"
    paths = {k: os.path.join(args.out, f"{stem}.{k}") for k in ("json", "png", "txt", "md")}
    print(f"ocr-kernels bench on {info['name']} ({device.type}), torch {torch.__version__}; "
          f"{'quick' if opts['quick'] else 'full'} run -> {args.out}/{stem}.*", flush=True)

    load = report.load_average()
    if device.type == "cpu" and load and load[0] > (os.cpu_count() or 1):
        print(f"warning: load average {load[0]:.1f} on {os.cpu_count()} cores: other jobs compete for the CPU "
              f"and the timings will be noisy (with several torch threads, badly so; --threads 1 helps)",
              flush=True)
    bandwidth = None
    try:
        bandwidth = measure_copy_bandwidth(device, args.copy_mib << 20 if args.copy_mib else None)
        print(f"copy bandwidth (the floor): {bandwidth['gbps']:.1f} GB/s ({bandwidth['method']})", flush=True)
    except Exception as exc:
        print(f"copy bandwidth not measured: {type(exc).__name__}: {exc}", flush=True)
    bw = bandwidth["gbps"] if bandwidth else None

    opts["workloads"] = workloads(device, opts["shapes"], opts["dtypes"], opts["impls"], opts["oc_fraction"],
                                  defer_max=opts["defer_max"])
    total = sum(len(PASSES[w.op]) * len(w.impls) for w in opts["workloads"])
    options = {"argv": sys.argv[1:], "quick": opts["quick"], "gpu_preset": bool(args.gpu_preset),
               "ops": opts["ops"], "impls": opts["impls"],
               "dtypes": [DTYPE_NAMES[d] for d in opts["dtypes"]],
               "shapes": {k: [shape_str(s) for s in v] for k, v in opts["shapes"].items()},
               "min_time_s": opts["min_time"], "oc_fraction": opts["oc_fraction"],
               "time_budget_s": opts["time_budget"], "seed": args.seed, "device": device.type,
               "torch_threads": torch.get_num_threads(), "note": args.note,
               "timing_method": TIMING_METHOD[device.type]}
    load_start = load

    def save(records, partial):
        report.add_derived(records, bw)
        for r in records:
            r["floor_s"] = floor_seconds(r["bytes"], bw) if bw else None
        doc = report.build_document(device=device, bandwidth=bandwidth, records=records, options=options,
                                    started=started, wall_s=time.monotonic() - t0, partial=partial,
                                    load_start=load_start)
        report.write_json(doc, paths["json"])

    deadline = t0 + opts["time_budget"] if opts["time_budget"] is not None else None
    records: List[dict] = []
    partial = False
    prev = signal.signal(signal.SIGTERM, _raise_interrupt)  # `timeout` sends SIGTERM: still write out
    bar = _progress(total)
    try:
        measure(device, opts, bar, deadline, records, on_workload_done=lambda rs: save(rs, True))
    except KeyboardInterrupt:
        partial = True
        print("\ninterrupted: writing the cases measured so far", file=sys.stderr)
    finally:
        bar.close()
        signal.signal(signal.SIGTERM, prev)
    save(records, partial)
    table = report.format_table(records, bw) + report.skipped_summary(records)
    with open(paths["txt"], "w") as f:
        f.write(table)
    with open(paths["md"], "w") as f:
        f.write(report.format_table(records, bw, markdown=True))
    if not args.no_plot:
        title = f"ocr-kernels bench: {info['name']}, torch {torch.__version__}, {started:%Y-%m-%d}"
        if not plot_results(records, bw, paths["png"], title):
            print("no plot (matplotlib missing or nothing measured)")
    print(table)
    n_ok = sum(r["status"] == "ok" for r in records)
    print(f"{n_ok} of {len(records)} cases measured in {time.monotonic() - t0:.0f} s; "
          f"results: {paths['json']}" + ("" if args.no_plot else f", {paths['png']}"))
    if partial:
        return 2  # interrupted or killed by a timeout: the outputs hold the cases measured so far
    return 0 if not any(r["status"] == "error" for r in records) else 1


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ocr-kernels bench", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))
