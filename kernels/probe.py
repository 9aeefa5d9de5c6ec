"""Probe pass kernel: one read of θ, G and the base state; writes the new state, the probe
θ − β·X into the work buffer, and per-program fp32 partials of the eight reductions.

The reduction bits depend on the block size and warp count (they fix the summation tree), so this
kernel is not timing-autotuned: its configuration is a pure function of n and the kind
(``config``, chosen by measurement), which keeps "same inputs, same bits" true across processes,
and a resumed run bitwise identical.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from qlab_fused import contract as C

from . import _common as K
from .reduce import sum_partials


@triton.jit
def _probe_kernel(master_ptr, work_ptr, grad_ptr, s0_ptr, s1_ptr, sc_ptr, part_ptr, n,
                  lr_scale, weight_decay, momentum, one_m_damp, beta1, one_m_b1, beta2, one_m_b2,
                  eps, p_scale,
                  KIND: tl.constexpr, NESTEROV: tl.constexpr, DECOUPLED: tl.constexpr,
                  PROBE_DIR: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0)
    # int64: flat buffers of large models exceed 2^31 elements.
    offs = pid.to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n
    ok = tl.load(sc_ptr + K.SC_OK) > 0
    # mask & ok as a block: the interpreter mishandles `&` between a block and a scalar bool.
    wmask = tl.where(mask, tl.load(sc_ptr + K.SC_OK), 0.0) > 0
    beta = tl.load(sc_ptr + K.SC_BETA)
    bc1 = tl.load(sc_ptr + K.SC_BC1)
    bc2s = tl.load(sc_ptr + K.SC_BC2_SQRT)

    theta = tl.load(master_ptr + offs, mask=mask, other=0.0)
    g, finite, gf = K.finite_grad(grad_ptr, offs, mask)

    # Advance the base state (elements with a non-finite gradient keep theirs); S is the
    # direction built from the previous state only.
    s0 = theta  # placeholders for SGD, which has no state
    s1 = theta
    S = theta * 0.0
    if KIND == K.KIND_MOMENTUM:
        buf = tl.load(s0_ptr + offs, mask=mask, other=0.0)
        gp = gf + weight_decay * theta
        first = tl.where(mask, tl.load(sc_ptr + K.SC_FIRST), 0.0) > 0
        s0 = tl.where(first, gp, momentum * buf + one_m_damp * gp)
        s0 = tl.where(finite, s0, buf)
        tl.store(s0_ptr + offs, s0, mask=wmask)
        S = lr_scale * buf
    elif KIND == K.KIND_ADAM:
        m = tl.load(s0_ptr + offs, mask=mask, other=0.0)
        v = tl.load(s1_ptr + offs, mask=mask, other=0.0)
        if DECOUPLED:
            gp = gf
        else:
            gp = gf + weight_decay * theta
        s0 = tl.where(finite, beta1 * m + one_m_b1 * gp, m)
        s1 = tl.where(finite, beta2 * v + one_m_b2 * gp * gp, v)
        tl.store(s0_ptr + offs, s0, mask=wmask)
        tl.store(s1_ptr + offs, s1, mask=wmask)
        denom = K.div(tl.sqrt_rn(s1), bc2s) + eps
        S = K.div(m * tl.load(sc_ptr + K.SC_INV_BC1_PREV), denom)
        if DECOUPLED:
            S = S + weight_decay * theta
        S = lr_scale * S

    uV, cV, uP, cP = K.affine(gf, s0, s1, bc1, bc2s, lr_scale, weight_decay, momentum,
                              p_scale, eps, KIND, NESTEROV, DECOUPLED)
    V = uV + cV * theta
    P = uP + cP * theta
    if PROBE_DIR == K.DIR_P:
        probe = theta - beta * P
    else:
        probe = theta - beta * V
    tl.store(work_ptr + offs, K.cast_for(probe, work_ptr), mask=wmask)

    # Reductions use the raw g, so a non-finite gradient makes them non-finite (the rule skips).
    V = tl.where(mask, V, 0.0)
    P = tl.where(mask, P, 0.0)
    S = tl.where(mask, S, 0.0)
    row = part_ptr + pid.to(tl.int64) * K.RED_LEN  # partials are [programs, RED_LEN]
    tl.store(row + 0, tl.where(ok, tl.sum(V * g, axis=0), 0.0))
    tl.store(row + 1, tl.where(ok, tl.sum(P * g, axis=0), 0.0))
    tl.store(row + 2, tl.where(ok, tl.sum(V * V, axis=0), 0.0))
    tl.store(row + 3, tl.where(ok, tl.sum(P * P, axis=0), 0.0))
    tl.store(row + 4, tl.where(ok, tl.sum(S * g, axis=0), 0.0))
    tl.store(row + 5, tl.where(ok, tl.sum(g * g, axis=0), 0.0))
    tl.store(row + 6, tl.where(ok, tl.sum(theta * theta, axis=0), 0.0))
    tl.store(row + 7, tl.where(ok, tl.sum(tl.where(g == 0.0, V * V, 0.0), axis=0), 0.0))


def config(n: int, kind: int) -> tuple[int, int]:
    """(BLOCK_SIZE, num_warps) as a function of n and the direction's kind only (see the module
    docstring). Large buffers get larger blocks so the single-program second stage reads fewer
    partial rows; Adam's probe holds more live values per element, and at 4096/8 it ran at half the
    speed of 2048/8 (bench/triton_probe_configs.py on an H200, 1e9 fp32 elements: 16.6 against
    9.2 ms; Momentum and bf16 SGD were fastest at 4096/8)."""
    if K.interpreting():
        return K.INTERPRET_BLOCK, 4
    if n >= 1 << 24:
        return (2048, 8) if kind == C.KIND_ADAM else (4096, 8)
    return 1024, 4


def probe(master, work, grad, states, sc, h, probe_dir):
    """Launch the probe pass over one segment; returns the fp32 reductions, shape [RED_LEN]."""
    n = master.numel()
    block, warps = config(n, h.kind)
    programs = triton.cdiv(n, block)
    partials = torch.empty((programs, K.RED_LEN.value), dtype=torch.float32, device=master.device)
    s0 = states[0] if len(states) > 0 else master  # never read for SGD
    s1 = states[1] if len(states) > 1 else s0
    _probe_kernel[(programs,)](master, work, grad, s0, s1, sc, partials, n, *K.hyper_args(h),
                               **K.structural(h, probe_dir), BLOCK_SIZE=block, num_warps=warps)
    return sum_partials(partials)
