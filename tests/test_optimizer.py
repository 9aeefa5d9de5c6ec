"""The optimizers against ``qlab_fused.reference`` (float64), on every backend that runs here."""
import copy
import math

import pytest
import torch

import qlab_fused as qf
from qlab_fused import reference
from qlab_fused.contract import Hyper

from conftest import available_backends, record_rule_step_arg
from objectives import Quartic

SHAPES = [(7, 5), (13,), (3, 4, 2), (1,)]
CONFIGS = {
    "sgd": (qf.QLABSGD, dict(alpha0=0.1)),
    "sgd_wd": (qf.QLABSGD, dict(alpha0=0.1, weight_decay=0.01)),
    "momentum": (qf.QLABSGD, dict(alpha0=0.02, momentum=0.9)),
    "nesterov": (qf.QLABSGD, dict(alpha0=0.02, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "adam": (qf.QLABAdam, dict(alpha0=0.05)),
    "adam_wd": (qf.QLABAdam, dict(alpha0=0.05, weight_decay=0.01)),
    "adamw": (qf.QLABAdamW, dict(alpha0=0.05, weight_decay=0.05)),
}


def hyper_of(opt, group):
    return opt._hyper(group)


def sync_reference(ref, opt, params):
    """Teacher forcing: start the reference's next step from the optimizer's exact fp32 state."""
    ref.params = [p.detach().double().cpu() for p in params]
    ref.states = [{k: v.double().cpu() for k, v in opt.state[p].items()} for p in params]
    rs = {k: float(v) for k, v in opt._rs.items()}
    ref.rs = reference.RuleState(alpha=rs["alpha"], beta=rs["beta"], kappa_v=rs["kappa_v"],
                                 kappa_p=rs["kappa_p"], ema=rs["ema"], held=rs["held"],
                                 length=rs["length"], beta_alt=rs["beta_alt"], found=rs["found"],
                                 kmax=rs["kmax"], share=rs["share"], grad_ema=rs["grad_ema"],
                                 grad_start=rs["grad_start"], grad_seen=int(rs["grad_seen"]),
                                 skips=int(rs["skips"]))
    ref.t, ref.k = int(rs["step"]), opt._k


def fp32_grads(obj, params):
    """The gradient the optimizer will see (fp32), so both sides get identical inputs."""
    probe = [p.detach().clone().requires_grad_() for p in params]
    obj.loss(probe).backward()
    return [p.grad.double().cpu() for p in probe]


def cancellation(opt):
    """How much Lβ − L0 + β·d cancels: the factor by which the ~1e-7 relative errors of the fp32
    losses and slope are amplified in a₂ (and so in α). Large for uncapped rules taking α ≫ β, and
    where the probe barely changes the loss (|Lβ − L0| ≪ |L0|)."""
    last = opt._last
    L0, Lb, beta = float(last["L0"]), float(last["Lbeta"]), float(last["beta"])
    d = float(last["red"][1 if last["probe_dir"] else 0])
    return (abs(Lb) + abs(L0) + beta * abs(d)) / max(abs(Lb - L0 + beta * d), 1e-30)


PAIRS = available_backends()


# The rule is one shared piece of device code (qlab_fused/rules.py); the backends differ only in the
# passes, which tests/test_passes.py covers exhaustively. So every rule runs on the fast CPU
# backends, and the Triton interpreter (slow) runs the defaults plus one rule of each probe pattern.
# On CUDA (a short lease: all of it, ~4400 cases, ran at ~6 per second on an H200 with 14 workers)
# those few rules run on every backend, config and probe mode, and every rule once per base
# optimizer on the plain-torch backend (the rule's device code on CUDA tensors).
_FEW_RULES = sorted(set(reference.DEFAULT_RULES.values()) | {"paper", "safeguarded", "fresh",
                                                             "alternate"})
_CUDA_EVERY_RULE = {"sgd_wd", "momentum", "adam_wd"}


def _runs(config, rule, probe, backend, device) -> bool:
    if rule in _FEW_RULES:
        return True
    if device == "cpu":
        return backend != "triton"
    return backend == "torch" and probe == "inplace" and config in _CUDA_EVERY_RULE


CASES = [pytest.param(c, r, p, b, d, id=f"{c}-{p}-{b}-{d}-{r}")
         for b, d in PAIRS for r in qf.RULES for p in ("inplace", "copy") for c in CONFIGS
         if _runs(c, r, p, b, d)]


@pytest.mark.parametrize("config,rule,probe,backend,device", CASES)
def test_matches_reference(config, rule, probe, backend, device):
    """20 steps; before each, the float64 reference is synced to the optimizer's state and fed the
    same fp32 gradient; after it, θ, every state entry and α agree to 1e-5 relative (1e-7 × the
    cancellation factor of Lβ − L0 + β·d where that is larger; elementwise,
    with an absolute floor of 1e-5 of the largest entry: θ − αV can cancel to near 0)."""
    cls, kw = CONFIGS[config]
    obj = Quartic(SHAPES, seed=3)
    params = [p.to(device).detach().requires_grad_() for p in obj.torch_params()]
    opt = cls(params, rule=rule, probe=probe, backend=backend, **kw)
    ref = reference.ReferenceQLAB([p.detach().double().cpu() for p in params],
                                  [hyper_of(opt, opt.param_groups[0])] * len(params),
                                  alpha0=kw["alpha0"], rule=rule)
    for step in range(20):
        sync_reference(ref, opt, params)
        grads = fp32_grads(obj, params)
        # The probe point exists in fp32 only as fl(θ − βX): evaluate the reference there too.
        refs = reference_steps(ref, lambda ps: obj.loss([p.float() for p in ps]), lambda _: grads)
        opt.zero_grad()
        opt.step(lambda: obj.loss(params))
        tol = 1e-5 * max(1.0, cancellation(opt) / 100)
        if rule == "stale":  # α ∝ ⟨S, G⟩, a sum of mixed-sign terms: its fp32 value cancels too
            tol = max(tol, 1e-4)
        ref = matching_reference(refs, lambda r: check_step(opt, params, r, tol, step))


def reference_steps(ref, loss, grads) -> list:
    """The reference's step, and, where a trust test (fitted minimum against β/TRUST_FAR) fell
    within 1e-6 of its threshold, also the step that takes the test's other branch. The fp32
    inputs cannot decide such a test: on the `*trust`/`*skip`/`*start` rules the fit converges onto
    the threshold (the ratio reaches 1 − 4e-8 on sgd_wd), and a CUDA backend, whose sums round
    otherwise, goes either way (seen on an H200)."""
    start = copy.deepcopy(ref)
    margins = []
    real = reference.fit_too_near

    def spy(rule, a_star, beta, reach, ema):
        if beta > 0 and math.isfinite(a_star):
            margins.extend(abs(a_star * reference.TRUST_FAR * r / beta - 1) for r in (reach, 1.0))
        return real(rule, a_star, beta, reach, ema)

    reference.fit_too_near = spy
    try:
        ref.step(loss, grads)
    finally:
        reference.fit_too_near = real
    refs = [ref]
    if margins and min(margins) < 1e-6:
        far = reference.TRUST_FAR
        for nudge in (1 - 1e-5, 1 + 1e-5):
            alt = copy.deepcopy(start)
            reference.TRUST_FAR = far * nudge
            try:
                alt.step(loss, grads)
            finally:
                reference.TRUST_FAR = far
            refs.append(alt)
    return refs


def matching_reference(refs, check):
    """The first reference step that ``check`` accepts; the first's error if none does."""
    errors = []
    for r in refs:
        try:
            check(r)
            return r
        except AssertionError as exc:
            errors.append(exc)
    raise errors[0]


def check_step(opt, params, ref, tol, step):
    """θ, every state entry and the rule state after one step, against the reference's."""
    scale = max(r.abs().max().item() for r in ref.params)
    for p, r in zip(params, ref.params):
        torch.testing.assert_close(p.detach().double().cpu(), r, rtol=tol, atol=tol * scale,
                                   msg=lambda m: f"θ, step {step}: {m}")
    for p, st_ref in zip(params, ref.states):
        for name, value in st_ref.items():
            torch.testing.assert_close(opt.state[p][name].double().cpu(), value, rtol=1e-5,
                                       atol=1e-5 * max(value.abs().max().item(), 1e-12),
                                       msg=lambda m: f"{name}, step {step}: {m}")
    assert float(opt.alpha) == pytest.approx(ref.rs.alpha, rel=tol, abs=1e-12), step
    assert float(opt._rs["beta"]) == pytest.approx(ref.rs.beta, rel=tol), step
    assert float(opt._rs["length"]) == pytest.approx(ref.rs.length, rel=tol, abs=1e-12), step
    assert float(opt._rs["skips"]) == ref.rs.skips
    assert float(opt._rs["step"]) == ref.t


@pytest.mark.parametrize("config", list(CONFIGS))
def test_free_running_trajectory_close_to_reference(config):
    """Without teacher forcing, 20 steps of the default rule stay within 1e-4 of the float64
    trajectory, or within 1e-7 × the largest cancellation factor of Lβ − L0 + β·d along the run
    where that is larger (as test_matches_reference allows per step): the fitted curvature is a
    small difference of fp32 losses there, and Momentum's `_kmaxp` bound takes a step's length
    from one probe's curvature (the momentum configs reach factors of ~1.4e4 at steps 14-15)."""
    cls, kw = CONFIGS[config]
    obj = Quartic(SHAPES, seed=3)
    params = obj.torch_params()
    opt = cls(params, backend="torch", **kw)
    ref = reference.ReferenceQLAB([p.detach().double() for p in params],
                                  [hyper_of(opt, opt.param_groups[0])] * len(params),
                                  alpha0=kw["alpha0"])
    worst = 0.0
    for _ in range(20):
        opt.zero_grad()
        opt.step(lambda: obj.loss(params))
        ref.step(obj.loss, obj.grads)
        worst = max(worst, cancellation(opt))
    tol = max(1e-4, 1e-7 * worst)
    for p, r in zip(params, ref.params):
        torch.testing.assert_close(p.detach().double(), r, rtol=tol, atol=0.1 * tol)
    assert obj.loss(params) < 0.2 * obj.loss(obj.init)


def test_lr_scale_per_group_matches_reference():
    """Two groups with different alpha0: one line search along the group-scaled direction."""
    obj = Quartic(SHAPES, seed=4)
    params = obj.torch_params()
    opt = qf.QLABSGD([{"params": params[:2], "alpha0": 0.1}, {"params": params[2:], "alpha0": 0.05}],
                     momentum=0.5, backend="torch")
    hypers = [hyper_of(opt, opt.param_groups[0])] * 2 + [hyper_of(opt, opt.param_groups[1])] * 2
    assert hypers[2].lr_scale == 0.5
    ref = reference.ReferenceQLAB([p.detach().double() for p in params], hypers, alpha0=0.1)
    for _ in range(20):
        opt.zero_grad()
        opt.step(lambda: obj.loss(params))
        ref.step(obj.loss, obj.grads)
    for p, r in zip(params, ref.params):
        torch.testing.assert_close(p.detach().double(), r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make", [lambda p: qf.QLABSGD(p, alpha0=1.0),
                                  lambda p: qf.QLABSGD(p, alpha0=1.0, momentum=0.9),
                                  lambda p: qf.QLABAdam(p, alpha0=1.0)], ids=["sgd", "momentum", "adam"])
def test_default_rules_bound_each_step_by_the_parameter_norm(make):
    """The `_rel` defaults: no step moves θ by more than REL_CAP·|θ|, even from α₀ = 1 on a ReLU net
    whose fits ask for far more (the same runs without the bound, `safeguarded` / `alternate_geo_v` /
    `alternate_trust`: largest step 57 % / 40 % / 71 % of |θ|)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    opt = make(model.parameters())
    assert opt.rule in reference.REL_RULES
    g = torch.Generator().manual_seed(1)
    rel, bound_hit = [], 0
    for _ in range(30):
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
        before = torch.cat([p.detach().flatten() for p in model.parameters()]).clone()
        opt.step(lambda: torch.nn.functional.cross_entropy(model(x), y))
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        r = float((after - before).norm() / before.norm())
        rel.append(r)
        bound_hit += r > 0.99 * reference.REL_CAP
    assert max(rel) <= reference.REL_CAP * (1 + 1e-4), max(rel)
    assert bound_hit > 0  # the bound did bind: the test exercises it


@pytest.mark.parametrize("param_dtype,loss_dtype,rounding", [
    (torch.float32, torch.float32, torch.float32), (torch.float32, torch.float64, torch.float32),
    (torch.float32, torch.bfloat16, torch.bfloat16),
    (torch.bfloat16, torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32, torch.float32)])
@pytest.mark.filterwarnings("ignore:the closure returned a bfloat16 loss")
def test_the_rule_learns_the_rounding_of_the_loss(param_dtype, loss_dtype, rounding, monkeypatch):
    """`*_guard` (the Adam default) tells rounding from a measurement by the coarsest dtype the loss
    went through: the closure's loss (before the optimizer promotes a bf16 loss to fp32 for the rule)
    and the parameters, these at most fp32's (an fp32 model's loss summed in float64 still carries
    fp32 rounding; a bf16 model's loss computed in fp32 averages its rounding over the batch)."""
    seen = record_rule_step_arg(monkeypatch, 7, "loss_eps")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1).to(param_dtype)
    x = torch.randn(8, 4, dtype=param_dtype)
    opt = qf.QLABAdam(model.parameters(), alpha0=1e-2, backend="torch")
    for _ in range(2):
        opt.step(lambda: (model(x) ** 2).mean().to(loss_dtype))
    assert seen == [torch.finfo(rounding).eps] * 2


@pytest.mark.parametrize("loss_dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_a_half_precision_loss_warns_once(loss_dtype):
    """A bf16/fp16 loss cannot resolve the differences the rule fits: say so once, at the caller's
    line, and say how to fix it; fp32 and float64 losses are silent."""
    import warnings
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.randn(8, 4)
    opt = qf.QLABAdam(model.parameters(), alpha0=1e-2, backend="torch")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            opt.step(lambda: (model(x) ** 2).mean().to(loss_dtype))
    half = [w for w in caught if "loss differences" in str(w.message)]
    if loss_dtype in (torch.bfloat16, torch.float16):
        assert len(half) == 1 and "float32" in str(half[0].message)
        assert half[0].filename == __file__
    else:
        assert not half


def test_a_bf16_model_with_an_fp32_loss_trains():
    """bf16 parameters, loss computed in fp32 (the usual way): the default Adam rule fits and steps.
    With the `_guard` threshold taken from bf16 (0.066·|L0|) it zeroed almost every step of the
    digits MLP (log item 29); here it must step on most steps and lower the loss."""
    torch.manual_seed(0)
    X = torch.randn(512, 16)
    y = (X[:, :4].sum(1) > 0).long() + 2 * (X[:, 4] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    model = model.to(torch.bfloat16)
    opt = qf.QLABAdam(model.parameters(), alpha0=1e-3, backend="torch")
    loss = lambda xb, yb: torch.nn.functional.cross_entropy(model(xb.bfloat16()).float(), yb)  # noqa: E731
    with torch.no_grad():
        first = float(loss(X, y))
    g = torch.Generator().manual_seed(1)
    zero = 0
    for _ in range(80):
        idx = torch.randint(0, 512, (32,), generator=g)
        opt.step(lambda: loss(X[idx], y[idx]))
        zero += float(opt.alpha) == 0
    assert zero < 24, zero
    with torch.no_grad():
        assert float(loss(X, y)) < 0.6 * first


class _RowQuartic(Quartic):
    """Quartic over the rows (first index) a step touches: at step s the rows with (i + s) % 3 == 0
    are left out, so their gradient is exactly 0 while momentum and Adam still move them (what an
    embedding table's untouched rows do)."""

    step = 0

    def loss(self, params):
        total = 0.0
        for p, h, q, t in zip(params, self.h, self.q, self.t):
            rows = (torch.arange(p.shape[0], device=p.device) + self.step) % 3 != 0
            mask = rows.reshape((-1,) + (1,) * (p.dim() - 1)).to(torch.float64)
            e, h, q = p.double() - t.to(p.device), h.to(p.device), q.to(p.device)
            total = total + (mask * (0.5 * h * e * e + 0.25 * q * e ** 4)).sum()
        return total


@pytest.mark.parametrize("backend,device", [(b, d) for b, d in PAIRS  # the interpreter: too slow
                                            if not (b == "triton" and d == "cpu")])
@pytest.mark.parametrize("rule", reference.UNSEEN_RULES)
@pytest.mark.parametrize("config", ["momentum", "adam", "adamw"])
def test_unseen_rules_match_reference_where_rows_go_untouched(config, rule, backend, device):
    """`*_unseen` against the reference on a loss that leaves a third of the rows untouched each
    step: θ and α agree as in test_matches_reference, and the steps were scaled (Σ_{G=0} V² > 0)."""
    from qlab_fused.contract import RED_VV, RED_VZ
    cls, kw = CONFIGS[config]
    obj = _RowQuartic(SHAPES, seed=5)
    params = [p.to(device).detach().requires_grad_() for p in obj.torch_params()]
    opt = cls(params, rule=rule, backend=backend, **kw)
    ref = reference.ReferenceQLAB([p.detach().double().cpu() for p in params],
                                  [hyper_of(opt, opt.param_groups[0])] * len(params),
                                  alpha0=kw["alpha0"], rule=rule)
    shares = []
    for step in range(12):
        obj.step = step
        sync_reference(ref, opt, params)
        grads = fp32_grads(obj, params)
        ref.step(lambda ps: obj.loss([p.float() for p in ps]), lambda _: grads)
        opt.zero_grad()
        opt.step(lambda: obj.loss(params))
        red = opt._last["red"]
        shares.append(float(red[RED_VZ] / red[RED_VV]))
        tol = 1e-5 * max(1.0, cancellation(opt) / 100)
        scale = max(r.abs().max().item() for r in ref.params)
        for p, r in zip(params, ref.params):
            torch.testing.assert_close(p.detach().double().cpu(), r, rtol=tol, atol=tol * scale,
                                       msg=lambda m: f"θ, step {step}: {m}")
        assert float(opt.alpha) == pytest.approx(ref.rs.alpha, rel=tol, abs=1e-12), step
    # Step 0: only AdamW's decoupled decay moves the untouched rows (Adam's and momentum's state is 0).
    assert shares[0] < 0.01 and all(0.05 < s < 1 for s in shares[1:]), shares
