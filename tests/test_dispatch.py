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


def test_failed_build_falls_back_for_auto_and_is_named_for_explicit(monkeypatch):
    import pytest

    from ocr_kernels import _extension
    from ocr_kernels._dispatch import BackendUnavailableError

    def broken_load(verbose=False):
        raise RuntimeError("building/loading the C++ extension failed: CalledProcessError: g++ exit 1")

    from ocr_kernels import _dispatch

    monkeypatch.setattr(_extension, "extension_unavailable_reason", lambda backend: None)
    monkeypatch.setattr(_extension, "load", broken_load)
    monkeypatch.setattr(_dispatch, "_warned", set())
    x = torch.zeros(2, 3, 4)
    with pytest.warns(RuntimeWarning, match=r"falls back from 'cpu'.*g\+\+ exit 1") as rec:
        assert resolve_backend("auto", x, op="ocr_loss") == "reference"
        assert resolve_backend("auto", x, op="ocr_loss") == "reference"
    assert len([w for w in rec if "falls back" in str(w.message)]) == 1  # once per process
    with pytest.raises(BackendUnavailableError, match=r"backend='cpu' cannot run ocr_loss.*g\+\+ exit 1"):
        resolve_backend("cpu", x, op="ocr_loss")


def test_resized_auto_on_cuda_picks_the_first_usable_fused_backend(monkeypatch):
    # resolve_resized_backend on CUDA tensors (a stand-in: no GPU here): the fused GPU backends in
    # the order cuda, triton among those that fuse; None (compose) only when none can run
    import types

    import pytest

    from ocr_kernels import _dispatch
    from ocr_kernels._dispatch import BackendUnavailableError, resolve_resized_backend

    x = types.SimpleNamespace(device=types.SimpleNamespace(type="cuda"), dtype=torch.float32)
    usable = set()
    monkeypatch.setattr(_dispatch, "unavailable_reason",
                        lambda name, t: None if name in usable else "not here")
    monkeypatch.setattr(_dispatch, "_ensure_loaded", lambda name: None)
    both, cuda_only = ("reference", "cpu", "triton", "cuda"), ("reference", "cpu", "cuda")
    assert resolve_resized_backend("auto", x, op="t", implemented=cuda_only) is None
    usable.update({"cuda", "reference"})
    assert resolve_resized_backend("auto", x, op="t", implemented=cuda_only) == "cuda"
    assert resolve_resized_backend("auto", x, op="t", implemented=both) == "cuda"
    usable.add("triton")
    assert resolve_resized_backend("auto", x, op="t", implemented=both) == "cuda"
    assert resolve_resized_backend("auto", x, op="t", implemented=cuda_only) == "cuda"
    usable.discard("cuda")  # no extension: the fused Triton kernels
    assert resolve_resized_backend("auto", x, op="t", implemented=both) == "triton"
    with pytest.raises(BackendUnavailableError, match="backend='triton' cannot run t with fused"):
        resolve_resized_backend("triton", x, op="t", implemented=cuda_only)
