"""Build the C++/CUDA extension now instead of on first use: ``python -m ocr_kernels.build_ext``.

The library lands in the JIT cache (``$OCR_KERNELS_BUILD_DIR``, default ``~/.cache/ocr_kernels``)
where every later process finds it. For a build at install time instead, see setup.py
(``OCR_KERNELS_BUILD_EXT=1 pip install --no-build-isolation .``).
"""
from __future__ import annotations

import argparse
import sys
import time

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ocr_kernels.build_ext", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    parser.add_argument("--require-cuda", action="store_true",
                        help="fail unless the CUDA kernels are built and every op of csrc/ops.cpp has "
                             "a CPU and a CUDA kernel registered (CI's cuda-build-check)")
    args = parser.parse_args(argv)
    from ._extension import (_has_cuda_kernels, cuda_arch_list, cuda_build_possible, extension_ops,
                             CPU_ONLY_OPS, CUDA_ONLY_OPS, extension_unavailable_reason, find_cuda_home, load,
                             missing_kernels,
                             sources)

    home, how = find_cuda_home()
    print(f"ocr-kernels: torch {torch.__version__} (CUDA {torch.version.cuda}); CUDA toolkit: "
          f"{home + ' (found by ' + how + ')' if home else how}")
    if args.require_cuda and not cuda_build_possible():
        print("ocr-kernels: --require-cuda: this torch has no CUDA or no CUDA toolkit was found",
              file=sys.stderr)
        return 1
    if cuda_build_possible():
        print(f"  CUDA architectures: {cuda_arch_list()}")
    reason = extension_unavailable_reason("cpu")
    if reason is not None:
        print(f"ocr-kernels: cannot build the extension: {reason}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    try:
        path = load(verbose=args.verbose)
    except RuntimeError as exc:
        print(f"ocr-kernels: {exc}", file=sys.stderr)
        return 1
    print(f"ocr-kernels: extension ready in {time.perf_counter() - t0:.0f} s: {path}")
    print(f"  sources: {len(sources())} files; CUDA kernels: {'yes' if _has_cuda_kernels() else 'no'}")
    if args.require_cuda:
        ops = [op for op in extension_ops() if not op.split("::")[1].startswith("_")]
        missing = {key: missing_kernels(key) for key in ("CPU", "CUDA")}
        for op in ops:
            print(f"  {op}: " + ", ".join(
                f"{key} {'MISSING' if op in m else 'CPU-only op' if op in CPU_ONLY_OPS and key != 'CPU' else 'CUDA-only op' if op in CUDA_ONLY_OPS and key == 'CPU' else 'ok'}"
                for key, m in missing.items()))
        if not ops or any(missing.values()):
            print(f"ocr-kernels: --require-cuda: missing kernels {missing}", file=sys.stderr)
            return 1
        cpu_only = sum(op in CPU_ONLY_OPS for op in ops)
        cuda_only = sum(op in CUDA_ONLY_OPS for op in ops)
        print(f"  every one of the {len(ops)} public ops has a CPU kernel but for the {cuda_only} "
              f"CUDA-only ops, and a CUDA kernel but for the {cpu_only} CPU-only ops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
