"""What the probe and update kernels share: the contract's indices as Triton constexprs, the
per-element direction math, and launch-configuration helpers."""
from __future__ import annotations

import math
import os

import triton
import triton.language as tl

from qlab_fused import contract as C

# Triton kernels may only read globals that are constexpr.
KIND_MOMENTUM = tl.constexpr(C.KIND_MOMENTUM)
KIND_ADAM = tl.constexpr(C.KIND_ADAM)
DIR_P = tl.constexpr(C.DIR_P)
SC_OK = tl.constexpr(C.SC_OK)
SC_BETA = tl.constexpr(C.SC_BETA)
SC_ALPHA = tl.constexpr(C.SC_ALPHA)
SC_BC1 = tl.constexpr(C.SC_BC1)
SC_BC2_SQRT = tl.constexpr(C.SC_BC2_SQRT)
SC_INV_BC1_PREV = tl.constexpr(C.SC_INV_BC1_PREV)
SC_FIRST = tl.constexpr(C.SC_FIRST)
RED_LEN = tl.constexpr(C.RED_LEN)

# Triton's interpreter rounds fp32 -> bf16 by truncation (the GPU rounds to nearest even).
INTERPRET = tl.constexpr(os.environ.get("TRITON_INTERPRET") == "1")

# The interpreter runs each program as numpy code with a fixed cost per program and per helper
# call: fewer, larger blocks are faster there. Still below the largest test size (65537 = 4 full
# blocks and a 1-element tail), so the multi-block paths (masking, partials) stay exercised.
INTERPRET_BLOCK = 16384


def autotune_wanted() -> bool:
    """Whether the update kernel is timing-autotuned on GPU (read at import). Its key includes n,
    so every new buffer size costs a tuning round (~1 s): a test suite of many sizes turns it off
    with ``QLAB_FUSED_TRITON_AUTOTUNE=0`` and launches the fixed configuration of the probe pass."""
    return os.environ.get("QLAB_FUSED_TRITON_AUTOTUNE", "1").strip().lower() not in (
        "0", "false", "no", "off")


def interpreting() -> bool:
    """Whether this module's kernels were defined for the interpreter (fixed at import, as in
    triton.jit)."""
    return bool(INTERPRET.value)


def hyper_args(h) -> tuple[float, ...]:
    """The runtime scalars of a segment, always as Python floats: an int would change the kernel's
    signature (i32 instead of fp32) and compile a second variant."""
    # P's scale for momentum, (1−δ)/(1−μ)·lr_scale, and the complements 1 − δ, 1 − β₁, 1 − β₂ in
    # float64 here, as the C++ kernels do: 1 − β₂ taken in fp32 (β₂ = 0.999) is 1.3e-5 off.
    p_scale = h.lr_scale * (1.0 - h.dampening) / (1.0 - h.momentum) if h.momentum != 1 else math.inf
    return tuple(float(x) for x in (h.lr_scale, h.weight_decay, h.momentum, 1.0 - h.dampening,
                                    h.beta1, 1.0 - h.beta1, h.beta2, 1.0 - h.beta2, h.eps, p_scale))


def structural(h, probe_dir) -> dict:
    """The only compile-time parameters: which code paths exist, never a hyperparameter value."""
    return dict(KIND=int(h.kind), NESTEROV=bool(h.nesterov), DECOUPLED=bool(h.decoupled),
                PROBE_DIR=int(probe_dir))


@triton.jit
def cast_for(x, ptr):
    """fp32 x rounded to nearest even in the element type of ``ptr`` (work may be bf16/fp16)."""
    # Nested constexpr ifs and one return: `and` of constexprs and early returns differ across
    # Triton versions.
    y = x.to(ptr.dtype.element_ty)
    if INTERPRET:
        if ptr.dtype.element_ty == tl.bfloat16:
            bits = x.to(tl.uint32, bitcast=True)
            bits = bits + 0x7FFF + ((bits >> 16) & 1)  # round half to even on the kept 16 bits
            bits = tl.where(x != x, 0x7FC00000, bits)   # keep NaN a NaN
            y = (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return y


@triton.jit
def div(a, b):
    """IEEE-rounded a / b: Triton's `/` on fp32 is the approximate div.full.f32 on NVIDIA.
    a and b are tensors (a block and a scalar are broadcast)."""
    a, b = tl.broadcast(a, b)
    return tl.math.div_rn(a, b)


@triton.jit
def finite_grad(grad_ptr, offs, mask):
    """(raw g, finite, gf): g upcast to fp32, gf = g where finite else 0."""
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    finite = tl.abs(g) < float("inf")  # false for ±inf and NaN
    gf = tl.where(finite, g, 0.0)
    return g, finite, gf


@triton.jit
def affine(gf, s0, s1, bc1, bc2s, lr_scale, weight_decay, momentum, p_scale, eps,
           KIND: tl.constexpr, NESTEROV: tl.constexpr, DECOUPLED: tl.constexpr):
    """(uV, cV, uP, cP) with V = uV + cV·θ and P = uP + cP·θ, from the updated state (s0, s1):
    momentum buffer, or Adam's (m, v). Coefficients c are scalars except Adam's coupled cP."""
    if KIND == KIND_MOMENTUM:
        uP = p_scale * gf
        cP = p_scale * weight_decay
        if NESTEROV:
            uV = lr_scale * (gf + momentum * s0)
            cV = lr_scale * weight_decay
        else:
            uV = lr_scale * s0
            cV = lr_scale * 0.0
    elif KIND == KIND_ADAM:
        denom = div(tl.sqrt_rn(s1), bc2s) + eps  # IEEE sqrt and division, as torch
        uV = div(lr_scale * div(s0, bc1), denom)
        uP = div(lr_scale * gf, denom)
        if DECOUPLED:
            cV = lr_scale * weight_decay
            cP = lr_scale * weight_decay
        else:
            cV = lr_scale * 0.0
            cP = div(tl.zeros_like(denom) + lr_scale * weight_decay, denom)
    else:
        uV = lr_scale * gf
        cV = lr_scale * weight_decay
        uP = lr_scale * gf
        cP = lr_scale * weight_decay
    return uV, cV, uP, cP
