// Per-element math of the two passes, shared by the CPU kernels (T = float or at::vec::Vectorized<float>)
// and the CUDA kernels (T = float). No torch headers: the CUDA translation units include this too.
//
// The statement of what is computed is qlab_fused/backends/torch_backend.py; this file must stay
// element-for-element equivalent to it. Each direction is affine in θ given the updated state:
// V = uV + cV·θ, P = uP + cP·θ, which is what lets the inplace update undo the probe.
//
// A file that instantiates these templates with a vector type must declare sel/is_fin/vsqrt for that
// type *before* including this header (they are found by ordinary lookup, not ADL).
//
// QLAB_MATH_NS names an inline namespace: each CPU ISA build defines it to its own name, so the
// scalar (T = float) instantiations compiled for AVX-512 can never stand in for the baseline ones.
#pragma once

#include "qlab_types.h"

#ifndef QLAB_MATH_NS
#define QLAB_MATH_NS generic
#endif

namespace qlab {
inline namespace QLAB_MATH_NS {

QLAB_HD float sel(bool m, float a, float b) { return m ? a : b; }
QLAB_HD bool is_fin(float x) { return (x - x) == 0.0f; }  // false for ±inf and NaN
QLAB_HD float vsqrt(float x) { return sqrtf(x); }

// Adam's 1/(√v̂ + ε). One division per element, shared by every quotient below.
template <class T>
QLAB_HD T adam_rdenom(const Coef& c, const Step& st, T v) {
  return T(1.0f) / (vsqrt(v) * T(st.inv_bc2s) + T(c.eps));
}

// (uV, cV, uP, cP) from gf and the *updated* state (s0, s1); rd = adam_rdenom(s1) for Adam.
template <int KIND, class T>
QLAB_HD void affine(const Coef& c, const Step& st, T gf, T s0, T rd, T& uV, T& cV, T& uP, T& cP) {
  if (KIND == KIND_MOMENTUM) {
    uP = T(c.sk) * gf;
    cP = T(c.skwd);
    if (c.nesterov) {
      uV = T(c.s) * (gf + T(c.mu) * s0);
      cV = T(c.swd);
    } else {
      uV = T(c.s) * s0;
      cV = T(0.0f);
    }
  } else if (KIND == KIND_ADAM) {
    T srd = T(c.s) * rd;  // s folded into the shared reciprocal: one multiply fewer per quotient
    uV = (s0 * T(st.inv_bc1)) * srd;
    uP = gf * srd;
    if (c.decoupled) {
      cV = T(c.swd);
      cP = T(c.swd);
    } else {
      cV = T(0.0f);
      cP = T(c.swd) * rd;
    }
  } else {
    uV = T(c.s) * gf;
    cV = T(c.swd);
    uP = uV;
    cP = cV;
  }
}

// The probe pass for one element: updates (s0, s1) in place, returns the probe θ − β·X and the seven
// reduction terms (raw g, so a non-finite gradient reaches the sums).
template <int KIND, class T>
QLAB_HD T probe_elem(const Coef& c, const Step& st, int dir, T th, T g, T& s0, T& s1, T* r) {
  auto fin = is_fin(g);
  T gf = sel(fin, g, T(0.0f));
  T S = T(0.0f), rd = T(0.0f);
  if (KIND == KIND_MOMENTUM) {
    T gp = c.wd != 0.0f ? gf + T(c.wd) * th : gf;
    S = T(c.s) * s0;
    T nb = st.first ? gp : T(c.mu) * s0 + T(c.one_m_damp) * gp;
    s0 = sel(fin, nb, s0);
  } else if (KIND == KIND_ADAM) {
    T gp = (c.decoupled || c.wd == 0.0f) ? gf : gf + T(c.wd) * th;
    T m = s0;
    s0 = sel(fin, T(c.b1) * s0 + T(c.one_m_b1) * gp, s0);
    s1 = sel(fin, T(c.b2) * s1 + T(c.one_m_b2) * gp * gp, s1);
    rd = adam_rdenom(c, st, s1);
    S = (m * T(st.inv_bc1_prev)) * (T(c.s) * rd);
    if (c.decoupled && c.wd != 0.0f) S = S + T(c.swd) * th;
  }
  T uV, cV, uP, cP;
  affine<KIND>(c, st, gf, s0, rd, uV, cV, uP, cP);
  T V = uV + cV * th;
  T P = uP + cP * th;
  r[RED_VG] = V * g;
  r[RED_PG] = P * g;
  r[RED_VV] = V * V;
  r[RED_PP] = P * P;
  r[RED_SG] = KIND == KIND_SGD ? T(0.0f) : S * g;  // SGD has no stale direction: exactly 0
  r[RED_GG] = g * g;
  r[RED_TT] = th * th;
  r[RED_VZ] = sel(g == T(0.0f), V * V, T(0.0f));  // the step's part where the batch gradient is 0
  return th - T(st.beta) * (dir == DIR_P ? P : V);
}

// The update pass for one element: x is θ (copy mode) or the probe (inplace); returns θ − α·V.
template <int KIND, class T>
QLAB_HD T update_elem(const Coef& c, const Step& st, int dir, bool inplace, T x, T g, T s0, T s1) {
  T gf = sel(is_fin(g), g, T(0.0f));
  T rd = KIND == KIND_ADAM ? adam_rdenom(c, st, s1) : T(0.0f);
  T uV, cV, uP, cP;
  affine<KIND>(c, st, gf, s0, rd, uV, cV, uP, cP);
  T th = x;
  if (inplace) {
    T uX = dir == DIR_P ? uP : uV;
    if (st.undo_const) {
      th = (x + T(st.beta) * uX) * T(st.inv_undo);
    } else {
      th = (x + T(st.beta) * uX) / (T(1.0f) - T(st.beta) * cP);
    }
  }
  return th - T(st.alpha) * (uV + cV * th);
}

}  // namespace QLAB_MATH_NS
}  // namespace qlab
