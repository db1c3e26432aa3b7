# tiny_fcn.py with the exact tags of data/cls_labels.npy: changed by custom_imports, the
# segmentor type, the loss_decode entries and the tags transform in the train pipeline.
_base_ = './tiny_fcn.py'
custom_imports = dict(imports=['ocr_kernels.mmseg'], allow_failed_imports=False)
prior = dict(type='cls_labels', file='data/cls_labels.npy')
model = dict(
    type='TaggedEncoderDecoder',
    decode_head=dict(loss_decode=dict(
        _delete_=True, type='SegOCRLoss', prior=prior, alpha=0.5)),
    auxiliary_head=dict(loss_decode=dict(
        _delete_=True, type='SegOCRLoss', prior=prior, alpha=0.5, loss_weight=0.4)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='LoadImageTags', cls_labels='data/cls_labels.npy'),
    dict(type='PackSegInputs', meta_keys=(
        'img_path', 'seg_map_path', 'ori_shape', 'img_shape', 'pad_shape', 'scale_factor', 'flip',
        'flip_direction', 'reduce_zero_label', 'img_tags')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
