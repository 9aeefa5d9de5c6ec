// Constants and coefficient structs of the kernel contract (qlab_fused/contract.py), shared by the
// CPU and CUDA code. No torch headers.
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
enum Red : int { RED_VG = 0, RED_PG, RED_VV, RED_PP, RED_SG, RED_GG, RED_TT, RED_VZ, RED_LEN };

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
  float inv_undo;   // 1 / (1 − β·cX) where cX is a constant (see undo_is_const)
  bool first, undo_const;
};

// The inplace update divides by 1 − β·cX. cX is the same for every element except for coupled
// Adam probed along P (cX = s·λ/(√v̂+ε)); elsewhere one reciprocal per call replaces the division.
QLAB_HD void set_undo(Step& st, const Coef& c, int kind, int dir) {
  float cx = 0.0f;
  st.undo_const = true;
  if (kind == KIND_SGD) {
    cx = c.swd;
  } else if (kind == KIND_MOMENTUM) {
    cx = dir == DIR_P ? c.skwd : (c.nesterov ? c.swd : 0.0f);
  } else if (c.decoupled) {
    cx = c.swd;
  } else if (dir == DIR_P) {
    st.undo_const = false;
  }
  st.inv_undo = 1.0f / (1.0f - st.beta * cx);
}

QLAB_HD Step make_step(const float* sc) {
  Step st;
  st.beta = sc[SC_BETA];
  st.alpha = sc[SC_ALPHA];
  st.inv_bc1 = 1.0f / sc[SC_BC1];
  st.inv_bc2s = 1.0f / sc[SC_BC2_SQRT];
  st.inv_bc1_prev = sc[SC_INV_BC1_PREV];
  st.first = sc[SC_FIRST] > 0.0f;
  st.inv_undo = 1.0f;
  st.undo_const = false;
  return st;
}

// Whether the update pass must read G (bytes: Adam and plain momentum along V do not).
QLAB_HD bool update_needs_grad(int kind, bool nesterov, bool inplace, int dir) {
  return kind == KIND_SGD || (kind == KIND_MOMENTUM && nesterov) || (inplace && dir == DIR_P);
}

// Element types of the work and grad buffers (master and state are always fp32).
enum DType : int { DT_F32 = 0, DT_BF16 = 1, DT_F16 = 2 };

// One segment's buffers and constants as both passes see them on every device; the CPU (`Args`) and
// CUDA (`Launch`) argument structs add what only they need.
struct SegmentArgs {
  float* master;
  void* work;          // == master when inplace
  const void* grad;
  float* s0;           // momentum_buffer / exp_avg (or null)
  float* s1;           // exp_avg_sq (or null)
  int64_t n;
  int work_dt, grad_dt, kind, dir;
  bool inplace, load_grad;
  Coef c;
};

}  // namespace qlab
