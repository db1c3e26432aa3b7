"""ocr_loss: every backend beside eager and torch.compile(reference) (ocr_kernels/bench)."""
import pytest

from ocr_kernels.bench.suite import cases, run_case

CASES = cases("ocr_loss")


@pytest.mark.parametrize("w, pass_, impl", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_ocr_loss(benchmark, w, pass_, impl):
    benchmark.group = f"ocr_loss {w.shape} {w.dtype} {w.scenario_name} {pass_}"
    run_case(benchmark, w, pass_, impl)
