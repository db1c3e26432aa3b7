"""Build the C++/CUDA extension now instead of on first use: ``python -m ocr_kernels.build_ext``.

The library lands in the JIT cache (``$OCR_KERNELS_BUILD_DIR``, default ``~/.cache/ocr_kernels``)
where every later process finds it. For a build at install time instead, see setup.py
(``OCR_KERNELS_BUILD_EXT=1 pip install --no-build-isolation .``).
"""
from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ocr_kernels.build_ext", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    args = parser.parse_args(argv)
    from ._extension import _has_cuda_kernels, extension_unavailable_reason, load, sources

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
