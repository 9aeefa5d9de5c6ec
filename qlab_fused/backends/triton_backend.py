"""The ``triton`` backend: the two passes of the kernel contract as Triton kernels (``kernels/``,
installed as ``qlab_fused.kernels``). On CUDA devices for real; on CPU tensors only through
Triton's interpreter (``TRITON_INTERPRET=1`` set before triton is imported), which is how CI runs it.

Same signatures and per-element results as ``torch_backend``; one read of each buffer per pass, and
a deterministic two-stage reduction (per-block partials, then a fixed-order sum).
"""
from __future__ import annotations

import os
from contextlib import nullcontext

import torch

from ..contract import Hyper


def unavailable(name: str, device) -> str | None:
    """None when the kernels can run on ``device``, else the reason."""
    device = torch.device(device)
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return "Triton runs on CPU tensors only through its interpreter: set TRITON_INTERPRET=1"
    if device.type not in ("cpu", "cuda"):
        return f"the triton backend supports cuda devices (and cpu under the interpreter), not {device.type}"
    if device.type == "cuda" and not torch.cuda.is_available():
        return "torch reports no usable CUDA device"
    try:
        from qlab_fused.kernels import probe, update  # noqa: F401  (imports triton)
    except Exception as exc:  # noqa: BLE001 - the reason is what we report
        return f"import failed: {type(exc).__name__}: {exc}"
    return None


def _check(master, work, grad, states, sc):
    dev = master.device
    for what, t in (("work", work), ("grad", grad), ("sc", sc), *(("state", s) for s in states)):
        if t.device != dev or not t.is_contiguous():
            raise ValueError(f"triton backend: {what} must be contiguous and on {dev}")
    if master.dtype != torch.float32 or sc.dtype != torch.float32:
        raise TypeError("triton backend: master and sc must be float32")


def probe_pass(master, work, grad, states, sc, h: Hyper, probe_dir: int):
    from qlab_fused.kernels.probe import probe

    _check(master, work, grad, states, sc)
    with torch.cuda.device(master.device) if master.is_cuda else nullcontext():
        return probe(master, work, grad, list(states), sc, h, probe_dir)


def update_pass(master, work, grad, states, sc, h: Hyper, probe_dir: int, inplace: bool):
    from qlab_fused.kernels.update import update

    _check(master, work, grad, states, sc)
    with torch.cuda.device(master.device) if master.is_cuda else nullcontext():
        update(master, work, grad, list(states), sc, h, probe_dir, inplace)

