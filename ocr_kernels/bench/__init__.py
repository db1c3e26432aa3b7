"""The benchmark harness behind ``python -m ocr_kernels bench`` and the pytest-benchmark suites.

shapes (what is measured), inputs (realistic random inputs), impls (each op's backends and
anchors), cases (op x shape x dtype x scenario x pass x implementation, with the bytes each must
move), floor (copy bandwidth and the arithmetic of GB/s and % of floor), timing (CPU and GPU
timers, peak memory), report (table and JSON), plot (PNG), cli (the command).
"""
