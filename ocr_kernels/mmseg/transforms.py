"""``LoadImageTags``: an image's tags, in the data pipeline."""
from __future__ import annotations

from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from .._validation import describe
from ..tags import ClsLabels
from .losses import TAGS_KEY


def _image_name(path: str) -> str:
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name else name


@TRANSFORMS.register_module()
class LoadImageTags(BaseTransform):
    """Sets ``results["img_tags"]``, the image's [C] uint8 multi-hot tags (column c = mask class
    c+1), from either

    - ``cls_labels="cls_labels.npy"``: the entry of the image's name (its file name without
      extension, "2007_000032"; see ``ocr_kernels.ClsLabels``);
    - ``key`` (default "img_labels") in the annotation: a list of the class indices present, in
      the masks' label space (1..C; 0, background, is dropped), with ``num_classes=C``.

    Add "img_tags" to ``PackSegInputs``' meta_keys so that it reaches the data sample.
    """

    def __init__(self, cls_labels: Optional[str] = None, num_classes: Optional[int] = None,
                 key: str = "img_labels"):
        self.cls_labels = None if cls_labels is None else ClsLabels(cls_labels)
        if self.cls_labels is not None:
            if num_classes is not None and num_classes != self.cls_labels.num_classes:
                raise ValueError(
                    f"num_classes={num_classes} does not match the {self.cls_labels.num_classes} "
                    f"classes of {cls_labels}"
                )
            num_classes = self.cls_labels.num_classes
        elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                "LoadImageTags needs cls_labels=<path to cls_labels.npy>, or num_classes=C (the "
                f"foreground classes) to read the annotation's {key!r} list; got num_classes="
                f"{describe(num_classes)}"
            )
        self.num_classes, self.key = num_classes, key

    def transform(self, results: dict) -> dict:
        if self.cls_labels is not None:
            tags = self.cls_labels.row(_image_name(results["img_path"]))
        else:
            if self.key not in results:
                raise KeyError(
                    f"LoadImageTags: the annotation of {results.get('img_path')!r} has no "
                    f"{self.key!r} (a list of the class indices present)"
                )
            labels = np.asarray(results[self.key], dtype=np.int64).reshape(-1)
            bad = (labels < 0) | (labels > self.num_classes)
            if bad.any():
                raise ValueError(
                    f"LoadImageTags: {self.key} of {results.get('img_path')!r} must hold class "
                    f"indices in [0, {self.num_classes}]; got {describe(results[self.key])}"
                )
            tags = np.zeros(self.num_classes + 1, dtype=bool)
            tags[labels] = True
            tags = tags[1:]
        results[TAGS_KEY] = tags.astype(np.uint8)
        return results

    def __repr__(self) -> str:
        source = f"cls_labels={self.cls_labels.file!r}" if self.cls_labels is not None \
            else f"key={self.key!r}"
        return f"{type(self).__name__}({source}, num_classes={self.num_classes})"
