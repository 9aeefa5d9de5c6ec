// g++ does not define the ISA macros for a target pragma; sleef.h and at::vec test them.
// Included right after `#pragma GCC target(...)` with at least avx2,fma,f16c.
#pragma once

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
