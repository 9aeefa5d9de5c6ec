// AVX-512 (F/BW/VL/DQ, as torch's AVX512 capability) build of the CPU kernels.
#if defined(__x86_64__) && defined(__GNUC__)
#include "isa_prelude.h"
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")
#include "isa_avx2_macros.h"
// ... and the AVX-512 ones, for the same reason.
#ifndef __AVX512F__
#define __AVX512F__ 1
#endif
#ifndef __AVX512BW__
#define __AVX512BW__ 1
#endif
#ifndef __AVX512VL__
#define __AVX512VL__ 1
#endif
#ifndef __AVX512DQ__
#define __AVX512DQ__ 1
#endif
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#include "kernel_impl.h"
#pragma GCC pop_options
#endif
