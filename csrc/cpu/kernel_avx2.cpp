// AVX2 + FMA build of the CPU kernels; selected at run time when the CPU has them.
#if defined(__x86_64__) && defined(__GNUC__)
#include "isa_prelude.h"
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#include "isa_avx2_macros.h"
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "kernel_impl.h"
#pragma GCC pop_options
#endif
