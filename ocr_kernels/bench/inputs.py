"""Random inputs that look like what a training step sees.

OCR logits: with unbiased random logits and VOC-like tags (one or two tagged classes of 20) about
85% of pixels are out-of-candidate (argmax outside the tags), far from a trained network. Three
scenarios:
- "blobs" (the realistic one): a trained network's OC pixels come in spatial blobs (a wrongly
  segmented object part), so a chosen fraction (default 10%) of the pixels, in blobs of a few
  dozen pixels across (blob_mask), get their in-candidate logits (background and tagged classes)
  lowered and the rest raised. A kernel that skips the logits of pixels without a gradient then
  skips whole 32-byte sectors, as it would in training.
- "indep": the same fraction drawn independently per pixel (one bias on the in-candidate logits,
  found by bisection): with fp32, 1 - 0.9^8 = 57% of the sectors hold an OC pixel, so nothing is
  skipped at the memory level; an adversarial case kept for comparison.
- "all-pixels": the worst case, pixels="all", every pixel carries a loss and a gradient.
The floor stays one read of the logits (plus one write of the gradient) in every scenario.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..ocr.prior import prior_correlation
from ..ocr.reference import ic_mask_from_tags

DEFAULT_OC_FRACTION = 0.10


BLOB_CELL = 16  # pixels per cell of the low-resolution noise that blob_mask upsamples


@dataclass(frozen=True)
class Scenario:
    """Which pixels carry a loss: "oc" pixels at a set OC fraction, or every pixel."""

    name: str  # the label in tables and plots
    pixels: str  # the ocr_loss pixels= option
    oc_fraction: Optional[float]  # None: leave the logits unbiased
    layout: Optional[str] = None  # "blobs" or "indep" (how the OC pixels are placed)


def scenarios(oc_fraction: float = DEFAULT_OC_FRACTION):
    """The realistic scenario first, then the independent draw, then the worst case."""
    return (
        Scenario(f"oc={oc_fraction:.0%}-blobs", "oc", oc_fraction, "blobs"),
        Scenario(f"oc={oc_fraction:.0%}-indep", "oc", oc_fraction, "indep"),
        Scenario("all-pixels", "all", None),
    )


def blob_mask(shape, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Bool [B, *spatial]: `fraction` of each image's pixels (to the pixel) in smooth blobs, the
    super-level set of noise drawn on a grid of BLOB_CELL-pixel cells and upsampled (linear)."""
    B, spatial = shape[0], tuple(shape[1:])
    coarse = tuple(max(2, -(-s // BLOB_CELL) + 1) for s in spatial)
    noise = torch.randn((B, 1) + coarse, generator=generator)
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    field = torch.nn.functional.interpolate(noise, size=spatial, mode=mode, align_corners=True)
    flat = field.reshape(B, -1)
    n = flat.shape[1]
    k = int(round(fraction * n))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if k > 0:
        idx = flat.topk(k, dim=1).indices  # exactly k pixels: ties cannot change the count
        mask.scatter_(1, idx, True)
    return mask.view((B,) + spatial)


def voc_like_tags(B: int, C: int, generator: torch.Generator) -> torch.Tensor:
    """[B, C] int64 tags, 1 to 3 classes per image (VOC images average about 1.5)."""
    tags = torch.zeros(B, C, dtype=torch.int64)
    for b in range(B):
        n = min(C - 1, 1 + int(torch.randint(0, 3, (1,), generator=generator))) if C > 1 else 0
        tags[b, torch.randperm(C, generator=generator)[:n]] = 1
    return tags


def dataset_prior(C: int, generator: torch.Generator) -> torch.Tensor:
    """The prior correlation of a VOC-sized training set (1464 images) of random tags."""
    return prior_correlation(voc_like_tags(1464, C, generator))


def oc_fraction_of(z: torch.Tensor, ic: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels whose argmax is out of candidate (a 0-dim tensor)."""
    pred = z.argmax(dim=1, keepdim=True)
    return (~ic.expand_as(z).gather(1, pred)).float().mean()


def bias_for_oc_fraction(z: torch.Tensor, ic: torch.Tensor, target: float, steps: int = 30) -> float:
    """The bias added to in-candidate logits that leaves `target` of the pixels OC (bisection on
    at most 2^20 pixels; the fraction decreases monotonically with the bias)."""
    flat = z.flatten(2)
    sub = flat[..., : max(1, (1 << 20) // max(1, z.shape[0]))].float()
    ic_f = ic.flatten(2).to(sub.dtype)
    lo, hi = -30.0, 30.0
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        frac = float(oc_fraction_of(sub + mid * ic_f, ic.flatten(2)))
        lo, hi = (mid, hi) if frac > target else (lo, mid)
    return 0.5 * (lo + hi)


def ocr_inputs(shape, dtype, device, scenario: Scenario, generator: torch.Generator):
    """logits (leaf, requires grad), tags, prior and the measured OC fraction for one input set."""
    B, C1 = shape[0], shape[1]
    tags = voc_like_tags(B, C1 - 1, generator)
    prior = dataset_prior(C1 - 1, generator)
    z = torch.randn(shape, generator=generator).to(device)
    ic = ic_mask_from_tags(tags).to(device).view((B, C1) + (1,) * (len(shape) - 2))
    if scenario.oc_fraction is not None and scenario.layout == "blobs":
        # +-6 moves the in-candidate logits clear of the OC maximum of ~20 standard normals, so
        # the OC pixels are the blobs (up to a few pixels where the draw is extreme)
        oc = blob_mask((B,) + tuple(shape[2:]), scenario.oc_fraction, generator).unsqueeze(1)
        z = z + torch.where(oc, -6.0, 6.0) * ic.to(z.dtype)
    elif scenario.oc_fraction is not None:
        z = z + bias_for_oc_fraction(z, ic, scenario.oc_fraction) * ic.to(z.dtype)
    frac = float(oc_fraction_of(z, ic))
    logits = z.to(dtype).requires_grad_(True)
    return dict(logits=logits, tags=tags.to(device), prior=prior.to(device)), frac


def seg_target(logits: torch.Tensor, tags: torch.Tensor, generator: torch.Generator,
               ignore_index: int = 255, ignore_fraction: float = 0.05) -> torch.Tensor:
    """Pseudo-mask [B, *spatial] int64: a random in-candidate class per pixel, 5% ignored."""
    B, C1 = logits.shape[:2]
    spatial = tuple(logits.shape[2:])
    ic = ic_mask_from_tags(tags.cpu()).float()  # [B, C1]
    t = torch.multinomial(ic, int(torch.tensor(spatial).prod()), replacement=True, generator=generator)
    t = t.view((B,) + spatial)
    t[torch.rand(t.shape, generator=generator) < ignore_fraction] = ignore_index
    return t.to(logits.device)


def wood_inputs(shape, dtype, device, generator: torch.Generator):
    """features [B, D] (post-ReLU pooled: non-negative, norms of tens), multi-hot labels [B, C],
    class centroids (mean feature per class) and OoD centroids (features of other images)."""
    B, D, C, K = shape
    feats = torch.randn(B, D, generator=generator).abs() * 1.5
    labels = voc_like_tags(B, C, generator).float()
    pool = torch.randn(max(C, K) * 4, D, generator=generator).abs() * 1.5
    class_c = pool[: C * 2].view(C, 2, D).mean(1)
    ood_c = pool[-K:] + 0.1
    return dict(
        features=feats.to(device=device, dtype=dtype).requires_grad_(True),
        labels=labels.to(device),
        class_centroids=class_c.to(device=device, dtype=dtype),
        ood_centroids=ood_c.to(device=device, dtype=dtype),
    )


def kmeans_inputs(shape, dtype, device, generator: torch.Generator):
    """Points [N, D] drawn around k hidden centres, so that Lloyd iterations have work to do."""
    N, D, k = shape
    centres = torch.randn(k, D, generator=generator) * 4
    x = centres[torch.randint(0, k, (N,), generator=generator)] + torch.randn(N, D, generator=generator)
    return dict(x=x.to(device=device, dtype=dtype), k=k)
