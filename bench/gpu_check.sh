#!/usr/bin/env bash
# GPU check for qlab_fused, for one short run on a GPU machine (H200; torch + Triton + nvcc
# preinstalled, no network). From the repository root:
#
#     OUT=/some/dir bash bench/gpu_check.sh        # the device tool sets $OUT itself
#
# Dry run without a GPU (every GPU phase must fail, be logged, and not stop the script):
#     PHASES="tests_kernels sync_graph" PYTHON=/work/venv/bin/python OUT=/tmp/g TOTAL_S=120 bash bench/gpu_check.sh
#
# Phases, most important first; each is logged, a failing one does not stop the later ones, and
# each runs under min(its own limit, what is left of TOTAL_S, default 555 s): the limits add up to
# more than that, so a full run may cut the last phase short (measured on an H200, 2026-11-30:
# install 28 s, tests_triton 48 s, sync_graph 33 s, bench_focus 56 s, probe_sweep 14 s,
# bench_full 55 s; tests_kernels needed ~170 s). PHASES="a b ..." runs a subset (default: all, in
# this order):
#   install          pip install from the working tree, no network (builds the CUDA extension)  ≤ 90 s
#   tests_triton     tests/test_triton_backend.py on CUDA (Triton autotuning on)                 ≤ 60 s
#   tests_kernels    the other kernel tests on CUDA: C++/CUDA and pass level (autotuning off,
#                    QLAB_FUSED_TRITON_AUTOTUNE=0: each new size would cost a tuning round)     ≤ 170 s
#   sync_graph       sync-free steps (set_sync_debug_mode("error")), bf16 and autocast training
#                    (a smoke check), CUDA-graph capture/replay                                 ≤ 45 s
#   bench_focus      benchmark at 1e8 and 1e9 elements (the issue-4/5 ratios and GB/s)          ≤ 100 s
#   probe_sweep      launch configurations of the Triton probe pass (bench/triton_probe_configs) ≤ 40 s
#   tests_optimizer  the optimizer tests on CUDA (~650 cases: the defaults on every backend,
#                    every rule on the torch backend; autotuning off)                          ≤ 150 s
#   bench_full       small sizes, many tensors, the three training-step profiles               ≤ 100 s
# Give the device tool's run timeout_s = TOTAL_S + 20 and carry=[".whl"] (expecttest, below). The
# tree it sends must stay under 64 MiB: move bench/quality/results (≈ 130 MB of quality runs, not
# needed here) out of the checkout for the call, and back after it.
# Pytest runs under xdist where the machine has it (the H200 image does), one line per test, so a
# cut-short phase still says which tests ran.
# Files under $OUT (8 at most, ≤ 2 folders down, what the device tool returns):
#   gpu_check.log  tests_kernels.log  tests_optimizer.log  gpu_checks.json  bench.log
#   probe_configs.json  focus/results.json  report/results.json
set -u
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT/report" "$OUT/focus"
LOG="$OUT/gpu_check.log"
PY="${PYTHON:-python3}"
END=$((SECONDS + ${TOTAL_S:-555}))
PHASES=" ${PHASES:-install tests_triton tests_kernels sync_graph bench_focus probe_sweep tests_optimizer bench_full} "
: >"$LOG"
LAST_RC=0
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

phase() {  # phase NAME SECONDS OUTFILE CMD...: run with a time limit, log status and duration
    local name=$1 limit=$2 out=$3; shift 3
    local left=$((END - SECONDS - 3)) t0=$SECONDS rc
    if [[ "$PHASES" != *" $name "* ]]; then
        LAST_RC=126
        return 0
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        log "phase $name: skipped (no time left)"
        LAST_RC=125
        return 0
    fi
    log "phase $name: start (limit ${limit}s, output in ${out##*/}): $*"
    # timeout signals the command's whole process group (pytest's xdist workers too)
    timeout --signal=TERM --kill-after=5 "$limit" "$@" >>"$out" 2>&1
    rc=$?
    log "phase $name: rc=$rc after $((SECONDS - t0))s$([ $rc -eq 124 ] && echo ' (TIMED OUT)')"
    LAST_RC=$rc
    return 0
}

log "host: $(hostname); $(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader 2>&1 | head -1)"
$PY - >>"$LOG" 2>&1 <<'EOF'
import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "available", torch.cuda.is_available())
try:
    import triton; print("triton", triton.__version__)
except Exception as e:
    print("triton: not importable:", e)
EOF
nvcc --version 2>&1 | tail -1 >>"$LOG"

# install (no network: no build isolation, no dependencies); Hopper only, to keep nvcc short
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"
phase install 90 "$LOG" $PY -m pip install --no-build-isolation --no-deps --no-index -e .
if [ "$LAST_RC" -ne 0 ]; then  # still run from the tree: torch and triton backends need no build
    log "install failed or not run: running from the working tree (PYTHONPATH), without a new build"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
$PY -m qlab_fused backends 2>&1 | tee -a "$LOG"
# torch.library.opcheck needs expecttest, which the H200 image lacks: carried as a wheel in .whl/
if ! $PY -c "import expecttest" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        >>"$LOG" 2>&1 && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

# tests: the GPU paths only (ids with cuda or triton); the CPU rest runs in CI
PYTEST=($PY -m pytest -v -p no:cacheprovider -rfE --tb=short --durations=10)
if $PY -c "import xdist" 2>/dev/null; then PYTEST+=(-n "${WORKERS:-14}"); fi
if $PY -c "import pytest_timeout" 2>/dev/null; then PYTEST+=(--timeout 120); fi
KERNEL_TESTS=(tests/test_cpp_backend.py tests/test_passes.py tests/test_bf16_probe.py
              tests/test_flat_and_state.py)
summary() {  # the verdict lines of a pytest log
    [ -f "$1" ] || return 0
    grep -E "^(FAILED|ERROR)|[0-9]+ (passed|failed|error)" "$1" | tail -n 25 | tee -a "$LOG"
    log "$(basename "$1"): $(grep -c ' PASSED' "$1") PASSED lines, $(grep -c ' FAILED' "$1") FAILED lines, $(grep -c ' SKIPPED' "$1") SKIPPED lines"
}
phase tests_triton 60 "$OUT/tests_kernels.log" "${PYTEST[@]}" tests/test_triton_backend.py
phase tests_kernels 170 "$OUT/tests_kernels.log" env QLAB_FUSED_TRITON_AUTOTUNE=0 \
    "${PYTEST[@]}" "${KERNEL_TESTS[@]}" -k "cuda or triton"
summary "$OUT/tests_kernels.log"

# host-sync and CUDA-graph checks
phase sync_graph 45 "$LOG" $PY bench/gpu_checks.py "$OUT/gpu_checks.json"

# focused benchmark: the large sizes that the issue goals are measured at
phase bench_focus 100 "$OUT/bench.log" $PY -m qlab_fused bench --device cuda --sizes 1e8,1e9 \
    --many 0 --models '' --budget 1 --out "$OUT/focus"
[ -f "$OUT/bench.log" ] && grep -A 40 "^headline" "$OUT/bench.log" | head -n 30 | tee -a "$LOG"

# the probe pass's launch configurations
phase probe_sweep 40 "$LOG" $PY bench/triton_probe_configs.py "$OUT/probe_configs.json"

# the optimizer tests
phase tests_optimizer 150 "$OUT/tests_optimizer.log" env QLAB_FUSED_TRITON_AUTOTUNE=0 \
    "${PYTEST[@]}" tests/test_optimizer.py -k "cuda or triton"
summary "$OUT/tests_optimizer.log"

# full benchmark at the small sizes, many tensors and the training-step profiles
phase bench_full 100 "$OUT/bench.log" $PY -m qlab_fused bench --device cuda --sizes 1e5,1e6,1e7 \
    --budget 0.3 --steps 10 --out "$OUT/report"

# keep what comes back within the device tool's 8 files (report.md and the plots are redrawn here
# from results.json: qlab_fused.benchmarking.report.write_all)
rm -f "$OUT"/focus/*.png "$OUT"/focus/report.md "$OUT"/report/*.png "$OUT"/report/report.md
log "done; files:"
find "$OUT" -type f | sort | tee -a "$LOG"
exit 0
