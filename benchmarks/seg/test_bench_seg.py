"""seg_ocr_loss: fused vs separate (F.cross_entropy + ocr_loss) vs eager and torch.compile."""
import pytest

from ocr_kernels.bench.suite import cases, run_case

CASES = cases("seg_ocr_loss")


@pytest.mark.parametrize("w, pass_, impl", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_seg_ocr_loss(benchmark, w, pass_, impl):
    benchmark.group = f"seg_ocr_loss {w.shape} {w.dtype} {w.scenario_name} {pass_}"
    run_case(benchmark, w, pass_, impl)
