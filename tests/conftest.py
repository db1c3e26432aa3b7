import os
import sys

sys.path.insert(0, os.path.dirname(__file__))  # tests/helpers.py

import pytest  # noqa: E402
import torch  # noqa: E402


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
