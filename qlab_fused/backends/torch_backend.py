"""The ``torch`` backend: the two passes of the kernel contract in plain PyTorch ops on flat buffers.

This is the executable statement of what every fused kernel computes (``docs/kernels.md``), and the
fallback on any device. It allocates temporaries and makes several passes over memory; the fused
backends make one.

Per element, with g the raw gradient and gf = g where finite else 0, each direction is affine in θ
given the (already updated) state: V = uV + cV·θ, P = uP + cP·θ. The probe pass writes θ − β·X; the
inplace update pass recovers θ = (θp + β·uX) / (1 − β·cX) from the probe and writes θ − α·V.
An element with a non-finite gradient keeps its state and uses gf = 0; its NaN still reaches the
reductions, so the rule sets α = 0 and θ is restored.
"""
from __future__ import annotations

import torch

from ..contract import (DIR_P, KIND_ADAM, KIND_MOMENTUM, RED_LEN, SC_BC1, SC_BC2_SQRT, SC_BETA,
                        SC_ALPHA, SC_FIRST, SC_INV_BC1_PREV, SC_OK, Hyper)


def _advance_state(theta, gf, finite, states, sc, h: Hyper):
    """New base state (not yet written) and the stale direction S (None where S = 0)."""
    s = h.lr_scale
    if h.kind == KIND_MOMENTUM:
        (buf,) = states
        gp = gf + h.weight_decay * theta if h.weight_decay else gf
        stale = s * buf
        new = torch.where(sc[SC_FIRST] > 0, gp, h.momentum * buf + (1.0 - h.dampening) * gp)
        return (torch.where(finite, new, buf),), stale
    if h.kind == KIND_ADAM:
        m, v = states
        gp = gf if (h.decoupled or not h.weight_decay) else gf + h.weight_decay * theta
        m_new = torch.where(finite, h.beta1 * m + (1.0 - h.beta1) * gp, m)
        v_new = torch.where(finite, h.beta2 * v + (1.0 - h.beta2) * gp * gp, v)
        denom = v_new.sqrt() / sc[SC_BC2_SQRT] + h.eps
        stale = m * sc[SC_INV_BC1_PREV] / denom
        if h.decoupled and h.weight_decay:
            stale = stale + h.weight_decay * theta
        return (m_new, v_new), s * stale
    return (), None


def _affine(gf, states, sc, h: Hyper):
    """(uV, cV, uP, cP) with V = uV + cV·θ and P = uP + cP·θ, from the updated state."""
    s, wd = h.lr_scale, h.weight_decay
    if h.kind == KIND_MOMENTUM:
        (buf,) = states
        k = (1.0 - h.dampening) / (1.0 - h.momentum)
        uP, cP = s * k * gf, s * k * wd
        if h.nesterov:
            return s * (gf + h.momentum * buf), s * wd, uP, cP
        return s * buf, 0.0, uP, cP
    if h.kind == KIND_ADAM:
        m, v = states
        denom = v.sqrt() / sc[SC_BC2_SQRT] + h.eps
        uV, uP = s * (m / sc[SC_BC1]) / denom, s * gf / denom
        if h.decoupled:
            return uV, s * wd, uP, s * wd
        return uV, 0.0, uP, s * wd / denom
    return s * gf, s * wd, s * gf, s * wd


def _masked_grad(grad):
    g = grad.float()
    finite = torch.isfinite(g)
    return g, finite, torch.where(finite, g, torch.zeros((), dtype=g.dtype, device=g.device))


def probe_pass(master, work, grad, states, sc, h: Hyper, probe_dir: int):
    theta = master
    g, finite, gf = _masked_grad(grad)
    ok = sc[SC_OK] > 0
    new_states, stale = _advance_state(theta, gf, finite, states, sc, h)
    uV, cV, uP, cP = _affine(gf, new_states if new_states else states, sc, h)
    V = uV + cV * theta
    P = uP + cP * theta
    X = P if probe_dir == DIR_P else V
    probe = theta - sc[SC_BETA] * X
    red = torch.stack([
        torch.dot(V, g), torch.dot(P, g), torch.dot(V, V), torch.dot(P, P),
        torch.dot(stale, g) if stale is not None else torch.zeros((), device=g.device),
        torch.dot(g, g), torch.dot(theta, theta), torch.dot(torch.where(g == 0, V, 0.0), V),
    ])
    assert red.numel() == RED_LEN
    # ok == 0: every buffer keeps its bits (the torch backend writes them back unchanged).
    for buf, new in zip(states, new_states):
        buf.copy_(torch.where(ok, new, buf))
    work.copy_(torch.where(ok, probe, theta.to(work.dtype) if work is not master else theta))
    return torch.where(ok, red, torch.zeros_like(red))


def update_pass(master, work, grad, states, sc, h: Hyper, probe_dir: int, inplace: bool):
    _, _, gf = _masked_grad(grad)
    ok = sc[SC_OK] > 0
    uV, cV, uP, cP = _affine(gf, states, sc, h)
    if inplace:
        uX, cX = (uP, cP) if probe_dir == DIR_P else (uV, cV)
        beta = sc[SC_BETA]
        theta = (master + beta * uX) / (1.0 - beta * cX)
    else:
        theta = master
    new = theta - sc[SC_ALPHA] * (uV + cV * theta)
    master.copy_(torch.where(ok, new, master))
    if not inplace:
        work.copy_(master)


def unavailable(name: str, device) -> str | None:
    return None  # plain torch ops run wherever torch does
