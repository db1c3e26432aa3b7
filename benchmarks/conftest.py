"""pytest-benchmark suites: `pytest benchmarks/ --benchmark-only` (same cases as `ocr-kernels bench`)."""
import pytest

from ocr_kernels import BackendUnavailableError


@pytest.fixture(autouse=True)
def _skip_unavailable_backend():
    # A backend that refuses the call at run time (dtype, device) is skipped, not failed.
    try:
        yield
    except BackendUnavailableError as exc:  # pragma: no cover - pytest reports it as a skip
        pytest.skip(str(exc))
