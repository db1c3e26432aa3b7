"""The pytest-benchmark view of the same cases: benchmarks/ parametrises over these.

Shapes come from the preset in OCR_BENCH_SHAPES (default: "quick" on a CPU, "full" on a GPU),
implementations from OCR_BENCH_IMPLS (default: the CLI's), dtypes from OCR_BENCH_DTYPES; the
inputs, implementations and byte counts are those of ``python -m ocr_kernels bench``.
pytest-benchmark times with a host clock, so on a GPU each call ends with a synchronisation.
"""
from __future__ import annotations

import os
from typing import List

import torch

from .cases import PASSES, LEAF, bytes_moved, pass_fn, workloads
from .shapes import shape_str, shapes_for


def device() -> torch.device:
    return torch.device(os.environ.get("OCR_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))


def cases(op: str) -> List[tuple]:
    """[(id, workload, pass, impl)] of one op."""
    from .cli import DEFAULT_IMPLS, DTYPES

    dev = device()
    preset = os.environ.get("OCR_BENCH_SHAPES") or ("quick" if dev.type == "cpu" else "full")
    impls = os.environ.get("OCR_BENCH_IMPLS", ",".join(DEFAULT_IMPLS)).split(",")
    dtypes = [DTYPES[d] for d in os.environ.get("OCR_BENCH_DTYPES", "fp32" if dev.type == "cpu" else "fp32,bf16").split(",")]
    out = []
    for w in workloads(dev, shapes_for(preset, [op]), dtypes, impls, 0.1):
        for pass_ in PASSES[op]:
            for impl in w.impls:
                dt = str(w.dtype).replace("torch.", "")
                out.append((f"{shape_str(w.shape)}-{dt}-{w.scenario_name}-{pass_}-{impl.label}", w, pass_, impl))
    return out


def run_case(benchmark, w, pass_, impl) -> None:
    """Time one case with pytest-benchmark's fixture (skips with the harness's reason)."""
    import pytest

    if impl.fn is None:
        pytest.skip(impl.reason)
    dev = device()
    inputs, meta = w.make_inputs(dev, torch.Generator().manual_seed(0))
    fn = pass_fn(w.op, pass_, impl.fn)

    def call():
        fn(inputs)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    try:
        call()  # warm-up and compilation stay out of the timing
        call()
    except NotImplementedError as exc:
        pytest.skip(str(exc))
    nbytes = bytes_moved(w.op, w.shape, w.dtype, pass_)
    benchmark.extra_info.update(meta, bytes=nbytes, role=impl.role, leaf=LEAF[w.op])
    benchmark.pedantic(call, rounds=5 if dev.type == "cpu" else 50, warmup_rounds=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info["GB/s"] = nbytes / median / 1e9
