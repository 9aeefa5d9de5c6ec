// Interface between the dispatcher glue (ops_cpu.cpp) and the per-ISA kernel translation units.
// No torch headers: only raw pointers and the shared coefficient structs.
#pragma once

#include <cstdint>

#include "../common/qlab_types.h"

namespace qlab::cpu {

// Fixed, thread-count independent unit of work and of the reduction order: every chunk yields one
// partial per reduction, and the partials are summed in chunk order.
constexpr int64_t CHUNK = 4096;
// Lanes of the per-chunk accumulators, the same for every ISA (16 = one AVX-512 vector, two AVX2 or
// default ones), so the reduction bits do not depend on which ISA ran.
constexpr int LANES = 16;
// Accumulate this many elements per lane in fp32 before folding into the fp64 chunk accumulator:
// at most 63 fp32 roundings per lane, well inside the 1e-5 relative error the contract allows.
constexpr int FLUSH_GROUPS = 64;

struct Args : SegmentArgs {
  bool stream;        // non-temporal fp32 stores (large segment, 64-byte aligned outputs)
  Step st;            // the `sc` scalars, read once on the host
};

// Smallest segment streamed when QLAB_FUSED_CPU_STREAM=1: buffers far larger than the caches.
constexpr int64_t STREAM_MIN = int64_t(1) << 21;

// Process chunks [cb, ce); probe writes RED_LEN doubles per chunk at part + chunk * RED_LEN.
using ProbeFn = void (*)(const Args&, int64_t cb, int64_t ce, double* part);
using UpdateFn = void (*)(const Args&, int64_t cb, int64_t ce);

struct Kernels {
  ProbeFn probe;
  UpdateFn update;
  const char* isa;
};

namespace DEFAULT { Kernels kernels(); }
#if defined(__x86_64__) && defined(__GNUC__)
#define QLAB_HAVE_X86_KERNELS 1
namespace AVX2 { Kernels kernels(); }
namespace AVX512 { Kernels kernels(); }
#endif

}  // namespace qlab::cpu
