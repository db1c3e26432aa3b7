"""A kernel with one class loop of known trip count, through the static model's capture and
loop-aware count (run by test_static_model.py in a subprocess, without TRITON_INTERPRET).
Prints one JSON line: static, in-loop and executed instruction counts and the mapped loops."""
import json
import sys

import torch
import triton
import triton.language as tl

from ocr_kernels.bench import sass, static


@triton.jit
def _row_sum_kernel(x_ptr, out_ptr, C1, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    acc = tl.zeros((BLOCK_P,), tl.float32)
    for c0 in range(0, C1, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        x = tl.load(x_ptr + p[:, None] * C1 + c[None, :], mask=c[None, :] < C1, other=0.0)
        acc += tl.sum(tl.exp(x), 1)
    tl.store(out_ptr + p, acc)


def main():
    C1 = int(sys.argv[1])
    x = torch.empty((128, C1), device="meta")
    out = torch.empty((128,), device="meta")
    with static.capture_launches() as cap:
        _row_sum_kernel[(2,)](x, out, C1, BLOCK_P=64, BLOCK_C=32)
    (c,) = cap.records
    k = c.kernel
    _, code0 = static._cubin_facts(k.asm["cubin"], k.name)
    code = sass.Sass(code0.instrs, [sass.Loop(lp.start, lp.end) for lp in code0.loops])
    notes = static.resolve_trips(code, __file__, "_row_sum_kernel", dict(c.args, BLOCK_P=64, BLOCK_C=32))
    s = sass.summary(code)
    print(json.dumps({"static": s["static"], "in_loops": s["static_in_loops"], "executed": s["executed"],
                      "mufu_static": s["static_mufu"], "mufu_executed": s["executed_mufu"],
                      "loops": [lp.source for lp in code.loops], "trips": [lp.trips for lp in code.loops],
                      "notes": notes, "grid": list(c.grid)}))


if __name__ == "__main__":
    main()
