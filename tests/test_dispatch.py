import torch

import ocr_kernels
from ocr_kernels._dispatch import resolve_backend


def test_available_backends_lists_every_backend_with_a_reason():
    status = ocr_kernels.available_backends()
    assert set(status) == {"reference", "triton", "cpu", "cuda"}
    assert status["reference"].available
    for name, st in status.items():
        assert isinstance(st.reason, str) and st.reason
        if not st.available:
            assert st.reason != "available"
    if not torch.cuda.is_available():
        assert not status["cuda"].available


def test_auto_never_picks_triton_for_cpu_tensors():
    x = torch.zeros(2, 3, 4)
    assert resolve_backend("auto", x, op="t") in ("cpu", "reference")
    assert resolve_backend("auto", x.double(), op="t", implemented=("reference",)) == "reference"
