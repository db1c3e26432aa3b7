# Weakly supervised semantic segmentation on PASCAL VOC 2012, last stage: DeepLabV3+ (R50) trained
# on CAM pseudo-masks with cross-entropy + alpha * OCR (ocr_kernels.mmseg.SegOCRLoss), the
# image-level tags and the prior (Eq. 7) both from the cls_labels.npy of the WSSS codebase that
# made the pseudo-masks (image name -> 20-dim multi-hot).
#
#   python tools/train.py configs/examples/deeplabv3plus_r50-d8_voc12aug_wsss_seg_ocr.py
#
# Changes to mmseg's stock config: custom_imports, the segmentor type, the loss_decode entries,
# LoadImageTags in the train pipeline (+ 'img_tags' in PackSegInputs' meta_keys), and the training
# set (train_aug with the pseudo-masks in place of the ground truth).
_base_ = ['mmseg::deeplabv3plus/deeplabv3plus_r50-d8_4xb4-20k_voc12aug-512x512.py']
custom_imports = dict(imports=['ocr_kernels.mmseg'], allow_failed_imports=False)

data_root = 'data/VOCdevkit/VOC2012'
cls_labels = data_root + '/cls_labels.npy'
train_split = 'ImageSets/Segmentation/train_aug.txt'  # 10582 image names, one a line
prior = dict(type='cls_labels', file=cls_labels, names=data_root + '/' + train_split)

model = dict(
    type='TaggedEncoderDecoder',  # hands each batch's img_tags to the losses
    decode_head=dict(loss_decode=dict(_delete_=True, type='SegOCRLoss', prior=prior, alpha=1.0)),
    auxiliary_head=dict(loss_decode=dict(
        _delete_=True, type='SegOCRLoss', prior=prior, alpha=1.0, loss_weight=0.4)))

crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='LoadImageTags', cls_labels=cls_labels),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='Pad', size=crop_size),
    dict(type='PackSegInputs', meta_keys=(
        'img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
        'flip_direction', 'reduce_zero_label', 'img_tags')),
]
train_dataloader = dict(dataset=dict(
    _delete_=True,
    type='PascalVOCDataset',
    data_root=data_root,
    data_prefix=dict(img_path='JPEGImages', seg_map_path='pseudo_masks'),  # the CAM pseudo-masks
    ann_file=train_split,
    pipeline=train_pipeline))
