#!/usr/bin/env bash
# The GPU runner: one call of at most 9 minutes on a machine with a CUDA GPU, no network and a
# preinstalled torch/triton (not our pinned venv): build, the `gpu` test set, the --gpu-preset
# benchmark, and the static model's PREDICTION beside each Triton timing.
#
#   benchmarks/gpu/run.sh [--rehearsal] [--out DIR]        (DIR: $OUT, else ./gpu-out)
#   benchmarks/gpu/run.sh --stamp                          (before copying a tree without .git)
#
# Stages (each under `timeout`, so the whole run ends by RUN_BUDGET_S, default 530 s; a stage
# that fails or runs out of time does not stop the later ones):
#   env      python, torch, triton, GPU, the commit
#   static   bench --static for the cases the bench times (CPU only: in the background from the
#            start, beside build and tests)
#   build    the C++/CUDA extension (CUDA toolkit found as the package finds it, find_cuda_home)
#   tests    pytest -m gpu: every backend on CUDA tensors vs the float64 reference, bf16,
#            channels_last, offsets past 2^31, CUDA graph capture, no host sync
#   bench    bench --gpu-preset: the target shapes with eager/compile/compile-max, then W-OoD
#            and K-means; stops starting cases 45 s before its limit and keeps what it measured
#   compare  measured beside predicted (appended to summary.txt)
# --rehearsal runs the same stages on a machine without CUDA: the stages that need CUDA say
# "skipped: no CUDA", the static model runs its smoke cases and the bench a tiny CPU run, so
# every other step (paths, options, outputs) is exercised. CI runs it.
#
# Outputs (at most 8 files, whenever the run stops): log.txt, summary.txt, tests-gpu.xml,
# bench.json, bench.md, bench.txt, bench.png, static-sm90.json.
# The commit: OCR_BENCH_GIT_COMMIT, else `git rev-parse HEAD`, else benchmarks/gpu/COMMIT
# (written by --stamp; the device copies untracked files, not .git).
# Knobs: PYTHON (default python3), RUN_BUDGET_S, BENCH_ARGS (extra bench arguments),
# OCR_HYPOTHESIS_EXAMPLES (default 30 here).
set -u
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
REHEARSAL=0
OUTDIR="${OUT:-$REPO/gpu-out}"
while (( $# )); do
    case "$1" in
        --rehearsal) REHEARSAL=1 ;;
        --out) OUTDIR="$2"; shift ;;
        --stamp)
            c="$(git -C "$REPO" rev-parse HEAD)" || exit 1
            [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no)" ] && c="$c+dirty"
            echo "$c" >"$REPO/benchmarks/gpu/COMMIT"
            echo "wrote benchmarks/gpu/COMMIT: $c"
            exit 0 ;;
        *) OUTDIR="$1" ;;
    esac
    shift
done
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
PY="${PYTHON:-python3}"
BUDGET="${RUN_BUDGET_S:-530}"
SLOW=1  # the rehearsal runs on a 2-core CI machine: its stages get 3x the time
(( REHEARSAL )) && { BUDGET="${RUN_BUDGET_S:-1200}"; SLOW=3; }
LOG="$OUTDIR/log.txt"
SUMMARY="$OUTDIR/summary.txt"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export OCR_HYPOTHESIS_EXAMPLES="${OCR_HYPOTHESIS_EXAMPLES:-30}"
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-$WORK/triton-cache}"
unset TRITON_INTERPRET  # real kernels on the GPU
cd "$REPO"
START=$(date +%s)
: >"$LOG"
: >"$SUMMARY"

if [ -z "${OCR_BENCH_GIT_COMMIT:-}" ]; then
    c="$(git -C "$REPO" rev-parse HEAD 2>/dev/null)"
    if [ -n "$c" ]; then
        [ -n "$(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null)" ] && c="$c+dirty"
    elif [ -f "$REPO/benchmarks/gpu/COMMIT" ]; then
        c="$(cat "$REPO/benchmarks/gpu/COMMIT") (from benchmarks/gpu/COMMIT)"
    else
        c="unknown (no .git, no benchmarks/gpu/COMMIT: run benchmarks/gpu/run.sh --stamp before copying)"
    fi
    export OCR_BENCH_GIT_COMMIT="$c"
fi
echo "commit: $OCR_BENCH_GIT_COMMIT" | tee -a "$SUMMARY"

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
note() { echo "$*" | tee -a "$SUMMARY" | tee -a "$LOG"; }

# stage NAME SECONDS CMD...: run CMD under `timeout`, log it, record its exit code and time.
stage() {
    local name=$1 limit=$2; shift 2
    local rem; rem=$(left)
    (( limit > rem - 5 )) && limit=$(( rem - 5 ))
    if (( limit < 10 )); then
        note "$name: not run (no time left)"
        return 0
    fi
    echo "== [$(date -u +%T)] stage $name (at most ${limit}s): $*" | tee -a "$LOG"
    local t0; t0=$(date +%s)
    timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
    local rc=$?
    local msg="$name: rc=$rc in $(( $(date +%s) - t0 ))s"
    (( rc == 124 || rc == 137 )) && msg="$msg (TIMED OUT after ${limit}s)"
    note "$msg"
    return 0
}

HAS_CUDA=0
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && HAS_CUDA=1
if (( ! HAS_CUDA && ! REHEARSAL )); then
    note "no CUDA device: run with --rehearsal on a machine without a GPU"
    exit 1
fi

stage env $(( 60 * SLOW )) bash -c "command -v nvidia-smi >/dev/null && nvidia-smi || echo 'nvidia-smi: skipped: no CUDA'; $PY -c 'import sys, torch; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0)); import triton; print(\"triton\", triton.__version__)'"

# The static model needs no GPU: in the background from the start (its own log, appended later).
STATIC=(--static-cases gpu --static-backends triton,cuda --static-jobs 8)
(( REHEARSAL )) && STATIC=(--static-cases smoke --static-backends triton --static-jobs 1)
( timeout -k 10 $(( $(left) - 60 )) $PY -m ocr_kernels bench --static "${STATIC[@]}" \
      --out "$WORK/static" --name static >"$WORK/static.log" 2>&1
  echo "static: rc=$? in $(( $(date +%s) - START ))s (background)" >"$WORK/static.rc" ) &
STATIC_PID=$!

if (( HAS_CUDA )); then
    stage build 200 $PY -m ocr_kernels.build_ext
else  # the CPU kernels only: the CUDA ones need a CUDA torch (CI builds them: make cuda-build-check)
    stage build-cpu 400 $PY -m ocr_kernels.build_ext
    note "build (CUDA kernels): skipped: no CUDA"
fi
# A build killed by its timeout leaves torch's build lock behind, and every later first use
# would wait on it until its own stage times out: remove it (a later use resumes the build).
if grep -qE "^build(-cpu)?: .*TIMED OUT" "$SUMMARY"; then
    find "${OCR_KERNELS_BUILD_DIR:-$HOME/.cache/ocr_kernels}" -maxdepth 2 -name lock -delete 2>/dev/null
    note "build: removed the stale build lock"
fi

# -o addopts= : no --strict-markers from pyproject (a plugin such as pytest-timeout may be absent)
XDIST=""
$PY -c "import xdist" 2>/dev/null && (( HAS_CUDA )) && XDIST="-n 4"
# shellcheck disable=SC2086
stage tests-gpu $(( 150 * SLOW )) $PY -m pytest -m gpu tests -q -rs -o addopts= -p no:cacheprovider $XDIST \
    --junitxml="$OUTDIR/tests-gpu.xml"
(( HAS_CUDA )) || note "tests-gpu: every test skipped: no CUDA (collected and run for the rehearsal)"

rem=$(left)
if (( HAS_CUDA )); then
    # shellcheck disable=SC2086
    stage bench $(( rem - 40 )) $PY -m ocr_kernels bench --gpu-preset --out "$OUTDIR" --name bench \
        --time-budget $(( rem - 90 )) ${BENCH_ARGS:-}
else
    note "bench (--gpu-preset): skipped: no CUDA; a tiny CPU run exercises the outputs instead"
    stage bench-cpu 400 $PY -m ocr_kernels bench --device cpu --shapes tiny --backends eager,triton,cpu \
        --min-time 0.01 --copy-mib 8 --threads 1 --out "$OUTDIR" --name bench ${BENCH_ARGS:-}
fi

# The static model: wait for it (it ran beside the other stages), keep its JSON, compare.
wait_s=$(( $(left) - 10 ))
(( wait_s < 1 )) && wait_s=1
for _ in $(seq "$wait_s"); do kill -0 "$STATIC_PID" 2>/dev/null || break; sleep 1; done
kill -0 "$STATIC_PID" 2>/dev/null && note "static: still running at the end (its timeout stops it)"
{ echo "== static model log"; cat "$WORK/static.log" 2>/dev/null; } >>"$LOG"
note "$(cat "$WORK/static.rc" 2>/dev/null || echo 'static: no result')"
[ -f "$WORK/static/static.json" ] && cp "$WORK/static/static.json" "$OUTDIR/static-sm90.json"
if [ -f "$OUTDIR/bench.json" ] && [ -f "$OUTDIR/static-sm90.json" ]; then
    { echo "---- measured beside predicted"
      timeout 30 $PY -m ocr_kernels.bench.compare "$OUTDIR/bench.json" "$OUTDIR/static-sm90.json"; } \
        2>&1 | tee -a "$SUMMARY" >>"$LOG"
fi

note "== done in $(( $(date +%s) - START ))s; outputs: $(ls "$OUTDIR" | tr '\n' ' ')"
echo "---- summary"; cat "$SUMMARY"
echo "---- benchmark table (head)"
if [ -f "$OUTDIR/bench.txt" ]; then head -c 8000 "$OUTDIR/bench.txt"; else echo "(no table: see log.txt)"; fi
# The rehearsal fails when a stage that must work here failed (CI runs it).
if (( REHEARSAL )); then
    bad=$(grep -E "^(env|build-cpu|tests-gpu|bench-cpu|static): rc=[1-9]" "$SUMMARY" | grep -v "tests-gpu: rc=5")
    [ -n "$bad" ] && { echo "rehearsal FAILED: $bad"; exit 1; }
    [ -f "$OUTDIR/bench.json" ] && [ -f "$OUTDIR/static-sm90.json" ] || { echo "rehearsal FAILED: outputs missing"; exit 1; }
    n=$(ls "$OUTDIR" | wc -l)
    (( n <= 8 )) || { echo "rehearsal FAILED: $n output files (at most 8)"; exit 1; }
    echo "rehearsal passed ($n output files)"
fi
exit 0
