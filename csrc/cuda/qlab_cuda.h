// Launchers of the CUDA kernels (kernels.cu). No torch headers: raw device pointers, sizes and a
// stream, so the .cu files compile with plain nvcc; the dispatcher glue is ops_cuda.cpp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../common/qlab_types.h"

namespace qlab::cuda {

struct Launch : SegmentArgs {
  const float* sc;     // device pointer to the SC_LEN step scalars: β, α, flags are read there
};

// Rows of RED_LEN fp32 partials the probe pass writes (one per block); a function of n only, so
// the reduction order, hence the bits, is the same on every GPU.
int64_t probe_blocks(int64_t n);

// Probe pass, then the fixed-order sum of the partials into red[RED_LEN] (zeros when sc[OK] == 0).
// partials: probe_blocks(n) * RED_LEN floats of scratch.
cudaError_t launch_probe(const Launch& a, float* partials, float* red, cudaStream_t stream);
cudaError_t launch_update(const Launch& a, cudaStream_t stream);

}  // namespace qlab::cuda
