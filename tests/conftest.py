import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_configure(config):
    # yapf (imported by mmengine's config module) regenerates its grammar pickles in
    # ~/.cache/YAPF whenever they are older than its freshly installed grammar files -- every new
    # venv -- and renames each into place before flushing it: two xdist workers importing mmseg
    # at collection race on it, one reads an empty pickle (EOFError, "Different tests were
    # collected between gw0 and gw1"; CI on 2026-12-03). The controller imports it once before
    # the workers start.
    if not hasattr(config, "workerinput"):
        try:
            import yapf.yapflib.yapf_api  # noqa: F401
        except Exception:  # not installed, or broken: the mmseg tests report it themselves
            pass


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # Fresh random inputs each run, but reproducible from the printed seed when a test fails.
    seed = int.from_bytes(os.urandom(4), "little") if os.environ.get("OCR_TEST_SEED") is None else int(os.environ["OCR_TEST_SEED"])
    torch.manual_seed(seed)
    request.node.user_properties.append(("seed", seed))
    yield


def pytest_runtest_makereport(item, call):
    if call.when == "call" and call.excinfo is not None:
        for k, v in item.user_properties:
            if k == "seed":
                item.add_report_section("call", "seed", f"reproduce with OCR_TEST_SEED={v}")
