"""Command line: ``python -m ocr_kernels {bench,bench-upsample,demo}`` (also the ``ocr-kernels``
script)."""
from __future__ import annotations

import argparse
import sys
import time


def _demo(args) -> int:
    import torch

    import ocr_kernels as ok

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"ocr-kernels {ok.__version__}, torch {torch.__version__}, device {dev}")
    for name, st in ok.available_backends().items():
        print(f"  backend {name:9s} {'yes' if st.available else 'no '}  {'' if st.available else st.reason}")
    g = torch.Generator().manual_seed(0)
    prior = ok.prior_correlation(torch.rand(1464, 20, generator=g) < 0.1)  # VOC-like train tags
    for shape in ((16, 21, 41, 41), (8, 21, 56, 56)):
        logits = torch.randn(shape, generator=g).to(dev).requires_grad_(True)
        tags = (torch.rand(shape[0], shape[1] - 1, generator=g) < 0.1).to(dev)
        for _ in range(2):  # the first call includes any one-time build/compile
            t0 = time.perf_counter()
            loss = ok.ocr_loss(logits, tags, prior.to(dev))
            loss.backward()
            if dev == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
        rate = ok.oc_error_rate(logits, tags).item()
        print(f"  ocr_loss{tuple(shape)}: {loss.item():.6f}  (OC error rate {rate:.2f}, "
              f"forward+backward {dt * 1e3:.1f} ms, backend auto)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="ocr-kernels", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("demo", help="compute the OCR loss on realistic shapes and time it")
    from .bench.cli import add_arguments, run

    bench = sub.add_parser(
        "bench", help="benchmark every op on every backend beside eager and torch.compile anchors",
        description="Times every loss op on each available backend beside the eager reference, "
                    "torch.compile(reference) and the copy-bandwidth floor; writes a table, a JSON "
                    "file and a PNG plot to --out.")
    add_arguments(bench)
    from .bench import upsample

    up = sub.add_parser(
        "bench-upsample", help="fused bilinear upsampling vs F.interpolate + the same loss",
        description=upsample.__doc__)
    upsample.add_arguments(up)
    args = parser.parse_args(argv)
    if args.cmd == "demo":
        return _demo(args)
    if args.cmd == "bench":
        return run(args)
    if args.cmd == "bench-upsample":
        return upsample.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
