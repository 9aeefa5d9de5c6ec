"""Update pass kernel: one read of θ (or of the probe, inplace) and the state; writes θ − α·V into
the master buffer, and its rounding into the work buffer in copy mode.

Purely elementwise, so its bits do not depend on the launch configuration: on GPU it is autotuned
over block size and warp count (``QLAB_FUSED_TRITON_AUTOTUNE=0``: the probe pass's fixed one). The
gradient is read only where the direction needs it.
"""
from __future__ import annotations

import triton
import triton.language as tl

from qlab_fused import contract as C

from . import _common as K
from .probe import config as fixed_config


@triton.jit
def _update_kernel(master_ptr, work_ptr, grad_ptr, s0_ptr, s1_ptr, sc_ptr, n,
                   lr_scale, weight_decay, momentum, one_m_damp, beta1, one_m_b1, beta2, one_m_b2,
                   eps, p_scale,
                   KIND: tl.constexpr, NESTEROV: tl.constexpr, DECOUPLED: tl.constexpr,
                   PROBE_DIR: tl.constexpr, INPLACE: tl.constexpr, NEEDS_G: tl.constexpr,
                   BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    mask = offs < n
    # mask & ok as a block: the interpreter mishandles `&` between a block and a scalar bool.
    wmask = tl.where(mask, tl.load(sc_ptr + K.SC_OK), 0.0) > 0
    alpha = tl.load(sc_ptr + K.SC_ALPHA)
    bc1 = tl.load(sc_ptr + K.SC_BC1)
    bc2s = tl.load(sc_ptr + K.SC_BC2_SQRT)

    x = tl.load(master_ptr + offs, mask=mask, other=0.0)
    if NEEDS_G:
        g, finite, gf = K.finite_grad(grad_ptr, offs, mask)
    else:
        gf = x * 0.0
    s0 = x
    s1 = x
    if KIND == K.KIND_MOMENTUM:
        s0 = tl.load(s0_ptr + offs, mask=mask, other=0.0)
    elif KIND == K.KIND_ADAM:
        s0 = tl.load(s0_ptr + offs, mask=mask, other=0.0)
        s1 = tl.load(s1_ptr + offs, mask=mask, other=0.0)
    uV, cV, uP, cP = K.affine(gf, s0, s1, bc1, bc2s, lr_scale, weight_decay, momentum,
                              p_scale, eps, KIND, NESTEROV, DECOUPLED)
    if INPLACE:
        # x is the probe θ − β·X with X = uX + cX·θ: solve for θ.
        beta = tl.load(sc_ptr + K.SC_BETA)
        if PROBE_DIR == K.DIR_P:
            theta = K.div(x + beta * uP, 1.0 - beta * cP)
        else:
            theta = K.div(x + beta * uV, 1.0 - beta * cV)
    else:
        theta = x
    new = theta - alpha * (uV + cV * theta)
    tl.store(master_ptr + offs, new, mask=wmask)
    if not INPLACE:
        tl.store(work_ptr + offs, K.cast_for(new, work_ptr), mask=wmask)


def _autotuned():
    configs = [triton.Config({"BLOCK_SIZE": b}, num_warps=w)
               for b in (1024, 2048, 4096) for w in (4, 8)]
    # Benchmarking launches the kernel many times: restore what it writes in between.
    return triton.autotune(configs, key=["n", "KIND", "NESTEROV", "DECOUPLED", "PROBE_DIR",
                                         "INPLACE"],
                           restore_value=["master_ptr", "work_ptr"])(_update_kernel)


_tuned = None if K.interpreting() or not K.autotune_wanted() else _autotuned()


def update(master, work, grad, states, sc, h, probe_dir, inplace):
    """Launch the update pass over one segment."""
    n = master.numel()
    s0 = states[0] if len(states) > 0 else master  # never read for SGD
    s1 = states[1] if len(states) > 1 else s0
    args = (master, work, grad, s0, s1, sc, n, *K.hyper_args(h))
    flags = dict(K.structural(h, probe_dir), INPLACE=bool(inplace))
    # G enters V for SGD and Nesterov, and P always; P matters here only to undo an inplace probe.
    flags["NEEDS_G"] = (h.kind not in (C.KIND_MOMENTUM, C.KIND_ADAM) or bool(h.nesterov)
                        or (bool(inplace) and probe_dir == C.DIR_P))
    if _tuned is None:  # the interpreter, or autotuning turned off
        block, warps = fixed_config(n, h.kind)
        _update_kernel[(triton.cdiv(n, block),)](*args, **flags, BLOCK_SIZE=block,
                                                 num_warps=warps)
    else:
        _tuned[lambda meta: (triton.cdiv(n, meta["BLOCK_SIZE"]),)](*args, **flags)
