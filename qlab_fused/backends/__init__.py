"""Backend dispatch: which implementation of the two passes runs for a segment.

A backend is a module with ``probe_pass``, ``update_pass`` (the contract in ``qlab_fused.contract``)
and ``unavailable(device) -> str | None`` (None when it can run on that device, else the reason).

``auto`` takes the first usable backend in ``AUTO_ORDER`` for the device and records why the others
were passed over; a backend asked for by name raises with its stored reason and an install hint.
"""
from __future__ import annotations

import importlib

import torch

NAMES = ("cuda", "triton", "cpu", "torch")
_MODULES = {
    "torch": "qlab_fused.backends.torch_backend",
    "cpu": "qlab_fused.backends.cpp_backend",
    "cuda": "qlab_fused.backends.cpp_backend",
    "triton": "qlab_fused.backends.triton_backend",
}
AUTO_ORDER = {"cuda": ("cuda", "triton", "torch"), "cpu": ("cpu", "torch")}
_HINT = ("build the extension with `pip install --no-build-isolation -e .` (a C++ compiler for cpu; "
         "nvcc and a CUDA build of torch for cuda); `qlab_fused.backends()` shows why it is missing")


class BackendUnavailable(RuntimeError):
    pass


def _load(name: str):
    """(module, None) or (None, reason)."""
    try:
        return importlib.import_module(_MODULES[name]), None
    except Exception as exc:  # noqa: BLE001 - the reason is what we report
        return None, f"import failed: {type(exc).__name__}: {exc}"


def why_not(name: str, device: torch.device) -> str | None:
    """None if backend ``name`` can run on ``device``, else the reason."""
    if name not in _MODULES:
        return f"unknown backend {name!r}; choose from {('auto',) + NAMES}"
    mod, reason = _load(name)
    if mod is None:
        return reason
    return mod.unavailable(name, torch.device(device))


def get(name: str, device) -> tuple[str, object]:
    """Resolve ``name`` ("auto" or a backend name) for ``device`` to (backend name, module)."""
    device = torch.device(device)
    if name == "auto":
        for cand in AUTO_ORDER.get(device.type, ("torch",)):
            if why_not(cand, device) is None:
                return cand, _load(cand)[0]
        raise BackendUnavailable(f"no backend can run on {device}")
    reason = why_not(name, device)
    if reason is not None:
        raise BackendUnavailable(f"backend {name!r} is not available on {device}: {reason}. "
                                 f"To get it: {_HINT}")
    return name, _load(name)[0]


def backends(device=None) -> dict:
    """{name: None if usable else the reason} for each backend, on ``device`` (default: cuda if
    available, else cpu)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return {name: why_not(name, torch.device(device)) for name in NAMES}
