"""The kernel contract every backend implements: constants, the per-segment hyperparameters, and
the layout of the device scalar vector and of the reductions.

A *segment* is one flat buffer set: the parameters of one param group that share a device and a dtype.
Each backend provides two passes over a segment (see ``docs/kernels.md`` for the math, and
``qlab_fused.backends.torch_backend`` for the executable statement of it):

``probe_pass(seg_tensors, sc, hyper, probe_dir) -> red``
    one read of θ, G and the base state: updates the state, forms V (and P, S), writes the probe
    θ − β·X (X = V or P by ``probe_dir``) into the work buffer, returns the fp32 reductions ``red``.
``update_pass(seg_tensors, sc, hyper, probe_dir, inplace)``
    one read of θ (or of the probe, when inplace) and the state: recomputes V, writes θ − α·V.

Per-step scalars (β, α, bias corrections, the "ok" flag) live in one fp32 device tensor ``sc`` read
through a pointer, so no host synchronisation and no recompilation happens when they change.
"""
from __future__ import annotations

from dataclasses import dataclass

# Base-optimizer direction families.
KIND_SGD = 0       # V = G + λθ
KIND_MOMENTUM = 1  # buf = μ·buf + (1−δ)·(G + λθ); V = buf or (G + λθ) + μ·buf (Nesterov)
KIND_ADAM = 2      # V = m̂ / (√v̂ + ε) (+ λθ when decoupled)
KIND_NAMES = {KIND_SGD: "sgd", KIND_MOMENTUM: "momentum", KIND_ADAM: "adam"}

# Probe directions.
DIR_V = 0  # the update direction
DIR_P = 1  # the fresh preconditioned gradient

# Indices into the fp32 scalar vector ``sc`` (length SC_LEN) that every pass reads.
SC_OK = 0           # 1.0: run; 0.0: write nothing at all (non-finite L0)
SC_BETA = 1         # probe distance β
SC_ALPHA = 2        # step α (read by the update pass only)
SC_BC1 = 3          # 1 − β1^t
SC_BC2_SQRT = 4     # sqrt(1 − β2^t)
SC_INV_BC1_PREV = 5  # 1 / (1 − β1^(t−1)), 0 on the first step (S = 0 then)
SC_FIRST = 6        # 1.0 on the first step: the momentum buffer starts as G + λθ (torch convention)
SC_LEN = 8

# Indices of the fp32 reductions a probe pass returns (length RED_LEN). G is the raw gradient.
RED_VG = 0  # ⟨V, G⟩   slope along the update direction
RED_PG = 1  # ⟨P, G⟩   slope along the fresh preconditioned gradient
RED_VV = 2  # |V|²
RED_PP = 3  # |P|²
RED_SG = 4  # ⟨S, G⟩   slope along the direction built from the previous state only
RED_GG = 5  # |G|²     (all-zero gradient detection)
RED_TT = 6  # |θ|²     (the "*rel" rules bound the step relative to the parameters)
RED_VZ = 7  # Σ V² where G = 0 (the "*unseen" rules: the step's share the batch cannot see)
RED_LEN = 8


@dataclass(frozen=True)
class Hyper:
    """Constant per-segment hyperparameters; runtime scalars to the kernels (never compile-time)."""

    kind: int
    lr_scale: float = 1.0      # alpha0 of this group / the optimizer's reference alpha0
    weight_decay: float = 0.0
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    decoupled: bool = False    # AdamW

    def state_names(self) -> tuple[str, ...]:
        """Names of the fp32 state buffers of this direction, in kernel argument order."""
        if self.kind == KIND_MOMENTUM:
            return ("momentum_buffer",)
        if self.kind == KIND_ADAM:
            return ("exp_avg", "exp_avg_sq")
        return ()


def scalars(step, ok, beta, h: Hyper, device=None):
    """The ``sc`` vector for one segment, from device tensors: ``step`` (t, already counting this
    step), ``ok`` (bool) and ``beta``. α is filled in by the caller before the update pass.

    Only device ops with Python-scalar operands: no host-to-device copies, no synchronisation.
    """
    import torch

    # float64 on device: 1 − 0.999^t in fp32 would already be off by 1e-5 at t = 1.
    f64 = torch.float64
    step = torch.as_tensor(step, device=device).to(f64)
    bc1_prev = 1.0 - torch.pow(h.beta1, step - 1)
    return torch.stack([
        torch.as_tensor(ok, device=step.device).to(f64),
        torch.as_tensor(beta, device=step.device).to(f64),
        torch.zeros_like(step),
        1.0 - torch.pow(h.beta1, step),
        torch.sqrt(1.0 - torch.pow(h.beta2, step)),
        torch.where(step > 1, 1.0 / bc1_prev, torch.zeros_like(step)),
        (step == 1).to(f64),
        torch.zeros_like(step),
    ]).float()
