# The two commands of the README: `make bench` (the main job) and `make test` (the whole suite).
# Each creates .venv with the pinned environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Triton kernels run on the CPU through the interpreter in the test suite (CI has no GPU).
TEST_ENV ?= TRITON_INTERPRET=1
PYTEST_ARGS ?= -n 2 --timeout=900

.PHONY: test bench demo venv clean cuda-build-check gpu-rehearsal

venv: $(VENV)/.installed

$(VENV)/.installed: requirements-test.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-test.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

test: venv
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS) tests

# The CUDA extension built and linked against a CUDA torch (its own venv, .venv-cuda), no GPU needed.
cuda-build-check:
	PYTHON=$(PYTHON) bash .ci/cuda-build-check

# The GPU runner end to end on this machine: stages that need CUDA say "skipped: no CUDA".
gpu-rehearsal: venv
	PYTHON=$(PY) bash benchmarks/gpu/run.sh --rehearsal --out gpu-rehearsal-out

bench: venv
	$(PY) -m ocr_kernels bench --quick --out bench-out

demo: venv
	$(PY) -m ocr_kernels demo

clean:
	rm -rf $(VENV) .venv-cuda build *.egg-info bench-out gpu-rehearsal-out
