// Argument checks and coefficient set-up shared by the CPU and CUDA dispatcher glue.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "common/qlab_types.h"

namespace qlab {

inline DType dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return DT_F32;
    case at::kBFloat16: return DT_BF16;
    case at::kHalf: return DT_F16;
    default: TORCH_CHECK(false, "qlab_fused: unsupported dtype ", t, " (float32, bfloat16, float16)");
  }
}

inline size_t expected_states(int64_t kind) {
  return kind == KIND_ADAM ? 2 : kind == KIND_MOMENTUM ? 1 : 0;
}

// Checks shapes, dtypes, devices and contiguity; returns the element count.
inline int64_t check_segment(const char* op, const at::Tensor& master,
                             const std::optional<at::Tensor>& work, const at::Tensor& grad,
                             at::TensorList states, const at::Tensor& sc, int64_t kind,
                             int64_t probe_dir) {
  TORCH_CHECK(kind >= KIND_SGD && kind <= KIND_ADAM, op, ": kind must be 0, 1 or 2, got ", kind);
  TORCH_CHECK(probe_dir == DIR_V || probe_dir == DIR_P, op, ": probe_dir must be 0 or 1, got ",
              probe_dir);
  const int64_t n = master.numel();
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.device() == master.device(), op, ": ", name, " is on ", t.device(),
                ", master on ", master.device());
    TORCH_CHECK(t.numel() == n, op, ": ", name, " has ", t.numel(), " elements, master ", n);
    TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
  };
  TORCH_CHECK(master.scalar_type() == at::kFloat, op, ": master must be float32, got ",
              master.scalar_type());
  TORCH_CHECK(master.is_contiguous(), op, ": master must be contiguous");
  at::ScalarType wdt = at::kFloat;
  if (work.has_value()) {
    same(*work, "work");
    TORCH_CHECK(!work->is_same(master) && work->data_ptr() != master.data_ptr(), op,
                ": work aliases master; pass work=None for the inplace probe");
    wdt = work->scalar_type();
    dtype_code(wdt);
  }
  same(grad, "grad");
  TORCH_CHECK(grad.scalar_type() == at::kFloat || grad.scalar_type() == wdt, op,
              ": grad must be float32 or the work dtype ", wdt, ", got ", grad.scalar_type());
  TORCH_CHECK(states.size() == expected_states(kind), op, ": kind ", kind, " takes ",
              expected_states(kind), " state tensors, got ", states.size());
  for (const auto& s : states) {
    same(s, "state");
    TORCH_CHECK(s.scalar_type() == at::kFloat, op, ": state must be float32, got ",
                s.scalar_type());
  }
  TORCH_CHECK(sc.scalar_type() == at::kFloat && sc.numel() >= SC_LEN && sc.is_contiguous(), op,
              ": sc must be a contiguous float32 tensor of ", int(SC_LEN), " scalars");
  TORCH_CHECK(sc.device() == master.device(), op, ": sc is on ", sc.device(), ", master on ",
              master.device());
  return n;
}

// The device-independent arguments of both passes (pointers, sizes, dtypes, coefficients).
inline void fill_segment_args(SegmentArgs& a, const at::Tensor& master,
                              const std::optional<at::Tensor>& work, const at::Tensor& grad,
                              at::TensorList states, int64_t kind, double lr_scale,
                              double weight_decay, double momentum, double dampening,
                              bool nesterov, double beta1, double beta2, double eps,
                              bool decoupled, int64_t probe_dir) {
  a.master = master.data_ptr<float>();
  a.inplace = !work.has_value();
  a.work = a.inplace ? static_cast<void*>(a.master) : work->data_ptr();
  a.work_dt = a.inplace ? DT_F32 : dtype_code(work->scalar_type());
  a.grad = grad.data_ptr();
  a.grad_dt = dtype_code(grad.scalar_type());
  a.s0 = states.size() > 0 ? states[0].data_ptr<float>() : nullptr;
  a.s1 = states.size() > 1 ? states[1].data_ptr<float>() : nullptr;
  a.n = master.numel();
  a.kind = int(kind);
  a.dir = int(probe_dir);
  a.c = make_coef(lr_scale, weight_decay, momentum, dampening, nesterov, beta1, beta2, eps,
                  decoupled);
  a.load_grad = update_needs_grad(a.kind, nesterov, a.inplace, a.dir);
}

}  // namespace qlab
