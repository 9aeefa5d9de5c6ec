// Baseline-ISA build of the CPU kernels (the generic at::vec::Vectorized, auto-vectorised).
#define CPU_CAPABILITY DEFAULT
#define CPU_CAPABILITY_DEFAULT
#include "kernel_impl.h"
