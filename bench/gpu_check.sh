#!/usr/bin/env bash
# GPU check for qlab_fused, for one short run on a GPU machine (H200; torch + Triton + nvcc
# preinstalled, no network). From the repository root:
#
#     OUT=/some/dir bash bench/gpu_check.sh        # the device tool sets $OUT itself
#
# Dry run without a GPU (every GPU phase must fail, be logged, and not stop the script):
#     SKIP_INSTALL=1 SKIP_TESTS=1 PYTHON=/work/venv/bin/python OUT=/tmp/g bash bench/gpu_check.sh
#
# Phases (each logged; a failing phase does not stop the later ones), about 6 minutes in all:
#   1. install from the working tree without network (builds the CUDA extension)      ≤ 170 s
#   2. pytest -q tests/ -k "cuda or triton" (the GPU tests; they skip elsewhere)        ≤ 110 s
#   3. sync-free steps (set_sync_debug_mode("error")), bf16 and autocast training (a smoke
#      check), CUDA-graph capture/replay                                               ≤ 60 s
#   4. python -m qlab_fused bench --device cuda: copy bandwidth, sizes up to 1e9,
#      the three training-step profiles; report + JSON + plots                           ≤ 170 s
# At most 510 s of phases: give the device tool's run timeout_s=600.
# Files under $OUT (8 at most, ≤ 2 folders deep, what the device tool returns):
#   gpu_check.log  tests.log  gpu_checks.json  bench.log
#   report/report.md  report/results.json  report/gbps.png  report/step_breakdown.png
set -u
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT/report"
LOG="$OUT/gpu_check.log"
PY="${PYTHON:-python3}"
: >"$LOG"
LAST_RC=0
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

phase() {  # phase NAME SECONDS OUTFILE CMD...: run with a time limit, log status and duration
    local name=$1 limit=$2 out=$3; shift 3
    local t0=$SECONDS rc
    log "phase $name: start (limit ${limit}s, output in ${out##*/}): $*"
    timeout --signal=TERM --kill-after=10 "$limit" "$@" >>"$out" 2>&1
    rc=$?
    log "phase $name: rc=$rc after $((SECONDS - t0))s$([ $rc -eq 124 ] && echo ' (TIMED OUT)')"
    LAST_RC=$rc
    return 0
}

log "host: $(hostname); $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
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

# 1. install (no network: no build isolation, no dependencies); Hopper only, to keep nvcc short
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"
if [ "${SKIP_INSTALL:-0}" = 1 ]; then  # local dry runs of this script
    LAST_RC=1
else
    phase install 170 "$LOG" $PY -m pip install --no-build-isolation --no-deps --no-index -e .
fi
if [ "$LAST_RC" -ne 0 ]; then  # still run from the tree: torch and triton backends need no build
    log "install failed: running from the working tree (PYTHONPATH), without the extension"
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
$PY -m qlab_fused backends 2>&1 | tee -a "$LOG"

# 2. tests
# The GPU paths only by default (ids/markers with cuda or triton): the CPU rest runs in CI and
# would not fit the time budget. TESTS_K="" runs everything.
TESTS_K="${TESTS_K-cuda or triton}"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    if [ -n "$TESTS_K" ]; then
        phase tests 110 "$OUT/tests.log" $PY -m pytest -q -p no:cacheprovider tests/ -k "$TESTS_K"
    else
        phase tests 110 "$OUT/tests.log" $PY -m pytest -q -p no:cacheprovider tests/
    fi
fi
tail -n 15 "$OUT/tests.log" | tee -a "$LOG"

# 3. host-sync and CUDA-graph checks
phase sync_graph 60 "$LOG" $PY bench/gpu_checks.py "$OUT/gpu_checks.json"

# 4. benchmarks: copy bandwidth, microbenchmarks up to 1e9 elements, training-step profiles
phase bench 170 "$OUT/bench.log" $PY -m qlab_fused bench --device cuda --budget 0.3 --steps 10 \
    --out "$OUT/report"
grep -A 40 "^headline" "$OUT/bench.log" | head -n 30 | tee -a "$LOG"

log "done; files:"
find "$OUT" -type f | sort | tee -a "$LOG"
exit 0
