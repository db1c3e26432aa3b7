"""examples/train_wsss_seg.py runs end to end at a tiny size and reports sane numbers."""
import importlib.util
import json
import os

import pytest

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "train_wsss_seg.py")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("train_wsss_seg", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_runs_at_a_tiny_size(example, tmp_path, capsys):
    out = tmp_path / "r.json"
    res = example.main(["--size", "16", "--train", "24", "--val", "12", "--steps", "3",
                        "--batch", "4", "--width", "8", "--time-steps", "1", "--device", "cpu",
                        "--backend", "reference", "--json", str(out)])
    assert json.loads(out.read_text())["runs"].keys() == {"ce", "ce+ocr"}
    for kind in ("ce", "ce+ocr"):
        r = res["runs"][kind]
        assert 0.0 <= r["miou"] <= 1.0 and len(r["iou_per_class"]) == example.NUM_CLASSES + 1
        assert 0.0 <= r["oc_error_rate"] <= 1.0 and 0.0 <= r["oc_pixel_rate"] <= 1.0
    assert res["timing"]["reference"]["step_ms"] > 0
    text = capsys.readouterr().out
    assert "ce+ocr  mIoU" in text and "seg_ocr_loss reference" in text


def test_synthetic_data_is_what_the_docstring_says(example):
    import torch

    g = torch.Generator().manual_seed(3)
    images, clean, pseudo, tags = example.make_dataset(40, 24, 1.0, g)
    assert images.shape == (40, 3, 24, 24) and 0 <= images.min() and images.max() <= 1
    # tags are exactly the classes in the clean masks
    present = torch.stack([(clean == c).flatten(1).any(1) for c in range(1, 7)], 1)
    assert torch.equal(present, tags)
    # confuse=1.0: the simulated CAM labels part of objects with twin classes, often not tagged
    valid = pseudo != 255
    assert (pseudo[valid] != clean[valid]).any() and (~valid).any()
    assert ((pseudo > 0) & valid & (pseudo != clean)).any()
    assert example.twin(1) == 2 and example.twin(2) == 1 and example.twin(5) == 6
