// CPU implementation of the qlab_fused ops: checks, reads `sc` once, picks the ISA build of the
// kernels, runs them with at::parallel_for over fixed chunks and sums the per-chunk partials in
// chunk order (same bits whatever the thread count).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "../ops_common.h"
#include "cpu_kernels.h"

namespace qlab::cpu {
namespace {

// ATEN_CPU_CAPABILITY (default / avx2 / avx512) caps the choice, as it does for torch's kernels.
Kernels select_kernels() {
#ifdef QLAB_HAVE_X86_KERNELS
  const char* env = std::getenv("ATEN_CPU_CAPABILITY");
  const std::string cap = env ? env : "";
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq");
  if (avx512 && (cap.empty() || cap == "avx512")) return AVX512::kernels();
  if (avx2 && (cap.empty() || cap == "avx512" || cap == "avx2")) return AVX2::kernels();
#endif
  return DEFAULT::kernels();
}

const Kernels& kernels() {
  static const Kernels k = select_kernels();
  return k;
}

// About 32K elements per task: below that, threads cost more than they save.
constexpr int64_t GRAIN_CHUNKS = 8;

Args make_args(const at::Tensor& master, const std::optional<at::Tensor>& work,
               const at::Tensor& grad, at::TensorList states, const float* sc, int64_t kind,
               double lr_scale, double weight_decay, double momentum, double dampening,
               bool nesterov, double beta1, double beta2, double eps, bool decoupled,
               int64_t probe_dir) {
  Args a{};
  fill_segment_args(a, master, work, grad, states, kind, lr_scale, weight_decay, momentum,
                    dampening, nesterov, beta1, beta2, eps, decoupled, probe_dir);
  a.st = make_step(sc);
  set_undo(a.st, a.c, a.kind, a.dir);
  auto al64 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 64 == 0; };
  // QLAB_FUSED_CPU_STREAM=1 turns on streaming stores for segments of at least STREAM_MIN
  // elements. Off by default: on the 2-core EPYC VM they measured slower (see docs/kernels.md).
  const char* env = std::getenv("QLAB_FUSED_CPU_STREAM");
  const bool want = env && env[0] == '1' && a.n >= STREAM_MIN;
  a.stream = want && al64(a.master) && al64(a.work) && al64(a.s0) && al64(a.s1);
  return a;
}

at::Tensor probe_pass_cpu(const at::Tensor& master, const std::optional<at::Tensor>& work,
                          const at::Tensor& grad, at::TensorList states, const at::Tensor& sc,
                          int64_t kind, double lr_scale, double weight_decay, double momentum,
                          double dampening, bool nesterov, double beta1, double beta2, double eps,
                          bool decoupled, int64_t probe_dir) {
  const int64_t n = check_segment("qlab_fused::probe_pass", master, work, grad, states, sc, kind,
                                  probe_dir);
  at::Tensor red = at::zeros({RED_LEN}, master.options());
  const float* s = sc.data_ptr<float>();
  if (!(s[SC_OK] > 0.0f) || n == 0) return red;  // not ok: write nothing at all
  const Args a = make_args(master, work, grad, states, s, kind, lr_scale, weight_decay, momentum,
                           dampening, nesterov, beta1, beta2, eps, decoupled, probe_dir);
  const int64_t nchunks = (n + CHUNK - 1) / CHUNK;
  std::vector<double> part(size_t(nchunks) * RED_LEN);
  const ProbeFn fn = kernels().probe;
  at::parallel_for(0, nchunks, GRAIN_CHUNKS,
                   [&](int64_t cb, int64_t ce) { fn(a, cb, ce, part.data()); });
  double tot[RED_LEN] = {};
  for (int64_t ch = 0; ch < nchunks; ++ch)
    for (int j = 0; j < RED_LEN; ++j) tot[j] += part[size_t(ch) * RED_LEN + j];
  float* r = red.data_ptr<float>();
  for (int j = 0; j < RED_LEN; ++j) r[j] = float(tot[j]);
  return red;
}

void update_pass_cpu(const at::Tensor& master, const std::optional<at::Tensor>& work,
                     const at::Tensor& grad, at::TensorList states, const at::Tensor& sc,
                     int64_t kind, double lr_scale, double weight_decay, double momentum,
                     double dampening, bool nesterov, double beta1, double beta2, double eps,
                     bool decoupled, int64_t probe_dir) {
  const int64_t n = check_segment("qlab_fused::update_pass", master, work, grad, states, sc, kind,
                                  probe_dir);
  const float* s = sc.data_ptr<float>();
  if (!(s[SC_OK] > 0.0f) || n == 0) return;
  const Args a = make_args(master, work, grad, states, s, kind, lr_scale, weight_decay, momentum,
                           dampening, nesterov, beta1, beta2, eps, decoupled, probe_dir);
  const UpdateFn fn = kernels().update;
  at::parallel_for(0, (n + CHUNK - 1) / CHUNK, GRAIN_CHUNKS,
                   [&](int64_t cb, int64_t ce) { fn(a, cb, ce); });
}

std::string cpu_isa() { return kernels().isa; }

}  // namespace
}  // namespace qlab::cpu

TORCH_LIBRARY_FRAGMENT(qlab_fused, m) {
  // Which ISA build of the CPU kernels runs here (tests and benchmarks report it).
  m.def("cpu_isa() -> str", &qlab::cpu::cpu_isa);
}

TORCH_LIBRARY_IMPL(qlab_fused, CPU, m) {
  m.impl("probe_pass", &qlab::cpu::probe_pass_cpu);
  m.impl("update_pass", &qlab::cpu::update_pass_cpu);
}
