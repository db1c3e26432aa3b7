"""Compile the Triton OCR kernels for an sm_90 target without a GPU (run in a subprocess WITHOUT
TRITON_INTERPRET by test_triton_kernel.py): the interpreter runs numpy and lets through typing
mistakes that only the real compiler (triton -> PTX -> ptxas) rejects.

Usage: python tests/ocr/triton_aot_compile.py  (prints one line per variant; exit 1 on failure)
"""
import os
import sys

assert os.environ.get("TRITON_INTERPRET", "0") != "1", "run without TRITON_INTERPRET"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

import ocr_kernels.ocr.triton_kernel as tk  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)


def compile_kernel(fn, dtypes, consts, num_warps=4):
    sig = {a: ("constexpr" if a in consts else dtypes.get(a, "i32")) for a in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig,
                    constexprs={(fn.arg_names.index(k),): v for k, v in consts.items()})
    return triton.compile(src, target=TARGET, options={"num_warps": num_warps})


# (logits dtype, tags dtype, GROUP, WITH_CE, FLAT, INT64, FULL): every code path of each kernel
# at least once.
VARIANTS = [
    ("*bf16", "*i1", 0, True, False, True, True),
    ("*fp32", "*i64", 0, False, True, False, True),
    ("*fp16", "*fp32", 2, False, True, False, False),
    ("*bf16", "*i64", 1, True, False, True, False),
    ("*fp32", "*i1", 2, True, True, False, False),
]

failed = 0
for zdt, tdt, group, ce, flat, int64, full in VARIANTS:
    # LOOP (the persistent tile loop, which the OCR loss alone takes) also once with INT64
    consts = dict(GROUP=group, WITH_CE=ce, FLAT=flat, INT64=int64, BLOCK_P=tk.BLOCK_P, FULL=full,
                  LOOP=(not ce) or (int64 and full))
    ptrs = dict(z_ptr=zdt, tags_ptr=tdt, cls_ptr="*i32", prior_ptr="*fp32", tgt_ptr="*i64",
                loss_ptr="*fp32", st_ptr="*fp32", flag_ptr="*u8", dz_ptr=zdt, margin="fp32",
                threshold="fp32")
    for name, fn, extra_t, extra_c in [
        ("fwd", tk._fwd_kernel, dict(ce_ptr="*fp32"), dict(PIXELS=0, BLOCK_C=32)),
        ("bwd", tk._bwd_kernel, dict(gl_ptr="*fp32", gce_ptr="*fp32"), {}),
    ]:
        try:
            k = compile_kernel(fn, {**ptrs, **extra_t}, {**consts, **extra_c})
            assert "cubin" in k.asm
            print(f"ok {name} {zdt} {consts}", flush=True)
        except Exception as e:  # report every failing variant, then fail
            failed += 1
            print(f"FAIL {name} {zdt} {consts}: {type(e).__name__}: {e}", flush=True)
# The seg objective (gradient written by the forward): every group, with and without ce_weight,
# both offset widths, the persistent loop and the one-tile grid; its in-place scale per dtype.
OBJ_VARIANTS = [
    ("*bf16", 0, True, False, True, True, True),
    ("*fp32", 0, False, True, False, True, False),
    ("*fp16", 1, True, True, False, False, True),
    ("*fp32", 2, False, False, True, False, False),
]
for zdt, group, has_w, flat, int64, full, loop in OBJ_VARIANTS:
    consts = dict(GROUP=group, PIXELS=0, HAS_W=has_w, FLAT=flat, INT64=int64, BLOCK_P=tk.BLOCK_P,
                  BLOCK_C=32, FULL=full, LOOP=loop)
    ptrs = dict(z_ptr=zdt, tags_ptr="*i64", cls_ptr="*i32", prior_ptr="*fp32", tgt_ptr="*i64",
                w_ptr="*fp32", coef_ptr="*fp32", loss_ptr="*fp32", ce_ptr="*fp32", dz_ptr=zdt,
                margin="fp32", threshold="fp32")
    try:
        k = compile_kernel(tk._obj_kernel, ptrs, consts)
        assert "cubin" in k.asm
        print(f"ok obj {zdt} {consts}", flush=True)
    except Exception as e:
        failed += 1
        print(f"FAIL obj {zdt} {consts}: {type(e).__name__}: {e}", flush=True)
for xdt, int64 in (("*fp32", False), ("*bf16", True), ("*fp16", False), ("*fp32", True)):
    try:
        k = compile_kernel(tk._scale_kernel, dict(x_ptr=xdt, g_ptr="*fp32",
                                                  n="i64" if int64 else "i32"),
                           dict(BLOCK=tk.SCALE_BLOCK, INT64=int64))
        assert "cubin" in k.asm
        print(f"ok scale {xdt} INT64={int64}", flush=True)
    except Exception as e:
        failed += 1
        print(f"FAIL scale {xdt}: {type(e).__name__}: {e}", flush=True)
for tdt in ("*i1", "*i64", "*fp32"):
    try:
        k = compile_kernel(tk._class_list_kernel, dict(tags_ptr=tdt, cls_ptr="*i32"),
                           dict(BLOCK_C=32))
        assert "cubin" in k.asm
        print(f"ok class_list {tdt}", flush=True)
    except Exception as e:
        failed += 1
        print(f"FAIL class_list {tdt}: {type(e).__name__}: {e}", flush=True)
sys.exit(1 if failed else 0)
