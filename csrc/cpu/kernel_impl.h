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
inline Vec sel(const Vec& m, const Vec& a, const Vec& b) { return Vec::blendv(b, a, m); }
inline Vec is_fin(const Vec& x) { return (x - x) == Vec(0.0f); }
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

template <class W>
inline float load1(const W* p) { return static_cast<float>(*p); }
template <class W>
inline void store1(W* p, float x) { *p = static_cast<W>(x); }

template <int KIND, class W, class G>
void probe_typed(const Args& a, int64_t cb, int64_t ce, double* part) {
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
      store_group(work + i, out);
      if (KIND != KIND_SGD) store_group(a.s0 + i, s0);
      if (KIND == KIND_ADAM) store_group(a.s1 + i, s1);
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
}

template <int KIND, class W, class G>
void update_typed(const Args& a, int64_t cb, int64_t ce) {
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
    store_group(a.master + i, out);
    if (!a.inplace) store_group(work + i, out);
  }
  for (; i < e; ++i) {
    float g = a.load_grad ? load1(grad + i) : 0.0f;
    float s0 = KIND != KIND_SGD ? a.s0[i] : 0.0f, s1 = KIND == KIND_ADAM ? a.s1[i] : 0.0f;
    float out = update_elem<KIND>(a.c, a.st, a.dir, a.inplace, a.master[i], g, s0, s1);
    a.master[i] = out;
    if (!a.inplace) store1(work + i, out);
  }
}

// (work dtype, grad dtype) pairs: grad is fp32 or the work dtype (the ops check this).
template <int KIND>
void probe_kind(const Args& a, int64_t cb, int64_t ce, double* part) {
  using BF = c10::BFloat16;
  using H = c10::Half;
  const bool gf32 = a.grad_dt == DT_F32;
  switch (a.work_dt) {
    case DT_BF16: return gf32 ? probe_typed<KIND, BF, float>(a, cb, ce, part)
                              : probe_typed<KIND, BF, BF>(a, cb, ce, part);
    case DT_F16: return gf32 ? probe_typed<KIND, H, float>(a, cb, ce, part)
                             : probe_typed<KIND, H, H>(a, cb, ce, part);
    default: return probe_typed<KIND, float, float>(a, cb, ce, part);
  }
}

template <int KIND>
void update_kind(const Args& a, int64_t cb, int64_t ce) {
  using BF = c10::BFloat16;
  using H = c10::Half;
  const bool gf32 = a.grad_dt == DT_F32;
  switch (a.work_dt) {
    case DT_BF16: return gf32 ? update_typed<KIND, BF, float>(a, cb, ce)
                              : update_typed<KIND, BF, BF>(a, cb, ce);
    case DT_F16: return gf32 ? update_typed<KIND, H, float>(a, cb, ce)
                             : update_typed<KIND, H, H>(a, cb, ce);
    default: return update_typed<KIND, float, float>(a, cb, ce);
  }
}

void probe(const Args& a, int64_t cb, int64_t ce, double* part) {
  switch (a.kind) {
    case KIND_MOMENTUM: return probe_kind<KIND_MOMENTUM>(a, cb, ce, part);
    case KIND_ADAM: return probe_kind<KIND_ADAM>(a, cb, ce, part);
    default: return probe_kind<KIND_SGD>(a, cb, ce, part);
  }
}

void update(const Args& a, int64_t cb, int64_t ce) {
  switch (a.kind) {
    case KIND_MOMENTUM: return update_kind<KIND_MOMENTUM>(a, cb, ce);
    case KIND_ADAM: return update_kind<KIND_ADAM>(a, cb, ce);
    default: return update_kind<KIND_SGD>(a, cb, ce);
  }
}

#define QLAB_STR2(x) #x
#define QLAB_STR(x) QLAB_STR2(x)

}  // namespace

Kernels kernels() { return Kernels{&probe, &update, QLAB_STR(CPU_CAPABILITY)}; }

}  // namespace qlab::cpu::CPU_CAPABILITY
