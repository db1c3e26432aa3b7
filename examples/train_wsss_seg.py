"""Train a small segmentation network on noisy pseudo-masks, with and without OCR.

The last stage of weakly supervised semantic segmentation (WSSS): a segmentation network learns
from pseudo-masks that a class-activation map (CAM) derived from image-level tags. This example
generates such a task, trains the same network twice from the same initialisation on the same
batches -- once with cross-entropy alone, once with ``ocr_kernels.seg_ocr_loss`` (cross-entropy +
alpha * OCR, paper Eq. 4) -- and reports, on held-out images with clean masks:

- mIoU over background + C classes,
- the OC error rate (``ocr_kernels.oc_error_rate``: share of images with at least one pixel whose
  prediction is a class that is not in the image's tags; the paper's Fig. 6a metric),
- the time per training step with each available seg_ocr_loss backend.

The synthetic data (generated here, deterministic from --seed):
- C = 6 classes: 3 shapes (disk, square, triangle) x 2 colours; the two classes of a shape are
  "twins" whose colours differ by a small amount, and each image gets a random illumination, so
  twins are hard to tell apart -- the kind of pair (cat/dog, cow/horse) behind OC errors.
- 1 to 3 objects per image on a textured background (random stripes, blotches and noise);
  image-level tags = the classes present.
- Pseudo-masks from a simulated CAM: each object's region is its mask blurred and thresholded at a
  random level (regions too large or too small), an uncertain band around that level is marked
  ignore (255), and with probability --confuse the CAM also fires for the object's twin class on a
  random part of the object, labelling it with the twin -- usually a class not in the tags.

Run: python examples/train_wsss_seg.py [--steps N] [--size S] [--backend auto|reference|cpu|...]
A default run takes a few minutes on a 2-core CPU; on a machine with CUDA it uses the GPU.
It shows what it shows at these settings; read the numbers, not the hopes (see --help).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import ocr_kernels as ok  # noqa: E402
from ocr_kernels._dispatch import unavailable_reason  # noqa: E402
from ocr_kernels.seg.backends import SEG_OCR_IMPLS  # noqa: E402

IGNORE = 255
NUM_CLASSES = 6  # foreground classes; logits have NUM_CLASSES + 1 channels
SHAPES = ("disk", "square", "triangle")
# (shape, colour) per class 1..6; classes 2k+1 and 2k+2 are twins (same shape, close colours).
BASE_COLOURS = torch.tensor(
    [[0.85, 0.25, 0.20], [0.85, 0.42, 0.18],   # disk: red / orange-red
     [0.20, 0.35, 0.85], [0.20, 0.52, 0.80],   # square: blue / steel blue
     [0.25, 0.75, 0.25], [0.45, 0.75, 0.20]]   # triangle: green / yellow-green
)


def twin(c: int) -> int:
    """Class index (1-based) of c's twin."""
    return c + 1 if c % 2 == 1 else c - 1


def shape_mask(shape: str, size: int, cy: float, cx: float, r: float) -> torch.Tensor:
    y = torch.arange(size, dtype=torch.float32).view(-1, 1)
    x = torch.arange(size, dtype=torch.float32).view(1, -1)
    if shape == "disk":
        return (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    if shape == "square":
        h = r * 0.85
        return ((y - cy).abs() <= h) & ((x - cx).abs() <= h)
    # triangle, apex up: width grows linearly from the apex to the base
    t = (y - (cy - r)) / (2 * r)
    return (t >= 0) & (t <= 1) & ((x - cx).abs() <= t * r * 1.1)


def blur(m: torch.Tensor, k: int) -> torch.Tensor:
    x = m.float()[None, None]
    for _ in range(2):
        x = F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)
    return x[0, 0]


def texture(size: int, g: torch.Generator) -> torch.Tensor:
    """[3, size, size] textured background: stripes + low-frequency blotches + noise."""
    y = torch.arange(size, dtype=torch.float32).view(-1, 1)
    x = torch.arange(size, dtype=torch.float32).view(1, -1)
    img = torch.zeros(3, size, size)
    for _ in range(2):
        theta, freq, phase = (torch.rand(3, generator=g) * torch.tensor([math.pi, 0.9, 6.3])).tolist()
        stripes = torch.sin((x * math.cos(theta) + y * math.sin(theta)) * (0.2 + freq) + phase)
        img += 0.12 * stripes * (torch.rand(3, 1, 1, generator=g) + 0.3)
    low = torch.rand(3, 1, 4, 4, generator=g)
    img += 0.35 * F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    img += 0.25 + 0.3 * torch.rand(3, 1, 1, generator=g)
    return img + 0.06 * torch.randn(3, size, size, generator=g)


def make_dataset(n: int, size: int, confuse: float, g: torch.Generator):
    """images [n, 3, S, S], clean masks [n, S, S], pseudo-masks [n, S, S] (255 = ignore),
    tags [n, C] (bool)."""
    images = torch.empty(n, 3, size, size)
    clean = torch.zeros(n, size, size, dtype=torch.long)
    pseudo = torch.zeros(n, size, size, dtype=torch.long)
    tags = torch.zeros(n, NUM_CLASSES, dtype=torch.bool)
    for i in range(n):
        img = texture(size, g)
        light = 0.75 + 0.5 * torch.rand(1, generator=g).item()  # illumination: blurs twin colours
        n_obj = int(torch.randint(1, 4, (1,), generator=g))
        cam_fg = torch.zeros(size, size)       # winning CAM score so far
        cam_label = torch.zeros(size, size, dtype=torch.long)
        for _ in range(n_obj):
            c = int(torch.randint(1, NUM_CLASSES + 1, (1,), generator=g))
            r = size * (0.12 + 0.12 * torch.rand(1, generator=g).item())
            cy, cx = (r + torch.rand(2, generator=g) * (size - 2 * r)).tolist()
            m = shape_mask(SHAPES[(c - 1) // 2], size, cy, cx, r)
            colour = (BASE_COLOURS[c - 1] * light + 0.05 * torch.randn(3, generator=g)).clamp(0, 1)
            obj = colour.view(3, 1, 1) + 0.08 * torch.randn(3, size, size, generator=g)
            img = torch.where(m, obj, img)
            clean[i][m] = c
            # simulated CAM: blurred mask with a random gain; the object's label, except on a
            # random half-plane where (with probability `confuse`) the twin's CAM wins
            cam = blur(m, 5) * (0.7 + 0.6 * torch.rand(1, generator=g).item())
            label = torch.full((size, size), c, dtype=torch.long)
            if torch.rand(1, generator=g).item() < confuse:
                a = torch.rand(1, generator=g).item() * 2 * math.pi
                yy = torch.arange(size).view(-1, 1) - cy
                xx = torch.arange(size).view(1, -1) - cx
                label = torch.where(yy * math.sin(a) + xx * math.cos(a) > 0, twin(c), c)
            newer = cam >= cam_fg
            cam_label = torch.where(newer, label, cam_label)
            cam_fg = torch.maximum(cam_fg, cam)
        thr = 0.3 + 0.3 * torch.rand(1, generator=g).item()
        p = torch.where(cam_fg > thr, cam_label, torch.zeros_like(cam_label))
        p[(cam_fg - thr).abs() < 0.08] = IGNORE  # uncertain band around the CAM threshold
        images[i], pseudo[i] = img.clamp(0, 1), p
        # tags: the classes still visible (a later object can hide an earlier one completely)
        tags[i] = torch.bincount(clean[i].flatten(), minlength=NUM_CLASSES + 1)[1:] > 0
    return images, clean, pseudo, tags


class SmallSegNet(nn.Module):
    """A tiny FCN: stride-2 stem, dilated context, bilinear upsampling to the input size."""

    def __init__(self, classes: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=4, dilation=4), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, classes, 1),
        )

    def forward(self, x):
        return F.interpolate(self.body(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


def make_loss(kind: str, prior, args, backend: str):
    if kind == "ce":
        return lambda logits, target, tags: F.cross_entropy(logits, target, ignore_index=IGNORE)
    return lambda logits, target, tags: ok.seg_ocr_loss(
        logits, target, tags, prior, alpha=args.alpha, ignore_index=IGNORE, backend=backend)


def batches(n: int, batch: int, steps: int, g: torch.Generator):
    """The same index stream for every run (both objectives see identical batches)."""
    out, perm = [], torch.randperm(n, generator=g)
    while len(out) < steps:
        if perm.numel() < batch:
            perm = torch.cat([perm, torch.randperm(n, generator=g)])
        out.append(perm[:batch])
        perm = perm[batch:]
    return out


def train(model, loss_fn, data, order, lr: float, device):
    images, _, pseudo, tags = data
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=len(order))
    model.train()
    for idx in order:
        x, y, t = images[idx].to(device), pseudo[idx].to(device), tags[idx].to(device)
        loss = loss_fn(model(x), y, t)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model


@torch.no_grad()
def evaluate(model, images, clean, tags, device, batch: int = 64):
    model.eval()
    inter = torch.zeros(NUM_CLASSES + 1, dtype=torch.float64)
    union = torch.zeros(NUM_CLASSES + 1, dtype=torch.float64)
    oc_images = 0.0
    oc_pixels = 0.0
    for s in range(0, images.shape[0], batch):
        logits = model(images[s:s + batch].to(device))
        t = tags[s:s + batch].to(device)
        pred = logits.argmax(1).cpu()
        gt = clean[s:s + batch]
        for c in range(NUM_CLASSES + 1):
            inter[c] += ((pred == c) & (gt == c)).sum()
            union[c] += ((pred == c) | (gt == c)).sum()
        oc_images += ok.oc_error_rate(logits, t).item() * logits.shape[0]
        oc_pixels += ok.oc_pixel_mask(logits, t).sum().item()
    iou = inter / union.clamp_min(1)
    n = images.shape[0]
    return {
        "miou": iou.mean().item(),
        "iou_per_class": [round(v, 4) for v in iou.tolist()],
        "oc_error_rate": oc_images / n,
        "oc_pixel_rate": oc_pixels / clean.numel(),
    }


def backends_to_time(requested: str, device) -> dict:
    """{backend: None (runs) or the reason it cannot} for the seg_ocr_loss backends."""
    probe = torch.zeros(1, device=device)
    names = ["reference", "triton", "cpu", "cuda"] if requested in ("auto", "all") else [requested]
    out = {}
    for name in names:
        if name not in SEG_OCR_IMPLS:
            out[name] = "not implemented in this build"
        else:
            out[name] = unavailable_reason(name, probe)
    return out


def time_steps(model0, loss_fn, data, order, lr, device, warmup: int = 2):
    """Mean seconds per training step (forward, loss, backward, optimizer) and per loss
    forward+backward alone, over the given batches after `warmup` steps."""
    images, _, pseudo, tags = data
    model = copy.deepcopy(model0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step_t, loss_t = [], []
    for i, idx in enumerate(order):
        x, y, t = images[idx].to(device), pseudo[idx].to(device), tags[idx].to(device)
        sync()
        t0 = time.perf_counter()
        logits = model(x)
        sync()
        t1 = time.perf_counter()
        loss = loss_fn(logits, y, t)
        g, = torch.autograd.grad(loss, logits, retain_graph=True)
        sync()
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits.backward(g)
        opt.step()
        sync()
        t3 = time.perf_counter()
        if i >= warmup:
            step_t.append(t3 - t0)
            loss_t.append(t2 - t1)
    return sum(step_t) / len(step_t), sum(loss_t) / len(loss_t)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--train", type=int, default=512, help="training images")
    p.add_argument("--val", type=int, default=256, help="held-out images (clean masks)")
    p.add_argument("--steps", type=int, default=1600, help="training steps per objective")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--width", type=int, default=32, help="network width")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--alpha", type=float, default=1.0, help="weight of the OCR term")
    p.add_argument("--confuse", type=float, default=0.35,
                   help="probability that the simulated CAM labels part of an object as its twin")
    p.add_argument("--backend", default="auto",
                   help="seg_ocr_loss backend for training; the timing covers every available "
                        "backend unless one is named here")
    p.add_argument("--time-steps", type=int, default=10, help="timed steps per backend")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    device = torch.device(args.device)

    t_start = time.perf_counter()
    g = torch.Generator().manual_seed(args.seed)
    train_data = make_dataset(args.train, args.size, args.confuse, g)
    val_images, val_clean, _, val_tags = make_dataset(args.val, args.size, args.confuse, g)
    prior = ok.prior_correlation(train_data[3]).to(device)  # Eq. 7 from the training tags
    valid = train_data[2] != IGNORE
    pseudo_acc = (train_data[2] == train_data[1])[valid].float().mean().item()
    pseudo_oc = (train_data[2][valid] > 0) & ~torch.cat(
        [torch.ones(args.train, 1, dtype=torch.bool), train_data[3]], 1
    ).gather(1, train_data[2].clamp_max(NUM_CLASSES).flatten(1)).view_as(train_data[2])[valid]
    print(f"ocr-kernels {ok.__version__}, torch {torch.__version__}, device {device}, "
          f"{torch.get_num_threads()} threads")
    print(f"data: {args.train} train / {args.val} val images of {args.size}x{args.size}, "
          f"{NUM_CLASSES} classes; pseudo-masks: {pseudo_acc:.1%} of non-ignored pixels correct, "
          f"{(~valid).float().mean().item():.1%} ignored, "
          f"{pseudo_oc.float().mean().item():.1%} labelled with a class not in the tags "
          f"({time.perf_counter() - t_start:.1f} s)")

    torch.manual_seed(args.seed)
    model0 = SmallSegNet(NUM_CLASSES + 1, args.width).to(device)
    order = batches(args.train, args.batch, args.steps, torch.Generator().manual_seed(args.seed + 1))
    results = {"args": vars(args), "device": str(device), "runs": {}, "timing": {}}
    for kind in ("ce", "ce+ocr"):
        t0 = time.perf_counter()
        model = train(copy.deepcopy(model0), make_loss(kind, prior, args, args.backend),
                      train_data, order, args.lr, device)
        dt = time.perf_counter() - t0
        r = evaluate(model, val_images, val_clean, val_tags, device)
        r["train_seconds"] = dt
        results["runs"][kind] = r
        print(f"{kind:7s} mIoU {r['miou']:.4f}  OC error rate {r['oc_error_rate']:.4f}  "
              f"OC pixels {r['oc_pixel_rate']:.4%}  ({args.steps} steps, {dt:.1f} s)")

    t_order = batches(args.train, args.batch, args.time_steps + 2, torch.Generator().manual_seed(7))
    s, lt = time_steps(model0, make_loss("ce", prior, args, "auto"), train_data, t_order, args.lr, device)
    results["timing"]["F.cross_entropy alone"] = {"step_ms": s * 1e3, "loss_fwd_bwd_ms": lt * 1e3}
    print(f"time per step (batch {args.batch}, {args.size}x{args.size}; loss = its forward+backward):")
    print(f"  {'F.cross_entropy alone':24s} step {s * 1e3:8.2f} ms   loss {lt * 1e3:8.2f} ms")
    for name, reason in backends_to_time(args.backend, device).items():
        if reason is not None:
            results["timing"][name] = {"skipped": reason}
            print(f"  {'seg_ocr_loss ' + name:24s} skipped: {reason}")
            continue
        s, lt = time_steps(model0, make_loss("ce+ocr", prior, args, name), train_data, t_order,
                           args.lr, device)
        results["timing"][name] = {"step_ms": s * 1e3, "loss_fwd_bwd_ms": lt * 1e3}
        print(f"  {'seg_ocr_loss ' + name:24s} step {s * 1e3:8.2f} ms   loss {lt * 1e3:8.2f} ms")
    results["total_seconds"] = time.perf_counter() - t_start
    print(f"total {results['total_seconds']:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
