"""ClsLabels, tags_from_target and load_prior: the tags and the prior from WSSS files."""
import json

import numpy as np
import pytest
import torch

import ocr_kernels as ok


def write_cls_labels(path, rows):
    np.save(path, rows)
    return str(path)


def test_cls_labels_tags_and_prior(tmp_path):
    rows = {"2007_000032": [1, 0, 0, 1], "2007_000039": [0, 0, 1, 0], "2008_000002": [1, 1, 0, 0]}
    labels = ok.ClsLabels(write_cls_labels(tmp_path / "cls_labels.npy", rows))
    assert labels.num_classes == 4 and len(labels) == 3
    tags = labels.tags(["2008_000002", "2007_000032"])
    assert tags.dtype == torch.float32
    assert tags.tolist() == [[1, 1, 0, 0], [1, 0, 0, 1]]
    # Eq. 7 by hand: background in every image; class 1 (column 0) in 2 of 3 images, classes 1
    # and 4 together in 1 of 3.
    m = labels.prior()
    assert m.shape == (5, 5) and m.dtype == torch.float32
    assert m[0, 0] == 1 and m[0, 1] == pytest.approx(2 / 3) and m[1, 4] == pytest.approx(1 / 3)
    assert torch.equal(m, ok.prior_correlation(torch.tensor(list(rows.values()))))
    # restricted to a split given as a text file, as VOC's ImageSets
    (tmp_path / "train.txt").write_text("2007_000039\n2008_000002\n")
    m2 = labels.prior(str(tmp_path / "train.txt"))
    assert torch.equal(m2, ok.prior_correlation(torch.tensor([rows["2007_000039"], rows["2008_000002"]])))
    assert torch.equal(labels.prior(normalize="minmax"), ok.prior_correlation(
        torch.tensor(list(rows.values())), normalize="minmax"))


def test_cls_labels_irn_integer_keys_and_missing_names(tmp_path):
    labels = ok.ClsLabels({2007000032: np.array([0.0, 1.0]), 2007000039: np.array([1.0, 0.0])})
    assert labels.tags(["2007_000039", "2007_000032"], dtype=torch.uint8).tolist() == [[1, 0], [0, 1]]
    with pytest.raises(KeyError, match=r"image '2009_000001' has no entry \(2 entries, e.g. 2007000032"):
        labels.row("2009_000001")
    with pytest.raises(ValueError, match=r"same length C; got lengths \[2, 3\]"):
        ok.ClsLabels({"a": [1, 0], "b": [1, 0, 1]})
    path = tmp_path / "not_a_dict.npy"
    np.save(path, np.eye(3))
    with pytest.raises(ValueError, match=r"must hold a pickled dict .* got a float64 ndarray of shape \(3, 3\)"):
        ok.ClsLabels(str(path))


def test_tags_from_target_excludes_ignored_pixels_and_background():
    target = torch.tensor([[[0, 2, 2], [255, 255, 0]], [[1, 3, 255], [3, 3, 3]], [[255, 255, 255], [0, 0, 0]]])
    tags = ok.tags_from_target(target, num_classes=4, ignore_index=255)
    assert tags.dtype == torch.uint8
    assert tags.tolist() == [[0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    # an ignore_index inside the class range is excluded too
    assert ok.tags_from_target(target.clamp(max=3), 4, ignore_index=3).tolist() == [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    with pytest.raises(TypeError, match=r"target must be an integer tensor"):
        ok.tags_from_target(target.float(), 4)


def test_load_prior_every_form_gives_the_same_matrix(tmp_path):
    m = ok.prior_correlation(torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 0]]))
    np.save(tmp_path / "p.npy", m.numpy())
    torch.save(m, tmp_path / "p.pt")
    (tmp_path / "p.json").write_text(json.dumps(m.tolist()))
    np.savetxt(tmp_path / "p.txt", m.numpy())
    cls = write_cls_labels(tmp_path / "cls.npy", {"a": [1, 0, 1], "b": [0, 1, 1], "c": [1, 1, 0]})
    forms = [m, m.tolist(), m.numpy(), str(tmp_path / "p.npy"), tmp_path / "p.pt",
             str(tmp_path / "p.json"), str(tmp_path / "p.txt"), dict(type="cls_labels", file=cls)]
    for form in forms:
        got = ok.load_prior(form)
        assert got.dtype == torch.float32 and torch.allclose(got, m, rtol=0, atol=1e-7), form
    assert ok.load_prior(m.double()).dtype == torch.float64  # a floating tensor keeps its dtype


def test_load_prior_errors_summarise_big_values(tmp_path):
    big = torch.rand(81, 81).tolist()
    with pytest.raises(ValueError) as e:
        ok.load_prior([row[:80] for row in big])  # not square
    assert "prior must be a square matrix" in str(e.value) and len(str(e.value)) < 400
    assert "list of 81 items" in str(e.value)
    with pytest.raises(TypeError, match=r"prior must be a square matrix of numbers"):
        ok.load_prior([["a", "b"], ["c", "d"]])
    with pytest.raises(FileNotFoundError, match=r"prior file 'nope.npy' does not exist"):
        ok.load_prior("nope.npy")
    with pytest.raises(ValueError, match=r"prior file must end with one of"):
        ok.load_prior("prior.csv")
    cls = write_cls_labels(tmp_path / "cls.npy", {"a": [1, 0]})
    with pytest.raises(ValueError, match=r'holds a pickled object .* dict\(type="cls_labels"'):
        ok.load_prior(cls)
    with pytest.raises(ValueError, match=r'dict\(type="cls_labels", file=...'):
        ok.load_prior(dict(type="cls_labels", path=cls))
    with pytest.raises(TypeError, match=r"prior must be a tensor, a nested list, a path"):
        ok.load_prior(3.0)
