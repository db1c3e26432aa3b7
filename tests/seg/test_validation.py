"""Bad input to seg_ocr_loss: named errors before any kernel runs; target values without a host
synchronisation on the device path."""
import pytest
import torch

from seg.seg_helpers import make_seg_inputs
from ocr_kernels import seg_ocr_loss
from ocr_kernels._validation import check_target_values


@pytest.fixture
def good():
    return make_seg_inputs(2, 5, (3, 4))


@pytest.mark.parametrize("bad_value", [-1, 5, 254, 1000])
def test_target_values_outside_range_are_named(good, bad_value):
    logits, target, tags, prior = good
    target = target.clone()
    target[1, 2, 3] = bad_value
    with pytest.raises(ValueError, match=rf"target values must be class indices in \[0, 4\] .* "
                                         rf"or ignore_index=255; got 1 pixel\(s\) outside that "
                                         rf"range, the first with value {bad_value}"):
        seg_ocr_loss(logits, target, tags, prior)


def test_ignore_index_outside_the_class_range_is_accepted_and_inside_is_a_class(good):
    logits, target, tags, prior = good
    t = torch.where(target == 255, torch.full_like(target, -100), target)
    seg_ocr_loss(logits, t, tags, prior, ignore_index=-100)  # no error
    with pytest.raises(ValueError, match="ignore_index=-100; got"):
        seg_ocr_loss(logits, target, tags, prior, ignore_index=-100)  # 255 is now a bad value


def test_validate_false_skips_the_value_check(good):
    logits, target, tags, prior = good
    target = target.clone()
    target[0, 0, 0] = 9
    # our check is skipped; what happens next is the backend's business (torch's own error here)
    with pytest.raises((IndexError, RuntimeError)) as info:
        seg_ocr_loss(logits, target, tags, prior, validate=False, backend="reference")
    assert "target values must be" not in str(info.value)


def test_device_path_uses_an_async_assert(good, monkeypatch):
    # What CUDA tensors and torch.compile get: torch._assert_async on a device-side flag, never a
    # host read. On CPU that assert fires at once, so the path can be checked here.
    logits, target, tags, prior = good
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    check_target_values(target, 5, 255)  # good values: no error
    bad = target.clone()
    bad[0, 1, 1] = 7
    with pytest.raises(RuntimeError, match=r"target values must be class indices in \[0, 4\]"):
        check_target_values(bad, 5, 255)


def test_compiles_without_graph_break_and_still_checks_targets(good):
    # fullgraph=True fails on any host synchronisation or data-dependent branch
    logits, target, tags, prior = good
    f = torch.compile(lambda z, t: seg_ocr_loss(z, t, tags, prior, backend="reference"),
                      fullgraph=True, backend="aot_eager")
    assert torch.allclose(f(logits, target), seg_ocr_loss(logits, target, tags, prior), rtol=1e-6)
    bad = target.clone()
    bad[1, 0, 0] = 6
    with pytest.raises(RuntimeError, match="target values must be class indices"):
        f(logits, bad)


@pytest.mark.parametrize(
    "change, exc, pattern",
    [
        (dict(target=lambda t: t.float()), TypeError, r"target must be an integer tensor .* got a torch.float32"),
        (dict(target=lambda t: t != 0), TypeError, r"target must be an integer tensor .* got a torch.bool"),
        (dict(target=lambda t: t[:, :2]), ValueError, r"target must have shape \[B, \*spatial\] = \[2, 3, 4\]"),
        (dict(target=lambda t: t.tolist()), TypeError, r"target must be an integer tensor \[B, \*spatial\]; got list"),
        (dict(ignore_index=255.0), TypeError, r"ignore_index must be an int; got float 255.0"),
        (dict(ignore_index=True), TypeError, r"ignore_index must be an int; got bool True"),
        (dict(alpha=float("nan")), ValueError, r"alpha must be a finite number; got float nan"),
        (dict(ce_average="mean"), ValueError, r"ce_average must be one of \['all', 'valid'\]; got 'mean'"),
        (dict(validate=1), TypeError, r"validate must be a bool; got int 1"),
        (dict(global_mean="yes"), TypeError, r"global_mean must be a bool; got str 'yes'"),
        (dict(group_split="ada", prior=None), ValueError, r"prior is required for group_split=\"ada\""),
        (dict(backend="gpu"), ValueError, r"backend must be one of"),
    ],
)
def test_bad_arguments_are_named(good, change, exc, pattern):
    logits, target, tags, prior = good
    kw = dict(alpha=1.0, prior=prior)
    target_fn = change.pop("target", None) if "target" in change else None
    kw.update(change)
    t = target_fn(target) if target_fn else target
    p = kw.pop("prior")
    with pytest.raises(exc, match=pattern):
        seg_ocr_loss(logits, t, tags, p, **kw)


def test_target_on_another_device_is_named(good):
    logits, target, tags, prior = good
    with pytest.raises(ValueError, match=r"target must be on the same device as logits"):
        seg_ocr_loss(logits, target.to("meta"), tags, prior)


def test_upsample_errors_name_the_argument(good):
    logits, target, tags, prior = good
    low = logits[:, :, :2, :2]
    with pytest.raises(TypeError, match="upsample must be a bool; got int 1"):
        seg_ocr_loss(low, target, tags, prior, upsample=1)
    with pytest.raises(TypeError, match="align_corners must be a bool; got str 'yes'"):
        seg_ocr_loss(low, target, tags, prior, upsample=True, align_corners="yes")
    with pytest.raises(ValueError, match=r"target must be \[B, H, W\] with upsample=True .* got a "
                                         r"torch.int64 tensor of shape \(2, 3, 4, 1\)"):
        seg_ocr_loss(low, target[..., None], tags, prior, upsample=True)
    with pytest.raises(ValueError, match=r"upsample=True \(fused bilinear upsampling\) needs logits "
                                         r"\[B, C\+1, h, w\] with exactly 2 spatial dims; got .* "
                                         r"shape \(2, 5, 3\)"):
        seg_ocr_loss(logits[..., 0], target, tags, prior, upsample=True)
    with pytest.raises(ValueError, match=r"target must have shape \[B, \*spatial\] = \[3, 3, 4\]"):
        seg_ocr_loss(torch.cat([low, low[:1]]), target, torch.cat([tags, tags[:1]]), prior,
                     upsample=True)
    # without upsample the target must match the logits, as before
    with pytest.raises(ValueError, match=r"target must have shape \[B, \*spatial\] = \[2, 2, 2\]"):
        seg_ocr_loss(low, target, tags, prior)


def test_upsample_with_cuda_on_cpu_tensors_names_the_device(good):
    from ocr_kernels import BackendUnavailableError

    logits, target, tags, prior = good
    # the cuda backend fuses it, on CUDA tensors only
    with pytest.raises(BackendUnavailableError, match=r"backend='cuda' cannot run seg_ocr_loss on "
                                                      r".* cpu tensors: it needs CUDA tensors"):
        seg_ocr_loss(logits[:, :, :2, :2], target, tags, prior, upsample=True, backend="cuda")
