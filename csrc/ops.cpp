// Operator schemas of qlab_fused (device-independent); the kernels register per dispatch key in
// cpu/ops_cpu.cpp and cuda/ops_cuda.cpp. Loading the extension module registers them.
#include <Python.h>
#include <torch/library.h>

#define QLAB_HYPER_ARGS                                                                       \
  "int kind, float lr_scale, float weight_decay, float momentum, float dampening, "          \
  "bool nesterov, float beta1, float beta2, float eps, bool decoupled, int probe_dir"

TORCH_LIBRARY(qlab_fused, m) {
  // work=None: inplace probe (the probe is written into master).
  m.def("probe_pass(Tensor(a!) master, Tensor(b!)? work, Tensor grad, Tensor(c!)[] states, "
        "Tensor sc, " QLAB_HYPER_ARGS ") -> Tensor");
  m.def("update_pass(Tensor(a!) master, Tensor(b!)? work, Tensor grad, Tensor[] states, "
        "Tensor sc, " QLAB_HYPER_ARGS ") -> ()");
}

// A Python module only so that `import qlab_fused._C` loads the library (and registers the ops).
static PyModuleDef qlab_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&qlab_module); }
