"""Train mmseg's EncoderDecoder (ResNetV1c + FCNHead + auxiliary FCNHead) from a config file with
the Runner, once per tags route, and check every logged loss against seg_ocr_loss computed here
on the same logits; the config the Runner saved reloads and rebuilds the same losses."""
import glob
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("mmseg")
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from PIL import Image  # noqa: E402

import ocr_kernels as ok  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(__file__), "configs")
C = 4  # foreground classes of tiny_fcn.py
NAMES = ["2007_000032", "2007_000039", "2008_000002", "2008_000003"]


def write_data(root):
    """4 images 32x32, masks with 1-2 classes and an ignored band; cls_labels.npy whose tags are
    the mask's classes plus, for two images, a class the mask lacks (a CAM that missed it)."""
    rng = np.random.default_rng(0)
    for sub in ("img", "ann"):
        os.makedirs(os.path.join(root, sub))
    cls_labels, mask_classes = {}, {}
    for i, name in enumerate(NAMES):
        mask = np.zeros((32, 32), np.uint8)
        classes = rng.choice(np.arange(1, C + 1), size=1 + i % 2, replace=False)
        for k, c in enumerate(classes):
            y, x = 4 + 12 * k, 4 + int(rng.integers(0, 12))
            mask[y:y + 12, x:x + 14] = c
        mask[30:, :] = 255
        img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        img[mask > 0] = (img[mask > 0] // 4 + 40 * mask[mask > 0, None]).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(root, "img", name + ".png"))
        Image.fromarray(mask).save(os.path.join(root, "ann", name + ".png"))
        tags = np.zeros(C, np.float32)
        tags[classes - 1] = 1
        if i in (1, 2):
            tags[(classes[0] % C)] = 1  # a tagged class the pseudo-mask does not hold
        cls_labels[name] = tags
        mask_classes[name] = set(int(c) for c in classes)
    np.save(os.path.join(root, "cls_labels.npy"), cls_labels)
    prior = ok.prior_correlation(torch.from_numpy(np.stack(list(cls_labels.values()))))
    with open(os.path.join(root, "prior.json"), "w") as f:
        json.dump(prior.tolist(), f)
    return cls_labels, mask_classes, prior


class Record(Hook):
    """Per iteration: the logits each head returned (before mmseg resizes them), the batch and
    the logged losses; the parameters before and after training."""

    def __init__(self):
        self.iters, self._logits = [], {}

    def before_train(self, runner):
        model = runner.model
        self.before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        for name in ("decode_head", "auxiliary_head"):
            # heads call self.forward(), not self(): hook their last layer, conv_seg
            getattr(model, name).conv_seg.register_forward_hook(
                lambda m, args, out, name=name: self._logits.__setitem__(name, out.detach().clone()))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.iters.append(dict(logits=dict(self._logits), batch=data_batch,
                               log={k: float(v.detach()) for k, v in outputs.items()}))

    def after_train(self, runner):
        self.after = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


def expected_seg_ocr(logits, labels, tags, prior, alpha):
    """mmseg's avg_non_ignore=False: CE averaged over every pixel; OCR over every pixel."""
    up = F.interpolate(logits.double(), size=labels.shape[1:], mode="bilinear", align_corners=False)
    return ok.seg_ocr_loss(up, labels, tags, prior.double(), alpha=alpha, ce_average="all",
                           backend="reference").item()


def run(config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = write_data("data")
    cfg = Config.fromfile(os.path.join(CONFIGS, config))
    cfg.work_dir = str(tmp_path / "work")
    runner = Runner.from_cfg(cfg)
    rec = Record()
    runner.register_hook(rec, priority="LOWEST")
    runner.train()
    return runner, rec, data


def batch_arrays(batch):
    samples = batch["data_samples"]
    labels = torch.stack([s.gt_sem_seg.data[0] for s in samples]).long()
    names = [os.path.splitext(os.path.basename(s.img_path))[0] for s in samples]
    return labels, names


def check_reload(runner, tmp_path, builds):
    dumped = glob.glob(str(tmp_path / "work" / "*.py"))
    assert len(dumped) == 1, dumped
    reloaded = Config.fromfile(dumped[0])
    assert reloaded.model.to_dict() == runner.cfg.model.to_dict()
    from mmseg.registry import MODELS
    for head in ("decode_head", "auxiliary_head"):
        spec = reloaded.model[head].loss_decode
        for loss_cfg, original in zip(spec if isinstance(spec, list) else [spec], builds[head]):
            if loss_cfg["type"] == "CrossEntropyLoss":
                continue
            rebuilt = MODELS.build(loss_cfg)
            assert torch.equal(rebuilt.prior, original.prior)


def test_tags_from_data_cls_labels(tmp_path, monkeypatch):
    runner, rec, (cls_labels, _, prior) = run("tiny_fcn_ocr_tags_from_data.py", tmp_path, monkeypatch)
    model = runner.model
    assert type(model).__name__ == "TaggedEncoderDecoder"
    # the 4x4 logits reach the losses before any resize: upsampled inside the cpu kernel, which
    # gives the logged values checked against the float64 composition below
    assert model.fused_heads == ("decode", "aux")
    assert len(rec.iters) == 4
    for it in rec.iters:
        labels, names = batch_arrays(it["batch"])
        tags = torch.from_numpy(np.stack([cls_labels[n] for n in names]))
        dec = expected_seg_ocr(it["logits"]["decode_head"], labels, tags, prior, 0.5)
        aux = 0.4 * expected_seg_ocr(it["logits"]["auxiliary_head"], labels, tags, prior, 0.5)
        assert it["log"]["decode.loss_seg_ocr"] == pytest.approx(dec, rel=2e-5)
        assert it["log"]["aux.loss_seg_ocr"] == pytest.approx(aux, rel=2e-5)
        assert it["log"]["loss"] == pytest.approx(dec + aux, rel=2e-5)
    # the exact tags differ from the masks' classes on these images: the route used the file
    assert any(cls_labels[n].sum() > len(set(np.unique(l.numpy())) - {0, 255})
               for it in rec.iters for l, n in zip(*batch_arrays(it["batch"])))
    assert all(torch.isfinite(v).all() for v in rec.after.values() if v.is_floating_point())
    changed = [k for k in rec.before if not torch.equal(rec.before[k], rec.after[k])]
    assert any(k.startswith("backbone.") for k in changed) and any(k.startswith("decode_head.") for k in changed)
    # the same batch (images 0 and 1) at iterations 1 and 3: two SGD steps lowered its loss
    assert rec.iters[2]["log"]["loss"] < rec.iters[0]["log"]["loss"]
    check_reload(runner, tmp_path, {"decode_head": [model.decode_head.loss_decode],
                                    "auxiliary_head": [model.auxiliary_head.loss_decode]})


def test_tags_from_target_with_stock_segmentor(tmp_path, monkeypatch):
    runner, rec, (_, mask_classes, prior) = run("tiny_fcn_ocr_tags_from_target.py", tmp_path, monkeypatch)
    model = runner.model
    assert type(model).__name__ == "EncoderDecoder"
    for it in rec.iters:
        labels, names = batch_arrays(it["batch"])
        tags = torch.zeros(len(names), C)
        for b, n in enumerate(names):  # the classes of each mask, ignored pixels excluded
            for c in set(np.unique(labels[b].numpy()).tolist()) - {0, 255}:
                tags[b, c - 1] = 1
            assert {c + 1 for c in tags[b].nonzero().flatten().tolist()} == mask_classes[n]
        dec = expected_seg_ocr(it["logits"]["decode_head"], labels, tags, prior, 0.5)
        aux_logits = F.interpolate(it["logits"]["auxiliary_head"].double(), size=labels.shape[1:],
                                   mode="bilinear", align_corners=False)
        aux_ce = 0.4 * F.cross_entropy(aux_logits, labels, ignore_index=255, reduction="none").mean().item()
        aux_ocr = 0.2 * ok.ocr_loss(aux_logits, tags, prior.double(), backend="reference").item()
        assert it["log"]["decode.loss_seg_ocr"] == pytest.approx(dec, rel=2e-5)
        assert it["log"]["aux.loss_ce"] == pytest.approx(aux_ce, rel=2e-5)
        assert it["log"]["aux.loss_ocr"] == pytest.approx(aux_ocr, rel=2e-5, abs=1e-7)
        assert it["log"]["loss"] == pytest.approx(dec + aux_ce + aux_ocr, rel=2e-5)
    changed = [k for k in rec.before if not torch.equal(rec.before[k], rec.after[k])]
    assert any(k.startswith("backbone.") for k in changed)
    check_reload(runner, tmp_path, {"decode_head": [model.decode_head.loss_decode],
                                    "auxiliary_head": list(model.auxiliary_head.loss_decode)})
