"""Image-level tags and the prior built from them, from the files WSSS codebases use.

- ``ClsLabels``: a ``cls_labels.npy`` (a pickled dict: image name -> C-dim multi-hot vector over
  the foreground classes, column c = mask class c+1), as written by the PSA/IRN/SEAM family of
  WSSS codebases. ``.tags(names)`` gives a batch's tags, ``.prior()`` the prior of Eq. 7.
- ``tags_from_target``: the foreground classes present in a (pseudo-)mask.
- ``load_prior``: a prior given as a tensor, a nested list, a file or a cls_labels spec.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from ._validation import describe, check_tensor
from .ocr.prior import prior_correlation

PathLike = Union[str, os.PathLike]


def _name_list(names) -> list:
    """A list of image names, or a text file with one name per line (VOC's ImageSets format)."""
    if isinstance(names, (str, os.PathLike)):
        with open(names, encoding="utf-8") as f:
            return [line.split()[0] for line in f if line.strip()]
    return [str(n) for n in names]


class ClsLabels:
    """Image-level labels by image name: ``ClsLabels("cls_labels.npy")`` or ``ClsLabels(dict)``.

    Keys are image names as in the dataset's file names without extension ("2007_000032").
    IRN writes VOC names as integers (2007000032); a name is looked up as given, then as that
    integer. Every vector must have the same length C (the foreground classes).
    """

    def __init__(self, source: Union[PathLike, Mapping]):
        self.file = None
        if isinstance(source, (str, os.PathLike)):
            self.file = os.fspath(source)
            loaded = np.load(self.file, allow_pickle=True)
            if loaded.dtype != object or loaded.shape != ():
                raise ValueError(
                    f"{self.file} must hold a pickled dict image name -> C-dim multi-hot vector "
                    f"(cls_labels.npy); got {describe(loaded)}"
                )
            source = loaded.item()
        if not isinstance(source, Mapping) or not source:
            raise TypeError(
                "cls_labels must be a path to a cls_labels.npy or a non-empty dict image name -> "
                f"C-dim multi-hot vector; got {describe(source)}"
            )
        rows = {}
        for name, row in source.items():
            row = np.asarray(row)
            if row.ndim != 1 or row.size == 0:
                raise ValueError(
                    f"cls_labels[{name!r}] must be a C-dim multi-hot vector; got {describe(row)}"
                )
            rows[name] = row != 0
        sizes = {r.size for r in rows.values()}
        if len(sizes) != 1:
            raise ValueError(f"cls_labels vectors must all have the same length C; got lengths {sorted(sizes)}")
        self._rows = rows
        self.num_classes = sizes.pop()

    def __len__(self) -> int:
        return len(self._rows)

    def _where(self) -> str:
        return f" in {self.file}" if self.file else ""

    def row(self, name) -> np.ndarray:
        """The [C] bool tags of one image."""
        row = self._rows.get(name)
        if row is None and isinstance(name, str):
            digits = name.replace("_", "")
            if digits.isdigit():
                row = self._rows.get(int(digits))
        if row is None:
            some = ", ".join(repr(k) for k in list(self._rows)[:3])
            raise KeyError(
                f"image {name!r} has no entry{self._where()} ({len(self)} entries, e.g. {some})"
            )
        return row

    def tags(self, names: Iterable, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The [B, C] tags (multi-hot, ``dtype``) of a batch of image names."""
        rows = [self.row(n) for n in names]
        if not rows:
            raise ValueError("names must hold at least one image name; got none")
        return torch.from_numpy(np.stack(rows)).to(device=device, dtype=dtype)

    def prior(self, names: Optional[Union[PathLike, Sequence]] = None,
              normalize: Optional[str] = None) -> torch.Tensor:
        """The prior M [C+1, C+1] of Eq. 7 (``prior_correlation``) over every entry, or over
        ``names`` (a list, or a text file with one name per line: the training split)."""
        keys = list(self._rows) if names is None else _name_list(names)
        return prior_correlation(self.tags(keys, dtype=torch.uint8), normalize=normalize)


def tags_from_target(target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """[B, C] uint8 tags: the foreground classes 1..C present in each mask of target
    [B, *spatial], ignored pixels excluded. On the target's device, no host synchronisation.

    For WSSS pseudo-masks made from CAMs of the tagged classes this is the tag set minus the
    classes the CAM missed (and plus any class the pseudo-mask wrongly holds)."""
    check_tensor("target", target, "an integer tensor [B, *spatial]")
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool \
            or target.dim() < 2:
        raise TypeError(f"target must be an integer tensor [B, *spatial]; got {describe(target)}")
    flat = target.reshape(target.shape[0], -1).long()
    valid = flat != ignore_index
    # Ignored pixels scatter into the background column, which is dropped; values outside [0, C]
    # are clamped here and reported by the loss's own target check.
    idx = torch.where(valid, flat, torch.zeros_like(flat)).clamp_(0, num_classes)
    present = torch.zeros(flat.shape[0], num_classes + 1, dtype=torch.uint8, device=target.device)
    present.scatter_(1, idx, 1)
    return present[:, 1:]


_PRIOR_FILES = (".npy", ".pt", ".pth", ".json", ".txt")


def _prior_from_file(path: str) -> torch.Tensor:
    ext = os.path.splitext(path)[1].lower()
    if ext not in _PRIOR_FILES:
        raise ValueError(f"prior file must end with one of {list(_PRIOR_FILES)}; got {path!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"prior file {path!r} does not exist")
    if ext == ".npy":
        try:
            value = np.load(path, allow_pickle=False)
        except ValueError:  # an object array: refused without allow_pickle
            raise ValueError(
                f"prior file {path!r} holds a pickled object (a cls_labels.npy?); for the prior "
                f'of a cls_labels file pass dict(type="cls_labels", file={path!r})'
            ) from None
    elif ext in (".pt", ".pth"):
        value = torch.load(path, map_location="cpu", weights_only=True)
    elif ext == ".json":
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    else:
        value = np.loadtxt(path, dtype=np.float64, ndmin=2)
    return _prior_from_value(value, f"the content of {path!r}")


def _prior_from_value(value, what: str) -> torch.Tensor:
    try:
        tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError) as e:
        raise TypeError(f"prior must be a square matrix of numbers; {what} is {describe(value)} ({e})") from None
    if tensor.dim() != 2 or tensor.shape[0] != tensor.shape[1] or tensor.shape[0] < 2:
        raise ValueError(f"prior must be a square matrix [C+1, C+1]; {what} is {describe(value)}")
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"prior must hold real numbers; {what} is {describe(value)}")
    return tensor if tensor.is_floating_point() and isinstance(value, torch.Tensor) else tensor.to(torch.float32)


def load_prior(spec) -> torch.Tensor:
    """The prior [C+1, C+1] float32 from any of:

    - a tensor or a nested list / array of numbers;
    - a path to a ``.npy`` (array), ``.pt``/``.pth`` (tensor), ``.json`` (nested list) or
      ``.txt`` (whitespace-separated rows) file;
    - ``dict(type="cls_labels", file="cls_labels.npy", names=None, normalize=None)``: Eq. 7 over
      the file's entries (or over ``names``, a list or a text file of image names), as
      ``ClsLabels(file).prior(names, normalize)``.

    Every form but the tensor survives an mmengine ``Config.dump`` and reload.
    """
    if isinstance(spec, torch.Tensor):
        return _prior_from_value(spec, "the tensor")
    if isinstance(spec, (str, os.PathLike)):
        return _prior_from_file(os.fspath(spec))
    if isinstance(spec, Mapping):
        spec = dict(spec)
        kind = spec.pop("type", None)
        if kind != "cls_labels" or "file" not in spec or set(spec) - {"file", "names", "normalize"}:
            raise ValueError(
                'a prior given as a dict must be dict(type="cls_labels", file=..., names=None, '
                f"normalize=None); got {describe(dict(spec, type=kind))}"
            )
        return ClsLabels(spec["file"]).prior(spec.get("names"), spec.get("normalize"))
    if isinstance(spec, (list, tuple, np.ndarray)):
        return _prior_from_value(spec, "the value")
    raise TypeError(
        "prior must be a tensor, a nested list, a path (.npy, .pt, .json, .txt) or "
        f'dict(type="cls_labels", file=...); got {describe(spec)}'
    )
