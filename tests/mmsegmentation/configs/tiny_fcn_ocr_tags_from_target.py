# tiny_fcn.py changed only by custom_imports and the loss_decode entries: the tags are the classes
# present in each (pseudo-)mask. The auxiliary head pairs mmseg's CrossEntropyLoss with OCRLoss.
_base_ = './tiny_fcn.py'
custom_imports = dict(imports=['ocr_kernels.mmseg'], allow_failed_imports=False)
model = dict(
    decode_head=dict(loss_decode=dict(
        _delete_=True, type='SegOCRLoss', prior='data/prior.json', alpha=0.5,
        tags_from='target')),
    auxiliary_head=dict(loss_decode=[
        dict(type='CrossEntropyLoss', loss_weight=0.4),
        dict(type='OCRLoss', prior='data/prior.json', loss_weight=0.2, tags_from='target'),
    ]))
