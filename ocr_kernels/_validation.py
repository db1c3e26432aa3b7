"""The one place that checks user input, for every op and every backend.

Every check here looks at shapes, dtypes, devices and Python scalars only: no tensor data is read,
so validation never synchronises with the GPU and never breaks a torch.compile graph.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple

import torch

from ._options import BACKENDS, CE_AVERAGES, GROUP_SPLITS, PIXEL_MODES, REDUCTIONS, OCROptions


def describe(x, limit: int = 120) -> str:
    """How an argument appears in an error message, short: a tensor's dtype, shape and device, an
    array's dtype and shape, or the value's type and repr cut to ``limit`` characters (a prior
    written as a nested list must not fill the message)."""
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)} on {x.device}"
    if type(x).__module__ == "numpy" and hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"a {x.dtype} ndarray of shape {tuple(x.shape)}"
    text = repr(x)
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    if isinstance(x, (list, tuple, dict)):
        return f"{type(x).__name__} of {len(x)} items {text}"
    return f"{type(x).__name__} {text}"


def check_tensor(name: str, x, expected: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be {expected}; got {describe(x)}")
    if x.layout != torch.strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, {expected}; got a {x.layout} "
                        f"tensor (call .to_dense() first)")
    return x


def check_option(name: str, value, allowed) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}; got {value!r}")
    return value


def check_finite(name: str, value):
    """A finite real number (Python or numpy scalar), returned as a float. Under torch.compile
    only its type is checked: with dynamic=True a Python float is traced as a symbolic number,
    whose value is unknown while tracing (testing it would break the graph); eager calls check
    the value."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.SymFloat,
                                                         torch.SymInt)):
        raise ValueError(f"{name} must be a finite number; got {describe(value)}")
    if torch.compiler.is_compiling():
        return value
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {describe(value)}")
    return float(value)


def check_int(name: str, value) -> int:
    """A Python or numpy integer (not a bool), returned as an int (as is under torch.compile)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, torch.SymInt)):
        raise TypeError(f"{name} must be an int; got {describe(value)}")
    return value if torch.compiler.is_compiling() else int(value)


# The floating dtypes every backend's math is defined for (fp32 math for the first three).
COMPUTE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool; got {describe(value)}")
    return value


def check_loss_name(loss_name) -> str:
    """mmsegmentation sums every entry whose name starts with "loss_" into the total loss."""
    if not isinstance(loss_name, str) or not loss_name.startswith("loss_"):
        raise ValueError(f'loss_name must be a string starting with "loss_"; got {loss_name!r}')
    return loss_name


def validate_ocr_options(prior, opts: OCROptions, backend: str) -> OCROptions:
    """The arguments of ``ocr_loss``/``seg_ocr_loss`` that are not per-batch tensors: what the
    loss modules fix at construction (the prior's shape is checked against the logits later).
    Returns the options with float margin and threshold."""
    check_option("group_split", opts.group_split, GROUP_SPLITS)
    check_option("pixels", opts.pixels, PIXEL_MODES)
    check_option("backend", backend, BACKENDS)
    opts = opts._replace(margin=check_finite("margin", opts.margin),
                         threshold=check_finite("threshold", opts.threshold))
    if prior is None:
        if opts.group_split == "ada":
            raise ValueError(
                'prior is required for group_split="ada": build it once from the training set\'s '
                "tags with ocr_kernels.prior_correlation(dataset_tags) (Eq. 7), or choose "
                'group_split="max" or "all"; got None'
            )
        return opts
    check_tensor("prior", prior, "a tensor [C+1, C+1]")
    return opts


def check_floating(name: str, x: torch.Tensor, what: str = "a floating-point tensor") -> None:
    if not x.is_floating_point():
        raise TypeError(f"{name} must be {what}; got {describe(x)}")
    if x.dtype not in COMPUTE_DTYPES:  # float8 and friends: no backend computes on them
        raise TypeError(f"{name} must be {what} of dtype float16, bfloat16, float32 or float64; "
                        f"got {describe(x)}")


def check_same_device(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if x.device != ref.device:
        raise ValueError(
            f"{name} must be on the same device as {ref_name} ({ref.device}); got {describe(x)}"
        )


def validate_ocr_inputs(logits, tags, prior, opts: OCROptions, *, reduction: str = "mean",
                        backend: str = "auto") -> None:
    """Check the arguments of ``ocr_loss`` (and of everything built on it); ``opts`` holds the
    option values as the user passed them.

    Raises TypeError/ValueError naming the argument, what it got and what it expected.
    """
    check_tensor("logits", logits, "a floating-point tensor [B, C+1, *spatial]")
    check_floating("logits", logits, "a floating-point tensor [B, C+1, *spatial]")
    if logits.dim() < 3 or logits.dim() > 5:
        raise ValueError(
            "logits must have shape [B, C+1, *spatial] with 1 to 3 spatial dims; "
            f"got {describe(logits)}"
        )
    B, C1 = logits.shape[0], logits.shape[1]
    if C1 < 2:
        raise ValueError(
            "logits must have at least 2 channels (background + at least one class) in dim 1; "
            f"got {describe(logits)}"
        )
    check_tensor("tags", tags, "a tensor [B, C] (bool, int or float; nonzero = present)")
    if tags.dtype.is_complex:
        raise TypeError(f"tags must be bool, integer or floating; got {describe(tags)}")
    if tags.dim() != 2 or tags.shape[0] != B or tags.shape[1] != C1 - 1:
        raise ValueError(
            f"tags must have shape [B, C] = [{B}, {C1 - 1}] to match logits {tuple(logits.shape)} "
            f"(C+1 = {C1} channels, channel 0 = background); got {describe(tags)}"
        )
    check_same_device("tags", tags, "logits", logits)
    check_option("reduction", reduction, REDUCTIONS)
    validate_ocr_options(prior, opts, backend)
    if prior is None:
        return
    check_tensor("prior", prior, f"a floating-point tensor [{C1}, {C1}]")
    check_floating("prior", prior, f"a floating-point tensor [{C1}, {C1}]")
    if tuple(prior.shape) != (C1, C1):
        raise ValueError(
            f"prior must have shape [C+1, C+1] = [{C1}, {C1}] to match logits; got {describe(prior)}"
        )
    check_same_device("prior", prior, "logits", logits)


def validate_target(target, logits, ignore_index: int, spatial=None) -> None:
    """Shape/dtype/device checks of a segmentation target [B, *spatial] (its values are checked by
    ``check_target_values``, which reads no tensor data on the host where that would synchronise).
    ``spatial``: the loss's spatial size when it is not the logits' (fused upsampling)."""
    check_tensor("target", target, "an integer tensor [B, *spatial]")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise TypeError(f"target must be an integer tensor [B, *spatial]; got {describe(target)}")
    expected = (logits.shape[0],) + tuple(logits.shape[2:] if spatial is None else spatial)
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must have shape [B, *spatial] = {list(expected)} to match logits "
            f"{tuple(logits.shape)}; got {describe(target)}"
        )
    check_same_device("target", target, "logits", logits)
    check_int("ignore_index", ignore_index)


def _target_value_message(num_classes: int, ignore_index: int) -> str:
    return (
        f"target values must be class indices in [0, {num_classes - 1}] (logits have "
        f"C+1 = {num_classes} channels) or ignore_index={ignore_index}"
    )


def check_target_values(target: torch.Tensor, num_classes: int, ignore_index: int) -> None:
    """Every target value is in [0, num_classes) or equal to ignore_index.

    CPU tensors in eager mode: checked at once (reading CPU memory costs no device
    synchronisation), raising a ValueError with the first bad value and the number of bad pixels.
    CUDA tensors, and any tensor under torch.compile: ``torch._assert_async`` on a device-side
    flag -- no host synchronisation and no graph break; a bad value surfaces as a device-side
    assertion at the next synchronisation (like torch's own cross_entropy on CUDA), after which the
    CUDA context is unusable. Callers that have checked their targets once (a fixed dataset) can
    pass ``validate=False`` to skip this read of the target.
    """
    # Compared in int64: in a uint8 target, ignore_index=-1 would wrap to 255 (and 255 to -1 in
    # int8) and let wrong values through. The kernels read the target as int64 too.
    target = target.long()
    bad = ((target < 0) | (target >= num_classes)) & (target != ignore_index)
    if target.device.type == "cpu" and not torch.compiler.is_compiling():
        if bool(bad.any()):
            first = target[bad][0].item()
            raise ValueError(
                f"{_target_value_message(num_classes, ignore_index)}; got {int(bad.sum())} "
                f"pixel(s) outside that range, the first with value {first}"
            )
        return
    torch._assert_async(~bad.any(), _target_value_message(num_classes, ignore_index))


def validate_seg_inputs(logits, target, tags, prior, opts: OCROptions, *, alpha: float = 1.0,
                        ce_average: str = "valid", global_mean: bool = False, validate: bool = True,
                        backend: str = "auto", ce_weight=None, spatial=None) -> None:
    """Check the arguments of ``seg_ocr_loss``: the OCR arguments, the target's shape, dtype and
    device, and -- when ``validate`` -- its values (see ``check_target_values``). ``spatial``: the
    output size of a fused upsampling (``validate_seg_upsample``), else the logits' own."""
    validate_ocr_inputs(logits, tags, prior, opts, backend=backend)
    ignore_index = opts.ignore_index
    validate_target(target, logits, ignore_index, spatial)
    check_finite("alpha", alpha)
    check_option("ce_average", ce_average, CE_AVERAGES)
    check_bool("global_mean", global_mean)
    check_bool("validate", validate)
    if ce_weight is not None:
        check_tensor("ce_weight", ce_weight, "a floating-point tensor [B, *spatial] or None")
        check_floating("ce_weight", ce_weight, "a floating-point tensor [B, *spatial] or None")
        if ce_weight.shape != target.shape:
            raise ValueError(
                f"ce_weight must have the target's shape {list(target.shape)}; got {describe(ce_weight)}"
            )
        check_same_device("ce_weight", ce_weight, "logits", logits)
    if validate:
        check_target_values(target, logits.shape[1], ignore_index)


# ---------------------------------------------------------------------------------------------
# Bilinear upsampling fused into the loss (ocr_loss(size=...), seg_ocr_loss(upsample=True))

def validate_resize(logits, size, align_corners, *, source: str = "size") -> Tuple[int, int]:
    """The output size (H, W) of the fused bilinear upsampling, checked: 2-D logits
    [B, C+1, h, w], two positive ints, a bool align_corners. ``source`` names where the size came
    from in the messages ("size", or the target for seg_ocr_loss(upsample=True))."""
    check_bool("align_corners", align_corners)
    if logits.dim() != 4:
        raise ValueError(
            f"{source} (fused bilinear upsampling) needs logits [B, C+1, h, w] with exactly 2 "
            f"spatial dims; got {describe(logits)}"
        )
    if isinstance(size, torch.Size):
        size = tuple(size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size)):
        raise ValueError(
            f"{source} must be a pair of positive ints (H, W), the output size of the bilinear "
            f"upsampling; got {describe(size)}"
        )
    return int(size[0]), int(size[1])


def validate_seg_upsample(logits, target, upsample, align_corners) -> Optional[Tuple[int, int]]:
    """upsample / align_corners of ``seg_ocr_loss``: the output size of the fused upsampling (the
    target's [H, W]), or None without upsampling."""
    check_bool("upsample", upsample)
    check_bool("align_corners", align_corners)
    if not upsample:
        return None
    check_tensor("target", target, "an integer tensor [B, H, W]")
    if target.dim() != 3:
        raise ValueError(
            "target must be [B, H, W] with upsample=True (its H, W are the output size of the "
            f"bilinear upsampling); got {describe(target)}"
        )
    return validate_resize(logits, tuple(target.shape[1:]), align_corners,
                           source="upsample=True")


def optional_prior_for(group_split: str, prior: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The prior only matters for "ada"; the other splits ignore it."""
    return prior if group_split == "ada" else None


# ---------------------------------------------------------------------------------------------
# W-OoD (distance loss, centroids, K-means)

KMEANS_INITS = ("first", "k-means++")


def _check_matrix(name: str, x, what: str, *, floating: bool = True) -> torch.Tensor:
    check_tensor(name, x, what)
    if floating:
        check_floating(name, x, what)
    elif x.dtype.is_complex:
        raise TypeError(f"{name} must be {what}; got {describe(x)}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be {what}; got {describe(x)}")
    return x


def _check_centroids(name: str, c, x: torch.Tensor, x_name: str, rows: str) -> None:
    D = x.shape[1]
    what = f"a floating-point tensor [{rows}, D] with D = {D} (as {x_name})"
    _check_matrix(name, c, what)
    if c.shape[1] != D or c.shape[0] < 1:
        raise ValueError(f"{name} must be {what} and at least one row; got {describe(c)}")
    check_same_device(name, c, x_name, x)
    if c.dtype != x.dtype:
        raise TypeError(f"{name} must have the dtype of {x_name} ({x.dtype}); got {describe(c)}")


def _check_labels(name: str, labels, B: int, C: int, x_name: str, x: torch.Tensor) -> None:
    what = f"a tensor [B, C] = [{B}, {C}] (bool, int or float multi-hot)"
    _check_matrix(name, labels, what, floating=False)
    if tuple(labels.shape) != (B, C):
        raise ValueError(f"{name} must be {what} to match {x_name}; got {describe(labels)}")
    check_same_device(name, labels, x_name, x)


def validate_centroid_distances(x, centroids, backend: str = "auto") -> None:
    _check_matrix("x", x, "a floating-point tensor [N, D]")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must be a non-empty floating-point tensor [N, D]; got {describe(x)}")
    _check_centroids("centroids", centroids, x, "x", "K")
    check_option("backend", backend, BACKENDS)


def validate_wood_inputs(features, labels, class_centroids, ood_centroids, topk,
                         backend: str = "auto") -> float:
    """Check the arguments of ``wood_distance_loss``; returns topk as a float."""
    _check_matrix("features", features, "a floating-point tensor [B, D]")
    if features.shape[0] < 1 or features.shape[1] < 1:
        raise ValueError(f"features must be a non-empty floating-point tensor [B, D]; "
                         f"got {describe(features)}")
    _check_centroids("class_centroids", class_centroids, features, "features", "C")
    _check_centroids("ood_centroids", ood_centroids, features, "features", "K")
    _check_labels("labels", labels, features.shape[0], class_centroids.shape[0], "features",
                  features)
    check_option("backend", backend, BACKENDS)
    return check_topk(topk)


def check_topk(topk) -> float:
    t = check_finite("topk", topk)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"topk must be a fraction in [0, 1] (paper: 0.2); got {topk!r}")
    return t


def validate_class_centroid_inputs(features, labels) -> None:
    _check_matrix("features", features, "a floating-point tensor [N, D]")
    what = f"a tensor [N, C] with N = {features.shape[0]} (bool, int or float; nonzero = present)"
    _check_matrix("labels", labels, what, floating=False)
    if labels.shape[0] != features.shape[0] or labels.shape[1] < 1:
        raise ValueError(f"labels must be {what}; got {describe(labels)}")
    check_same_device("labels", labels, "features", features)


def check_every_class_present(counts: torch.Tensor) -> None:
    """class_centroids of a class with no image is undefined. This reads the counts (one host
    synchronisation): class_centroids runs once before training, never on the hot path."""
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(
            f"labels must mark at least one image for every class; classes {missing} have no image "
            f"(their centroid, the mean feature of their images, is undefined)"
        )


def validate_kmeans_inputs(x, k, iters, init, seed, backend, distributed) -> None:
    _check_matrix("x", x, "a floating-point tensor [N, D]")
    if x.shape[1] < 1:
        raise ValueError(f"x must be a floating-point tensor [N, D] with D >= 1; got {describe(x)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int; got {describe(k)}")
    if not distributed and k > x.shape[0]:
        raise ValueError(f"k must be at most the number of points N = {x.shape[0]}; got {k}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be a non-negative int; got {describe(iters)}")
    check_option("init", init, KMEANS_INITS)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be None or an int; got {describe(seed)}")
    check_option("backend", backend, BACKENDS)
    if not isinstance(distributed, bool):
        raise TypeError(f"distributed must be a bool; got {describe(distributed)}")


def validate_classifier_inputs(logits_in, labels, logits_ood, lambda_) -> None:
    _check_matrix("logits_in", logits_in, "a floating-point tensor [B, C]")
    _check_labels("labels", labels, logits_in.shape[0], logits_in.shape[1], "logits_in", logits_in)
    C = logits_in.shape[1]
    _check_matrix("logits_ood", logits_ood, f"a floating-point tensor [B_ood, C] with C = {C}")
    if logits_ood.shape[1] != C:
        raise ValueError(f"logits_ood must be a floating-point tensor [B_ood, C] with C = {C} "
                         f"(as logits_in); got {describe(logits_ood)}")
    check_same_device("logits_ood", logits_ood, "logits_in", logits_in)
    check_finite("lambda_", lambda_)
