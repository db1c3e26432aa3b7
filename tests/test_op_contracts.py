"""The contract of every custom op: its schema and what its fake returns for fixed inputs.

torch.compile's on-disk caches key a custom op by its name alone (ocr_kernels/_op_names.py), so a
graph compiled against one contract is reused against another unless the name changes. This test
pins the contracts: when it fails for a Triton op, bump TRITON_OPS_CONTRACT and add its entry to
op_contracts.json (keep the old ones: the test checks the current number is the newest); for a C++ op,
rename the op instead (its name is its contract), then regenerate with
``python tests/test_op_contracts.py``.
"""
import json
import os
import sys

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

sys.path.insert(0, os.path.dirname(__file__))

from helpers import csrc_ops  # noqa: E402

from ocr_kernels import _op_names  # noqa: E402

# The fixed inputs: B = 2, C+1 = 6, 5x4 pixels (resized ops: up to 9x7); W-OoD: 3 features of
# dimension 8, 4 class and 5 OoD centroids.
_L, _T, _P = (2, 6, 5, 4), (2, 5), (6, 6)
_OPTS = (2.0, 0.2, "ada", "all")


def _calls():
    f32, i64 = torch.float32, torch.int64
    e = torch.empty
    return {
        "ocr_loss_map_triton": lambda: (e(_L), e(_T), e(_P), *_OPTS),
        "ocr_loss_map_resized_triton": lambda: (e(_L), e(_T), e(_P), [9, 7], False, *_OPTS),
        "seg_ocr_loss_maps_triton": lambda: (e(_L), e((2, 5, 4), dtype=i64), e(_T), e(_P),
                                             *_OPTS, 255),
        "seg_ocr_loss_maps_resized_triton": lambda: (e(_L), e((2, 9, 7), dtype=i64), e(_T),
                                                     e(_P), False, *_OPTS, 255),
        "wood_distances_triton": lambda: (e((3, 8)), e((4, 8))),
        "wood_distance_loss_triton": lambda: (e((3, 8)), e((3, 4), dtype=f32), e((4, 8)),
                                              e((5, 8)), 0.5),
        # the C++ ops whose outputs the backward reads
        # (their options as the codes of ocr_kernels/_options.py)
        "ocr_loss_map": lambda: (e(_L), e(_T), e(_P), *_OPTS[:2], 0, 0),
        "seg_ocr_loss_maps": lambda: (e(_L), e((2, 5, 4), dtype=i64), e(_T), e(_P), *_OPTS[:2],
                                      0, 0, 255),
        # (its gradient output is what the backward, scale_grad_, reads)
        "seg_ocr_objective": lambda: (e(_L), e((2, 5, 4), dtype=i64), e(_T), e(_P), e((2, 5, 4)),
                                      e(2), *_OPTS[:2], 0, 0, 255),
    }


def _describe(out):
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [[list(t.shape), str(t.dtype).replace("torch.", "")] for t in outs]


def triton_contract():
    """{op: {"schema", "fake"}} of the Triton ops, names without their contract suffix."""
    import ocr_kernels.ocr.triton_kernel  # noqa: F401  (registers the ops)
    import ocr_kernels.ocr.triton_resize  # noqa: F401
    import ocr_kernels.seg.triton_kernel  # noqa: F401
    import ocr_kernels.seg.triton_resize  # noqa: F401
    import ocr_kernels.wood.triton_kernel  # noqa: F401

    suffix = _op_names.triton_op_name("")[len("ocr_kernels::"):]
    calls = _calls()
    out = {}
    for packet_name in sorted(dir(torch.ops.ocr_kernels)):
        if not packet_name.endswith(suffix) or not suffix:
            continue
        base = packet_name[: -len(suffix)]
        op = getattr(torch.ops.ocr_kernels, packet_name).default
        entry = {"schema": str(op._schema).split("(", 1)[1]}
        if base in calls:
            with FakeTensorMode():
                entry["fake"] = _describe(op(*calls[base]()))
        out[base] = entry
    return out


def csrc_contract():
    """{op: {"fake"}} of the C++ forward ops whose outputs their backward op reads."""
    from ocr_kernels.ocr import csrc_ops as ocr_csrc
    from ocr_kernels.seg import csrc_ops as seg_csrc

    ocr_csrc.ops()
    seg_csrc.ops()
    calls = _calls()
    out = {}
    for name in ("ocr_loss_map", "seg_ocr_loss_maps", "seg_ocr_objective"):
        with FakeTensorMode():
            out[name] = {"fake": _describe(getattr(torch.ops.ocr_kernels, name)(*calls[name]()))}
    return out


# The pinned contracts live in op_contracts.json beside this file: "triton" by contract number
# (1 was the unversioned names before 2026-12-03, when ocr_loss_map_triton's statistics had two
# planes; it is not listed), "csrc" the schemas of csrc/ops.cpp and the C++ forward ops' fakes.
_HERE = os.path.dirname(os.path.abspath(__file__))
_FILE = os.path.join(_HERE, "op_contracts.json")


def _load():
    with open(_FILE) as f:
        data = json.load(f)
    return {int(k): v for k, v in data["triton"].items()}, data["csrc"]


def test_triton_ops_contract_is_pinned():
    pinned, _ = _load()
    current = _op_names.TRITON_OPS_CONTRACT
    assert current == max(pinned), (
        f"TRITON_OPS_CONTRACT is {current} but tests/op_contracts.json's newest entry is "
        f"{max(pinned)}: a contract number is never reused")
    got = triton_contract()
    assert set(got) == set(pinned[current]), (
        f"Triton ops changed: {sorted(set(got) ^ set(pinned[current]))}; bump TRITON_OPS_CONTRACT "
        "(ocr_kernels/_op_names.py) and regenerate with python tests/test_op_contracts.py")
    for name, entry in pinned[current].items():
        assert got[name] == entry, (
            f"the contract of the Triton op {name} changed: {got[name]} != {entry}. Graphs that "
            "torch.compile cached against the old one would be reused: bump TRITON_OPS_CONTRACT "
            "(ocr_kernels/_op_names.py) and regenerate with python tests/test_op_contracts.py")


def test_older_triton_contracts_differ():
    # A new number with an unchanged contract is harmless; an edited old entry is not (it would
    # hide a change that kept its number), so every entry must differ from the next one.
    pinned, _ = _load()
    nums = sorted(pinned)
    for a, b in zip(nums, nums[1:]):
        assert pinned[a] != pinned[b], f"contracts {a} and {b} are the same: {a} was edited"


def test_csrc_ops_contract_is_pinned():
    _, pinned = _load()
    assert pinned["schemas"] == _csrc_schemas(), (
        "csrc/ops.cpp's schemas changed: rename the changed op (torch.compile's cache keys ops "
        "by name) and regenerate with python tests/test_op_contracts.py")
    csrc_ops(lambda: None)  # skips where the extension cannot be built
    got = csrc_contract()
    for name, entry in pinned["fakes"].items():
        assert got[name] == entry, (
            f"the fake of the C++ op {name} changed: {got[name]} != {entry}; rename the op "
            "(torch.compile's cache keys ops by name) and regenerate")


def _csrc_schemas():
    import re
    with open(os.path.join(_HERE, "..", "csrc", "ops.cpp")) as f:
        text = f.read()
    schemas = {}
    for m in re.finditer(r'm\.def\(\s*((?:"[^"]*"\s*)+)\)', text):
        s = "".join(re.findall(r'"([^"]*)"', m.group(1)))
        schemas[s.split("(", 1)[0]] = " ".join(s.split("(", 1)[1].split())
    return schemas


if __name__ == "__main__":
    # Regenerate: the current Triton contract is written under TRITON_OPS_CONTRACT, older
    # entries are kept.
    try:
        pinned, _ = _load()
    except FileNotFoundError:
        pinned = {}
    pinned[_op_names.TRITON_OPS_CONTRACT] = triton_contract()
    csrc = {"schemas": _csrc_schemas(), "fakes": csrc_contract()}
    with open(_FILE, "w") as f:
        json.dump({"triton": {str(k): v for k, v in sorted(pinned.items())}, "csrc": csrc}, f,
                  indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {_FILE}")
