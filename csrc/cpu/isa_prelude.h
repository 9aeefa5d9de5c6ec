// Headers that at::vec pulls in from outside ATen/cpu/vec, included *before* an ISA's
// `#pragma GCC target` so that their inline functions are compiled for the baseline ISA only.
// Otherwise the linker could keep an AVX-512 copy of, say, a c10::Half helper and call it from the
// default path on a CPU without AVX-512 (one definition rule across the ISA translation units).
#pragma once

#include <ATen/AccumulateType.h>
#include <ATen/NumericUtils.h>
#include <ATen/native/Math.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/complex.h>
#include <c10/util/irange.h>
#include <c10/util/qint32.h>
#include <c10/util/qint8.h>
#include <c10/util/quint2x4.h>
#include <c10/util/quint4x2.h>
#include <c10/util/quint8.h>
#include <c10/util/Float8_e4m3fn.h>
#include <c10/util/Float8_e5m2.h>
