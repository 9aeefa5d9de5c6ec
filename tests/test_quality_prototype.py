"""The rule prototype of bench/quality/diagnose.py (used for docs/quality.md log items 11 and 13) takes
the same steps as the library's rules where their semantics coincide (descent batches, finite values);
its top-curvature measurement and its diagnostic forwards are what they claim to be."""
import random
from types import SimpleNamespace

import pytest
import torch

from bench.quality import diagnose
from qlab_fused import reference
from qlab_fused.contract import DIR_P


def _prototype_spec(rule):
    """The Prototype(...) keywords of a library rule, read off its name and the reference's tables."""
    reach, scale = reference.NEAR.get(rule, (1.0, 1.0))
    return dict(combine="wgeo" if "wgeo" in rule else "geov" if "geo_v" in rule else "min",
                w=reference.WGEO_V, ema=reference.EMA_DECAY if rule in reference.EMA_RULES else 0.0,
                trust=rule in reference.TRUST_RULES, reach=reach, scale=scale, vcap=scale,
                match=rule in reference.MATCH_RULES,
                ema_down=reference.EMA_DOWN if rule in reference.SLOW_RULES else 0.0,
                skip_far=rule in reference.GUARD_RULES, unwind=rule in reference.GUARD_RULES,
                resolve=reference.RESOLVE if rule in reference.GUARD_RULES else 0.0)


# (`_skip`, `_start`, `_hold` and `_still`, round 8, `_restart`, round 9, `_edge`, round 10,
# `_len`, round 16, and `_kmax`, round 28 (a throwaway wrapper, then the library), were measured
# outside the prototype: no prototype switch)
_NOT_PROTOTYPED = (set(reference.SKIP_RULES) | set(reference.START_RULES) | set(reference.HOLD_RULES)
                   | set(reference.STILL_RULES) | set(reference.RESTART_RULES)
                   | set(reference.EDGE_RULES) | set(reference.LEN_RULES) | set(reference.KMAX_RULES)
                   | set(reference.SHARE_RULES))


@pytest.mark.parametrize("rule", ["alternate_wgeo_ema_rel", "alternate_wgeo_rel", "alternate_geo_v_ema_rel",
                                  "alternate_trust_ema_rel",
                                  *sorted((set(reference.NEAR) | set(reference.MATCH_RULES))
                                          - _NOT_PROTOTYPED)])
def test_prototype_follows_the_library_rule(rule):
    rng = random.Random(7)
    proto = diagnose.Prototype(**_prototype_spec(rule))
    alpha0 = 1e-2
    rs = dict(k=0, beta=alpha0, alpha0=alpha0)
    st = reference.RuleState(beta=alpha0)
    for k in range(12):
        red = dict(vg=rng.uniform(0.5, 2), pg=rng.uniform(0.5, 2), vv=rng.uniform(0.5, 2),
                   pp=rng.uniform(0.5, 2), sg=rng.uniform(-1, 1), gg=rng.uniform(0.5, 2),
                   tt=rng.uniform(1, 50))
        L0 = rng.uniform(1, 2)
        beta = st.beta
        assert rs["beta"] == pytest.approx(beta, rel=1e-12)
        pdir = reference.probe_direction(rule, reference.KIND_MOMENTUM, k)
        assert proto.probe(rs)[0] == ("P" if pdir == DIR_P else "V")
        dX = red["pg"] if pdir == DIR_P else red["vg"]
        kind = k % 4  # a fit, a far fit (the trust test rejects it), rounding only, a fit
        a2 = (rng.uniform(50, 100) / beta if kind == 1 else 1e-9 * L0 / beta ** 2 if kind == 2
              else rng.uniform(0.05, 3))
        Lb = L0 - beta * dX + a2 * beta ** 2   # a₂ > 0: a fit exists
        a_ref, st = reference.rule_step(rule, L0, Lb, red, beta, st, alpha0, pdir,
                                        param_eps=0.0)  # the prototype has no probe floor
        a_proto = proto.step(rs, L0, Lb, red, beta, "P" if pdir == DIR_P else "V")
        assert a_proto == pytest.approx(a_ref, rel=1e-12, abs=1e-300)


class _Quadratic:
    """A task whose batch loss is ½θᵀAθ (A symmetric positive definite, known spectrum)."""

    def __init__(self, A):
        self.A = A

    def loss(self, model, x, y):
        th = model.weight.reshape(-1)
        return 0.5 * th @ self.A @ th


def _quadratic(n=6, seed=3):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    eig = torch.linspace(0.3, 5.0, n, dtype=torch.float64)
    model = torch.nn.Linear(n, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, n, dtype=torch.float64, generator=g))
    return _Quadratic(Q @ torch.diag(eig) @ Q.T), model


def test_top_curvature_is_the_largest_hessian_eigenvalue():
    task, model = _quadratic()
    ps = list(model.parameters())
    lam = diagnose._top_curvature(task, model, ps, None, None, torch.get_rng_state(), iters=200)
    assert lam == pytest.approx(5.0, rel=1e-6)


def test_top_curvature_in_adams_metric():
    task, model = _quadratic()
    ps = list(model.parameters())
    d = torch.rand(1, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 0.2
    s = d.reshape(-1).rsqrt()
    want = float(torch.linalg.eigvalsh(s[:, None] * task.A * s[None, :]).max())
    lam = diagnose._top_curvature(task, model, ps, None, None, torch.get_rng_state(), [d], iters=300)
    assert lam == pytest.approx(want, rel=1e-6)
    # warm start: returns the iterate, and continuing from it stays at the top eigenvalue
    lam2, v = diagnose._top_curvature(task, model, ps, None, None, torch.get_rng_state(), [d], 3,
                                      diagnose._start_vector(ps))
    lam3, _ = diagnose._top_curvature(task, model, ps, None, None, torch.get_rng_state(), [d], 300, v)
    assert lam2 <= want * (1 + 1e-9) and lam3 == pytest.approx(want, rel=1e-6)


def test_diagnostic_forwards_replay_dropout_and_leave_batchnorm_and_rng_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5),
                                torch.nn.Linear(8, 1))
    task = SimpleNamespace(loss=lambda m, x, y: ((m(x) - y) ** 2).mean())
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    rng = torch.get_rng_state()
    with torch.no_grad():
        L0 = float(task.loss(model, x, y))
    stats = [b.clone() for b in model.buffers()]
    after = torch.get_rng_state()
    ps = list(model.parameters())
    X = [torch.randn_like(p) for p in ps]
    torch.set_rng_state(after)
    assert diagnose._loss_at(task, model, ps, x, y, X, 0.0, rng) == L0  # same masks, same θ
    assert diagnose._loss_at(task, model, ps, x, y, X, 1e-2, rng) != L0
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), stats))
    assert torch.equal(torch.get_rng_state(), after)


def test_edge_floor_lifts_a_short_step_only():
    proto = diagnose.Prototype(combine="min", ema=0.9, edge=0.1)
    red = dict(vg=1.0, pg=1.0, vv=1.0, pp=1.0, sg=0.0, gg=1.0, tt=1e6)
    for lam, floor_binds in ((10.0, True), (1e4, False)):
        rs = dict(k=0, beta=1e-2, alpha0=1e-2, lam=lam, thr=3.8)
        Lb = 1.0 - 1e-2 + 100 * 1e-4  # a₂ = 100: fitted step 0.005
        alpha = proto.step(rs, 1.0, Lb, red, 1e-2, "P")
        assert alpha == pytest.approx(0.1 * 3.8 / lam if floor_binds else 0.005, rel=1e-9)
