"""seg_ocr_loss under DistributedDataParallel (2 processes, gloo, CPU) against one process on the
whole batch.

The objective is a mean, and DDP averages the ranks' gradients, so the per-rank means average to
the global mean only when every rank has the same denominators: the same number of pixels (OCR
term, and the CE term with ce_average="all") and, for ce_average="valid", the same number of
non-ignored pixels. global_mean=True all-reduces the two counts and scales by the world size, which
makes the result exact whatever the counts. Both facts are checked here, with one spawn.
"""
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from seg.ddp_seg_worker import TinySegNet, step_gradients, worker
from helpers import make_ocr_inputs

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


def build_cases():
    B, C1, H, W = 4, 5, 6, 6
    _, tags, prior = make_ocr_inputs(B, C1, (H, W), dtype=torch.float64, tag_p=0.3)
    x = torch.randn(B, 3, H, W, dtype=torch.float64)
    base = torch.randint(0, C1, (B, H, W))
    # same ignored pattern on both halves: equal non-ignored counts per rank
    pattern = torch.rand(H, W) < 0.3
    equal = torch.where(pattern, torch.full_like(base, 255), base)
    # rank 1's images (2, 3) mostly ignored: unequal non-ignored counts
    unequal = base.clone()
    unequal[2:][torch.rand(2, H, W) < 0.8] = 255
    unequal[:2][torch.rand(2, H, W) < 0.1] = 255
    opts = dict(alpha=0.5, pixels="all", ignore_index=255)
    half = [(0, 2), (2, 4)]
    cases = {
        "equal_counts": dict(target=equal, splits=half, opts=dict(opts)),
        "unequal_counts_local": dict(target=unequal, splits=half, opts=dict(opts)),
        "unequal_counts_global": dict(target=unequal, splits=half, opts=dict(opts, global_mean=True)),
        "unequal_batch_global": dict(target=unequal, splits=[(0, 3), (3, 4)],
                                     opts=dict(opts, global_mean=True)),
        "ce_all_pixels_local": dict(target=unequal, splits=half, opts=dict(opts, ce_average="all")),
    }
    torch.manual_seed(1234)
    model = TinySegNet(C1).double()
    return dict(classes=C1, state=model.state_dict(), x=x, tags=tags, prior=prior, cases=cases)


def test_ddp_two_processes_match_one_process(tmp_path, monkeypatch):
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    data = build_cases()
    case_file, out_file = str(tmp_path / "cases.pt"), str(tmp_path / "grads.pt")
    torch.save(data, case_file)
    mp.spawn(worker, args=(2, str(tmp_path / "init"), case_file, out_file), nprocs=2, join=True)
    got = torch.load(out_file)

    def single(case):
        model = TinySegNet(data["classes"]).double()
        model.load_state_dict(data["state"])
        opts = {k: v for k, v in case["opts"].items() if k != "global_mean"}
        return step_gradients(model, data["x"], case["target"], data["tags"], data["prior"], opts)

    def close(a, b):
        return all(torch.allclose(a[n], b[n], rtol=1e-10, atol=1e-13) for n in a)

    for name, case in data["cases"].items():
        want = single(case)
        assert all(want[n].abs().max() > 0 for n in want), name
        if name == "unequal_counts_local":
            # the documented condition: unequal non-ignored counts and no global_mean -> a
            # different (per-rank weighted) gradient
            assert not close(got[name], want), name
        else:
            assert close(got[name], want), name
