// Per-element math of the two passes, shared by the CPU kernels (T = float or at::vec::Vectorized<float>)
// and the CUDA kernels (T = float). No torch headers: the CUDA translation units include this too.
//
// The statement of what is computed is qlab_fused/backends/torch_backend.py; this file must stay
// element-for-element equivalent to it. Each direction is affine in θ given the updated state:
// V = uV + cV·θ, P = uP + cP·θ, which is what lets the inplace update undo the probe.
//
// A file that instantiates these templates with a vector type must declare sel/is_fin/vsqrt for that
// type *before* including this header (they are found by ordinary lookup, not ADL).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define QLAB_HD __host__ __device__ __forceinline__
#else
#define QLAB_HD inline
#endif

namespace qlab {

// Mirrors qlab_fused/contract.py.
enum Kind : int { KIND_SGD = 0, KIND_MOMENTUM = 1, KIND_ADAM = 2 };
enum Dir : int { DIR_V = 0, DIR_P = 1 };
enum Sc : int {
  SC_OK = 0, SC_BETA = 1, SC_ALPHA = 2, SC_BC1 = 3, SC_BC2_SQRT = 4, SC_INV_BC1_PREV = 5,
  SC_FIRST = 6, SC_LEN = 8
};
enum Red : int { RED_VG = 0, RED_PG, RED_VV, RED_PP, RED_SG, RED_GG, RED_LEN };

// Constant per-segment coefficients, derived in double from the Python floats and rounded once,
// as torch does when a Python float multiplies an fp32 tensor.
struct Coef {
  float s, wd, swd;            // lr_scale, weight decay, s·wd
  float mu, one_m_damp;        // momentum, 1 − dampening
  float sk, skwd;              // s·(1−δ)/(1−μ), s·(1−δ)/(1−μ)·wd: P for momentum
  float b1, one_m_b1, b2, one_m_b2, eps;
  bool nesterov, decoupled;
};

inline Coef make_coef(double s, double wd, double mu, double damp, bool nesterov, double b1,
                      double b2, double eps, bool decoupled) {
  Coef c;
  double k = (1.0 - damp) / (1.0 - mu);
  c.s = float(s); c.wd = float(wd); c.swd = float(s * wd);
  c.mu = float(mu); c.one_m_damp = float(1.0 - damp);
  c.sk = float(s * k); c.skwd = float(s * k * wd);
  c.b1 = float(b1); c.one_m_b1 = float(1.0 - b1); c.b2 = float(b2); c.one_m_b2 = float(1.0 - b2);
  c.eps = float(eps);
  c.nesterov = nesterov; c.decoupled = decoupled;
  return c;
}

// Per-step scalars, read from `sc` once per call (CPU) or once per thread (CUDA).
struct Step {
  float beta, alpha, inv_bc1, inv_bc2s, inv_bc1_prev;
  bool first;
};

QLAB_HD Step make_step(const float* sc) {
  Step st;
  st.beta = sc[SC_BETA];
  st.alpha = sc[SC_ALPHA];
  st.inv_bc1 = 1.0f / sc[SC_BC1];
  st.inv_bc2s = 1.0f / sc[SC_BC2_SQRT];
  st.inv_bc1_prev = sc[SC_INV_BC1_PREV];
  st.first = sc[SC_FIRST] > 0.0f;
  return st;
}

QLAB_HD float sel(bool m, float a, float b) { return m ? a : b; }
QLAB_HD bool is_fin(float x) { return (x - x) == 0.0f; }  // false for ±inf and NaN
QLAB_HD float vsqrt(float x) { return sqrtf(x); }

// Whether the update pass must read G (bytes: Adam and plain momentum along V do not).
QLAB_HD bool update_needs_grad(int kind, bool nesterov, bool inplace, int dir) {
  return kind == KIND_SGD || (kind == KIND_MOMENTUM && nesterov) || (inplace && dir == DIR_P);
}

// Adam's 1/(√v̂ + ε). One division per element, shared by every quotient below.
template <class T>
QLAB_HD T adam_rdenom(const Coef& c, const Step& st, T v) {
  return T(1.0f) / (vsqrt(v) * T(st.inv_bc2s) + T(c.eps));
}

// (uV, cV, uP, cP) from gf and the *updated* state (s0, s1).
template <int KIND, class T>
QLAB_HD void affine(const Coef& c, const Step& st, T gf, T s0, T s1, T& uV, T& cV, T& uP, T& cP) {
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
    T rd = adam_rdenom(c, st, s1);
    uV = T(c.s) * (s0 * T(st.inv_bc1)) * rd;
    uP = T(c.s) * gf * rd;
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

// The probe pass for one element: updates (s0, s1) in place, returns the probe θ − β·X and the six
// reduction terms (raw g, so a non-finite gradient reaches the sums).
template <int KIND, class T>
QLAB_HD T probe_elem(const Coef& c, const Step& st, int dir, T th, T g, T& s0, T& s1, T* r) {
  auto fin = is_fin(g);
  T gf = sel(fin, g, T(0.0f));
  T S = T(0.0f);
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
    T stale = m * T(st.inv_bc1_prev) * adam_rdenom(c, st, s1);
    if (c.decoupled && c.wd != 0.0f) stale = stale + T(c.wd) * th;
    S = T(c.s) * stale;
  }
  T uV, cV, uP, cP;
  affine<KIND>(c, st, gf, s0, s1, uV, cV, uP, cP);
  T V = uV + cV * th;
  T P = uP + cP * th;
  r[RED_VG] = V * g;
  r[RED_PG] = P * g;
  r[RED_VV] = V * V;
  r[RED_PP] = P * P;
  r[RED_SG] = KIND == KIND_SGD ? T(0.0f) : S * g;  // SGD has no stale direction: exactly 0
  r[RED_GG] = g * g;
  return th - T(st.beta) * (dir == DIR_P ? P : V);
}

// The update pass for one element: x is θ (copy mode) or the probe (inplace); returns θ − α·V.
template <int KIND, class T>
QLAB_HD T update_elem(const Coef& c, const Step& st, int dir, bool inplace, T x, T g, T s0, T s1) {
  T gf = sel(is_fin(g), g, T(0.0f));
  T uV, cV, uP, cP;
  affine<KIND>(c, st, gf, s0, s1, uV, cV, uP, cP);
  T th = x;
  if (inplace) {
    T uX = dir == DIR_P ? uP : uV;
    T cX = dir == DIR_P ? cP : cV;
    th = (x + T(st.beta) * uX) / (T(1.0f) - T(st.beta) * cX);
  }
  return th - T(st.alpha) * (uV + cV * th);
}

}  // namespace qlab
