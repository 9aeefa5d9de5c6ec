"""Loads the compiled extension ``qlab_fused._C`` (which registers the ``torch.ops.qlab_fused`` ops)
and registers their fake kernels, so ``torch.compile`` and ``torch.library.opcheck`` can trace them.

Import failures are kept, not raised: ``LOAD_ERROR`` says why the native ops are missing.
"""
from __future__ import annotations

import torch

from .contract import RED_LEN

LOAD_ERROR: str | None = None
try:
    from . import _C  # noqa: F401  (loading the library registers the ops)
except Exception as exc:  # noqa: BLE001 - the reason is reported by the backend
    LOAD_ERROR = f"{type(exc).__name__}: {exc}"


if LOAD_ERROR is None:
    @torch.library.register_fake("qlab_fused::probe_pass")
    def _probe_pass_fake(master, work, grad, states, sc, kind, lr_scale, weight_decay, momentum,
                         dampening, nesterov, beta1, beta2, eps, decoupled, probe_dir):
        return master.new_empty((RED_LEN,), dtype=torch.float32)

    @torch.library.register_fake("qlab_fused::update_pass")
    def _update_pass_fake(master, work, grad, states, sc, kind, lr_scale, weight_decay, momentum,
                          dampening, nesterov, beta1, beta2, eps, decoupled, probe_dir):
        return None


def has_kernel(dispatch_key: str) -> bool:
    """Whether the loaded extension has the qlab_fused kernels for ``dispatch_key`` ("CPU", "CUDA")."""
    return LOAD_ERROR is None and torch._C._dispatch_has_kernel_for_dispatch_key(
        "qlab_fused::probe_pass", dispatch_key)
