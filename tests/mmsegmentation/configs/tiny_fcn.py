# A stock mmseg config, small enough to train on a CPU in seconds: ResNetV1c-18 (narrow) + FCNHead
# with an auxiliary FCNHead, on the 32x32 images the tests write under data/ (img/, ann/).
default_scope = 'mmseg'
randomness = dict(seed=0)
num_classes = 5
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(32, 32)),
    backbone=dict(
        type='ResNetV1c', depth=18, stem_channels=16, base_channels=16, num_stages=4,
        out_indices=(0, 1, 2, 3), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
        norm_cfg=norm_cfg, norm_eval=False, style='pytorch', contract_dilation=True),
    decode_head=dict(
        type='FCNHead', in_channels=128, in_index=3, channels=32, num_convs=1,
        concat_input=False, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead', in_channels=64, in_index=2, channels=16, num_convs=1,
        concat_input=False, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='BaseSegDataset', data_root='data', data_prefix=dict(img_path='img', seg_map_path='ann'),
        img_suffix='.png', seg_map_suffix='.png',
        metainfo=dict(classes=('background', 'a', 'b', 'c', 'd')), pipeline=train_pipeline))

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
param_scheduler = []
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=None,
    sampler_seed=dict(type='DistSamplerSeedHook'))
log_level = 'WARNING'
