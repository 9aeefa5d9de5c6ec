// AVX2 + FMA build of the CPU kernels; selected at run time when the CPU has them.
#if defined(__x86_64__) && defined(__GNUC__)
#include "isa_prelude.h"
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
// g++ does not define the ISA macros for a target pragma; sleef.h and at::vec test them.
#ifndef __AVX__
#define __AVX__ 1
#endif
#ifndef __AVX2__
#define __AVX2__ 1
#endif
#ifndef __FMA__
#define __FMA__ 1
#endif
#ifndef __F16C__
#define __F16C__ 1
#endif
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "kernel_impl.h"
#pragma GCC pop_options
#endif
