#!/usr/bin/env bash
# Compile every csrc/**/*.cu with plain nvcc for sm_80 and sm_90 (no torch headers needed), so CUDA
# kernels are checked on every CI run even without a GPU or a CUDA build of torch.
# Usage: .ci/compile_cuda.sh   (NVCC=/path/to/nvcc to override; OUT_DIR for the objects)
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
OUT_DIR="${OUT_DIR:-$(mktemp -d /tmp/qlab_cuda.XXXXXX)}"
if [ ! -x "$NVCC" ]; then
  echo "compile_cuda: nvcc not found (set NVCC)" >&2
  exit 2
fi
mapfile -t SOURCES < <(find csrc -name '*.cu' | sort)
if [ "${#SOURCES[@]}" -eq 0 ]; then
  echo "compile_cuda: no .cu files under csrc/" >&2
  exit 1
fi
echo "compile_cuda: $("$NVCC" --version | tail -n 1)"
# Same numerics flags as setup.py: no fast math, no FMA contraction.
FLAGS=(-std=c++17 -O3 --fmad=false -Xcompiler=-Wall -Werror=all-warnings -Icsrc
       -gencode=arch=compute_80,code=sm_80 -gencode=arch=compute_90,code=sm_90)
for src in "${SOURCES[@]}"; do
  obj="$OUT_DIR/$(echo "$src" | tr '/' '_').o"
  echo "compile_cuda: $NVCC ${FLAGS[*]} -c $src -o $obj"
  "$NVCC" "${FLAGS[@]}" -c "$src" -o "$obj"
done
echo "compile_cuda: OK, ${#SOURCES[@]} file(s) for sm_80 and sm_90 in $OUT_DIR"
