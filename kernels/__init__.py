"""Triton kernels of the QLAB passes (installed as ``qlab_fused.kernels``).

``probe`` (probe pass + per-block reduction partials), ``reduce`` (the fixed-order sum of the
partials) and ``update`` (update pass). The math per element is ``qlab_fused.backends.
torch_backend``; the launchers are called by ``qlab_fused.backends.triton_backend``.

Supported Triton: 3.6 (shipped with torch 2.11) through 3.9; only APIs present in 3.6 are used
(``tl.sqrt_rn``, ``triton.autotune(restore_value=...)``, ``tl.constexpr`` globals). On CPU the kernels
run only under ``TRITON_INTERPRET=1``, which must be set before triton is imported.

This package must import without triton: the submodules import it, this file does not.
"""
