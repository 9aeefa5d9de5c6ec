"""Every backend's probe and update passes against the float64 reference, pass by pass.

Fresh random inputs, several steps, all state compared, outputs poisoned before a pass writes them.
A backend joins these tests as soon as ``qlab_fused.backends.why_not`` says it can run here.
"""
import math

import pytest
import torch

from qlab_fused import reference
from qlab_fused.backends import backends, get
from qlab_fused.contract import (DIR_P, DIR_V, KIND_ADAM, KIND_MOMENTUM, KIND_SGD, RED_LEN,
                                 RED_VZ, SC_ALPHA, SC_OK, Hyper, scalars)

from conftest import available_backends

HYPERS = {
    "sgd": Hyper(KIND_SGD),
    "sgd_wd": Hyper(KIND_SGD, weight_decay=0.05, lr_scale=0.5),
    "momentum": Hyper(KIND_MOMENTUM, momentum=0.9),
    "momentum_damp_wd": Hyper(KIND_MOMENTUM, momentum=0.8, dampening=0.3, weight_decay=0.02),
    "nesterov_wd": Hyper(KIND_MOMENTUM, momentum=0.9, nesterov=True, weight_decay=0.03,
                         lr_scale=2.0),
    "adam": Hyper(KIND_ADAM),
    "adam_wd": Hyper(KIND_ADAM, beta1=0.8, beta2=0.95, eps=1e-6, weight_decay=0.1),
    "adamw": Hyper(KIND_ADAM, weight_decay=0.1, decoupled=True, lr_scale=0.3),
}
# (rtol, atol relative to the largest reference magnitude) of the written buffers per work dtype.
TOL = {torch.float32: (1e-5, 1e-6), torch.bfloat16: (1.6e-2, 1e-2), torch.float16: (2e-3, 1e-3)}
SIZES = (1, 7, 4097, 65537)
EPS32 = torch.finfo(torch.float32).eps
PAIRS = available_backends()


def _close(actual, expected, rtol, atol_rel, what):
    expected = expected.to(torch.float64)
    atol = atol_rel * max(expected.abs().max().item(), 1e-30)
    torch.testing.assert_close(actual.double().cpu(), expected.cpu(), rtol=rtol, atol=atol,
                               msg=lambda m: f"{what}: {m}")


def run_case(module, device, h, n, dtype, inplace, probe_dir, steps=4, seed=0, zeros=False):
    """``zeros``: from step 2 on every third gradient element is exactly 0 (rows a batch leaves
    untouched), where V still moves (momentum, Adam, decay): the `*_unseen` reduction's input."""
    gen = torch.Generator().manual_seed(seed)
    rnd = lambda: torch.randn(n, generator=gen, dtype=torch.float64)  # noqa: E731
    theta = rnd()
    st_ref = reference.init_state(theta, h)
    master = theta.float().to(device)
    work = master if inplace else master.to(dtype, copy=True)
    states = [torch.zeros(n, dtype=torch.float32, device=device) for _ in h.state_names()]
    theta_ref = master.double().cpu()  # start from the same fp32 values
    rtol, atol = TOL[dtype]
    unseen = []
    for t in range(1, steps + 1):
        # Same sign as θ, away from 0: with coupled decay, g + λθ near 0 makes Adam's first step
        # g'/(|g'|+ε) ill-conditioned in any fp32 arithmetic, which is not what this test measures.
        g = (torch.sign(theta_ref) * (rnd().abs() + 0.05) * (1 + t)).to(dtype)
        if zeros and t >= 2:
            g[::3] = 0
        beta = float(torch.empty(()).uniform_(1e-3, 0.3, generator=gen))
        alpha = float(torch.empty(()).uniform_(1e-3, 0.3, generator=gen))
        grad = g.to(device)
        g64 = g.double()
        V, P, S, st_ref = reference.directions(theta_ref, g64, st_ref, t, h)
        X = P if probe_dir == DIR_P else V
        sc = scalars(torch.tensor(float(t)), torch.tensor(True), torch.tensor(beta), h, device)
        if not inplace:
            work.fill_(float("nan"))  # poison: the probe pass must write every element
        red = module.probe_pass(master, work, grad, states, sc, h, probe_dir)
        assert red.shape == (RED_LEN,) and red.dtype == torch.float32
        _close(work, (theta_ref - beta * X).to(dtype), rtol, atol, f"probe t={t}")
        for name, buf in zip(h.state_names(), states):
            _close(buf, st_ref[name], 1e-5, 1e-6, f"state {name} t={t}")
        red_ref = torch.stack([(V * g64).sum(), (P * g64).sum(), (V * V).sum(), (P * P).sum(),
                               (S * g64).sum(), (g64 * g64).sum(), (theta_ref * theta_ref).sum(),
                               (V * V)[g64 == 0].sum()])
        scale = torch.stack([(V * g64).abs().sum(), (P * g64).abs().sum(), (V * V).sum(),
                             (P * P).sum(), (S * g64).abs().sum(), (g64 * g64).sum(),
                             (theta_ref * theta_ref).sum(), (V * V).sum()])
        err = (red.double().cpu() - red_ref).abs()
        assert (err <= 1e-5 * scale + 1e-30).all(), f"reductions t={t}: {red} vs {red_ref}"
        unseen.append(float(red[RED_VZ]))
        sc[SC_ALPHA] = alpha
        module.update_pass(master, work, grad, states, sc, h, probe_dir, inplace)
        probe_size = (beta * X).abs()
        theta_ref = theta_ref - alpha * V
        if inplace:  # θ is recovered from θ − βX: a few roundings of |βX|, which may dwarf |θ|
            err = (master.double().cpu() - theta_ref).abs()
            bound = 1e-5 * theta_ref.abs() + 1e-6 * theta_ref.abs().max() + 4 * EPS32 * probe_size
            assert (err <= bound).all(), f"theta t={t}: worst excess {(err - bound).max()}"
        else:
            _close(master, theta_ref, 1e-5, 1e-6, f"theta t={t}")
        if not inplace:
            assert torch.equal(work, master.to(dtype)), "work must be the rounded master"
        theta_ref = master.double().cpu()  # teacher-force: next step starts from the backend's θ
    return unseen


CASES = [(name, dtype, inplace, pdir)
         for name in HYPERS
         for dtype, inplace in ((torch.float32, True), (torch.float32, False),
                                (torch.bfloat16, False), (torch.float16, False))
         for pdir in (DIR_V, DIR_P)]
CASE_IDS = [f"{c[0]}-{str(c[1])[6:]}-{'inplace' if c[2] else 'copy'}-{'VP'[c[3]]}" for c in CASES]


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("name,dtype,inplace,pdir", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("n", SIZES)
def test_passes_match_reference(backend, device, name, dtype, inplace, pdir, n):
    _, module = get(backend, device)
    run_case(module, device, HYPERS[name], n, dtype, inplace, pdir, seed=n)


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("name", list(HYPERS))
@pytest.mark.parametrize("dtype,inplace", [(torch.float32, True), (torch.bfloat16, False)])
@pytest.mark.parametrize("n", (7, 4097))
def test_passes_sum_the_step_where_the_gradient_is_zero(backend, device, name, dtype, inplace, n):
    """RED_VZ = Σ V² over the elements whose gradient is exactly 0 (all reductions and buffers still
    match the reference); it is positive where V moves without a gradient, 0 for plain SGD."""
    _, module = get(backend, device)
    h = HYPERS[name]
    unseen = run_case(module, device, h, n, dtype, inplace, DIR_V, seed=n, zeros=True)
    assert unseen[0] == 0  # step 1: no zero gradient
    moves = h.kind != KIND_SGD or h.weight_decay != 0
    assert all((u > 0) == moves for u in unseen[1:]), unseen


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("name", list(HYPERS))
@pytest.mark.parametrize("inplace", [True, False])
def test_not_ok_writes_nothing(backend, device, name, inplace):
    """sc[OK] = 0 (non-finite L0): every buffer keeps its bits through both passes."""
    _, module = get(backend, device)
    h, n = HYPERS[name], 999
    master = torch.randn(n, device=device)
    work = master if inplace else master.clone()
    grad = torch.randn(n, device=device)
    states = [torch.rand(n, device=device) for _ in h.state_names()]
    before = [t.clone() for t in [master, work, *states]]
    sc = scalars(torch.tensor(3.0), torch.tensor(False), torch.tensor(0.1), h, device)
    sc[SC_ALPHA] = 0.2
    module.probe_pass(master, work, grad, states, sc, h, DIR_V)
    module.update_pass(master, work, grad, states, sc, h, DIR_V, inplace)
    for b, a in zip(before, [master, work, *states]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend,device", PAIRS)
@pytest.mark.parametrize("name", list(HYPERS))
@pytest.mark.parametrize("inplace", [True, False])
@pytest.mark.parametrize("pdir", [DIR_V, DIR_P])
def test_nonfinite_grad_keeps_state_and_theta(backend, device, name, inplace, pdir):
    """Elements with a non-finite gradient keep their state; the reductions turn non-finite (so
    the rule picks α = 0), and an update with α = 0 restores θ (exactly in copy mode)."""
    _, module = get(backend, device)
    h, n = HYPERS[name], 513
    master = torch.randn(n, device=device)
    theta0 = master.clone()
    work = master if inplace else master.clone()
    grad = torch.randn(n, device=device)
    grad[5], grad[100], grad[512] = float("nan"), float("inf"), float("-inf")
    states = [torch.rand(n, device=device) for _ in h.state_names()]
    before = [s.clone() for s in states]
    sc = scalars(torch.tensor(3.0), torch.tensor(True), torch.tensor(0.1), h, device)
    red = module.probe_pass(master, work, grad, states, sc, h, pdir)
    assert not math.isfinite(red[0].item())
    bad = torch.zeros(n, dtype=torch.bool, device=device)
    bad[[5, 100, 512]] = True
    for s, b in zip(states, before):
        assert torch.equal(s[bad], b[bad])
        assert torch.isfinite(s).all()
    assert torch.isfinite(work).all()
    probe = master.clone()
    sc[SC_ALPHA] = 0.0
    module.update_pass(master, work, grad, states, sc, h, pdir, inplace)
    if inplace:  # θ = (θp + βu)/(1 − βc): a few roundings of the magnitudes involved
        ulp = torch.finfo(torch.float32).eps
        assert ((master - theta0).abs() <= 4 * ulp * (theta0.abs() + probe.abs())).all()
    else:
        assert torch.equal(master, theta0) and torch.equal(work, theta0)


def test_every_backend_reports_a_reason():
    info = backends("cpu")
    assert info["torch"] is None
    for name, reason in info.items():
        assert reason is None or isinstance(reason, str) and reason
