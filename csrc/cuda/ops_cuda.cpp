// CUDA implementation of the qlab_fused ops: checks, device guard, current stream, then the raw
// launchers of kernels.cu. Compiled only into CUDA builds of the extension (setup.py).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../ops_common.h"
#include "qlab_cuda.h"

namespace qlab::cuda {
namespace {

Launch make_launch(const at::Tensor& master, const std::optional<at::Tensor>& work,
                   const at::Tensor& grad, at::TensorList states, const at::Tensor& sc,
                   int64_t kind, double lr_scale, double weight_decay, double momentum,
                   double dampening, bool nesterov, double beta1, double beta2, double eps,
                   bool decoupled, int64_t probe_dir) {
  Launch a{};
  fill_segment_args(a, master, work, grad, states, kind, lr_scale, weight_decay, momentum,
                    dampening, nesterov, beta1, beta2, eps, decoupled, probe_dir);
  a.sc = sc.data_ptr<float>();
  return a;
}

at::Tensor probe_pass_cuda(const at::Tensor& master, const std::optional<at::Tensor>& work,
                           const at::Tensor& grad, at::TensorList states, const at::Tensor& sc,
                           int64_t kind, double lr_scale, double weight_decay, double momentum,
                           double dampening, bool nesterov, double beta1, double beta2,
                           double eps, bool decoupled, int64_t probe_dir) {
  check_segment("qlab_fused::probe_pass", master, work, grad, states, sc, kind, probe_dir);
  const c10::cuda::CUDAGuard guard(master.device());
  const Launch a = make_launch(master, work, grad, states, sc, kind, lr_scale, weight_decay,
                               momentum, dampening, nesterov, beta1, beta2, eps, decoupled,
                               probe_dir);
  at::Tensor red = at::empty({RED_LEN}, master.options());
  at::Tensor partials = at::empty({probe_blocks(a.n) * RED_LEN}, master.options());
  C10_CUDA_CHECK(launch_probe(a, partials.data_ptr<float>(), red.data_ptr<float>(),
                              c10::cuda::getCurrentCUDAStream()));
  return red;
}

void update_pass_cuda(const at::Tensor& master, const std::optional<at::Tensor>& work,
                      const at::Tensor& grad, at::TensorList states, const at::Tensor& sc,
                      int64_t kind, double lr_scale, double weight_decay, double momentum,
                      double dampening, bool nesterov, double beta1, double beta2, double eps,
                      bool decoupled, int64_t probe_dir) {
  check_segment("qlab_fused::update_pass", master, work, grad, states, sc, kind, probe_dir);
  const c10::cuda::CUDAGuard guard(master.device());
  const Launch a = make_launch(master, work, grad, states, sc, kind, lr_scale, weight_decay,
                               momentum, dampening, nesterov, beta1, beta2, eps, decoupled,
                               probe_dir);
  C10_CUDA_CHECK(launch_update(a, c10::cuda::getCurrentCUDAStream()));
}

}  // namespace
}  // namespace qlab::cuda

TORCH_LIBRARY_IMPL(qlab_fused, CUDA, m) {
  m.impl("probe_pass", &qlab::cuda::probe_pass_cuda);
  m.impl("update_pass", &qlab::cuda::update_pass_cuda);
}
