#!/usr/bin/env bash
# The GPU runner: build, GPU tests and the full benchmark in ONE run of at most 10 minutes, on a
# machine with a CUDA GPU, no network and a preinstalled torch/triton (not our pinned venv).
#
#   benchmarks/gpu/run.sh [OUT_DIR]          (OUT_DIR defaults to $OUT, else ./gpu-out)
#
# Writes to OUT_DIR: log.txt (everything), summary.txt (each stage's exit code and time),
# tests-gpu.xml and tests.xml (junit of the GPU tests) and <device>-<date>.{json,png,txt,md} (the
# benchmark, named as benchmarks/results/ keeps them; at most 8 files, the device tool's limit). Each stage runs
# under `timeout`; a stage that fails or runs out of time does not stop the later ones, and the
# benchmark writes what it measured even when its time runs out.
#
# Environment knobs: PYTHON (default python3), RUN_BUDGET_S (the whole run, default 570),
# STAGES (default "env build tests bench"; e.g. STAGES=bench gives the benchmark the whole
# budget), BENCH_ARGS (extra arguments of `python -m ocr_kernels bench`),
# OCR_HYPOTHESIS_EXAMPLES (default 30 here), OCR_BENCH_GIT_COMMIT (the commit to record in the JSON
# when the tree was copied without .git).
set -u
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
OUTDIR="${1:-${OUT:-$REPO/gpu-out}}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
PY="${PYTHON:-python3}"
BUDGET="${RUN_BUDGET_S:-570}"
STAGES="${STAGES:-env build tests bench}"
LOG="$OUTDIR/log.txt"
SUMMARY="$OUTDIR/summary.txt"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export OCR_HYPOTHESIS_EXAMPLES="${OCR_HYPOTHESIS_EXAMPLES:-30}"
unset TRITON_INTERPRET  # real kernels on the GPU
cd "$REPO"
START=$(date +%s)
: >"$LOG"
: >"$SUMMARY"

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
has_stage() { case " $STAGES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# stage NAME SECONDS CMD...: run CMD under `timeout`, log it, record its exit code and time.
stage() {
    local name=$1 limit=$2; shift 2
    local rem; rem=$(left)
    (( limit > rem - 5 )) && limit=$(( rem - 5 ))
    if (( limit < 10 )); then
        echo "$name: not run (no time left)" | tee -a "$SUMMARY"
        return 0
    fi
    echo "== [$(date -u +%T)] stage $name (at most ${limit}s): $*" | tee -a "$LOG"
    local t0; t0=$(date +%s)
    timeout -k 15 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    local msg="$name: rc=$rc in $(( $(date +%s) - t0 ))s"
    (( rc == 124 || rc == 137 )) && msg="$msg (TIMED OUT after ${limit}s)"
    echo "$msg" | tee -a "$SUMMARY" | tee -a "$LOG"
    return 0
}

if has_stage env; then
    stage env 30 bash -c "nvidia-smi; $PY -c 'import sys, torch; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0)); import triton; print(\"triton\", triton.__version__)'; git -C '$REPO' log -1 --oneline || true"
fi

if has_stage build; then
    stage build 150 $PY -m ocr_kernels.build_ext
fi

if has_stage tests; then
    # The gpu-marked tests, then the backend matrices (they run triton/cuda on CUDA tensors when a
    # GPU is there).
    stage tests-gpu 90 $PY -m pytest -m gpu tests -q -rs -p no:cacheprovider --junitxml="$OUTDIR/tests-gpu.xml"
    stage tests-backends 120 $PY -m pytest tests/ocr/test_backends.py tests/seg tests/wood -q -rs -k "not cpu" -p no:cacheprovider -n 4 --junitxml="$OUTDIR/tests.xml"
fi

if has_stage bench; then
    rem=$(left)
    # The bench stops starting cases 45 s before its stage ends, and writes what it has if killed.
    # shellcheck disable=SC2086
    stage bench $(( rem - 5 )) $PY -m ocr_kernels bench --full --out "$OUTDIR" \
        --time-budget $(( rem - 60 )) ${BENCH_ARGS:-}
fi

echo "== done in $(( $(date +%s) - START ))s" | tee -a "$SUMMARY"
echo "---- summary"; cat "$SUMMARY"
echo "---- benchmark table (head)"
found=0
for f in "$OUTDIR"/*.txt; do
    case "$f" in */log.txt | */summary.txt) ;; *) [ -e "$f" ] && { head -c 8000 "$f"; found=1; } ;; esac
done
(( found )) || echo "(no table: see log.txt)"
exit 0
