"""The ``cpu`` and ``cuda`` backends: the two passes as the compiled ops ``torch.ops.qlab_fused``
(C++ with OpenMP and at::vec on CPU, CUDA kernels on GPU; ``csrc/``, ``docs/kernels.md``).

Same signatures as ``torch_backend``; the dispatcher routes by the tensors' device. The extension
is optional: without it ``unavailable`` says why and ``auto`` falls back to the torch backend.
"""
from __future__ import annotations

import torch

from ..contract import Hyper

_DEVICE_TYPE = {"cpu": "cpu", "cuda": "cuda"}
_DISPATCH_KEY = {"cpu": "CPU", "cuda": "CUDA"}


def _hyper_args(h: Hyper, probe_dir: int):
    return (int(h.kind), float(h.lr_scale), float(h.weight_decay), float(h.momentum),
            float(h.dampening), bool(h.nesterov), float(h.beta1), float(h.beta2), float(h.eps),
            bool(h.decoupled), int(probe_dir))


def probe_pass(master, work, grad, states, sc, h: Hyper, probe_dir: int):
    return torch.ops.qlab_fused.probe_pass(master, None if work is master else work, grad,
                                           list(states), sc, *_hyper_args(h, probe_dir))


def update_pass(master, work, grad, states, sc, h: Hyper, probe_dir: int, inplace: bool):
    torch.ops.qlab_fused.update_pass(master, None if inplace else work, grad, list(states), sc,
                                     *_hyper_args(h, probe_dir))


def unavailable(name: str, device) -> str | None:
    """None when the extension is loaded with the kernels of backend ``name`` for ``device``."""
    device = torch.device(device)
    want = _DEVICE_TYPE.get(name)
    if want is None:
        return f"cpp_backend serves 'cpu' and 'cuda', not {name!r}"
    if device.type != want:
        return f"device type mismatch: backend {name!r} runs on {want} tensors, not {device.type}"
    from .. import _ops  # lazily: importing the package must not need the extension

    if _ops.LOAD_ERROR is not None:
        return f"extension qlab_fused._C not loaded ({_ops.LOAD_ERROR})"
    if not _ops.has_kernel(_DISPATCH_KEY[name]):
        return ("qlab_fused._C was built without CUDA" if name == "cuda"
                else "qlab_fused._C has no CPU kernel")
    return None
