"""Bad input gets a clear error; non-finite values never reach θ or the state (SPEC §7)."""
import math

import pytest
import torch

import qlab_fused as qf


def model_and_closure(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    return model, x, y, (lambda: torch.nn.functional.mse_loss(model(x), y))


def snapshot(model, opt):
    return ([p.detach().clone() for p in model.parameters()],
            [{k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()])


def assert_same(model, opt, snap, exact=True):
    params, states = snap
    for p, q in zip(model.parameters(), params):
        if exact:
            assert torch.equal(p, q)
        else:  # one rounding of the magnitudes involved (probe="inplace" restore)
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    for p, st in zip(model.parameters(), states):
        for k, v in st.items():
            assert torch.equal(opt.state[p][k], v), k


@pytest.mark.parametrize("alpha0", [0.0, -1.0, math.nan, math.inf])
def test_alpha0_must_be_positive_and_finite(alpha0):
    with pytest.raises(ValueError, match="alpha0"):
        qf.QLABAdam(torch.nn.Linear(2, 2).parameters(), alpha0=alpha0)


def test_option_values_are_checked():
    params = lambda: torch.nn.Linear(2, 2).parameters()  # noqa: E731
    with pytest.raises(ValueError, match="rule"):
        qf.QLABSGD(params(), rule="nope")
    with pytest.raises(ValueError, match="probe"):
        qf.QLABSGD(params(), probe="nope")
    with pytest.raises(ValueError, match="backend"):
        qf.QLABSGD(params(), backend="nope")
    with pytest.raises(ValueError, match="momentum"):
        qf.QLABSGD(params(), momentum=1.5)
    with pytest.raises(ValueError, match="Nesterov"):
        qf.QLABSGD(params(), nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        qf.QLABAdam(params(), betas=(1.0, 0.9))


def test_named_backend_that_is_missing_raises_with_reason():
    reasons = qf.backends("cpu")
    missing = [n for n, r in reasons.items() if r is not None]
    if not missing:
        pytest.skip("every backend is available here")
    with pytest.raises(RuntimeError, match="not available"):
        qf.QLABSGD(torch.nn.Linear(2, 2).parameters(), backend=missing[0])


def test_complex_and_float64_parameters_are_rejected_by_name():
    with pytest.raises(TypeError, match=r"complex.*param_groups\[0\]\['params'\]\[1\]"):
        qf.QLABSGD([torch.nn.Parameter(torch.randn(2)),
                    torch.nn.Parameter(torch.randn(2, dtype=torch.complex64))])
    with pytest.raises(TypeError, match="float64"):
        qf.QLABSGD([torch.nn.Parameter(torch.randn(2, dtype=torch.float64))])


def test_one_group_on_several_devices_is_rejected():
    with pytest.raises(ValueError, match="one device"):
        qf.QLABSGD([torch.nn.Parameter(torch.randn(2)),
                    torch.nn.Parameter(torch.randn(2, device="meta"))])


def test_sparse_gradient_is_rejected_by_name():
    """Into the flat (dense) gradient view autograd accumulates densely; a sparse tensor that
    replaced the view (p.grad = None first) is refused with the parameter's name."""
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = qf.QLABSGD(emb.parameters())
    idx = torch.tensor([1, 2])
    opt.step(lambda: emb(idx).sum())  # dense accumulation into the view: fine
    emb.weight.grad = None
    loss = emb(idx).sum()
    loss.backward()
    assert emb.weight.grad.is_sparse
    with pytest.raises(RuntimeError, match=r"sparse gradients.*params'\]\[0\]"):
        opt.step(lambda: emb(idx).sum(), loss=loss)


def test_step_needs_a_closure():
    model, x, y, closure = model_and_closure()
    opt = qf.QLABSGD(model.parameters())
    with pytest.raises(ValueError, match="closure"):
        opt.step()


@pytest.mark.parametrize("bad,exc,match", [
    (lambda: 1.0, TypeError, "torch.Tensor"),
    (lambda: torch.ones(3, requires_grad=True) * 2, ValueError, "scalar"),
    (lambda: torch.tensor(1.0), ValueError, "does not require grad"),
])
def test_closure_return_value_is_checked(bad, exc, match):
    model, *_ = model_and_closure()
    opt = qf.QLABSGD(model.parameters())
    with pytest.raises(exc, match=match):
        opt.step(bad)


def test_lbfgs_style_closure_gets_a_clear_error():
    model, x, y, closure = model_and_closure()
    opt = qf.QLABSGD(model.parameters())

    def lbfgs_closure():
        opt.zero_grad()
        loss = closure()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="must not call backward"):
        opt.step(lbfgs_closure)
    loss = closure()
    loss.backward()
    snap = snapshot(model, opt)
    with pytest.raises(RuntimeError, match="must not call backward"):
        opt.step(lbfgs_closure, loss=loss)  # fails in the probe call: θ is put back first
    assert_same(model, opt, (snap[0], [{}] * len(snap[0])), exact=False)


@pytest.mark.parametrize("probe", ["inplace", "copy"])
@pytest.mark.parametrize("cls", [qf.QLABSGD, qf.QLABAdam])
def test_nonfinite_loss_skips_and_leaves_everything(cls, probe):
    model, x, y, closure = model_and_closure()
    opt = cls(model.parameters(), probe=probe)
    opt.step(closure)
    snap = snapshot(model, opt)
    step_before = float(opt._rs["step"])
    L = opt.step(lambda: closure() * float("nan"))
    assert math.isnan(float(L))
    assert_same(model, opt, snap, exact=True)
    assert float(opt._rs["skips"]) == 1 and float(opt._rs["step"]) == step_before
    assert float(opt.alpha) == 0.0


@pytest.mark.parametrize("probe", ["inplace", "copy"])
@pytest.mark.parametrize("cls", [qf.QLABSGD, qf.QLABAdam])
def test_nonfinite_probe_loss_restores_theta_and_shrinks_beta(cls, probe):
    model, x, y, closure = model_and_closure()
    opt = cls(model.parameters(), probe=probe)
    opt.step(closure)
    params = [p.detach().clone() for p in model.parameters()]
    beta = float(opt._rs["beta"])
    calls = {"n": 0}

    def closure_inf_probe():
        calls["n"] += 1
        loss = closure()
        return loss if torch.is_grad_enabled() else loss + float("inf")

    opt.step(closure_inf_probe)
    for p, q in zip(model.parameters(), params):
        if probe == "copy":
            assert torch.equal(p, q)
        else:
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
    assert float(opt.alpha) == 0 and float(opt._rs["skips"]) == 1
    assert float(opt._rs["beta"]) == pytest.approx(beta / 10)
    for p in model.parameters():
        for v in opt.state[p].values():
            assert torch.isfinite(v).all()


@pytest.mark.parametrize("cls", [qf.QLABSGD, qf.QLABAdam])
def test_nonfinite_gradient_keeps_theta_and_bad_elements_state(cls):
    """Documented choice: elements whose gradient is not finite keep their state; the others'
    state takes this step's gradient; θ does not move (α = 0); the skip counter counts it."""
    model, x, y, closure = model_and_closure()
    opt = cls(model.parameters(), probe="copy", **({"momentum": 0.9} if cls is qf.QLABSGD else {}))
    opt.step(closure)
    snap = snapshot(model, opt)
    w = model[0].weight
    loss = closure()
    opt.zero_grad()
    loss.backward()
    w.grad[0, 0] = float("nan")
    opt.step(closure, loss=loss)
    for p, q in zip(model.parameters(), snap[0]):
        assert torch.equal(p, q)
    for k, v in opt.state[w].items():
        assert torch.equal(v[0, 0], snap[1][0][k][0, 0]), k
        assert torch.isfinite(v).all()
    assert float(opt._rs["skips"]) == 1


@pytest.mark.parametrize("probe", ["inplace", "copy"])
def test_closure_raising_in_probe_restores_theta(probe):
    model, x, y, closure = model_and_closure()
    opt = qf.QLABAdam(model.parameters(), probe=probe)
    opt.step(closure)
    params = [p.detach().clone() for p in model.parameters()]

    def flaky():
        if not torch.is_grad_enabled():
            raise KeyboardInterrupt("interrupted during the probe")
        return closure()

    with pytest.raises(KeyboardInterrupt):
        opt.step(flaky)
    for p, q in zip(model.parameters(), params):
        if probe == "copy":
            assert torch.equal(p, q), "copy mode restores θ bit-exactly"
        else:
            ulp = torch.finfo(torch.float32).eps
            assert ((p - q).abs() <= 8 * ulp * (q.abs() + 1e-3)).all()


def test_all_zero_gradient_gives_zero_step():
    p = torch.nn.Parameter(torch.randn(5))
    opt = qf.QLABAdam([p])
    before = p.detach().clone()
    opt.step(lambda: (p * 0).sum() + 1.0)
    assert float(opt.alpha) == 0.0 and torch.equal(p.detach(), before)
    assert all(torch.isfinite(v).all() for v in opt.state[p].values())
