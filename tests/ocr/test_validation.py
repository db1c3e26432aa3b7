"""Every bad input of ocr_loss gives a clear error naming the argument, before any kernel runs."""
import pytest
import torch

from helpers import make_ocr_inputs
from ocr_kernels import BackendUnavailableError, OCRLoss, ocr_loss


@pytest.fixture
def good():
    return make_ocr_inputs(2, 5, (3, 4))


BAD = [
    (dict(logits=[[1.0]]), TypeError, r"logits must be a floating-point tensor.*got list"),
    (dict(logits=torch.zeros(2, 5, 3, 4, dtype=torch.int64)), TypeError, r"logits must be a floating.*torch.int64"),
    (dict(logits=torch.zeros(2, 5)), ValueError, r"logits must have shape \[B, C\+1, \*spatial\].*\(2, 5\)"),
    (dict(logits=torch.zeros(2, 5, 1, 1, 1, 1)), ValueError, r"1 to 3 spatial dims"),
    (dict(logits=torch.zeros(2, 1, 3)), ValueError, r"at least 2 channels"),
    (dict(tags=torch.zeros(2, 5)), ValueError, r"tags must have shape \[B, C\] = \[2, 4\].*\(2, 5\)"),
    (dict(tags=torch.zeros(3, 4)), ValueError, r"tags must have shape \[B, C\] = \[2, 4\]"),
    (dict(tags=[1, 0, 0, 1]), TypeError, r"tags must be a tensor"),
    (dict(prior=torch.zeros(4, 4)), ValueError, r"prior must have shape \[C\+1, C\+1\] = \[5, 5\].*\(4, 4\)"),
    (dict(prior=torch.zeros(5, 5, dtype=torch.int32)), TypeError, r"prior must be a floating"),
    (dict(prior=None), ValueError, r"prior is required for group_split=\"ada\".*prior_correlation"),
    (dict(margin=float("nan")), ValueError, r"margin must be a finite number; got float nan"),
    (dict(threshold=float("inf")), ValueError, r"threshold must be a finite number"),
    (dict(margin="2"), ValueError, r"margin must be a finite number; got str '2'"),
    (dict(group_split="adaptive"), ValueError, r"group_split must be one of \['ada', 'all', 'max'\]; got 'adaptive'"),
    (dict(pixels="OC"), ValueError, r"pixels must be one of .*got 'OC'"),
    (dict(reduction="avg"), ValueError, r"reduction must be one of .*got 'avg'"),
    (dict(backend="gpu"), ValueError, r"backend must be one of .*got 'gpu'"),
    # fused bilinear upsampling
    (dict(size=(0, 4)), ValueError, r"size must be a pair of positive ints \(H, W\), the output "
                                    r"size of the bilinear upsampling; got tuple.*\(0, 4\)"),
    (dict(size=8), ValueError, r"size must be a pair of positive ints .*got int 8"),
    (dict(size=(8, 8, 8)), ValueError, r"size must be a pair of positive ints .*\(8, 8, 8\)"),
    (dict(size=(8.0, 8)), ValueError, r"size must be a pair of positive ints .*\(8.0, 8\)"),
    (dict(size=(8, 8), align_corners=1), TypeError, r"align_corners must be a bool; got int 1"),
    (dict(size=(8, 8), logits=torch.zeros(2, 5, 3)), ValueError,
     r"size \(fused bilinear upsampling\) needs logits \[B, C\+1, h, w\] with exactly 2 "
     r"spatial dims; got a torch.float32 tensor of shape \(2, 5, 3\)"),
]


@pytest.mark.parametrize("change, exc, pattern", BAD, ids=[p for _, _, p in BAD])
def test_bad_input_is_named(good, change, exc, pattern):
    logits, tags, prior = good
    args = dict(logits=logits, tags=tags, prior=prior)
    opts = {k: change.pop(k) for k in list(change) if k not in args}
    args.update(change)
    with pytest.raises(exc, match=pattern):
        ocr_loss(args["logits"], args["tags"], args["prior"], **opts)


def test_prior_not_needed_for_max_and_all(good):
    logits, tags, _ = good
    for split in ("max", "all"):
        assert torch.isfinite(ocr_loss(logits, tags, None, group_split=split))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
def test_device_mismatch_is_named(good):
    logits, tags, prior = good
    with pytest.raises(ValueError, match=r"tags must be on the same device as logits"):
        ocr_loss(logits.cuda(), tags, prior.cuda())


def test_device_mismatch_is_named_meta(good):
    logits, tags, prior = good
    with pytest.raises(ValueError, match=r"prior must be on the same device as logits \(cpu\).*meta"):
        ocr_loss(logits, tags, prior.to("meta"))


def test_explicit_backend_that_cannot_run_raises_with_the_reason(good):
    from ocr_kernels._dispatch import resolve_backend

    logits, tags, prior = good
    with pytest.raises(BackendUnavailableError, match=r"backend='cuda'"):
        ocr_loss(logits, tags, prior, backend="cuda")
    with pytest.raises(BackendUnavailableError, match=r"backend='cuda' cannot run ocr_loss on torch.float32 cpu tensors: it needs CUDA tensors"):
        resolve_backend("cuda", logits, op="ocr_loss")


def test_size_with_a_backend_without_the_fused_path_raises(good):
    # every backend fuses the upsampling today: the message, for a table without one
    from ocr_kernels._dispatch import resolve_resized_backend

    logits, tags, prior = good
    with pytest.raises(BackendUnavailableError,
                       match=r"backend='triton' cannot run ocr_loss with fused upsampling: it is "
                             r"implemented on the reference, cpu backends only"):
        resolve_resized_backend("triton", logits, op="ocr_loss", implemented=("reference", "cpu"))


def test_size_with_cuda_on_cpu_tensors_names_the_device(good):
    # the cuda backend fuses the upsampling, on CUDA tensors only
    logits, tags, prior = good
    with pytest.raises(BackendUnavailableError,
                       match=r"backend='cuda' cannot run ocr_loss on torch.float32 cpu tensors: it needs "
                             r"CUDA tensors"):
        ocr_loss(logits.float(), tags, prior, size=(7, 9), backend="cuda")


def test_size_auto_on_cpu_runs_the_fused_cpu_path(good, monkeypatch):
    from ocr_kernels.ocr import backends

    logits, tags, prior = good
    calls = []
    for name in ("cpu", "reference"):
        fn = backends.OCR_LOSS_MAP_RESIZED_IMPLS[name]
        monkeypatch.setitem(backends.OCR_LOSS_MAP_RESIZED_IMPLS, name,
                            lambda *a, _n=name, _f=fn: calls.append(_n) or _f(*a))
    a = ocr_loss(logits, tags, prior, size=(7, 9), backend="auto")
    r = ocr_loss(logits, tags, prior, size=(7, 9), backend="reference")
    assert calls[0] in ("cpu", "reference") and calls[1] == "reference"
    from ocr_kernels._extension import extension_unavailable_reason
    if extension_unavailable_reason("cpu") is None:
        assert calls[0] == "cpu"
    assert torch.allclose(a, r, rtol=1e-5)


def test_auto_falls_back_silently(good):
    logits, tags, prior = good
    a = ocr_loss(logits, tags, prior, backend="auto")
    r = ocr_loss(logits, tags, prior, backend="reference")
    assert torch.allclose(a, r, rtol=1e-5)


def test_module_checks_its_options_at_construction():
    with pytest.raises(ValueError, match="prior is required"):
        OCRLoss()
    with pytest.raises(ValueError, match=r"loss_name must be a string starting with \"loss_\"; got 'ocr'"):
        OCRLoss(group_split="max", loss_name="ocr")
    with pytest.raises(ValueError, match="group_split must be one of"):
        OCRLoss(group_split="none")
    with pytest.raises(ValueError, match="loss_weight must be a finite number"):
        OCRLoss(group_split="max", loss_weight=float("nan"))
