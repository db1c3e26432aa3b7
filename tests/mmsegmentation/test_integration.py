"""ocr_kernels.mmseg with the real mmsegmentation: loading, registration, the call convention of
mmseg's decode heads (OHEM included), tags through stock heads, configs that dump and reload."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("mmseg")
from mmengine.config import Config  # noqa: E402
from mmengine.structures import PixelData  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

import ocr_kernels as ok  # noqa: E402
import ocr_kernels.mmseg as okm  # noqa: E402
from mmseg.registry import MODELS, TRANSFORMS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_python(code):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_ocr_kernels_never_imports_mmseg_and_survives_a_half_installed_one():
    # mmsegmentation with mmcv-lite: mmseg.models fails on `import mmcv._ext` (simulated here
    # whatever mmcv is installed). import ocr_kernels neither imports nor needs mmseg;
    # ocr_kernels.mmseg, loaded the mmseg way, says what to install.
    got = run_python(
        "import json, sys, torch, numpy\n"
        "sys.modules['mmcv._ext'] = None\n"
        "import ocr_kernels\n"
        "mods = sorted(m for m, v in sys.modules.items()\n"
        "              if v is not None and m.split('.')[0] in ('mmseg', 'mmengine', 'mmcv'))\n"
        "import mmseg\n"
        "from mmengine.utils import import_modules_from_strings\n"
        "try:\n"
        "    import_modules_from_strings(['ocr_kernels.mmseg'], allow_failed_imports=False)\n"
        "    err = None\n"
        "except ImportError as e:  # mmengine re-raises; ours is the exception it handled\n"
        "    err = str(e.__context__)\n"
        "print(json.dumps(dict(mods=mods, err=err, loss=ocr_kernels.SegOCRLoss.__name__)))"
    )
    # Importing mmseg.models takes seconds; not importing any of it is what keeps
    # `import ocr_kernels` fast (its time is measured, not asserted: README, mmsegmentation).
    assert got["mods"] == [] and got["loss"] == "SegOCRLoss"
    assert "mmcv._ext" in got["err"] and "mmcv-lite" in got["err"] and "mim install mmcv" in got["err"]


def test_registered_in_mmseg_registries():
    assert MODELS.get("SegOCRLoss") is okm.SegOCRLoss and issubclass(okm.SegOCRLoss, ok.SegOCRLoss)
    assert MODELS.get("OCRLoss") is okm.OCRLoss and issubclass(okm.OCRLoss, ok.OCRLoss)
    assert MODELS.get("TaggedEncoderDecoder") is okm.TaggedEncoderDecoder
    assert TRANSFORMS.get("LoadImageTags") is okm.LoadImageTags


def samples(labels, tags=None):
    out = []
    for b in range(labels.shape[0]):
        s = SegDataSample(gt_sem_seg=PixelData(data=labels[b:b + 1]))
        if tags is not None:
            s.set_metainfo(dict(img_tags=tags[b].numpy()))
        out.append(s)
    return out


def inputs(B=2, C=4, size=(16, 20), seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, C + 1, (B,) + size, generator=g)
    labels[:, :2] = 255
    tags = (torch.rand(B, C, generator=g) < 0.5).to(torch.uint8)
    prior = ok.prior_correlation(torch.rand(10, C) < 0.5)
    return labels, tags, prior


def fcn_head(loss_decode, C=4, **kw):
    head = MODELS.build(dict(type="FCNHead", in_channels=8, channels=8, num_convs=1, num_classes=C + 1,
                             concat_input=False, dropout_ratio=0.0, loss_decode=loss_decode, **kw))
    return head.double()


@pytest.mark.parametrize("avg_non_ignore", [False, True])
def test_ohem_seg_weight_is_the_cross_entropy_weight_of_mmseg(avg_non_ignore):
    # A stock FCNHead with OHEM: logits 4x5 resized by mmseg to the 16x20 labels, then
    # loss(seg_logits, seg_label, weight=seg_weight, ignore_index=255). With alpha=0 SegOCRLoss
    # must equal mmseg's own CrossEntropyLoss under the same weight; with alpha, + alpha * OCR.
    labels, _, prior = inputs()
    logits = torch.randn(2, 5, 4, 5, dtype=torch.float64)
    sampler = dict(type="OHEMPixelSampler", thresh=0.7, min_kept=50)
    ce = fcn_head(dict(type="CrossEntropyLoss", avg_non_ignore=avg_non_ignore), sampler=sampler)
    seg0 = fcn_head(dict(type="SegOCRLoss", prior=prior.tolist(), alpha=0.0, tags_from="target",
                         avg_non_ignore=avg_non_ignore), sampler=sampler)
    seg = fcn_head(dict(type="SegOCRLoss", prior=prior.tolist(), alpha=0.7, tags_from="target",
                        avg_non_ignore=avg_non_ignore), sampler=sampler)
    want_ce = ce.loss_by_feat(logits, samples(labels))["loss_ce"]
    assert torch.allclose(seg0.loss_by_feat(logits, samples(labels))["loss_seg_ocr"], want_ce, rtol=1e-6)
    up = F.interpolate(logits, size=(16, 20), mode="bilinear", align_corners=False)
    weight = seg.sampler.sample(up, labels[:, None])
    assert 0 < weight.sum() < weight.numel()  # OHEM kept some pixels, not all
    tags = ok.tags_from_target(labels, 4)
    want = ok.seg_ocr_loss(up, labels, tags, prior.double(), alpha=0.7, ce_weight=weight,
                           ce_average="valid" if avg_non_ignore else "all", backend="reference")
    assert torch.allclose(seg.loss_by_feat(logits, samples(labels))["loss_seg_ocr"], want, rtol=1e-6)


def test_loss_call_convention_and_messages():
    labels, tags, prior = inputs()
    logits = torch.randn(2, 5, 16, 20, dtype=torch.float64)
    loss = MODELS.build(dict(type="SegOCRLoss", prior=prior.tolist()))  # tags_from="data"
    with pytest.raises(RuntimeError, match=r'no image tags.*TaggedEncoderDecoder.*tags_from="target"'):
        loss(logits, labels, weight=None, ignore_index=255)
    with okm.batch_tags(tags):
        got = loss(logits, labels, weight=None, ignore_index=255)
    assert torch.allclose(got, ok.seg_ocr_loss(logits, labels, tags, prior.double(), ce_average="all"))
    assert torch.allclose(loss(logits, labels, tags), got)  # explicit tags, plain PyTorch
    with pytest.raises(ValueError, match=r"reduction_override='none'.*give it a thresh"):
        loss(logits, labels, tags, reduction_override="none")
    ocr = MODELS.build(dict(type="OCRLoss", prior=prior.tolist(), tags_from="target", loss_weight=0.5))
    want = 0.5 * ok.ocr_loss(logits, ok.tags_from_target(labels, 4), prior.double())
    assert torch.allclose(ocr(logits, labels, weight=torch.rand(2, 16, 20), ignore_index=255), want)
    with pytest.raises(ValueError, match=r"tags_from must be one of \['data', 'target'\]; got 'mask'"):
        MODELS.build(dict(type="OCRLoss", prior=prior.tolist(), tags_from="mask"))
    with pytest.raises(ValueError) as e:
        MODELS.build(dict(type="SegOCRLoss", prior=torch.rand(81, 80).tolist()))
    assert "list of 81 items" in str(e.value) and len(str(e.value)) < 400


def test_prior_forms_in_a_config_dump_and_reload(tmp_path):
    rows = {f"img{i}": (np.arange(4) % (i + 2) == 0).astype(np.float32) for i in range(6)}
    np.save(tmp_path / "cls_labels.npy", rows)
    m = ok.ClsLabels(str(tmp_path / "cls_labels.npy")).prior()
    np.save(tmp_path / "prior.npy", m.numpy())
    forms = [m.tolist(), str(tmp_path / "prior.npy"),
             dict(type="cls_labels", file=str(tmp_path / "cls_labels.npy"))]
    for i, form in enumerate(forms):
        cfg = Config(dict(loss=dict(type="SegOCRLoss", prior=form, alpha=0.5)))
        cfg.dump(str(tmp_path / f"cfg{i}.py"))
        reloaded = Config.fromfile(str(tmp_path / f"cfg{i}.py"))
        assert reloaded.to_dict() == cfg.to_dict()
        assert torch.allclose(MODELS.build(reloaded.loss).prior, m, rtol=0, atol=1e-7)


def test_load_image_tags_from_cls_labels_and_from_the_annotation(tmp_path):
    np.save(tmp_path / "cls_labels.npy", {"2007_000032": np.array([0, 1, 0, 1.0]), 2007000039: np.array([1, 0, 0, 0.0])})
    t = TRANSFORMS.build(dict(type="LoadImageTags", cls_labels=str(tmp_path / "cls_labels.npy")))
    assert t(dict(img_path="x/JPEGImages/2007_000032.jpg"))["img_tags"].tolist() == [0, 1, 0, 1]
    assert t(dict(img_path="2007_000039.png"))["img_tags"].tolist() == [1, 0, 0, 0]  # IRN's keys
    with pytest.raises(KeyError, match=r"image '2008_000001' has no entry in .*cls_labels.npy"):
        t(dict(img_path="2008_000001.jpg"))
    a = TRANSFORMS.build(dict(type="LoadImageTags", num_classes=4))
    assert a(dict(img_path="p.jpg", img_labels=[0, 2, 4]))["img_tags"].tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r"class indices in \[0, 4\]; got list of 2 items \[1, 5\]"):
        a(dict(img_path="p.jpg", img_labels=[1, 5]))
    with pytest.raises(ValueError, match=r"needs cls_labels=.*or num_classes=C"):
        TRANSFORMS.build(dict(type="LoadImageTags"))
    # through PackSegInputs into the data sample, then stacked by the segmentor
    pack = TRANSFORMS.build(dict(type="PackSegInputs", meta_keys=("img_path", "img_tags")))
    packed = [pack(a(dict(img_path="p.jpg", img=np.zeros((4, 4, 3), np.uint8), img_labels=lab)))
              for lab in ([1], [3, 4])]
    assert okm.stack_tags([p["data_samples"] for p in packed]).tolist() == [[1, 0, 0, 0], [0, 0, 1, 1]]
    with pytest.raises(KeyError, match=r"data sample 0 has no 'img_tags'.*meta_keys"):
        okm.stack_tags([SegDataSample()])


def loss_with_tags(model, x, labels, tags):
    """The segmentor's losses, and seg_ocr_loss on the logits each head returned."""
    heads = {"decode": model.decode_head}
    if model.with_auxiliary_head:
        heads["aux"] = model.auxiliary_head
    seen = {}
    for name, head in heads.items():
        head.conv_seg.register_forward_hook(lambda m, a, out, name=name: seen.__setitem__(name, out))
    losses = model.loss(x, samples(labels, tags))
    return losses, seen


def check_head_losses(losses, seen, labels, tags, weights):
    for name, (prior, alpha, w) in weights.items():
        up = F.interpolate(seen[name].detach(), size=labels.shape[1:], mode="bilinear", align_corners=False)
        want = w * ok.seg_ocr_loss(up, labels, tags, prior, alpha=alpha, ce_average="all", backend="reference")
        assert torch.allclose(losses[f"{name}.loss_seg_ocr"], want, rtol=1e-5), name


def test_example_voc_config_deeplabv3plus_with_tags(tmp_path, monkeypatch):
    # configs/examples: DepthwiseSeparableASPPHead + auxiliary FCNHead, prior and tags from a
    # cls_labels.npy restricted to the training split.
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data/VOCdevkit/VOC2012"
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = {f"2007_{i:06d}": (rng.random(20) < 0.15).astype(np.float32) for i in range(30)}
    np.save(root / "cls_labels.npy", rows)
    (root / "ImageSets/Segmentation/train_aug.txt").write_text("\n".join(list(rows)[:20]) + "\n")
    cfg = Config.fromfile(os.path.join(ROOT, "configs/examples/deeplabv3plus_r50-d8_voc12aug_wsss_seg_ocr.py"))
    from mmengine.utils import import_modules_from_strings
    import_modules_from_strings(**cfg.custom_imports)
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == "TaggedEncoderDecoder"
    assert type(model.decode_head).__name__ == "DepthwiseSeparableASPPHead"
    prior = ok.prior_correlation(torch.from_numpy(np.stack(list(rows.values())[:20])))
    assert torch.equal(model.decode_head.loss_decode.prior, prior)
    tags = torch.from_numpy(np.stack(list(rows.values())[:2]))
    labels = torch.randint(0, 21, (2, 64, 64))
    losses, seen = loss_with_tags(model, torch.randn(2, 3, 64, 64), labels, tags)
    check_head_losses(losses, seen, labels, tags, {"decode": (prior, 1.0, 1.0), "aux": (prior, 1.0, 0.4)})
    dumped = tmp_path / "dumped.py"
    cfg.dump(str(dumped))
    assert Config.fromfile(str(dumped)).model.to_dict() == cfg.model.to_dict()


def test_segformer_head_gets_the_tags():
    labels, tags, prior = inputs(size=(32, 32))
    model = MODELS.build(dict(
        type="TaggedEncoderDecoder",
        backbone=dict(type="MixVisionTransformer", in_channels=3, embed_dims=8, num_stages=4,
                      num_layers=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], patch_sizes=[7, 3, 3, 3],
                      sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=2),
        decode_head=dict(type="SegformerHead", in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3],
                         channels=16, num_classes=5, align_corners=False,
                         loss_decode=dict(type="SegOCRLoss", prior=prior.tolist(), alpha=0.5))))
    losses, seen = loss_with_tags(model, torch.randn(2, 3, 32, 32), labels, tags)
    check_head_losses(losses, seen, labels, tags, {"decode": (prior, 0.5, 1.0)})


def _fixed_logits_head(loss_decode, logits, **kw):
    head = fcn_head(loss_decode, **kw)
    head.forward = lambda inputs: logits  # the head's logits, before any resize
    return head


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("losses", ["seg_ocr", "ce+ocr"])
def test_fused_head_loss_equals_mmseg_loss_by_feat(losses, align_corners, monkeypatch):
    # A stock FCNHead: mmseg resizes the 4x5 logits to the 16x20 labels, then calls the losses;
    # fused_head_loss hands the 4x5 logits to this package's losses (upsample=True) instead. Same
    # loss values, acc_seg and gradient with respect to the head's logits.
    from ocr_kernels.mmseg import heads
    labels, _, prior = inputs()
    spec = (dict(type="SegOCRLoss", prior=prior.tolist(), alpha=0.7, tags_from="target",
                 align_corners=align_corners) if losses == "seg_ocr" else
            [dict(type="CrossEntropyLoss"),
             dict(type="OCRLoss", prior=prior.tolist(), tags_from="target", loss_weight=0.5,
                  align_corners=align_corners)])
    g = torch.Generator().manual_seed(1)
    low = torch.randn(2, 5, 4, 5, dtype=torch.float64, generator=g)
    a, b = low.clone().requires_grad_(), low.clone().requires_grad_()
    stock = _fixed_logits_head(spec, a, align_corners=align_corners)
    fused = _fixed_logits_head(spec, b, align_corners=align_corners)
    assert heads.fusable(fused)
    want = stock.loss_by_feat(a, samples(labels))
    if losses == "seg_ocr":
        # this package's losses alone: no resize of the logits with a gradient, only the
        # no-grad, one-image-at-a-time resize of acc_seg
        real = heads.resize

        def checked(x, **kw):
            assert not torch.is_grad_enabled() and x.shape[0] == 1, "full-resolution logits resized"
            return real(x, **kw)
        monkeypatch.setattr(heads, "resize", checked)
    got = heads.fused_head_loss(fused, None, samples(labels), None)
    assert sorted(got) == sorted(want)
    for k in want:
        torch.testing.assert_close(got[k].double(), want[k].double(), rtol=1e-9, atol=1e-9)
    sum(v for k, v in want.items() if k.startswith("loss")).backward()
    sum(v for k, v in got.items() if k.startswith("loss")).backward()
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-9, atol=1e-12)


def test_fused_heads_of_the_segmentor():
    labels, tags, prior = inputs(size=(32, 32))
    cfg = dict(
        type="TaggedEncoderDecoder",
        backbone=dict(type="MixVisionTransformer", in_channels=3, embed_dims=8, num_stages=4,
                      num_layers=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], patch_sizes=[7, 3, 3, 3],
                      sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=2),
        decode_head=dict(type="SegformerHead", in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3],
                         channels=16, num_classes=5, align_corners=True,
                         loss_decode=dict(type="SegOCRLoss", prior=prior.tolist(), tags_from="target")),
        auxiliary_head=[
            dict(type="FCNHead", in_channels=32, in_index=2, channels=8, num_convs=1,
                 num_classes=5, concat_input=False,
                 loss_decode=dict(type="CrossEntropyLoss")),  # nothing to fuse
            dict(type="FCNHead", in_channels=32, in_index=2, channels=8, num_convs=1,
                 num_classes=5, concat_input=False, sampler=dict(type="OHEMPixelSampler", thresh=0.7),
                 loss_decode=dict(type="SegOCRLoss", prior=prior.tolist(), tags_from="target"))])
    model = MODELS.build(cfg)
    # OHEM samples the full-resolution logits: that head keeps mmseg's path
    assert model.fused_heads == ("decode",)
    assert model.decode_head.loss_decode.align_corners is True  # the head's grid
    assert MODELS.build(dict(cfg, fuse_upsampling=False)).fused_heads == ()
    # no img_tags in the batch: tags_from="target" losses need none
    losses = model.loss(torch.randn(2, 3, 32, 32), samples(labels))
    assert {"decode.loss_seg_ocr", "decode.acc_seg", "aux_0.loss_ce", "aux_1.loss_seg_ocr"} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
