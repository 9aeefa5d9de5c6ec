// The CPU kernels, compiled once per ISA: the including file defines CPU_CAPABILITY (DEFAULT, AVX2,
// AVX512) and the matching CPU_CAPABILITY_* macro, as torch's own kernels are built.
//
// Elements are processed in groups of LANES = 16 (1, 2 or 2 vectors for AVX-512, AVX2, default).
// Every element goes through the same fp32 operations in the vector body and in the scalar tail
// (setup.py builds with -ffp-contract=off), so results do not depend on where an element falls, on
// the thread count or on the ISA.
#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <type_traits>

// Vector overloads of the helpers qlab_math.h uses; declared before it is included, in the same
// (per-ISA) namespace as its scalar ones so that neither hides the other.
#define QLAB_MATH_NS CPU_CAPABILITY
namespace qlab {
inline namespace QLAB_MATH_NS {
using Vec = at::vec::Vectorized<float>;
#if defined(CPU_CAPABILITY_AVX512)
// A native k-mask: Vectorized's compare + blendv round-trip through a vector mask (3 extra ops).
struct Mask16 {
  __mmask16 k;
};
inline Mask16 is_fin(const Vec& x) {
  return {_mm512_cmp_ps_mask(__m512(x - x), _mm512_setzero_ps(), _CMP_EQ_OQ)};
}
inline Vec sel(Mask16 m, const Vec& a, const Vec& b) {
  return Vec(_mm512_mask_blend_ps(m.k, __m512(b), __m512(a)));
}
#else
inline Vec is_fin(const Vec& x) { return (x - x) == Vec(0.0f); }
#endif
inline Vec sel(const Vec& m, const Vec& a, const Vec& b) { return Vec::blendv(b, a, m); }
inline Vec vsqrt(const Vec& x) { return x.sqrt(); }
}  // namespace QLAB_MATH_NS
}  // namespace qlab

#include "../common/qlab_math.h"
#include "cpu_kernels.h"

namespace qlab::cpu::CPU_CAPABILITY {
namespace {

constexpr int VS = Vec::size();
constexpr int NV = LANES / VS;
static_assert(LANES % VS == 0, "a lane group must be a whole number of vectors");

template <class W>
inline void load_group(const W* p, Vec* v) {
  for (int k = 0; k < NV; ++k) {
    if constexpr (std::is_same_v<W, float>) {
      v[k] = Vec::loadu(p + k * VS);
    } else {
      at::vec::load_to_float<W>(p + k * VS, v[k]);
    }
  }
}

template <class W>
inline void store_group(W* p, const Vec* v) {
  if constexpr (std::is_same_v<W, float>) {
    for (int k = 0; k < NV; ++k) v[k].store(p + k * VS);
  } else if constexpr (NV == 2) {
    at::vec::convert_from_float<W>(v[0], v[1]).store(p);
  } else {
    for (int k = 0; k < NV; ++k) at::vec::convert_from_float<W>(v[k], v[k]).store(p + k * VS, VS);
  }
}

// Non-temporal stores of 16 fp32 lanes (64-byte aligned p) for segments far larger than the caches:
// they skip the read-for-ownership of each written line, a third of a pass's traffic. The caller
// fences before the results are read by another thread.
template <bool NT>
inline void store_f32(float* p, const Vec* v) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (NT) {
    _mm512_stream_ps(p, __m512(v[0]));
    return;
  }
#elif defined(CPU_CAPABILITY_AVX2)
  if constexpr (NT) {
    for (int k = 0; k < NV; ++k) _mm256_stream_ps(p + k * VS, __m256(v[k]));
    return;
  }
#endif
  store_group(p, v);
}

template <class W, bool NT>
inline void store_work(W* p, const Vec* v) {
  if constexpr (std::is_same_v<W, float>) {
    store_f32<NT>(p, v);
  } else {
    store_group(p, v);
  }
}

inline void fence_streams() {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  _mm_sfence();
#endif
}

template <class W>
inline float load1(const W* p) { return static_cast<float>(*p); }
template <class W>
inline void store1(W* p, float x) { *p = static_cast<W>(x); }

template <int KIND, class W, class G, bool NT>
void probe_typed(const Args& args, int64_t cb, int64_t ce, double* part) {
  // A local copy: stores through the float buffers could alias the coefficients of `args`, which
  // would make the compiler reload and re-broadcast every constant in every iteration.
  const Args a = args;
  W* work = static_cast<W*>(a.work);
  const G* grad = static_cast<const G*>(a.grad);
  for (int64_t ch = cb; ch < ce; ++ch) {
    const int64_t b = ch * CHUNK, e = std::min(a.n, b + CHUNK);
    double dacc[RED_LEN][LANES] = {};
    Vec acc[RED_LEN][NV];
    for (auto& row : acc) for (auto& x : row) x = Vec(0.0f);
    alignas(64) float lane[RED_LEN][LANES];
    auto fold = [&]() {
      for (int j = 0; j < RED_LEN; ++j)
        for (int l = 0; l < LANES; ++l) { dacc[j][l] += double(lane[j][l]); lane[j][l] = 0.0f; }
    };
    auto spill = [&]() {
      for (int j = 0; j < RED_LEN; ++j)
        for (int k = 0; k < NV; ++k) { acc[j][k].store(&lane[j][k * VS]); acc[j][k] = Vec(0.0f); }
    };
    int64_t i = b;
    int groups = 0;
    for (; i + LANES <= e; i += LANES) {
      Vec th[NV], g[NV], s0[NV], s1[NV], out[NV];
      load_group(a.master + i, th);
      load_group(grad + i, g);
      if (KIND != KIND_SGD) load_group(a.s0 + i, s0);
      if (KIND == KIND_ADAM) load_group(a.s1 + i, s1);
      for (int k = 0; k < NV; ++k) {
        Vec r[RED_LEN];
        out[k] = probe_elem<KIND>(a.c, a.st, a.dir, th[k], g[k], s0[k], s1[k], r);
        for (int j = 0; j < RED_LEN; ++j) acc[j][k] = acc[j][k] + r[j];
      }
      store_work<W, NT>(work + i, out);
      if (KIND != KIND_SGD) store_f32<NT>(a.s0 + i, s0);
      if (KIND == KIND_ADAM) store_f32<NT>(a.s1 + i, s1);
      if (++groups == FLUSH_GROUPS) { spill(); fold(); groups = 0; }
    }
    spill();
    for (; i < e; ++i) {  // scalar tail: same operations, same lane as the vector body would use
      float s0 = KIND != KIND_SGD ? a.s0[i] : 0.0f, s1 = KIND == KIND_ADAM ? a.s1[i] : 0.0f;
      float r[RED_LEN];
      float out = probe_elem<KIND>(a.c, a.st, a.dir, a.master[i], load1(grad + i), s0, s1, r);
      store1(work + i, out);
      if (KIND != KIND_SGD) a.s0[i] = s0;
      if (KIND == KIND_ADAM) a.s1[i] = s1;
      for (int j = 0; j < RED_LEN; ++j) lane[j][(i - b) % LANES] += r[j];
    }
    fold();
    for (int j = 0; j < RED_LEN; ++j) {
      double t = 0.0;
      for (int l = 0; l < LANES; ++l) t += dacc[j][l];
      part[ch * RED_LEN + j] = t;
    }
  }
  if (NT) fence_streams();
}

template <int KIND, class W, class G, bool NT>
void update_typed(const Args& args, int64_t cb, int64_t ce) {
  const Args a = args;  // see probe_typed
  W* work = static_cast<W*>(a.work);
  const G* grad = static_cast<const G*>(a.grad);
  const int64_t b = cb * CHUNK, e = std::min(a.n, ce * CHUNK);
  int64_t i = b;
  for (; i + LANES <= e; i += LANES) {
    Vec x[NV], g[NV], s0[NV], s1[NV], out[NV];
    load_group(a.master + i, x);
    if (a.load_grad) {
      load_group(grad + i, g);
    } else {
      for (auto& v : g) v = Vec(0.0f);
    }
    if (KIND != KIND_SGD) load_group(a.s0 + i, s0);
    if (KIND == KIND_ADAM) load_group(a.s1 + i, s1);
    for (int k = 0; k < NV; ++k)
      out[k] = update_elem<KIND>(a.c, a.st, a.dir, a.inplace, x[k], g[k], s0[k], s1[k]);
    store_f32<NT>(a.master + i, out);
    if (!a.inplace) store_work<W, NT>(work + i, out);
  }
  for (; i < e; ++i) {
    float g = a.load_grad ? load1(grad + i) : 0.0f;
    float s0 = KIND != KIND_SGD ? a.s0[i] : 0.0f, s1 = KIND == KIND_ADAM ? a.s1[i] : 0.0f;
    float out = update_elem<KIND>(a.c, a.st, a.dir, a.inplace, a.master[i], g, s0, s1);
    a.master[i] = out;
    if (!a.inplace) store1(work + i, out);
  }
  if (NT) fence_streams();
}

// (work dtype, grad dtype) pairs: grad is fp32 or the work dtype (the ops check this).
template <int KIND, bool NT>
void probe_kind(const Args& a, int64_t cb, int64_t ce, double* part) {
  using BF = c10::BFloat16;
  using H = c10::Half;
  const bool gf32 = a.grad_dt == DT_F32;
  switch (a.work_dt) {
    case DT_BF16: return gf32 ? probe_typed<KIND, BF, float, NT>(a, cb, ce, part)
                              : probe_typed<KIND, BF, BF, NT>(a, cb, ce, part);
    case DT_F16: return gf32 ? probe_typed<KIND, H, float, NT>(a, cb, ce, part)
                             : probe_typed<KIND, H, H, NT>(a, cb, ce, part);
    default: return probe_typed<KIND, float, float, NT>(a, cb, ce, part);
  }
}

template <int KIND, bool NT>
void update_kind(const Args& a, int64_t cb, int64_t ce) {
  using BF = c10::BFloat16;
  using H = c10::Half;
  const bool gf32 = a.grad_dt == DT_F32;
  switch (a.work_dt) {
    case DT_BF16: return gf32 ? update_typed<KIND, BF, float, NT>(a, cb, ce)
                              : update_typed<KIND, BF, BF, NT>(a, cb, ce);
    case DT_F16: return gf32 ? update_typed<KIND, H, float, NT>(a, cb, ce)
                             : update_typed<KIND, H, H, NT>(a, cb, ce);
    default: return update_typed<KIND, float, float, NT>(a, cb, ce);
  }
}

template <bool NT>
void probe_nt(const Args& a, int64_t cb, int64_t ce, double* part) {
  switch (a.kind) {
    case KIND_MOMENTUM: return probe_kind<KIND_MOMENTUM, NT>(a, cb, ce, part);
    case KIND_ADAM: return probe_kind<KIND_ADAM, NT>(a, cb, ce, part);
    default: return probe_kind<KIND_SGD, NT>(a, cb, ce, part);
  }
}

template <bool NT>
void update_nt(const Args& a, int64_t cb, int64_t ce) {
  switch (a.kind) {
    case KIND_MOMENTUM: return update_kind<KIND_MOMENTUM, NT>(a, cb, ce);
    case KIND_ADAM: return update_kind<KIND_ADAM, NT>(a, cb, ce);
    default: return update_kind<KIND_SGD, NT>(a, cb, ce);
  }
}

// Streaming stores exist in the x86 builds only; elsewhere the flag is ignored.
constexpr bool HAS_NT =
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
    true;
#else
    false;
#endif

void probe(const Args& a, int64_t cb, int64_t ce, double* part) {
  if (HAS_NT && a.stream) return probe_nt<HAS_NT>(a, cb, ce, part);
  probe_nt<false>(a, cb, ce, part);
}

void update(const Args& a, int64_t cb, int64_t ce) {
  if (HAS_NT && a.stream) return update_nt<HAS_NT>(a, cb, ce);
  update_nt<false>(a, cb, ce);
}

#define QLAB_STR2(x) #x
#define QLAB_STR(x) QLAB_STR2(x)

}  // namespace

Kernels kernels() { return Kernels{&probe, &update, QLAB_STR(CPU_CAPABILITY)}; }

}  // namespace qlab::cpu::CPU_CAPABILITY
