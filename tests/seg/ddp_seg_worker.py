"""The per-rank side of test_ddp.py (a module of its own so that spawned processes can import
it): runs the cases of a case file under DistributedDataParallel and saves rank 0's gradients."""
import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ocr_kernels import seg_ocr_loss


class TinySegNet(nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, classes, 1))

    def forward(self, x):
        return self.net(x)


def step_gradients(model, x, target, tags, prior, opts):
    """Parameter gradients of one training step with seg_ocr_loss."""
    model.zero_grad(set_to_none=True)
    seg_ocr_loss(model(x), target, tags, prior, **opts).backward()
    return {n.removeprefix("module."): p.grad.detach().clone() for n, p in model.named_parameters()}


def worker(rank: int, world: int, init_file: str, case_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    # a stuck peer fails the test in minutes, not at the suite's 900 s timeout
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(minutes=3))
    try:
        data = torch.load(case_file)
        results = {}
        for name, case in data["cases"].items():
            model = TinySegNet(data["classes"]).double()
            model.load_state_dict(data["state"])
            ddp = DistributedDataParallel(model)
            lo, hi = case["splits"][rank]
            x, target, tags = data["x"][lo:hi], case["target"][lo:hi], data["tags"][lo:hi]
            results[name] = step_gradients(ddp, x, target, tags, data["prior"], case["opts"])
        if rank == 0:
            torch.save(results, out_file + ".tmp")
            os.replace(out_file + ".tmp", out_file)
        # Teardown starts only when both ranks are past their last collective: a gloo worker
        # aborted once (SIGABRT, loaded 2-core machine, 2026-12-03; not reproduced in 8 runs
        # since), and a peer closing its connections during a pending receive is a likely cause.
        dist.barrier()
    finally:
        dist.destroy_process_group()
