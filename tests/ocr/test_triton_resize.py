"""Triton-specific tests of the fused bilinear upsampling (ocr/triton_resize.py, seg/triton_resize.py);
the shared matrices (tests/{ocr,seg}/test_backends.py, the resized cases) compare every backend
against the float64 composition F.interpolate + reference.

What the matrices do not cover: several programs per image and several image chunks in the
backward, the 64-bit offset path, bitwise determinism, the allocations (no [B, C+1, H, W] buffer,
the intermediates' share of the unfused path's memory), torch.library registration (opcheck,
torch.compile) and the real compiler (sm_90: registers and spills).

Runs on CUDA when there is a device, otherwise on the CPU under TRITON_INTERPRET=1.
"""
import os
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import assert_close_rel, force_small_tiles, make_ocr_inputs, reference64, upsampled64
from helpers import small_tiles  # noqa: F401  (a fixture)
from ocr_kernels._dispatch import available_backends
from ocr_kernels._options import OCROptions

if not available_backends()["triton"].available:
    pytest.skip(f"triton: {available_backends()['triton'].reason}", allow_module_level=True)

import ocr_kernels.ocr.triton_kernel as tk  # noqa: E402
import ocr_kernels.ocr.triton_resize as tr  # noqa: E402
from ocr_kernels.ocr.triton_resize import ocr_loss_map_resized_triton  # noqa: E402
from ocr_kernels.seg.triton_resize import seg_ocr_loss_maps_resized_triton  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def one_image_chunks(monkeypatch):
    """The backward in chunks of one image (its coefficient planes and R reused per chunk), and
    x-gather programs of 3 classes (class ranges that split the IC and OC parts of the list)."""
    monkeypatch.setattr(tr, "CHUNK_SHARE", 0.0)
    monkeypatch.setattr(tr, "GATHER_CLASSES", 3)


def _ocr(logits, tags, prior, size, ac, grad_map, **opts):
    z = logits.detach().clone().to(DEV).requires_grad_(True)
    o = OCROptions(opts.get("margin", 2.0), 0.2, opts.get("group_split", "ada"),
                   opts.get("pixels", "all"))
    loss = ocr_loss_map_resized_triton(z, tags.to(DEV), prior.to(DEV), o, size, ac)
    loss.backward(grad_map.to(DEV))
    return loss.detach().cpu(), z.grad.cpu()


def _seg(logits, target, tags, prior, ac, gce, gocr, group_split="ada"):
    z = logits.detach().clone().to(DEV).requires_grad_(True)
    ce, ocr = seg_ocr_loss_maps_resized_triton(z, target.to(DEV), tags.to(DEV), prior.to(DEV),
                                               OCROptions(2.0, 0.2, group_split, "all", 255), ac)
    torch.autograd.backward((ce, ocr), (gce.to(DEV), gocr.to(DEV)))
    return ce.detach().cpu(), ocr.detach().cpu(), z.grad.cpu()


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("hw, size", [((5, 6), (19, 23)), ((9, 7), (4, 5))])
def test_small_tiles_and_image_chunks(small_tiles, one_image_chunks, hw, size, align_corners):
    # Tiles of 16 output pixels and 16 gather lanes: several programs per image, footprints
    # that cross programs, and one image per backward chunk.
    logits, tags, prior = make_ocr_inputs(3, 7, hw, tag_p=0.4)
    g = torch.randn(3, *size)
    loss, grad = _ocr(logits, tags, prior, size, align_corners, g, group_split="all")
    want, want_grad = reference64(logits, tags, prior, grad_map=g, size=size,
                                  align_corners=align_corners, group_split="all", pixels="all")
    assert_close_rel(loss, want, 1e-5, "loss", atol=1e-6)
    assert_close_rel(grad, want_grad, 1e-5, "grad", atol=1e-5)


def test_int64_offsets_path(monkeypatch):
    # The 64-bit offset switch, forced on small tensors (sizes past 2^31 need a GPU).
    monkeypatch.setattr(tk, "_FORCE_INT64", True)
    force_small_tiles(monkeypatch, 16)
    logits, tags, prior = make_ocr_inputs(2, 6, (4, 5))
    g = torch.randn(2, 9, 11)
    loss, grad = _ocr(logits, tags, prior, (9, 11), False, g, group_split="max")
    want, want_grad = reference64(logits, tags, prior, grad_map=g, size=(9, 11),
                                  group_split="max", pixels="all")
    assert_close_rel(loss, want, 1e-5, "loss", atol=1e-6)
    assert_close_rel(grad, want_grad, 1e-5, "grad", atol=1e-5)


def test_backward_is_bitwise_deterministic(small_tiles, one_image_chunks):
    # No atomics: each gradient value is summed by one program in a fixed order, so two runs
    # agree bit for bit (and the op runs under torch.use_deterministic_algorithms(True)).
    logits, tags, prior = make_ocr_inputs(2, 9, (6, 5), tag_p=0.4)
    target = torch.randint(0, 9, (2, 25, 21))
    target[0, :3] = 255
    gce, gocr = torch.randn(2, 25, 21), torch.randn(2, 25, 21)
    try:
        torch.use_deterministic_algorithms(True)
        runs = [_seg(logits, target, tags, prior, ac, gce, gocr) for ac in (False, False, True, True)]
    finally:
        torch.use_deterministic_algorithms(False)
    for a, b in ((runs[0], runs[1]), (runs[2], runs[3])):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    assert runs[0][2].abs().sum() > 0


class _Allocations(TorchDispatchMode):
    """Every tensor the ops allocate (factory and empty_like calls): shape and bytes."""

    def __init__(self):
        super().__init__()
        self.tensors = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func)
        if any(k in name for k in ("empty", "zeros", "full", "new_")) and isinstance(out, torch.Tensor):
            self.tensors.append((tuple(out.shape), out.numel() * out.element_size()))
        return out


def test_no_full_resolution_buffer_and_small_intermediates():
    # seg (8, 21, 5, 6) -> (40, 48), forward and backward (the ops' bodies, called directly: a
    # dispatch mode does not see inside a custom op): no allocation is anywhere near
    # [B, C+1, H, W]; what the fused path allocates beyond what the unfused one also returns
    # (the two maps, the low-resolution gradient) stays <= 10% of the unfused path's two
    # full-resolution tensors (the upsampled logits and their gradient).
    B, C1, (h, w), (H, W) = 8, 21, (5, 6), (40, 48)
    logits = make_ocr_inputs(B, C1, (h, w))[0].to(DEV)
    _, tags, prior = make_ocr_inputs(B, C1, (1,))
    target = torch.randint(0, C1, (B, H, W), device=DEV)
    g = torch.ones(B, H, W, device=DEV)
    with _Allocations() as rec:
        loss, ce, stats, classes = tr._forward(logits, target, tags.to(DEV), prior.to(DEV),
                                               (H, W), False, 2.0, 0.2, "ada", "all", 255)
        dz = tr._backward(g, g, logits, target, prior.to(DEV), loss, stats, classes, False, 0.2,
                          "ada", 255)
    assert dz.shape == logits.shape
    full = B * C1 * H * W
    shapes = [s for s, _ in rec.tensors]
    assert (B, H, W) in shapes and tuple(logits.shape) in shapes, shapes  # the recording works
    assert max(torch.Size(s).numel() for s in shapes) < full / 8, shapes
    # the fused path's own buffers: saved statistics, class lists, coefficient planes, R
    common = {(B, H, W), tuple(logits.shape)}
    extra = sum(nbytes for s, nbytes in rec.tensors if s not in common)
    unfused = 2 * full * logits.element_size()
    assert extra <= 0.10 * unfused, (extra, unfused, shapes)
    assert any(len(s) == 4 and s[1:] == (C1, H, w) and s[0] < B for s in shapes), \
        ("the backward's R buffer is [images of a chunk, C+1, H, w]", shapes)


# ---------------------------------------------------------------------------------------------
# torch.library: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------
def test_opcheck():
    logits, tags, prior = make_ocr_inputs(2, 6, (3, 4), device=DEV)
    z = logits.clone().requires_grad_(True)
    torch.library.opcheck(tr._ocr_map_op, (z, tags, prior, [7, 5], False, 2.0, 0.2, "ada", "oc"))
    torch.library.opcheck(tr._ocr_map_op, (z, tags, None, [2, 3], True, 1.0, 0.2, "all", "all"))
    L, stats, classes = tr._ocr_map_op(logits, tags, prior, [7, 5], False, 2.0, 0.2, "ada", "all")
    g = torch.randn(2, 7, 5, device=DEV)
    torch.library.opcheck(tr._maps_bwd_op, (g, None, logits, None, prior, L, stats, classes,
                                            False, 0.2, "ada", -100))
    from ocr_kernels.seg.triton_resize import _seg_maps_op
    target = torch.randint(0, 6, (2, 7, 5), device=DEV)
    target[0, 0] = 255
    torch.library.opcheck(_seg_maps_op, (z, target, tags, prior, True, 2.0, 0.2, "max", "all", 255))


def test_torch_compile_training_step_fullgraph():
    # fullgraph=True raises on any graph break: validation, dispatch and both custom ops trace.
    from ocr_kernels import seg_ocr_loss

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 6, 1).to(DEV)
    x = torch.randn(2, 3, 3, 4, device=DEV)
    _, tags, prior = make_ocr_inputs(2, 6, (1,), device=DEV)
    target = torch.randint(0, 6, (2, 7, 9), device=DEV)

    def step(x):
        return seg_ocr_loss(conv(x) * 3, target, tags, prior, upsample=True, validate=False,
                            backend="triton")

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(x)
    loss.backward()
    got = [p.grad.clone() for p in conv.parameters()]
    conv.zero_grad()
    want = step(x)
    want.backward()
    assert torch.allclose(loss, want, rtol=1e-6, atol=0)
    for a, b in zip(got, (p.grad for p in conv.parameters())):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_matches_interpolate_then_plain_triton_loss():
    # The fused op against the composition on the same backend (F.interpolate in fp32, then the
    # plain Triton kernels), forward and gradient.
    from ocr_kernels.ocr.triton_kernel import ocr_loss_map_triton

    logits, tags, prior = make_ocr_inputs(2, 8, (4, 5), tag_p=0.4)
    g = torch.randn(2, 31, 26)
    o = OCROptions(2.0, 0.2, "ada", "oc")
    loss, grad = _ocr(logits, tags, prior, (31, 26), False, g, pixels="oc")
    z = logits.detach().clone().to(DEV).requires_grad_(True)
    want = ocr_loss_map_triton(upsampled64(z, (31, 26), False).float(), tags.to(DEV),
                               prior.to(DEV), o)
    want.backward(g.to(DEV))
    assert_close_rel(loss, want.detach().cpu(), 1e-5, "loss", atol=1e-6)
    assert_close_rel(grad, z.grad.cpu(), 1e-5, "grad", atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The real compiler (no GPU needed)
# ---------------------------------------------------------------------------------------------
_COMPILE = r"""
import torch
import ocr_kernels.ocr.triton_kernel as tk
from ocr_kernels.bench import sass, static
from ocr_kernels.ocr import triton_resize as tr

def meta(shape, dtype=torch.float32):
    return torch.empty(shape, dtype=dtype, device="meta")

bad = []
# (dtype, group_split, seg, align_corners, int64): every constexpr path at least once
for dt, split, seg, ac, int64 in [(torch.float32, "ada", False, False, False),
                                  (torch.bfloat16, "max", True, True, True),
                                  (torch.float16, "all", True, False, False),
                                  (torch.float32, "ada", True, True, False)]:
    tk._FORCE_INT64 = int64
    B, C1, size = 2, 21, (161, 161)
    z = meta((B, C1, 21, 21), dt)
    tags = torch.zeros(B, C1 - 1, dtype=torch.int64)
    prior = torch.rand(C1, C1)
    tgt = meta((B,) + size, torch.int64) if seg else None
    with static.capture_launches() as cap:
        loss, _, stats, classes = tr._forward(z, tgt, tags, prior, size, ac, 1.0, 0.5, split,
                                              "oc", 255)
        g = meta((B,) + size)
        tr._backward(g, g if seg else None, z, tgt, prior, loss, stats, classes, ac, 0.5, split,
                     255)
    for rec in cap.records:
        k = rec.kernel
        res = sass.resource_usage(k.asm["cubin"]).get(k.name, {})
        st, ld = sass.spill_bytes(sass.disassemble(k.asm["cubin"], k.name)[k.name])
        line = f"{rec.fn.fn.__name__} {dt} {split} seg={seg} ac={ac} int64={int64}: regs {res.get('REG')} spills {st + ld}"
        print(line, flush=True)
        if (res.get("REG") or 0) > 128 or st + ld:
            bad.append(line)
print("BAD" if bad else "ALL OK", bad)
"""


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(__import__("triton").__file__),
                                                    "backends", "nvidia", "bin", "ptxas")),
                    reason="triton's NVIDIA backend (ptxas) is absent")
@pytest.mark.timeout(600)
def test_kernels_compile_for_sm90_within_128_registers_without_spills(tmp_path):
    # The interpreter is lenient about types: compile every kernel's paths for sm_90 through the
    # real launchers (the static model's capture), in a subprocess without TRITON_INTERPRET.
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", _COMPILE], env=env, capture_output=True,
                          text=True, timeout=580)
    assert proc.returncode == 0 and "ALL OK" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.count("regs") >= 4 * 5
