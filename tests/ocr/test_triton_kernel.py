"""Triton-specific tests of the OCR kernels (the shared matrix is tests/ocr/test_backends.py).

What the matrix does not cover: torch.library registration (opcheck, torch.compile without graph
breaks), many small pixel tiles (tail lanes, blocks without a gradient next to blocks with one),
ties across the IC/OC class lists, the 64-bit offset path, layouts beyond contiguous/channels_last,
strided and expanded upstream gradients, and "no copy of the logits". The fused CE + OCR maps of
the segmentation objective: tests/seg/test_triton_kernel.py.

Runs on CUDA when there is a device, otherwise on the CPU under TRITON_INTERPRET=1.
"""
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import (GROUP_SPLITS, PIXEL_MODES, ambiguous_pixels, assert_close_rel,
                     comparable_pixels, force_small_tiles, make_ocr_inputs, reference64)
from helpers import small_tiles  # noqa: F401  (a fixture)
from ocr_kernels._options import OCROptions
from ocr_kernels import ocr_loss
from ocr_kernels._dispatch import available_backends

if not available_backends()["triton"].available:
    pytest.skip(f"triton: {available_backends()['triton'].reason}", allow_module_level=True)

import ocr_kernels.ocr.triton_kernel as tk  # noqa: E402
from ocr_kernels.ocr.triton_kernel import ocr_loss_map_triton  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def check_map(logits, tags, prior, grad_map=None, rtol=1e-5, **opts):
    """Triton loss map and gradient (for any layout of logits and grad_map) vs the fp64 reference."""
    z = logits.detach().to(DEV).requires_grad_(True)
    loss = ocr_loss_map_triton(z, tags.to(DEV), None if prior is None else prior.to(DEV),
                               OCROptions(opts.get("margin", 2.0), opts.get("threshold", 0.2),
                               opts.get("group_split", "ada"), opts.get("pixels", "oc")))
    g = torch.ones_like(loss) if grad_map is None else grad_map.to(DEV)
    loss.backward(g)
    want_loss, want_grad = reference64(logits.cpu(), tags, prior, grad_map=g.cpu(), **opts)
    keep = comparable_pixels(logits.cpu(), tags, prior, opts)
    assert loss.dtype == torch.float32 and z.grad.dtype == logits.dtype
    assert_close_rel(loss.detach().cpu(), want_loss, rtol, "loss", keep)
    assert_close_rel(z.grad.cpu(), want_grad, rtol, "grad", keep.unsqueeze(1).expand_as(want_grad))
    return z.grad


# ---------------------------------------------------------------------------------------------
# Pixel tiles and class lists
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("group_split", GROUP_SPLITS)
@pytest.mark.parametrize("pixels", PIXEL_MODES)
def test_small_tiles_match_reference(small_tiles, group_split, pixels):
    logits, tags, prior = make_ocr_inputs(2, 13, (4, 5), tag_p=0.4)
    tags[1] = 1  # every class tagged: no OC class, loss 0
    check_map(logits, tags, prior, grad_map=torch.randn(2, 4, 5), group_split=group_split,
              pixels=pixels)


@pytest.mark.parametrize("block_p", [16, 32])
def test_overlapping_last_tile_is_bit_identical(monkeypatch, block_p):
    # 7 x 5 = 35 pixels in tiles of 16 or 32: the last tile moves back to end at pixel 34 and
    # shares pixels with the tile before (both write them). Every pixel's loss and gradient must
    # be bit-for-bit those of one tile over the whole image (the per-pixel math does not depend
    # on the tiling), with a pixel with a gradient and one without in the shared range.
    logits, tags, prior = make_ocr_inputs(2, 7, (7, 5), tag_p=0.4)
    tags[:, 0] = 0  # class 1 is OC in both images
    logits[:, 1, 4, 0] += 30.0  # pixel 20 (in every shared range): predicted OC, a loss
    g = torch.randn(2, 7, 5)
    g[:, 4, 1] = 0.0  # pixel 21: no upstream gradient

    def run():
        z = logits.to(DEV).requires_grad_(True)
        loss = ocr_loss_map_triton(z, tags.to(DEV), prior.to(DEV),
                                   OCROptions(2.0, 0.2, "ada", "oc"))
        loss.backward(g.to(DEV))
        return loss.detach().cpu(), z.grad.cpu()

    whole_loss, whole_grad = run()
    assert whole_loss[:, 4, 0].gt(0).all() and whole_grad[:, :, 4, 0].ne(0).any()
    force_small_tiles(monkeypatch, block_p)
    loss, grad = run()
    assert torch.equal(loss, whole_loss)
    assert torch.equal(grad, whole_grad)
    assert grad[:, :, 4, 1].eq(0).all()


@pytest.mark.parametrize("programs", [1, 2, 3])
@pytest.mark.parametrize("hw", [(7, 9), (4, 4)])
def test_persistent_tile_loop(monkeypatch, programs, hw):
    # A persistent grid: `programs` programs an image loop over its tiles of 16 pixels (7 x 9 =
    # 63 pixels: 4 tiles, the last moved back to end at pixel 62; 3 programs run 2, 1 and 1 of
    # them; 4 x 4: one tile). Loss and gradient must be bit-for-bit those of one program a tile,
    # and match the reference, with an OC pixel in the first and in the last tile, pixels
    # without an upstream gradient, and a tile without any gradient (zeros only).
    B, C1 = 2, 7
    logits, tags, prior = make_ocr_inputs(B, C1, hw, tag_p=0.4)
    tags[:, 0] = 0  # class 1 is OC in both images
    logits[:, 1, 0, 0] += 30.0  # first tile: an OC pixel, a loss
    logits[:, 1, -1, -1] += 30.0  # last tile: one too
    g = torch.randn(B, *hw)
    g[:, 0, 1] = 0.0
    if hw == (7, 9):
        g[:, 2:4] = 0.0  # pixels 18-35: the second tile's, no upstream gradient
    force_small_tiles(monkeypatch, 16)

    def run():
        z = logits.to(DEV).requires_grad_(True)
        loss = ocr_loss_map_triton(z, tags.to(DEV), prior.to(DEV),
                                   OCROptions(2.0, 0.2, "ada", "oc"))
        loss.backward(g.to(DEV))
        return loss.detach().cpu(), z.grad.cpu()

    want_loss, want_grad = run()
    monkeypatch.setattr(tk, "_FORCE_PROGRAMS_PER_IMAGE", programs)
    assert tk._launch_args(logits, [(logits, 2)], False)["grid"][0] == min(programs, -(-hw[0] * hw[1] // 16))
    loss, grad = run()
    assert loss[:, 0, 0].gt(0).all() and loss[:, -1, -1].gt(0).all()
    assert torch.equal(loss, want_loss)
    assert torch.equal(grad, want_grad)
    check_map(logits, tags, prior, grad_map=g)


@pytest.mark.parametrize("path", ["one_tile", "small_tiles"])
def test_ties_across_class_lists_take_lowest_index(request, path):
    if path == "small_tiles":
        request.getfixturevalue("small_tiles")
    # Equal maxima in IC and OC classes (classes 2, 9, 12 of 13): the prediction is class 2, and
    # the anchor the lowest tied IC class -- exactly torch.argmax's choice.
    C1 = 13
    logits = torch.zeros(2, C1, 3, 4)
    logits[:, [2, 9, 12]] = 5.0
    logits[:, :, 0, 0] = 0.0  # an all-tied pixel: prediction and anchor are class 0
    logits[:, 10, 2, :] = 5.0  # another IC/IC tie (10 before 12) on one row
    tags = torch.zeros(2, C1 - 1, dtype=torch.int64)
    tags[0, [8, 9, 11]] = 1  # classes 9, 10, 12 in IC; 2 is OC -> OC pixels
    tags[1, [1, 9, 11]] = 1  # class 2 in IC -> IC pixels
    prior = torch.full((C1, C1), 0.5)
    for split in GROUP_SPLITS:
        for pix in PIXEL_MODES:
            check_map(logits, tags, prior, group_split=split, pixels=pix)
    # hand-derived: image 0, pixel (1, 1): pred 2 (OC), "max" group {A = 9}, OC = all but
    # {0, 9, 10, 12}: lse_oc = log(e^5 + 8·e^0) over classes 1-8 and 11, s = -5 + lse_oc + 2.
    z = logits.to(DEV)
    got = ocr_loss_map_triton(z, tags.to(DEV), None,
                              OCROptions(2.0, 0.2, "max", "oc"))[0, 1, 1].item()
    s = -5.0 + torch.log(torch.tensor(torch.e**5 + 8.0, dtype=torch.float64)).item() + 2.0
    assert abs(got - torch.nn.functional.softplus(torch.tensor(s, dtype=torch.float64)).item()) < 1e-5


def test_class_lists_built_in_chunks(monkeypatch):
    # The forward builds each image's class list in chunks of CLASS_CHUNK classes (256 on a
    # GPU); chunks of 4 here: IC classes first, then OC, each ascending, then the IC count.
    monkeypatch.setattr(tk, "CLASS_CHUNK", 4)
    logits, tags, prior = make_ocr_inputs(3, 13, (3, 5), tag_p=0.4)
    tags[1] = 1  # every class tagged
    tags[2] = 0  # background alone in IC
    check_map(logits, tags, prior, grad_map=torch.randn(3, 3, 5))
    _, _, _, _, classes = tk._forward(logits.to(DEV), None, tags.to(DEV), prior.to(DEV), 2.0, 0.2,
                                   "ada", "oc", -100)
    # the same lists from a launch of their own (for kernels without the prologue)
    alone = tk._class_lists(tags.to(DEV), 13)
    for b in range(3):
        ic = [0] + [c + 1 for c in range(12) if tags[b, c] != 0]
        oc = [c for c in range(13) if c not in ic]
        assert classes[b].tolist() == ic + oc + [len(ic)] == alone[b].tolist()


@pytest.mark.parametrize("path", ["one_tile", "small_tiles"])
def test_integer_logits_with_many_ties(request, path):
    if path == "small_tiles":
        request.getfixturevalue("small_tiles")
    logits = torch.randint(-2, 3, (3, 11, 4, 6)).float()
    tags = (torch.rand(3, 10) < 0.4).long()
    prior = torch.rand(11, 11)
    for split in GROUP_SPLITS:
        check_map(logits, tags, prior, group_split=split, pixels="all",
                  grad_map=torch.randn(3, 4, 6))


@settings(max_examples=max(10, int(os.environ.get("OCR_HYPOTHESIS_EXAMPLES", "200")) // 4),
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 2),
    C1=st.integers(3, 30),
    block_p=st.sampled_from([16, 32]),
    spatial=st.lists(st.integers(1, 5), min_size=1, max_size=3),
    scale=st.sampled_from([0.1, 1.0, 4.0, 30.0]),
    integer=st.booleans(),
    tag_p=st.floats(0.0, 1.0),
    group_split=st.sampled_from(GROUP_SPLITS),
    pixels=st.sampled_from(PIXEL_MODES),
    threshold=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_hypothesis_small_tiles(B, C1, block_p, spatial, scale, integer, tag_p, group_split,
                                pixels, threshold, seed):
    # Small tiles against the reference, any tags (so ties across the IC and OC class lists);
    # integer logits make ties common.
    g = torch.Generator().manual_seed(seed)
    logits, tags, prior = make_ocr_inputs(B, C1, spatial, scale=scale, tag_p=tag_p, generator=g)
    if integer:
        logits = logits.round().clamp(-3, 3)
    grad_map = torch.randn((B, *spatial), generator=g)
    with pytest.MonkeyPatch.context() as mp:
        force_small_tiles(mp, block_p)
        check_map(logits, tags, prior, grad_map=grad_map, group_split=group_split, pixels=pixels,
                  threshold=threshold)


def test_small_tiles_fp16(small_tiles):
    logits, tags, prior = make_ocr_inputs(2, 10, (3, 5), dtype=torch.float16)
    check_map(logits, tags, prior, rtol=2e-3, pixels="all")


def test_int64_offsets_path(monkeypatch):
    # The 64-bit offset switch, forced on small tensors (sizes past 2^31 need a GPU: see below).
    monkeypatch.setattr(tk, "_FORCE_INT64", True)
    logits, tags, prior = make_ocr_inputs(2, 7, (3, 4, 2))
    check_map(logits, tags, prior, pixels="all", grad_map=torch.randn(2, 3, 4, 2))
    force_small_tiles(monkeypatch, 16)
    check_map(logits, tags, prior, pixels="oc")


# ---------------------------------------------------------------------------------------------
# Layouts and upstream gradients
# ---------------------------------------------------------------------------------------------
def _layouts():
    B, C1, H, W = 2, 6, 5, 7

    def r(*shape):
        return torch.randn(*shape) * 3

    yield "channels_last", r(B, C1, H, W).contiguous(memory_format=torch.channels_last)
    yield "channels_last_3d", r(B, C1, 3, 4, 5).contiguous(memory_format=torch.channels_last_3d)
    yield "permuted", r(B, W, H, C1).permute(0, 3, 2, 1)  # spatial dims do not collapse
    yield "sliced_h", r(B, C1, 2 * H, W)[:, :, ::2]  # not dense, general index path
    yield "sliced_w", r(B, C1, H, 2 * W)[..., ::2]  # not dense, one spatial stride
    yield "class_slice", r(B, 2 * C1, H, W)[:, ::2]
    yield "expanded_batch", r(1, C1, H, W).expand(B, C1, H, W)


@pytest.mark.parametrize("name, logits", list(_layouts()), ids=[n for n, _ in _layouts()])
def test_layouts(name, logits):
    B, C1 = logits.shape[:2]
    _, tags, prior = make_ocr_inputs(B, C1, (1,))
    grad = check_map(logits, tags, prior, pixels="all", grad_map=torch.randn(logits.shape[:1] + logits.shape[2:]))
    if name in ("channels_last", "channels_last_3d", "permuted"):  # dense layouts
        assert grad.stride() == logits.stride(), "the gradient keeps the logits' layout"


@pytest.mark.parametrize("kind", ["expanded", "transposed", "sum_reduction"])
def test_strided_and_expanded_grad_map(kind):
    logits, tags, prior = make_ocr_inputs(2, 6, (5, 7))
    if kind == "expanded":
        check_map(logits, tags, prior, pixels="all",
                  grad_map=torch.tensor(-0.7).expand(2, 5, 7))
    elif kind == "transposed":
        check_map(logits, tags, prior, pixels="all",
                  grad_map=torch.randn(2, 7, 5).transpose(1, 2))
    else:  # sum's backward hands the kernel a stride-0 expanded tensor
        z = logits.to(DEV).requires_grad_(True)
        ocr_loss(z, tags.to(DEV), prior.to(DEV), pixels="all", reduction="sum",
                 backend="triton").backward()
        _, want = reference64(logits, tags, prior, pixels="all")
        keep = ~ambiguous_pixels(logits, tags, prior)
        assert_close_rel(z.grad.cpu(), want, 1e-5, "grad", keep.unsqueeze(1).expand_as(want))


@pytest.mark.parametrize("kind", ["offset", "spread"])
@pytest.mark.parametrize("group_split", GROUP_SPLITS)
@pytest.mark.parametrize("pixels", ["oc", "all"])
def test_large_logits_keep_fp32_precision(kind, group_split, pixels):
    # Logits of magnitude ~60: "offset", 60 + a spread of a few units (the saved w = LSE_OC(z)
    # rounds at |w|·2^-24, which reaches s and the OC softmax); "spread", uniform over
    # [-60, 60]. Both to 1e-5 of the float64 reference (tests/test_policies.py has the extreme
    # gaps).
    logits, tags, prior = make_ocr_inputs(2, 7, (5, 6))
    if kind == "offset":
        logits = 60.0 + 3.0 * logits
    else:
        logits = (2.0 * torch.rand_like(logits) - 1.0) * 60.0
    # an OC class in each image, the prediction at pixel (0, 0): a pixel with a loss in both modes
    tags[:, -1] = 0
    logits[:, -1, 0, 0] = logits[:, :, 0, 0].amax(1) + 1.0
    check_map(logits, tags, prior, group_split=group_split, pixels=pixels)


def test_zero_upstream_gradient_skips_pixels_but_not_nan():
    # Where grad_map == 0 the gradient is exactly 0, except at a pixel with a NaN logit: its loss
    # is NaN and so is each of its gradients, whatever the upstream gradient (as the reference:
    # 0 * NaN is NaN in autograd's chain rule).
    logits, tags, prior = make_ocr_inputs(1, 5, (2, 3))
    logits[0, :, 0, 0] = float("nan")
    z = logits.to(DEV).requires_grad_(True)
    loss = ocr_loss_map_triton(z, tags.to(DEV), prior.to(DEV), OCROptions(2.0, 0.2, "ada", "all"))
    g = torch.ones(1, 2, 3, device=DEV)
    g[0, 0, 0] = 0.0
    g[0, 1, 2] = 0.0
    loss.backward(g)
    assert z.grad[0, :, 0, 0].isnan().all()
    assert (z.grad[0, :, 1, 2] == 0).all()
    assert torch.isfinite(z.grad[0, :, 0, 1:]).all() and torch.isfinite(z.grad[0, :, 1, :2]).all()


def test_no_copy_of_the_logits(monkeypatch):
    # Contiguous, channels_last and an arbitrary layout: the launchers allocate the outputs and
    # nothing else (no clone/contiguous/copy), and hand the kernels the caller's own logits
    # storage with its own strides. The kernels are replaced by recorders (the interpreter itself
    # copies every argument to and from numpy, which is no part of the GPU path).
    recorded, launched = [], []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            recorded.append(str(func))
            return func(*args, **(kwargs or {}))

    class Launch:
        def __getitem__(self, grid):
            return lambda *args, **kw: launched.append(args)

    monkeypatch.setattr(tk, "_fwd_kernel", Launch())
    monkeypatch.setattr(tk, "_bwd_kernel", Launch())
    layouts = dict(_layouts())
    for name in ("channels_last", "channels_last_3d", "permuted"):
        logits = layouts[name].to(DEV)
        B, C1 = logits.shape[:2]
        tags = torch.ones(B, C1 - 1, dtype=torch.int64, device=DEV)
        prior = torch.rand(C1, C1, device=DEV)
        g = torch.ones((B,) + tuple(logits.shape[2:]), device=DEV)
        launched.clear()
        with Record():
            loss, _, stats, flags, classes = tk._forward(logits, None, tags, prior, 2.0, 0.2,
                                                         "ada", "all", -100)
            dz = tk._backward(g, None, logits, None, prior, stats, flags, classes, 2.0, 0.2,
                              "ada", -100)
        assert [a[0] is logits for a in launched] == [True, True], name
        assert dz.stride() == logits.stride()
        # the strides passed: batch, class, and (FLAT) the one collapsed spatial stride
        fwd = launched[0]
        assert fwd[13:15] == (logits.stride(0), logits.stride(1)), name
    copies = [op for op in recorded if any(w in op for w in ("copy", "clone", "contiguous"))]
    assert not copies, copies
    assert any("empty" in op for op in recorded), "the recording saw the launchers' allocations"


# ---------------------------------------------------------------------------------------------
# torch.library: opcheck and torch.compile
# ---------------------------------------------------------------------------------------------
def test_opcheck():
    logits, tags, prior = make_ocr_inputs(2, 6, (4, 5), device=DEV)
    # The statistics output is written only where the loss is not 0 (the backward reads nothing
    # else), and opcheck compares every output of two runs: pin an OC class that is every
    # pixel's prediction, so that every pixel has a loss in both pixel modes.
    tags[:, -1] = 0
    logits[:, -1] += 20.0
    z = logits.clone().requires_grad_(True)
    torch.library.opcheck(tk._ocr_map_op, (z, tags, prior, 2.0, 0.2, "ada", "oc"))
    torch.library.opcheck(tk._ocr_map_op, (z, tags, None, 1.0, 0.2, "all", "all"))
    target = torch.randint(0, 6, (2, 4, 5), device=DEV)
    target[0, 0] = -100
    g = torch.randn(2, 4, 5, device=DEV)
    L, stats, flags, classes = tk._ocr_map_op(logits, tags, prior, 2.0, 0.2, "ada", "all")
    # one bit a pixel, a tile's bits at its index: here one tile, its first 20 bits set
    bits = (flags.long().unsqueeze(-1) >> torch.arange(8, device=DEV)) & 1
    assert flags.shape[1] == 1 and bits.flatten(1)[:, :20].bool().all()
    assert not bits.flatten(1)[:, 20:].any()
    torch.library.opcheck(tk._maps_bwd_op, (g, None, logits, None, prior, stats, flags,
                                            classes, 2.0, 0.2, "ada", -100))
    # the fused objective's backward (the seg op's forward gives it its statistics)
    _, _, stats, flags, classes = tk._forward(logits, target, tags, prior, 2.0, 0.2, "max", "all",
                                              -100)
    torch.library.opcheck(tk._maps_bwd_op, (g, g.flip(0), logits, target, prior, stats, flags,
                                            classes, 2.0, 0.2, "max", -100))


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_training_step_fullgraph(backend):
    # fullgraph=True raises on any graph break: validation, dispatch and both custom ops trace.
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 6, 1).to(DEV)
    x = torch.randn(2, 3, 5, 4, device=DEV)
    _, tags, prior = make_ocr_inputs(2, 6, (1,), device=DEV)

    def step(x):
        return ocr_loss(conv(x) * 3, tags, prior, pixels="all", backend="triton")

    compiled = torch.compile(step, fullgraph=True, backend=backend)
    loss = compiled(x)
    loss.backward()
    got = [p.grad.clone() for p in conv.parameters()]
    conv.zero_grad()
    want = step(x)
    want.backward()
    assert torch.allclose(loss, want, rtol=1e-6, atol=0)
    for a, b in zip(got, (p.grad for p in conv.parameters())):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# GPU only
# ---------------------------------------------------------------------------------------------
@gpu
@needs_cuda
@pytest.mark.parametrize("C1", [21, 81, 300, 1030])
def test_bf16_on_gpu(C1):
    logits, tags, prior = make_ocr_inputs(2, C1, (9, 11), dtype=torch.bfloat16)
    check_map(logits, tags, prior, rtol=1e-2, pixels="all")


@gpu
@needs_cuda
@pytest.mark.slow
def test_offsets_past_2_31_on_gpu():
    # 2 · 21 · 8192 · 6300 > 2^31 elements (bf16: 4.3 GB): per-pixel results of the last rows,
    # which only 64-bit offsets reach, against the reference on those rows.
    B, C1, H, W = 2, 21, 8192, 6300
    logits = torch.randn(B, C1, H, W, device="cuda", dtype=torch.bfloat16) * 3
    assert logits.numel() > 2**31
    tags = (torch.rand(B, C1 - 1, device="cuda") < 0.3).long()
    z = logits.requires_grad_(True)
    loss = ocr_loss_map_triton(z, tags, None, OCROptions(2.0, 0.2, "all", "all"))
    loss.backward(torch.ones_like(loss))
    tail = logits.detach()[:, :, -2:].float().cpu()
    want_loss, want_grad = reference64(tail, tags.cpu(), None, group_split="all", pixels="all")
    assert_close_rel(loss.detach()[:, -2:].cpu(), want_loss, 1e-5, "loss")
    assert_close_rel(z.grad[:, :, -2:].float().cpu(), want_grad, 1e-2, "grad")


# ---------------------------------------------------------------------------------------------
# The real compiler (no GPU needed)
# ---------------------------------------------------------------------------------------------
def _has_nvidia_toolchain():
    import importlib.util
    import os
    spec = importlib.util.find_spec("triton")
    root = os.path.dirname(spec.origin) if spec and spec.origin else ""
    return os.path.exists(os.path.join(root, "backends", "nvidia", "bin", "ptxas"))


@pytest.mark.skipif(not _has_nvidia_toolchain(), reason="triton's NVIDIA backend (ptxas) is absent")
@pytest.mark.timeout(600)
def test_kernels_compile_for_sm90(tmp_path):
    # The interpreter is lenient about types; compile every code path for an H100 with triton's
    # own compiler and ptxas, in a subprocess without TRITON_INTERPRET.
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, os.path.join(root, "tests", "ocr", "triton_aot_compile.py")],
                          env=env, capture_output=True, text=True, timeout=580)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # 5 variants x (forward, backward), 4 objective variants, 4 scales, 3 class lists
    assert proc.stdout.count("ok ") == 21
