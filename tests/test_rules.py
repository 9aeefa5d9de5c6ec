"""The step-size rules: device version (torch.where) against the readable reference, and their
invariants for any finite input (hypothesis)."""
import dataclasses
import math

import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from qlab_fused import reference, rules
from qlab_fused.contract import DIR_P, DIR_V

# Magnitudes an fp32 training run produces (the rule state is stored in fp32): 0 or 1e-10..1e6.
nonneg = st.one_of(st.just(0.0), st.floats(min_value=1e-10, max_value=1e6))
finite = st.one_of(nonneg, nonneg.map(lambda x: -x))
positive = st.floats(min_value=1e-6, max_value=1e3)
kappa = st.one_of(st.just(0.0), st.floats(min_value=1e-8, max_value=1e8))
rule_names = st.sampled_from(reference.RULES)
# Tests of how a rule sets its next probe distance compare it without the probe floor, which is the
# same for every rule and has its own test (test_probe_floor_*)
NO_FLOOR = dict(param_eps=0.0)


def run_device(rule, L0, Lb, red, beta, rs, alpha0, pdir, param_eps=reference.FP32_EPS, beta_alt=0.0):
    st_dev = rules.init_state(alpha0, "cpu")
    st_dev.update(alpha=torch.tensor(rs.alpha), beta=torch.tensor(beta),
                  kappa_v=torch.tensor(rs.kappa_v), kappa_p=torch.tensor(rs.kappa_p),
                  ema=torch.tensor(rs.ema), held=torch.tensor(rs.held), length=torch.tensor(rs.length),
                  beta_alt=torch.tensor(beta_alt), found=torch.tensor(rs.found),
                  kmax=torch.tensor(rs.kmax), share=torch.tensor(rs.share),
                  grad_ema=torch.tensor(rs.grad_ema), grad_start=torch.tensor(rs.grad_start),
                  grad_seen=torch.tensor(float(rs.grad_seen)))
    vec = torch.tensor([red["vg"], red["pg"], red["vv"], red["pp"], red["sg"], red["gg"],
                        red.get("tt", 0.0), red.get("vz", 0.0)], dtype=torch.float64)
    return rules.rule_step(rule, torch.tensor(L0, dtype=torch.float64),
                           torch.tensor(Lb, dtype=torch.float64), vec, st_dev, alpha0, pdir,
                           reference.FP32_EPS,  # the reference's default: losses computed in fp32
                           param_eps)


@settings(max_examples=600, deadline=None)
@given(rule=rule_names, L0=finite, dL=finite, vg=finite, pg=nonneg, vv=nonneg, pp=nonneg,
       sg=finite, gg=nonneg, tt=nonneg, beta=positive, alpha0=positive, kv=kappa, kp=kappa,
       ema=kappa, pdir=st.sampled_from([DIR_V, DIR_P]), held=kappa)
@example(rule="alternate", L0=0.0, dL=972126.0, vg=-883740.0, pg=0.0, vv=1.0, pp=0.0, sg=0.0, gg=0.0,
         tt=0.0, beta=1.1, alpha0=1.0, kv=0.0, kp=0.0, ema=0.0,
         pdir=DIR_V, held=0.0)  # a₂ cancels 5 digits
# `_edge`: a held step inside the band (kept), and a far fit (no step past its minimum)
@example(rule="safeguarded_rel_edge_still_restart", L0=1.0, dL=-0.75, vg=1.0, pg=1.0, vv=1.0, pp=1.0,
         sg=0.0, gg=1.0, tt=100.0, beta=1.0, alpha0=1.0, kv=0.0, kp=0.0, ema=1.0,
         pdir=DIR_V, held=1.2)
@example(rule="safeguarded_rel_edge", L0=1.0, dL=1e3, vg=1.0, pg=1.0, vv=1.0, pp=1.0, sg=0.0, gg=1.0,
         tt=100.0, beta=1.0, alpha0=1.0, kv=0.0, kp=0.0, ema=1.0, pdir=DIR_V, held=1.2)
@example(rule="alternate_wgeo_ema_rel_near_edge", L0=1.0, dL=-0.5, vg=1.0, pg=1.0, vv=1.0, pp=4.0,
         sg=0.0, gg=1.0, tt=100.0, beta=0.25, alpha0=1.0, kv=1.0, kp=1.0, ema=0.5,
         pdir=DIR_P, held=0.7)
# `_guard`: a probe that moved the loss by rounding only, and a fit the trust test rejects
@example(rule="alternate_trust_ema_rel_near_guard", L0=1.0, dL=-1.0 + 5e-7, vg=1.0, pg=1.0, vv=1.0,
         pp=1.0, sg=0.0, gg=1.0, tt=4.0, beta=1.0, alpha0=1.0, kv=2.0, kp=3.0, ema=0.5,
         pdir=DIR_V, held=0.0)
@example(rule="alternate_trust_ema_rel_near_match_guard", L0=1.0, dL=1e3, vg=1.0, pg=1.0, vv=1.0,
         pp=4.0, sg=0.0, gg=1.0, tt=4.0, beta=1.0, alpha0=1.0, kv=2.0, kp=3.0, ema=0.5,
         pdir=DIR_P, held=0.0)
# `_hold`: a rounding-only probe with a memory (a step) and without one (none)
@example(rule="alternate_trust_ema_rel_near_match_slow_guard_hold", L0=1.0, dL=-1.0 + 5e-7, vg=1.0,
         pg=1.0, vv=1.0, pp=1.0, sg=0.0, gg=1.0, tt=4.0, beta=1.0, alpha0=1.0, kv=2.0, kp=3.0, ema=0.5,
         pdir=DIR_V, held=0.0)
@example(rule="alternate_trust_ema_rel_near_match_slow_guard_hold", L0=1.0, dL=-1.0 + 5e-7, vg=1.0,
         pg=1.0, vv=1.0, pp=1.0, sg=0.0, gg=1.0, tt=4.0, beta=1.0, alpha0=1.0, kv=2.0, kp=3.0, ema=0.0,
         pdir=DIR_V, held=0.0)
@example(rule="alternate_trust_ema_rel_near_match_slow_guard_hold", L0=1.0, dL=-1e-10, vg=0.0,
         pg=0.0, vv=1.0, pp=1.0, sg=0.0, gg=1.0, tt=4.0, beta=1.0, alpha0=1.0, kv=2.0, kp=3.0, ema=0.5,
         pdir=DIR_V, held=0.0)
@example(rule="alternate_trust_ema_rel_near_match_slow_guard_hold", L0=0.25, dL=0.0, vg=50.0, pg=50.0,
         vv=1.0, pp=1.0, sg=0.0, gg=1.0, tt=100.0, beta=2 ** -13, alpha0=1.0, kv=1.0, kp=1.0,
         ema=2 ** -9, pdir=DIR_P, held=0.0)
# `_still`: a probe that left the loss bit for bit unchanged, fit rule (no step) and EMA rule (a step)
@example(rule="safeguarded_rel_still", L0=0.25, dL=0.0, vg=50.0, pg=50.0, vv=1.0, pp=1.0, sg=0.0,
         gg=1.0, tt=100.0, beta=2 ** -13, alpha0=1.0, kv=0.0, kp=0.0, ema=0.0, pdir=DIR_V, held=0.0)
@example(rule="alternate_wgeo_ema_rel_near_still", L0=0.25, dL=0.0, vg=50.0, pg=50.0, vv=1.0, pp=1.0,
         sg=0.0, gg=1.0, tt=100.0, beta=2 ** -13, alpha0=1.0, kv=1.0, kp=1.0, ema=2 ** -9,
         pdir=DIR_P, held=0.0)
# `_start`: a far fit while the EMA is empty (no step), and once it holds a value (a step)
@example(rule="alternate_wgeo_ema_rel_near_start_guard", L0=1.0, dL=1e3, vg=1.0, pg=1.0, vv=1.0,
         pp=4.0, sg=0.0, gg=1.0, tt=4.0, beta=1.0, alpha0=1.0, kv=0.0, kp=0.0, ema=0.0,
         pdir=DIR_P, held=0.0)
@example(rule="alternate_wgeo_ema_rel_near_start", L0=1.0, dL=1e3, vg=1.0, pg=1.0, vv=1.0,
         pp=4.0, sg=0.0, gg=1.0, tt=4.0, beta=1.0, alpha0=1.0, kv=2.0, kp=3.0, ema=0.5,
         pdir=DIR_P, held=0.0)
# `_skip`: a far fit, with a memory (the step comes from it) and without one (no step)
@example(rule="alternate_wgeo_ema_rel_near_skip_guard", L0=1.0, dL=1e3, vg=1.0, pg=1.0, vv=1.0,
         pp=4.0, sg=0.0, gg=1.0, tt=4.0, beta=1.0, alpha0=1.0, kv=2.0, kp=3.0, ema=0.5,
         pdir=DIR_P, held=0.0)
@example(rule="alternate_wgeo_ema_rel_near_skip", L0=1.0, dL=1e3, vg=1.0, pg=1.0, vv=1.0,
         pp=4.0, sg=0.0, gg=1.0, tt=4.0, beta=1.0, alpha0=1.0, kv=0.0, kp=0.0, ema=0.0,
         pdir=DIR_P, held=0.0)
def test_rule_alpha_is_finite_nonnegative_and_capped(rule, L0, dL, vg, pg, vv, pp, sg, gg, tt, beta,
                                                     alpha0, kv, kp, ema, pdir, held):
    # The device keeps β and the memory slots in fp32: both sides start from the same fp32 values
    # (a₂ = (Lβ − L0 + β·d)/β² can cancel digits, which would magnify a β that differs in its 8th).
    beta, kv, kp, ema, held = (float(torch.tensor(x, dtype=torch.float32))
                               for x in (beta, kv, kp, ema, held))
    Lb = L0 + dL
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=sg, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema, held=held)
    alpha, new = reference.rule_step(rule, L0, Lb, red, beta, rs, alpha0, pdir)
    assert math.isfinite(alpha) and alpha >= 0
    if rule in ("safeguarded", "fresh", "alternate"):
        assert alpha <= 2 * beta * (1 + 1e-12)
    if gg == 0:
        assert alpha == 0
    if rule in reference.REL_RULES and tt > 0 and vv > 0 and not (vg <= 0 and Lb < L0):
        assert alpha * math.sqrt(vv) <= reference.REL_CAP * math.sqrt(tt) * (1 + 1e-12)
    assert math.isfinite(new.beta) and new.beta > 0
    a_dev, new_dev = run_device(rule, L0, Lb, red, beta, rs, alpha0, pdir)
    assert float(a_dev) == pytest.approx(alpha, rel=1e-5, abs=1e-30)
    assert float(new_dev["beta"]) == pytest.approx(new.beta, rel=1e-5)
    assert float(new_dev["kappa_v"]) == pytest.approx(new.kappa_v, rel=1e-5, abs=1e-30)
    assert float(new_dev["kappa_p"]) == pytest.approx(new.kappa_p, rel=1e-5, abs=1e-30)
    assert float(new_dev["ema"]) == pytest.approx(new.ema, rel=1e-5, abs=1e-30)
    assert float(new_dev["held"]) == pytest.approx(new.held, rel=1e-5, abs=1e-30)


@pytest.mark.parametrize("rule", reference.RULES)
@pytest.mark.parametrize("bad", ["Lb", "red", "L0"])
def test_nonfinite_inputs_skip(rule, bad):
    red = dict(vg=1.0, pg=1.0, vv=1.0, pp=1.0, sg=1.0, gg=1.0)
    L0, Lb = 1.0, 0.9
    if bad == "Lb":
        Lb = math.inf
    elif bad == "red":
        red["vg"] = math.nan
    else:
        L0 = math.nan
    rs = reference.RuleState(alpha=0.1, beta=0.1)
    alpha, new = reference.rule_step(rule, L0, Lb, red, 0.1, rs, 1e-3, DIR_V)
    assert alpha == 0 and new.skips == 1
    assert new.beta == pytest.approx(0.1 if bad == "L0" else 0.01)
    a_dev, new_dev = run_device(rule, L0, Lb, red, 0.1, rs, 1e-3, DIR_V)
    assert float(a_dev) == 0 and float(new_dev["skips"]) == 1
    assert float(new_dev["beta"]) == pytest.approx(new.beta)


def test_exact_parabola_gives_its_minimum():
    """On g(a) = a2·a² − d·a + L0 every rule's fit returns d/(2·a2) (inside the cap)."""
    a2, d, L0, beta = 3.0, 1.2, 5.0, 0.15
    Lb = a2 * beta ** 2 - d * beta + L0
    red = dict(vg=d, pg=d, vv=1.0, pp=1.0, sg=d, gg=1.0)
    for rule in ("paper", "safeguarded"):
        alpha, _ = reference.rule_step(rule, L0, Lb, red, beta, reference.RuleState(beta=beta),
                                       1e-3, DIR_V)
        assert alpha == pytest.approx(d / (2 * a2))


def test_descent_failure_rules():
    """d ≤ 0: step β only if the probe (along V) lowered the loss, else no step."""
    red = dict(vg=-1.0, pg=1.0, vv=1.0, pp=1.0, sg=0.0, gg=1.0)
    rs = reference.RuleState(beta=0.1)
    assert reference.rule_step("safeguarded", 1.0, 0.9, red, 0.1, rs, 1e-3, DIR_V)[0] == 0.1
    assert reference.rule_step("safeguarded", 1.0, 1.1, red, 0.1, rs, 1e-3, DIR_V)[0] == 0.0
    assert reference.rule_step("alternate", 1.0, 0.9, red, 0.1, rs, 1e-3, DIR_P)[0] == 0.0


@settings(max_examples=300, deadline=None)
@given(L0=finite, dL=finite, vg=nonneg, pg=nonneg, vv=nonneg, pp=nonneg, sg=finite, gg=nonneg,
       beta=positive, kv=kappa, kp=kappa, pdir=st.sampled_from([DIR_V, DIR_P]))
def test_geo_v_lies_between_alternate_and_the_v_estimate(L0, dL, vg, pg, vv, pp, sg, gg, beta, kv,
                                                         kp, pdir):
    """`alternate_geo_v`: at least `alternate`'s step (the min of the two estimates), never more than
    the V estimate alone when there is one, and never more than `alternate_geo`."""
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=sg, gg=gg)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp)
    step = {r: reference.rule_step(r, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
            for r in ("alternate", "alternate_geo", "alternate_geo_v")}
    a, geo, gv = step["alternate"][0], step["alternate_geo"][0], step["alternate_geo_v"][0]
    assert a * (1 - 1e-12) <= gv <= geo * (1 + 1e-12)
    new = step["alternate_geo_v"][1]
    if new.kappa_v * vv > 0 and vg > 0 and gg > 0:
        assert gv <= max(vg / (2 * new.kappa_v * vv), beta) * (1 + 1e-12)
    # `alternate_geo_v2_rel`: between `alternate_rel` and `alternate_geo_v_rel`, and at most
    # GEO2_SPREAD × `alternate_rel` (the shorter estimate).
    red_t = dict(red, tt=1.0)
    rel = {r: reference.rule_step(r, L0, L0 + dL, red_t, beta, rs, 1e-3, pdir)[0]
           for r in ("alternate_rel", "alternate_geo_v_rel", "alternate_geo_v2_rel")}
    lo, hi, g2 = rel["alternate_rel"], rel["alternate_geo_v_rel"], rel["alternate_geo_v2_rel"]
    assert lo * (1 - 1e-12) <= g2 <= hi * (1 + 1e-12)
    assert g2 <= reference.GEO2_SPREAD * lo * (1 + 1e-12)


@settings(max_examples=300, deadline=None)
@given(L0=finite, dL=finite, vg=nonneg, pg=nonneg, vv=nonneg, pp=nonneg, sg=finite, gg=nonneg,
       tt=nonneg, beta=positive, kv=kappa, kp=kappa, pdir=st.sampled_from([DIR_V, DIR_P]))
def test_rel_rules_are_their_base_rule_bounded_by_the_parameter_norm(L0, dL, vg, pg, vv, pp, sg, gg,
                                                                      tt, beta, kv, kp, pdir):
    """`X_rel` takes X's step, shortened to |αV| ≤ REL_CAP·|θ|; with θ = 0 it is X exactly."""
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=sg, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp)
    pairs = [(r, r[:-len("_rel")]) for r in reference.REL_RULES
             if r.endswith("_rel") and r[:-len("_rel")] in reference.RULES]
    assert len(pairs) >= 4
    for rel, base in pairs:
        a_base, _ = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
        a_rel, _ = reference.rule_step(rel, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
        if tt > 0 and vv > 0 and vg > 0:
            bound = reference.REL_CAP * math.sqrt(tt / vv)
            assert a_rel == pytest.approx(min(a_base, bound), rel=1e-12, abs=1e-300)
        elif tt == 0:
            assert a_rel == a_base


@settings(max_examples=300, deadline=None)
@given(L0=finite, dL=finite, vg=positive, pg=positive, vv=positive, pp=positive, gg=positive,
       beta=positive, kv=kappa, kp=kappa, ema=kappa, pdir=st.sampled_from([DIR_V, DIR_P]))
def test_wgeo_and_ema_rules_combine_and_smooth_the_two_estimates(L0, dL, vg, pg, vv, pp, gg, beta, kv,
                                                                 kp, ema, pdir):
    """`alternate_wgeo*`: c_V^w·c_P^(1−w), at most c_V, when both estimates exist; `*_ema*`: the
    EMA slot moves 1 − EMA_DECAY of the way from the previous EMA to this estimate in log space
    (none yet: the estimate), without the 2β cap, and the step is that EMA, at most c_V."""
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=0.0)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema)
    alpha, new = reference.rule_step("alternate_wgeo_ema_rel", L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    if not (new.kappa_v > 0 and new.kappa_p > 0):
        return
    cv, cp = vg / (2 * new.kappa_v * vv), pg / (2 * new.kappa_p * pp)
    if not (math.isfinite(cv) and math.isfinite(cp) and cv > 0 and cp > 0):
        return
    w = reference.WGEO_V
    mix = min(math.exp(w * math.log(cv) + (1 - w) * math.log(cp)), cv)
    want = mix if ema == 0 else math.exp(reference.EMA_DECAY * math.log(ema)
                                         + (1 - reference.EMA_DECAY) * math.log(mix))
    assert new.ema == pytest.approx(want, rel=1e-9)
    assert alpha == pytest.approx(min(want, cv), rel=1e-9)
    capped, _ = reference.rule_step("alternate_wgeo_rel", L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    assert capped == pytest.approx(min(mix, 2 * beta), rel=1e-9)


@settings(max_examples=300, deadline=None)
@given(rule=st.sampled_from([r for r in sorted(reference.NEAR) if r.endswith("_near")]), L0=finite,
       dL=finite, vg=positive, pg=positive,
       vv=positive, pp=positive, gg=positive, beta=positive, kv=kappa, kp=kappa, ema=kappa,
       pdir=st.sampled_from([DIR_V, DIR_P]))
def test_near_rules_scale_the_step_and_shorten_the_probe(rule, L0, dL, vg, pg, vv, pp, gg, beta, kv, kp,
                                                         ema, pdir):
    """`*_near`: the same rule without the suffix, its combined estimate (and so its EMA and its c_V
    limit) times `scale`, and the next probe at `reach` × the step; the trust test compares the fit
    with the last step (β/reach), not with the shorter probe distance."""
    base = rule[:-len("_near")]
    reach, scale = reference.NEAR[rule]
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=0.0)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema)
    a_near, n_near = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    # the base rule sees the same fit, its EMA slot unscaled, and its trust threshold at β/reach
    rs_base = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema / scale)
    a_base, n_base = reference.rule_step(base, L0, L0 + dL, red, beta, rs_base, 1e-3, pdir)
    if a_near == 0 or a_base == 0:
        return  # a zeroed step: the trust threshold differs by design
    assert n_near.ema == pytest.approx(scale * n_base.ema, rel=1e-9)
    assert a_near == pytest.approx(scale * a_base, rel=1e-9)
    assert n_near.beta == pytest.approx(reach * a_near, rel=1e-12)


@pytest.mark.parametrize("rule", sorted(reference.NEAR))
def test_near_rules_descend_on_a_quadratic(rule):
    """scale < 2: a step of at most scale × the exact line minimum still lowers a quadratic loss,
    whatever the EMA remembers (here: a previous step 100× too long)."""
    a2, d, L0 = 3.0, 1.2, 5.0
    reach, scale = reference.NEAR[rule]
    assert scale < 2
    red = dict(vg=d, pg=d, vv=1.0, pp=1.0, sg=0.0, gg=1.0, tt=0.0)
    st_ = reference.RuleState(beta=0.1, kappa_v=a2, kappa_p=a2, ema=100 * d / (2 * a2))
    for pdir in (DIR_P, DIR_V):
        beta = st_.beta
        Lb = a2 * beta ** 2 - d * beta + L0
        alpha, st_ = reference.rule_step(rule, L0, Lb, red, beta, st_, 1e-3, pdir)
        assert alpha == pytest.approx(scale * d / (2 * a2))
        assert a2 * alpha ** 2 - d * alpha < 0
        # `*edge` probes at reach × the EMA (here still far above the step), the others at reach × α
        at = st_.ema if rule in reference.EDGE_RULES else alpha
        assert st_.beta == pytest.approx(reach * at)


@settings(max_examples=300, deadline=None)
# (`alternate_skip_*` against `alternate_trust_*`: test_skip_rules_step_from_memory_past_a_far_fit;
# `*_hold` against `*_guard`: test_hold_rules_step_with_the_memory_after_a_rounding_only_probe;
# `*_polyak` and `*_len` against the rule without it: test_polyak_rules_bound_the_step_*,
# test_len_rules_bound_the_step_*)
@given(rule=st.sampled_from([r for r in reference.MATCH_RULES if r not in reference.SKIP_RULES
                             and r not in reference.HOLD_RULES and r not in reference.POLYAK_RULES
                             and r not in reference.LEN_RULES]),
       L0=finite, dL=finite, vg=finite, pg=nonneg, vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg,
       beta=positive, kv=kappa, kp=kappa, ema=kappa, pdir=st.sampled_from([DIR_V, DIR_P]))
# a fit that says "too far" on a batch where V is not a descent direction but the probe lowered the
# loss: the step is β (not zeroed), so the next distance follows the policy and is matched
@example(rule="alternate_trust_ema_rel_match", L0=0.0, dL=-3.0, vg=-1.0, pg=1.0, vv=4.0, pp=1.0, gg=1.0,
         tt=0.0, beta=1.0, kv=0.0, kp=0.0, ema=0.0, pdir=DIR_V)
# with `_near` the trust threshold is relative to the last step, β/(TRUST_FAR·reach)
@example(rule="alternate_trust_ema_rel_near_match", L0=0.0, dL=1.0, vg=1.0, pg=0.0, vv=1.0, pp=2.0, gg=1.0,
         tt=0.0, beta=1.0, kv=0.0, kp=0.0, ema=0.0, pdir=DIR_V)
def test_match_rules_move_only_the_next_p_probe(rule, L0, dL, vg, pg, vv, pp, gg, tt, beta, kv, kp, ema,
                                                pdir):
    """`*_match`: the same step and state as the rule without the suffix; after a V probe (the next
    probe is along P) the next probe distance is scaled by |V|/|P|, so the P probe lands at the
    step's length (no scaling while either norm is 0)."""
    base = rule.replace("_match", "")
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema)
    a_m, n_m = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    assert a_m == a_b and (n_m.kappa_v, n_m.kappa_p, n_m.ema) == (n_b.kappa_v, n_b.kappa_p, n_b.ema)
    a_star, _ = reference._fit(L0, L0 + dL, pg if pdir == DIR_P else vg, beta)
    reach = reference.NEAR.get(rule, (1.0, 1.0))[0]
    far = (rule in reference.TRUST_RULES and reference._good(a_star)
           and a_star < beta / (reference.TRUST_FAR * reach)
           and gg != 0 and a_b == 0)  # the trust branch sets the next distance itself, unmatched
    # so does a `_guard` rule after a probe that moved the loss by rounding only (10 β)
    unresolved = (rule in reference.GUARD_RULES
                  and abs(dL + beta * (pg if pdir == DIR_P else vg)) <= reference.RESOLVE * abs(L0))
    if pdir == DIR_V and vv > 0 and pp > 0 and not (far or unresolved):
        assert n_m.beta == pytest.approx(n_b.beta * math.sqrt(vv / pp), rel=1e-12)
    else:
        assert n_m.beta == n_b.beta


@settings(max_examples=300, deadline=None)
@given(rule=st.sampled_from([r for r in reference.SLOW_RULES
                             if r not in reference.GUARD_RULES and r not in reference.SKIP_RULES]),
       L0=finite, dL=finite, vg=finite, pg=nonneg, vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg,
       beta=positive, kv=kappa, kp=kappa, ema=kappa, pdir=st.sampled_from([DIR_V, DIR_P]))
# an estimate below the EMA: the slow rule keeps 97 % of the EMA's log, the base rule 90 %
@example(rule="alternate_trust_ema_rel_near_slow", L0=1.0, dL=0.5, vg=1.0, pg=1.0, vv=1.0, pp=1.0,
         gg=1.0, tt=0.0, beta=1.0, kv=1.0, kp=1.0, ema=10.0, pdir=DIR_V)
def test_slow_rules_follow_only_decreases_slowly(rule, L0, dL, vg, pg, vv, pp, gg, tt, beta, kv, kp, ema,
                                                 pdir):
    """`*_slow`: the same rule without the suffix, except that an estimate below the EMA moves it with
    decay EMA_DOWN instead of EMA_DECAY; so its EMA and its step are never shorter than the base's."""
    base = rule.replace("_slow", "")
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema)
    a_s, n_s = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    assert (n_s.kappa_v, n_s.kappa_p) == (n_b.kappa_v, n_b.kappa_p)
    if not (ema > 0 and 0 < n_b.ema < ema):  # no EMA yet, or the estimate did not fall below it
        assert (a_s, n_s.ema, n_s.beta) == pytest.approx((a_b, n_b.ema, n_b.beta), rel=1e-12)
        return
    # the estimate x the base rule averaged in: log n_b.ema = D·log ema + (1 − D)·log x
    log_x = (math.log(n_b.ema) - reference.EMA_DECAY * math.log(ema)) / (1 - reference.EMA_DECAY)
    want = reference.EMA_DOWN * math.log(ema) + (1 - reference.EMA_DOWN) * log_x
    assert math.log(n_s.ema) == pytest.approx(want, rel=1e-6, abs=1e-9)
    assert n_b.ema <= n_s.ema <= ema
    assert a_s >= a_b


@settings(max_examples=400, deadline=None)
# (`*_polyak` and `*_len` against the rule without it: test_polyak_rules_bound_the_step_*,
# test_len_rules_bound_the_step_*)
@given(rule=st.sampled_from([r for r in reference.GUARD_RULES
                             if r not in reference.HOLD_RULES and r not in reference.POLYAK_RULES
                             and r not in reference.LEN_RULES]),
       L0=finite, dL=finite, vg=finite, pg=nonneg, vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg,
       beta=positive, kv=kappa, kp=kappa, ema=kappa, pdir=st.sampled_from([DIR_V, DIR_P]),
       rounding=st.booleans())
# the Poisson trap of log item 26: a probe at β = 1 along P fits a step of 1e-16
@example(rule="alternate_trust_ema_rel_near_guard", L0=3.2, dL=1e15, vg=1.0, pg=2.0, vv=1.0, pp=4.0,
         gg=1.0, tt=9.0, beta=1.0, kv=0.0, kp=0.0, ema=0.0, pdir=DIR_P, rounding=False)
def test_guard_rules_remember_only_what_they_measured(rule, L0, dL, vg, pg, vv, pp, gg, tt, beta, kv, kp,
                                                      ema, pdir, rounding):
    """`*_guard`: the rule without the suffix, except that (a) a probe that moved the loss by rounding
    only takes no step, keeps the curvatures and the EMA, and probes 10× farther next; (b) a fit the
    trust (or skip) test rejects keeps the curvatures and the EMA (the step and, where the trust
    branch sets it, the next distance are the base rule's); (c) otherwise the EMA never holds more
    than the step bound, and the step is the base's."""
    base = rule[:-len("_guard")]
    dX = pg if pdir == DIR_P else vg
    if rounding:  # the loss moved along the line from the slope only, up to a few ulps
        dL = -beta * dX + 0.5 * reference.RESOLVE * abs(L0)
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema)
    a_g, n_g = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    a_star, _ = reference._fit(L0, L0 + dL, dX, beta)
    reach = reference.NEAR[rule][0]
    tests_far = (rule in reference.TRUST_RULES or rule in reference.SKIP_RULES
                 or (rule in reference.START_RULES and not ema > 0))
    far = tests_far and reference._good(a_star) and a_star < beta / (reference.TRUST_FAR * reach)
    # as the rule computes it, Lβ − L0 + β·d_X
    unresolved = abs(L0 + dL - L0 + beta * dX) <= reference.RESOLVE * abs(L0)
    if unresolved:
        assert a_g == 0 and n_g.beta == 10 * beta
    if unresolved or far:
        assert (n_g.kappa_v, n_g.kappa_p, n_g.ema) == (kv, kp, ema)
    if far and not unresolved:
        assert a_g == a_b
        if gg != 0 and a_b == 0:  # the trust branch sets the next distance (else: from the memory)
            assert n_g.beta == n_b.beta
    if not (unresolved or far):
        assert (n_g.kappa_v, n_g.kappa_p) == (n_b.kappa_v, n_b.kappa_p)
        assert a_g == pytest.approx(a_b, rel=1e-12)
        if tt > 0 and vv > 0:
            bound = reference.REL_CAP * math.sqrt(tt / vv)
            assert n_g.ema == pytest.approx(min(n_b.ema, bound), rel=1e-12)
        else:
            assert n_g.ema == n_b.ema


def _remembered_probe(L0, dX, beta, pdir, vv, pp, kv, kp):
    """Lβ of a probe that measures exactly the remembered curvature along the probed direction,
    a₂ = κ·|X|² (κ = 0: a₂ < 0, no estimate). Cases where Lβ − L0 + β·d_X cannot carry a₂ to 1e-12
    are assumed away (cancellation)."""
    xx, k_old = (pp, kp) if pdir == DIR_P else (vv, kv)
    a2 = k_old * xx if k_old * xx > 0 else -1.0
    Lb = L0 - beta * dX + a2 * beta ** 2
    assume(reference._fit(L0, Lb, dX, beta)[1] == pytest.approx(a2, rel=1e-12, abs=0))
    return Lb


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(reference.SKIP_RULES), L0=finite, dL=finite, vg=finite, pg=nonneg, vv=nonneg,
       pp=nonneg, gg=nonneg, tt=nonneg, beta=positive, kv=kappa, kp=kappa, ema=kappa,
       pdir=st.sampled_from([DIR_V, DIR_P]), far_fit=st.booleans())
# the Poisson trap of log item 26 on the first step (no memory), and with a memory
@example(rule="alternate_wgeo_ema_rel_near_skip", L0=3.2, dL=1e15, vg=1.0, pg=2.0, vv=1.0, pp=4.0,
         gg=1.0, tt=9.0, beta=1.0, kv=0.0, kp=0.0, ema=0.0, pdir=DIR_P, far_fit=False)
@example(rule="alternate_wgeo_ema_rel_near_skip_guard", L0=3.2, dL=1e15, vg=1.0, pg=2.0, vv=1.0,
         pp=4.0, gg=1.0, tt=9.0, beta=1.0, kv=0.5, kp=0.25, ema=0.3, pdir=DIR_P, far_fit=False)
@example(rule="alternate_skip_ema_rel_near_match_slow_guard", L0=3.2, dL=1e15, vg=1.0, pg=2.0, vv=1.0,
         pp=4.0, gg=1.0, tt=9.0, beta=1.0, kv=0.5, kp=0.25, ema=0.3, pdir=DIR_P, far_fit=False)
def test_skip_rules_step_from_memory_past_a_far_fit(rule, L0, dL, vg, pg, vv, pp, gg, tt, beta, kv, kp,
                                                     ema, pdir, far_fit):
    """`*_skip`: the rule without `_skip`, except after a fit whose minimum lies below
    β/(TRUST_FAR·reach): then the curvatures and the EMA stay as they were, and the step is what the
    rule without `_skip` takes from a probe that measured exactly the remembered curvature (the memory
    decides, as if this probe had not been made); with no memory, no step, and the next probe at the
    fitted minimum (at least β/1000)."""
    # the same rule without `_skip` (Adam's has `trust` in its place: the same rule but at a far fit)
    base = rule.replace("alternate_skip", "alternate_trust").replace("_skip", "")
    dX = pg if pdir == DIR_P else vg
    if far_fit and dX > 0:  # a fit 10–1000× shorter than the far threshold
        reach = reference.NEAR[rule][0]
        a_star = beta / (reference.TRUST_FAR * reach) / 10 ** (1 + 2 * (L0 % 1 if L0 > 0 else 0.5))
        dL = -beta * dX + dX * beta ** 2 / (2 * a_star)
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema)
    a_s, n_s = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    a_star, _ = reference._fit(L0, L0 + dL, dX, beta)
    reach = reference.NEAR[rule][0]
    far = reference._good(a_star) and a_star < beta / (reference.TRUST_FAR * reach)
    unresolved = (rule in reference.GUARD_RULES
                  and abs(L0 + dL - L0 + beta * dX) <= reference.RESOLVE * abs(L0))
    if not far:
        assert (a_s, n_s.beta, n_s.kappa_v, n_s.kappa_p, n_s.ema) == (a_b, n_b.beta, n_b.kappa_v,
                                                                    n_b.kappa_p, n_b.ema)
        return
    assert (n_s.kappa_v, n_s.kappa_p, n_s.ema) == (kv, kp, ema)
    if unresolved:
        return  # `_guard`'s rounding rule decides (its own test)
    if not (vg > 0 and gg != 0):  # not a descent direction, or no gradient: the common overrides
        assert a_s == a_b
        return
    xx = pp if pdir == DIR_P else vv
    k_old = kp if pdir == DIR_P else kv
    mem_v, mem_p = (kv if pdir == DIR_P else 0.0) * vv, (kp if pdir == DIR_V else 0.0) * pp
    has_memory = ((k_old * xx > 0 and reference._good(dX / (2 * k_old * xx)))
                  or (mem_v > 0 and reference._good(vg / (2 * mem_v)))
                  or (mem_p > 0 and reference._good(pg / (2 * mem_p))))
    if not has_memory:
        assert a_s == 0
        if gg != 0:
            assert n_s.beta == max(a_star, beta / 1000)
        return
    Lb_mem = _remembered_probe(L0, dX, beta, pdir, vv, pp, kv, kp)
    a_mem, _ = reference._fit(L0, Lb_mem, dX, beta)
    assume(not (base in reference.TRUST_RULES and reference._good(a_mem)
                and a_mem < beta / (reference.TRUST_FAR * reach)))  # trust would reject that probe too
    a_m, _ = reference.rule_step(base, L0, Lb_mem, red, beta, rs, 1e-3, pdir)
    assert a_s == pytest.approx(a_m, rel=1e-6, abs=1e-300)


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(reference.START_RULES), L0=finite, dL=finite, vg=finite, pg=nonneg, vv=nonneg,
       pp=nonneg, gg=nonneg, tt=nonneg, beta=positive, kv=kappa, kp=kappa, ema=kappa,
       pdir=st.sampled_from([DIR_V, DIR_P]), far_fit=st.booleans())
# the Poisson trap of log item 26: the first probe at β = 1 along P fits a step of 1e-16
@example(rule="alternate_wgeo_ema_rel_near_start", L0=3.2, dL=1e15, vg=1.0, pg=2.0, vv=1.0, pp=4.0,
         gg=1.0, tt=9.0, beta=1.0, kv=0.0, kp=0.0, ema=0.0, pdir=DIR_P, far_fit=False)
def test_start_rules_reject_only_a_far_first_fit(rule, L0, dL, vg, pg, vv, pp, gg, tt, beta, kv, kp,
                                                 ema, pdir, far_fit):
    """`*_start`: the rule without `_start`, except for a fit whose minimum lies below
    β/(TRUST_FAR·reach) while the EMA is empty: no step, the curvatures and the EMA stay as they were,
    and (with a gradient) the next probe goes to the fitted minimum, at least β/1000."""
    base = rule.replace("_start", "")
    dX = pg if pdir == DIR_P else vg
    reach = reference.NEAR[rule][0]
    if far_fit and dX > 0:  # a fit 10–1000× shorter than the far threshold
        a_far = beta / (reference.TRUST_FAR * reach) / 10 ** (1 + 2 * (L0 % 1 if L0 > 0 else 0.5))
        dL = -beta * dX + dX * beta ** 2 / (2 * a_far)
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema)
    a_s, n_s = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    a_star, _ = reference._fit(L0, L0 + dL, dX, beta)
    far = (not ema > 0 and reference._good(a_star)
           and a_star < beta / (reference.TRUST_FAR * reach))
    if not far:
        assert (a_s, n_s.beta, n_s.kappa_v, n_s.kappa_p, n_s.ema) == (a_b, n_b.beta, n_b.kappa_v,
                                                                    n_b.kappa_p, n_b.ema)
        return
    assert (n_s.kappa_v, n_s.kappa_p, n_s.ema) == (kv, kp, ema)
    if vg > 0:  # a descent direction (otherwise the common override sets the step)
        assert a_s == 0
    if a_s == 0 and gg != 0 and not (rule in reference.GUARD_RULES and n_s.beta == 10 * beta):
        assert n_s.beta == max(a_star, beta / 1000)


@settings(max_examples=400, deadline=None)
# (`*_polyak` and `*_len` against the rule without it: test_polyak_rules_bound_the_step_*,
# test_len_rules_bound_the_step_*)
@given(rule=st.sampled_from([r for r in reference.HOLD_RULES
                             if r not in reference.RESTART_RULES and r not in reference.POLYAK_RULES
                             and r not in reference.LEN_RULES]),
       L0=finite, dL=finite, vg=finite, pg=nonneg, vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg, beta=positive, kv=kappa, kp=kappa, ema=kappa,
       pdir=st.sampled_from([DIR_V, DIR_P]), rounding=st.booleans())
# a bf16 probe that moved nothing (Lβ = L0) while the EMA holds a step
@example(rule="alternate_trust_ema_rel_near_match_slow_guard_hold", L0=2.0, dL=0.0, vg=1e-9, pg=1e-9,
         vv=1.0, pp=1.0, gg=1.0, tt=100.0, beta=0.01, kv=1.0, kp=1.0, ema=0.02, pdir=DIR_V,
         rounding=False)
# a probe that left the loss bit for bit unchanged while β·d_X is far above the rounding threshold
# (bf16 parameters: θ − βX rounded back to θ); `_guard` reads it as a fit of β/2
@example(rule="alternate_trust_ema_rel_near_match_slow_guard_hold", L0=0.2, dL=0.0, vg=50.0, pg=50.0,
         vv=1.0, pp=1.0, gg=1.0, tt=100.0, beta=1e-4, kv=1.0, kp=1.0, ema=0.003, pdir=DIR_P,
         rounding=False)
# a rounding-only probe that lowered the loss along a V that is no descent direction: no step
@example(rule="alternate_trust_ema_rel_near_match_slow_guard_hold", L0=1.0, dL=-1e-10, vg=0.0, pg=0.0,
         vv=0.0, pp=0.0, gg=1.0, tt=0.0, beta=1.0, kv=0.0, kp=0.0, ema=1.0, pdir=DIR_V, rounding=False)
def test_hold_rules_step_with_the_memory_after_a_rounding_only_probe(rule, L0, dL, vg, pg, vv, pp, gg,
                                                                   tt, beta, kv, kp, ema, pdir,
                                                                   rounding):
    """`*_hold`: the `_guard` rule, except after a probe that measured nothing (rounding only, or the
    loss bit for bit unchanged): then the curvatures and the EMA stay, the next probe goes 10×
    farther, and while the EMA holds a step and V descends the step is what the guard rule takes from
    a probe that measured exactly the remembered curvature (the memory decides); otherwise none."""
    base = rule[:-len("_hold")]
    dX = pg if pdir == DIR_P else vg
    if rounding:  # the loss moved along the line from the slope only, up to a few ulps
        dL = -beta * dX + 0.5 * reference.RESOLVE * abs(L0)
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema)
    a_h, n_h = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    a_g, n_g = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    unresolved = (abs(L0 + dL - L0 + beta * dX) <= reference.RESOLVE * abs(L0)
                  or L0 + dL == L0)
    if not unresolved:
        assert (a_h, n_h.beta, n_h.kappa_v, n_h.kappa_p, n_h.ema) == (a_g, n_g.beta, n_g.kappa_v,
                                                                    n_g.kappa_p, n_g.ema)
        return
    assert (n_h.kappa_v, n_h.kappa_p, n_h.ema, n_h.beta) == (kv, kp, ema, 10 * beta)
    a_star, _ = reference._fit(L0, L0 + dL, dX, beta)
    reach = reference.NEAR[rule][0]
    far = reference._good(a_star) and a_star < beta / (reference.TRUST_FAR * reach)
    if far or gg == 0 or not (ema > 0 and vg > 0):  # trust's zero step, no gradient, no memory
        assert a_h == 0
        return
    # the guard rule fed a resolved probe that measured the remembered curvature
    Lb_mem = _remembered_probe(L0, dX, beta, pdir, vv, pp, kv, kp)
    assume(abs(Lb_mem - L0 + beta * dX) > reference.RESOLVE * abs(L0) and Lb_mem != L0)
    a_mem, _ = reference._fit(L0, Lb_mem, dX, beta)
    assume(not (reference._good(a_mem) and a_mem < beta / (reference.TRUST_FAR * reach)))
    a_m, _ = reference.rule_step(base, L0, Lb_mem, red, beta, rs, 1e-3, pdir)
    assert a_h == pytest.approx(a_m, rel=1e-6, abs=1e-300)


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from([r for r in reference.STILL_RULES  # `_grow` on top: its own test
                             if r not in reference.RESTART_RULES + reference.GROW_RULES]),
       L0=finite, dL=finite, vg=finite, pg=nonneg, vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg, beta=positive, kv=kappa, kp=kappa, ema=kappa,
       pdir=st.sampled_from([DIR_V, DIR_P]), still=st.booleans())
# the bf16 decay of log item 29: θ − βX rounded back to θ, Lβ = L0, β·d_X far above rounding
@example(rule="safeguarded_rel_still", L0=0.25, dL=0.0, vg=50.0, pg=50.0, vv=1.0, pp=1.0, gg=1.0,
         tt=100.0, beta=1e-4, kv=0.0, kp=0.0, ema=0.0, pdir=DIR_V, still=True)
@example(rule="alternate_wgeo_ema_rel_near_still", L0=0.25, dL=0.0, vg=50.0, pg=50.0, vv=1.0, pp=1.0,
         gg=1.0, tt=100.0, beta=1e-4, kv=1.0, kp=1.0, ema=0.003, pdir=DIR_P, still=True)
def test_still_rules_fit_nothing_from_a_loss_that_did_not_move(rule, L0, dL, vg, pg, vv, pp, gg, tt,
                                                              beta, kv, kp, ema, pdir, still):
    """`*_still`: the rule without the suffix, except after a probe whose loss is bit for bit L0:
    then nothing is fitted or remembered, the next probe goes 10× farther, and the step is the one a
    probe that measured exactly the remembered curvature gives (`_ema` rules with an EMA, where V
    descends) or none."""
    base = rule[:-len("_still")]
    if still:
        dL = 0.0
    dX = pg if pdir == DIR_P else vg
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema)
    a_s, n_s = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    if L0 + dL != L0:
        assert (a_s, n_s.beta, n_s.kappa_v, n_s.kappa_p, n_s.ema) == (a_b, n_b.beta, n_b.kappa_v,
                                                                    n_b.kappa_p, n_b.ema)
        return
    assert (n_s.kappa_v, n_s.kappa_p, n_s.ema, n_s.beta) == (kv, kp, ema, 10 * beta)
    if rule not in reference.EMA_RULES or gg == 0 or not (ema > 0 and vg > 0):
        assert a_s == 0
        return
    Lb_mem = _remembered_probe(L0, dX, beta, pdir, vv, pp, kv, kp)
    assume(Lb_mem != L0)
    a_m, _ = reference.rule_step(base, L0, Lb_mem, red, beta, rs, 1e-3, pdir)
    assert a_s == pytest.approx(a_m, rel=1e-6, abs=1e-300)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_guard_threshold_follows_the_loss_dtype(dtype):
    """`*_guard`: "rounding only" means a few ulps of the dtype the loss was computed in: a probe
    whose loss leaves the slope's line by 0.5·RESOLVE·|L0| scaled to that dtype measured nothing
    (no step, next probe 10× farther), and the same probe read in a finer dtype is a fit."""
    rule = "alternate_trust_ema_rel_near_match_slow_guard"  # (the default's `_hold` steps instead)
    eps = torch.finfo(dtype).eps
    L0, beta, vg = 2.0, 0.5, 1.0
    red = dict(vg=vg, pg=vg, vv=1.0, pp=1.0, sg=0.0, gg=1.0, tt=100.0)
    Lb = L0 - beta * vg + 0.5 * reference.RESOLVE * (eps / reference.FP32_EPS) * L0
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=1.0, kappa_p=1.0, ema=0.3)
    a, new = reference.rule_step(rule, L0, Lb, red, beta, rs, 1e-3, DIR_V, eps)
    assert a == 0 and new.beta == 10 * beta and (new.kappa_v, new.ema) == (1.0, 0.3)
    a_fine, new_fine = reference.rule_step(rule, L0, Lb, red, beta, rs, 1e-3, DIR_V, eps / 4)
    assert a_fine > 0 and new_fine.kappa_v != 1.0
    # the device rule reads the dtype off the loss tensors when not told
    st_dev = rules.init_state(1e-3, "cpu")
    st_dev.update(alpha=torch.tensor(beta), beta=torch.tensor(beta), kappa_v=torch.tensor(1.0),
                  kappa_p=torch.tensor(1.0), ema=torch.tensor(0.3))
    vec = torch.tensor([vg, vg, 1.0, 1.0, 0.0, 1.0, 100.0], dtype=torch.float64)
    a_dev, new_dev = rules.rule_step(rule, torch.tensor(L0, dtype=dtype),
                                     torch.tensor(Lb, dtype=torch.float64), vec, st_dev, 1e-3, DIR_V)
    assert float(a_dev) == 0 and float(new_dev["beta"]) == pytest.approx(10 * beta)


PARAM_EPS = [torch.finfo(d).eps for d in (torch.float32, torch.bfloat16, torch.float16)]


@settings(max_examples=400, deadline=None)
@given(rule=rule_names, L0=finite, dL=finite, vg=finite, pg=nonneg, vv=nonneg, pp=nonneg, sg=finite,
       gg=nonneg, tt=nonneg, beta=positive, kv=kappa, kp=kappa, ema=kappa,
       pdir=st.sampled_from([DIR_V, DIR_P]), eps=st.sampled_from(PARAM_EPS))
# bf16 parameters, a probe far too short to move them: the next one goes to the floor, along P
# (|P| = 5|V|, as for Adam) after a V probe, along V after a P probe
@example(rule="alternate_wgeo_ema_rel_near", L0=1.0, dL=-1e-6, vg=1.0, pg=1.0, vv=1.0, pp=25.0, sg=0.0,
         gg=1.0, tt=100.0, beta=1e-5, kv=1.0, kp=1.0, ema=1e-5, pdir=DIR_V, eps=PARAM_EPS[1])
@example(rule="alternate_wgeo_ema_rel_near", L0=1.0, dL=-1e-6, vg=1.0, pg=1.0, vv=1.0, pp=25.0, sg=0.0,
         gg=1.0, tt=100.0, beta=1e-5, kv=1.0, kp=1.0, ema=1e-5, pdir=DIR_P, eps=PARAM_EPS[1])
@example(rule="safeguarded_rel_still", L0=1.0, dL=-1e-6, vg=1.0, pg=1.0, vv=1.0, pp=1.0, sg=0.0,
         gg=1.0, tt=100.0, beta=1e-5, kv=0.0, kp=0.0, ema=0.0, pdir=DIR_V, eps=PARAM_EPS[1])
def test_probe_floor_keeps_every_probe_a_few_ulps_of_theta(rule, L0, dL, vg, pg, vv, pp, sg, gg, tt,
                                                          beta, kv, kp, ema, pdir, eps):
    """Every rule, bf16 or fp16 parameters: the next probe distance is the rule's own raised to
    PROBE_ULPS ulps of θ (RMS) along the direction the next step probes, β·|X| ≥ PROBE_ULPS·ε·|θ|, with
    ε the parameters' machine epsilon; fp32 parameters: the rule's own. The step and the memory are
    the rule's own; the device twin does the same."""
    # fp32 `*_restart` rules start over below one ulp, which NO_FLOOR (ε = 0) never does: their own test
    assume(not (rule in reference.RESTART_RULES and eps <= reference.FP32_EPS))
    beta, kv, kp, ema = (float(torch.tensor(x, dtype=torch.float32)) for x in (beta, kv, kp, ema))
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=sg, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema)
    a_f, n_f = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, param_eps=eps)
    a_n, n_n = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    assert a_f == a_n and (n_f.kappa_v, n_f.kappa_p, n_f.ema) == (n_n.kappa_v, n_n.kappa_p, n_n.ema)
    xx = pp if reference.next_probe_direction(rule, pdir) == DIR_P else vv
    low = eps > reference.FP32_EPS  # fp32 parameters: no floor
    floor = reference.PROBE_ULPS * eps * math.sqrt(tt / xx) if (low and tt > 0 and xx > 0) else 0.0
    assert n_f.beta == max(n_n.beta, floor)
    if floor > 0:
        assert n_f.beta * math.sqrt(xx) >= reference.PROBE_ULPS * eps * math.sqrt(tt) * (1 - 1e-12)
    a_dev, new_dev = run_device(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, eps)
    assert float(a_dev) == pytest.approx(a_f, rel=1e-5, abs=1e-30)
    assert float(new_dev["beta"]) == pytest.approx(n_f.beta, rel=1e-5)


@pytest.mark.parametrize("rule,pdir,nxt", [("alternate_wgeo_ema_rel_near", DIR_P, DIR_V),
                                           ("alternate_wgeo_ema_rel_near", DIR_V, DIR_P),
                                           ("fresh", DIR_P, DIR_P), ("safeguarded", DIR_V, DIR_V)])
def test_next_probe_direction_is_the_one_the_next_step_probes(rule, pdir, nxt):
    kind = reference.KIND_MOMENTUM
    k = next(k for k in range(2) if reference.probe_direction(rule, kind, k) == pdir)
    assert reference.next_probe_direction(rule, pdir) == nxt == reference.probe_direction(rule, kind,
                                                                                           k + 1)


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(reference.RESTART_RULES), L0=finite, dL=finite, vg=finite, pg=nonneg,
       vv=nonneg, pp=nonneg, sg=finite, gg=nonneg, tt=nonneg, beta=positive, kv=kappa, kp=kappa,
       ema=kappa, pdir=st.sampled_from([DIR_V, DIR_P]), eps=st.sampled_from(PARAM_EPS))
# the Poisson run of QLAB-SGD: a fit far shorter than an fp32 ulp of θ (α* ≈ 1e-20)
@example(rule="safeguarded_rel_still_restart", L0=1.0, dL=1e19, vg=1.0, pg=1.0, vv=1.0, pp=1.0, sg=0.0,
         gg=1.0, tt=100.0, beta=1.0, kv=0.0, kp=0.0, ema=0.0, pdir=DIR_V, eps=PARAM_EPS[0])
# the Momentum trap of log item 26: the EMA holds 1e-24 and the fit agrees
@example(rule="alternate_wgeo_ema_rel_near_restart", L0=3.0, dL=-1e-24, vg=1.0, pg=1.0, vv=1.0, pp=4.0,
         sg=0.0, gg=1.0, tt=9.0, beta=1e-24, kv=1e23, kp=1e23, ema=1e-24, pdir=DIR_P, eps=PARAM_EPS[0])
def test_restart_rules_start_over_when_the_next_probe_cannot_move_theta(rule, L0, dL, vg, pg, vv, pp,
                                                                       sg, gg, tt, beta, kv, kp,
                                                                       ema, pdir, eps):
    """`*_restart`: the rule without it, except where its next probe would move θ by less than one
    ulp (RMS) of the parameters' dtype: then the EMA is emptied and the next probe goes to α0 (× reach
    for the EMA rules), as on a first step. The step and the curvatures are the rule's own; with bf16
    or fp16 parameters the floor keeps every probe at an ulp, so it never restarts; the device twin
    does the same."""
    beta, kv, kp, ema = (float(torch.tensor(x, dtype=torch.float32)) for x in (beta, kv, kp, ema))
    base = rule[:-len("_restart")]
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=sg, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema)
    alpha0 = 1e-3
    a_r, n_r = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, alpha0, pdir, param_eps=eps)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, alpha0, pdir, param_eps=eps)
    assert a_r == a_b and (n_r.kappa_v, n_r.kappa_p, n_r.alpha) == (n_b.kappa_v, n_b.kappa_p, n_b.alpha)
    xx = pp if reference.next_probe_direction(rule, pdir) == DIR_P else vv
    if n_b.beta < reference.ulp_distance(eps, tt, xx):
        assert eps <= reference.FP32_EPS  # the floor rules this out for bf16 and fp16
        reach = reference.NEAR[rule][0] if rule in reference.EMA_RULES else 1.0
        assert (n_r.beta, n_r.ema, n_r.held) == (reach * alpha0, 0.0, 0.0)
    else:
        assert (n_r.beta, n_r.ema, n_r.held) == (n_b.beta, n_b.ema, n_b.held)
    a_dev, new_dev = run_device(rule, L0, L0 + dL, red, beta, rs, alpha0, pdir, eps)
    assert float(a_dev) == pytest.approx(a_r, rel=1e-5, abs=1e-30)
    assert float(new_dev["beta"]) == pytest.approx(n_r.beta, rel=1e-5)
    assert float(new_dev["ema"]) == pytest.approx(n_r.ema, rel=1e-5, abs=1e-30)


EDGE_FIT_RULES = [r for r in reference.EDGE_RULES  # `*polyak`: the base rule's step, capped (below)
                  if r in reference.FIT_RULES and r not in reference.POLYAK_RULES]


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(EDGE_FIT_RULES), a_fit=st.floats(min_value=1e-3, max_value=1e3),
       beta=st.floats(min_value=1e-3, max_value=1e3), m=st.one_of(st.just(0.0), positive),
       held=st.one_of(st.just(0.0), positive))
def test_edge_fit_rules_hold_the_step_inside_the_band_of_the_smoothed_fit(rule, a_fit, beta, m, held):
    """`*edge` (fit rules), on an exact parabola with minimum a_fit probed at β: the smoothed fit m'
    averages log a_fit in with EMA_DECAY; the held step stays where it was inside [m', EDGE·m'] and
    moves to the nearer end otherwise; the step is the held one, never past EDGE × the fit (the fit
    itself when the probe was more than TRUST_FAR times farther), nor past the 2β growth cap; the
    next probe goes to m'. So on a parabola every step lowers the loss."""
    beta, m, held = (float(torch.tensor(x, dtype=torch.float32)) for x in (beta, m, held))
    d, L0 = 1.0, 5.0
    a2 = d / (2 * a_fit)
    Lb = L0 - d * beta + a2 * beta ** 2
    assume(Lb != L0)  # at β = 2·a_fit the parabola returns to L0: `_still` rules fit nothing there
    red = dict(vg=d, pg=d, vv=1.0, pp=1.0, sg=0.0, gg=1.0, tt=0.0)  # tt = 0: no step bound
    rs = reference.RuleState(alpha=beta, beta=beta, ema=m, held=held)
    alpha, new = reference.rule_step(rule, L0, Lb, red, beta, rs, 1e-3, DIR_V, **NO_FLOOR)
    fit = d / (2 * ((Lb - L0 + beta * d) / beta ** 2))  # the minimum as the rule computes it
    m_new = math.exp(reference.EMA_DECAY * math.log(m) + (1 - reference.EMA_DECAY) * math.log(fit)) \
        if m > 0 else fit
    edge = reference.EDGE_OF[rule]
    h_new = min(max(held, m_new), edge * m_new) if held > 0 else m_new
    assert new.ema == pytest.approx(m_new, rel=1e-9)
    assert new.held == pytest.approx(h_new, rel=1e-9)
    far = fit < beta / reference.TRUST_FAR
    assert alpha == pytest.approx(min(h_new, (1.0 if far else edge) * fit, 2 * beta),
                                  rel=1e-9)
    assert new.beta == pytest.approx(m_new, rel=1e-9)
    assert a2 * alpha ** 2 - d * alpha < 0  # the step descends on the parabola
    a_dev, new_dev = run_device(rule, L0, Lb, red, beta, rs, 1e-3, DIR_V, param_eps=0.0)
    assert float(a_dev) == pytest.approx(alpha, rel=1e-5)
    assert float(new_dev["held"]) == pytest.approx(new.held, rel=1e-5)
    assert float(new_dev["beta"]) == pytest.approx(new.beta, rel=1e-5)


def _run_on_sharpening_quadratic(rule, steps=200):
    """A full-batch quadratic along V whose curvature grows 1 %/step (progressive sharpening): the
    fitted minimum falls 0.99× per step. Returns the steps α and their fitted minima."""
    rs = reference.RuleState(beta=0.1)
    d, L0, out = 1.0, 5.0, []
    for k in range(steps):
        a_true = 1.0 * 0.99 ** k
        a2 = d / (2 * a_true)
        beta = rs.beta
        alpha, rs = reference.rule_step(rule, L0, L0 - d * beta + a2 * beta ** 2,
                                        dict(vg=d, pg=d, vv=1.0, pp=1.0, sg=0.0, gg=1.0, tt=0.0),
                                        beta, rs, 0.1, DIR_V, **NO_FLOOR)
        out.append((alpha, a_true))
    return out


def test_edge_rule_holds_its_step_above_a_falling_fit_and_never_past_edge_times_it():
    """Where the fitted minimum keeps falling, the edge rule's step stays above it (within EDGE× of
    it) while the plain rule follows it down to its value; `_edge135` holds it within 1.35×."""
    plain = _run_on_sharpening_quadratic("safeguarded_rel_still_restart")
    edge = _run_on_sharpening_quadratic("safeguarded_rel_edge_still_restart")
    late = range(100, 200)
    assert all(plain[k][0] == pytest.approx(plain[k][1], rel=1e-6) for k in late)
    ratios = [edge[k][0] / edge[k][1] for k in late]
    assert min(ratios) > 1.2 and max(ratios) <= reference.EDGE * (1 + 1e-9)
    narrow = _run_on_sharpening_quadratic("safeguarded_rel_edge135_still_restart")  # band 1.35
    narrow_ratios = [narrow[k][0] / narrow[k][1] for k in late]
    assert min(narrow_ratios) > 1.1 and max(narrow_ratios) <= 1.35 * (1 + 1e-9) < min(ratios)


def test_edge_ema_rule_holds_the_step_inside_the_band_of_its_ema():
    """`*edge` on an `_ema` rule: the EMA is the base rule's; the held step moves into [EMA,
    EDGE·EMA]; the step is that, at most scale × the fit along V; the next probe goes to reach × EMA."""
    rule, base = "alternate_wgeo_ema_rel_near_edge", "alternate_wgeo_ema_rel_near"
    reach, scale = reference.NEAR[rule]
    red = dict(vg=1.0, pg=1.0, vv=1.0, pp=4.0, sg=0.0, gg=1.0, tt=0.0)
    for held, pdir, kv in ((0.0, DIR_P, 1.0), (0.6, DIR_P, 1.0), (5.0, DIR_P, 1.0), (0.6, DIR_P, 4.0),
                           (0.6, DIR_V, 1.0)):
        rs = reference.RuleState(alpha=0.1, beta=0.1, kappa_v=kv, kappa_p=1.0, ema=0.5, held=held)
        a_e, n_e = reference.rule_step(rule, 1.0, 0.95, red, 0.1, rs, 1e-3, pdir, **NO_FLOOR)
        a_b, n_b = reference.rule_step(base, 1.0, 0.95, red, 0.1, rs, 1e-3, pdir, **NO_FLOOR)
        assert (n_e.ema, n_e.kappa_v, n_e.kappa_p) == (n_b.ema, n_b.kappa_v, n_b.kappa_p)
        m = n_e.ema
        h = min(max(held, m), reference.EDGE_OF[rule] * m) if held > 0 else m
        cv = red["vg"] / (2 * n_e.kappa_v * red["vv"])
        assert n_e.held == pytest.approx(h, rel=1e-12)
        assert a_e == pytest.approx(min(h, scale * cv), rel=1e-12)
        assert n_e.beta == pytest.approx(reach * m, rel=1e-12)
        a_dev, new_dev = run_device(rule, 1.0, 0.95, red, 0.1, rs, 1e-3, pdir, param_eps=0.0)
        assert float(a_dev) == pytest.approx(a_e, rel=1e-5)
        assert float(new_dev["held"]) == pytest.approx(n_e.held, rel=1e-5)


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from([r for r in reference.POLYAK_RULES  # `_unseen`, `_carry` on top: their
                              if r not in reference.LEN_RULES + reference.UNSEEN_RULES  # own tests
                              + reference.CARRY_RULES + reference.GROW_RULES
                              + reference.STEEP_RULES + reference.EARLY_RULES
                              + reference.KMAX_RULES]),
       L0=finite, dL=finite, vg=finite, pg=nonneg,
       vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg, beta=positive, m=kappa, held=kappa,
       kv=kappa, kp=kappa, pdir=st.sampled_from([DIR_V, DIR_P]), eps=st.sampled_from(PARAM_EPS))
# the demo's spike (log item 37): a held step ~40× the Polyak step L0/⟨V,G⟩ near zero loss
@example(rule="safeguarded_rel_edge135_polyak_still_restart", L0=2e-3, dL=-1.9e-3, vg=1e-3, pg=1e-3,
         vv=1e-3, pp=1e-3, gg=1e-3, tt=100.0, beta=40.0, m=80.0, held=80.0, kv=0.0, kp=0.0, pdir=DIR_V,
         eps=PARAM_EPS[0])
def test_polyak_rules_bound_the_step_by_twice_the_polyak_step_and_nothing_else(rule, L0, dL, vg, pg,
                                                                             vv, pp, gg, tt, beta,
                                                                             m, held, kv, kp, pdir,
                                                                             eps):
    """`*polyak`: the rule without it, with the step at most POLYAK·L0/⟨V,G⟩ where L0 > 0 and
    ⟨V,G⟩ > 0; the memory (curvatures, EMA, held step) and the next probe are the base rule's; the
    device twin agrees."""
    beta, m, held, kv, kp = (float(torch.tensor(x, dtype=torch.float32)) for x in (beta, m, held, kv, kp))
    base = rule.replace("_polyak", "")
    if reference.probe_direction(base, reference.KIND_MOMENTUM, 0) == DIR_V:
        pdir = DIR_V  # a fit rule probes along V only
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, ema=m, held=held, kappa_v=kv, kappa_p=kp)
    a_p, n_p = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, param_eps=eps)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir, param_eps=eps)
    cap = reference.POLYAK * L0 / vg if (L0 > 0 and vg > 0) else math.inf
    assert a_p == min(a_b, cap) and n_p.alpha == a_p
    assert ((n_p.beta, n_p.ema, n_p.held, n_p.kappa_v, n_p.kappa_p, n_p.skips)
            == (n_b.beta, n_b.ema, n_b.held, n_b.kappa_v, n_b.kappa_p, n_b.skips))
    a_dev, new_dev = run_device(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, eps)
    assert float(a_dev) == pytest.approx(a_p, rel=1e-5, abs=1e-30)
    assert float(new_dev["beta"]) == pytest.approx(n_p.beta, rel=1e-5)
    assert float(new_dev["held"]) == pytest.approx(n_p.held, rel=1e-5, abs=1e-30)


def test_polyak_cap_binds_on_the_demo_spike():
    """The example above binds: the base rule steps far past 2·L0/⟨V,G⟩, the polyak rule at it."""
    red = dict(vg=1e-3, pg=1e-3, vv=1e-3, pp=1e-3, sg=0.0, gg=1e-3, tt=100.0)
    rs = reference.RuleState(alpha=40.0, beta=40.0, ema=80.0, held=80.0)
    args = (2e-3, 1e-4, red, 40.0, rs, 1e-3, DIR_V)
    a_b, _ = reference.rule_step("safeguarded_rel_edge135_still_restart", *args)
    a_p, _ = reference.rule_step("safeguarded_rel_edge135_polyak_still_restart", *args)
    assert a_b > 5 * a_p and a_p == pytest.approx(reference.POLYAK * 2e-3 / 1e-3)


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from([r for r in reference.LEN_RULES  # `_unseen`, `_carry`, `_split`, `_grow`,
                             if r not in reference.UNSEEN_RULES + reference.CARRY_RULES  # `_early` on
                             + reference.SPLIT_RULES + reference.GROW_RULES  # top: their own tests
                             + reference.EARLY_RULES]),
       L0=finite, dL=finite, vg=finite, pg=nonneg, vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg,
       beta=positive, m=kappa, kv=kappa, kp=kappa, length=kappa, pdir=st.sampled_from([DIR_V, DIR_P]),
       eps=st.sampled_from(PARAM_EPS))
# the demo's spike (log item 40): |V| 10× the scale the smoothed α was fitted along
@example(rule="alternate_trust_ema_rel_near_match_guard_len", L0=5.4e-4, dL=-5.0e-4, vg=3e-4,
         pg=3e-4, vv=0.6, pp=0.6, gg=1e-3, tt=380.0, beta=0.35, m=0.35, kv=1e-3, kp=1e-3,
         length=0.035, pdir=DIR_V, eps=PARAM_EPS[0])
def test_len_rules_bound_the_step_by_the_smoothed_step_length_and_nothing_else(rule, L0, dL, vg, pg,
                                                                             vv, pp, gg, tt, beta,
                                                                             m, kv, kp, length,
                                                                             pdir, eps):
    """`*len`: the rule without it, with the step at most LEN_GROWTH × the smoothed length over |V|
    (no bound while none is stored or V = 0); the length EMA (its decay the rule's) takes each step's
    α·|V| where a step is taken; the rest of the memory and the next probe are the base rule's; the
    device twin agrees."""
    beta, m, kv, kp, length = (float(torch.tensor(x, dtype=torch.float32))
                               for x in (beta, m, kv, kp, length))
    base = reference.without_len(rule)
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, ema=m, kappa_v=kv, kappa_p=kp, length=length)
    a_l, n_l = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, param_eps=eps)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir, param_eps=eps)
    norm = math.sqrt(vv)
    if rule in reference.LENMEM_RULES and length > 0 and m > 0 and n_b.ema > 0:
        length = length * n_b.ema / m  # `_lenmem`: the stored length moves with the α memory
    if rule in reference.LENUP_RULES and length > 0 and m > 0 and n_b.ema > 0:
        length = length * max(n_b.ema / m, 1.0)  # `_lenup`: only up
    cap = reference.LEN_GROWTH * length / norm if (length > 0 and vv > 0) else math.inf
    assert a_l == pytest.approx(min(a_b, cap), rel=1e-12) and n_l.alpha == a_l
    assert ((n_l.beta, n_l.ema, n_l.held, n_l.kappa_v, n_l.kappa_p, n_l.skips)
            == (n_b.beta, n_b.ema, n_b.held, n_b.kappa_v, n_b.kappa_p, n_b.skips))
    if a_l > 0 and vv > 0:
        dec = reference.LEN_DECAY_OF[rule]
        want = (a_l * norm if length == 0 else
                math.exp(dec * math.log(length) + (1 - dec) * math.log(a_l * norm)))
        assert n_l.length == pytest.approx(want, rel=1e-9)
        assert n_l.length <= max(length, a_l * norm) * (1 + 1e-12)
    else:
        assert n_l.length == rs.length
    a_dev, new_dev = run_device(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, eps)
    assert float(a_dev) == pytest.approx(a_l, rel=1e-5, abs=1e-30)
    assert float(new_dev["length"]) == pytest.approx(n_l.length, rel=1e-5, abs=1e-30)
    assert float(new_dev["beta"]) == pytest.approx(n_l.beta, rel=1e-5)


def test_len_bound_binds_on_the_demo_spike():
    """The spike of log item 40: the smoothed α times a V 10× its recent scale is a step 8× the
    recent length; the `_len` rule takes LEN_GROWTH × that length, and the same rule on the steps
    before it (|V| at its scale) takes the base rule's step."""
    red = dict(vg=3e-4, pg=3e-4, vv=0.6, pp=0.6, sg=0.0, gg=1e-3, tt=380.0)
    rs = reference.RuleState(alpha=0.35, beta=0.35, ema=0.35, kappa_v=1e-3, kappa_p=1e-3, length=0.035)
    args = (5.4e-4, 4e-5, red, 0.35, rs, 1e-3, DIR_V)
    a_b, _ = reference.rule_step("alternate_trust_ema_rel_near_match_guard", *args)
    a_l, _ = reference.rule_step("alternate_trust_ema_rel_near_match_guard_len", *args)
    assert a_b * math.sqrt(0.6) > 3 * 0.035
    assert a_l * math.sqrt(0.6) == pytest.approx(reference.LEN_GROWTH * 0.035)
    calm = dict(red, vv=0.08 ** 2)
    args = (2e-5, 1.9e-5, calm, 0.35, rs, 1e-3, DIR_V)
    a_b, _ = reference.rule_step("alternate_trust_ema_rel_near_match_guard", *args)
    a_l, _ = reference.rule_step("alternate_trust_ema_rel_near_match_guard_len", *args)
    assert a_l == a_b > 0


def test_len50_lets_the_step_length_grow_faster_than_len():
    """A run whose first step was short while the base rule asks for a 1000× longer one: under
    `_len` the step grows by LEN_GROWTH^0.1 a step, under `_len50` by LEN_GROWTH^0.5, each until it
    reaches the base rule's step."""
    import dataclasses
    red = dict(vg=1.0, pg=1.0, vv=4.0, pp=4.0, sg=0.0, gg=1.0, tt=1e8)
    base = reference.RuleState(alpha=0.1, beta=0.1, ema=0.1, kappa_v=0.5, kappa_p=0.5)
    args = (1.0, 0.95, red, 0.1)
    a_base, _ = reference.rule_step("alternate_trust_ema_rel_near_match_guard", *args, base, 0.1, DIR_V)
    for rule, share in (("alternate_trust_ema_rel_near_match_guard_len", 0.1),
                        ("alternate_trust_ema_rel_near_match_guard_len50", 0.5)):
        length, steps = a_base * 2 / 1000, []
        while len(steps) < 200 and (not steps or steps[-1] < a_base):
            a, new = reference.rule_step(rule, *args, dataclasses.replace(base, length=length), 0.1, DIR_V)
            steps.append(a)
            length = new.length
        growth = [b / a for a, b in zip(steps, steps[1:-1])]
        assert growth == pytest.approx([reference.LEN_GROWTH ** share] * len(growth))
        assert steps[-1] == a_base
    assert reference.LEN_DECAY_OF["alternate_trust_ema_rel_near_match_guard_len50"] == 0.5


def _slow_start_steps(rule, n=60):
    """The steps of ``rule`` over ``n`` steps from the slow start of `_len` (log item 41): a stored
    length of 2e-4 and an α memory of 1e-4, while every fit asks for a step ~1000× longer."""
    red = dict(vg=1.0, pg=1.0, vv=4.0, pp=4.0, sg=0.0, gg=1.0, tt=1e8)
    st_ = reference.RuleState(alpha=1e-4, beta=1e-4, ema=1e-4, kappa_v=0.5, kappa_p=0.5, length=2e-4)
    steps = []
    for _ in range(n):
        a, st_ = reference.rule_step(rule, 1.0, 0.95, red, st_.beta, st_, 1e-4, DIR_V)
        steps.append(a)
    return steps


def test_lenmem_bound_follows_a_growing_alpha_memory_and_still_binds_on_the_spike():
    """`_lenmem` on the slow start of `_len` (log item 41: a short first step, fits 1000× longer):
    the stored length moves with the α memory, so the steps grow as the base rule's EMA does and
    reach its step as soon as it does (under `_len`, 4 % a step). On the demo's spike (|V| 10×
    its recent scale at a steady α memory) it binds as `_len` does."""
    base, len_, mem = (_slow_start_steps(rule) for rule in (
        "alternate_trust_ema_rel_near_match_guard", "alternate_trust_ema_rel_near_match_guard_len",
        "alternate_trust_ema_rel_near_match_guard_lenmem"))
    assert base[-1] > 50 * len_[-1]                       # `_len` is still short after 60 steps
    assert mem == pytest.approx(base, rel=1e-12)          # `_lenmem` steps as the base rule
    spike = dict(vg=3e-4, pg=3e-4, vv=0.6, pp=0.6, sg=0.0, gg=1e-3, tt=380.0)
    rs = reference.RuleState(alpha=0.35, beta=0.35, ema=0.35, kappa_v=1e-3, kappa_p=1e-3,
                             length=0.035)
    args = (5.4e-4, 4e-5, spike, 0.35, rs, 1e-3, DIR_V)
    a_len, n_len = reference.rule_step("alternate_trust_ema_rel_near_match_guard_len", *args)
    a_mem, n_mem = reference.rule_step("alternate_trust_ema_rel_near_match_guard_lenmem", *args)
    assert a_mem * math.sqrt(0.6) == pytest.approx(reference.LEN_GROWTH * 0.035 * n_mem.ema / 0.35)
    assert a_mem * math.sqrt(0.6) < 2 * 0.035 and n_mem.ema == n_len.ema


def test_lenup_follows_a_growing_alpha_memory_and_keeps_the_length_where_it_falls():
    """`_lenup` (log item 42): on the slow start of `_len` it steps as `_lenmem` (as the base rule);
    where the α memory falls because |V| grows at a steady step length it keeps the stored length,
    where `_lenmem` moves it down with α (the growth of |V| counted twice) and cuts the step."""
    assert _slow_start_steps("alternate_trust_ema_rel_near_match_guard_lenup") == pytest.approx(
        _slow_start_steps("alternate_trust_ema_rel_near_match_guard_lenmem"), rel=1e-12)
    # |V| twice its scale, a fit a quarter of the memory: the α memory falls by more than 5 %; the
    # stored length is the step's own (α·|V|) over LEN_GROWTH, plus 5 %, which `_lenup` keeps
    grown = dict(vg=4.0, pg=4.0, vv=4.0, pp=4.0, sg=0.0, gg=4.0, tt=1e8)
    fit = 0.05  # Lβ from a parabola with its minimum at 0.05 along V, probed at β = 0.1
    Lb = 1.0 - 0.1 * 4.0 + 4.0 / (2 * fit) * 0.1 ** 2
    probe = reference.RuleState(alpha=0.2, beta=0.1, ema=0.2, kappa_v=0.5, kappa_p=0.5)
    a_b, n_b = reference.rule_step("alternate_trust_ema_rel_near_match_guard", 1.0, Lb, grown, 0.1,
                                   probe, 1e-4, DIR_V)
    assert n_b.ema < probe.ema / 1.05 and a_b > 0          # the α memory falls by more than 5 %
    length = a_b * 2.0 / reference.LEN_GROWTH * 1.05
    st_ = reference.RuleState(**{**vars(probe), "length": length})
    args = (1.0, Lb, grown, 0.1, st_, 1e-4, DIR_V)
    a_up, n_up = reference.rule_step("alternate_trust_ema_rel_near_match_guard_lenup", *args)
    a_mem, _ = reference.rule_step("alternate_trust_ema_rel_near_match_guard_lenmem", *args)
    assert a_up == a_b                                     # the step is the base rule's
    assert a_mem < a_b                                     # `_lenmem` cuts it
    assert n_up.length == pytest.approx(math.exp(0.9 * math.log(length) + 0.1 * math.log(a_up * 2.0)))


# `_minrel`, `_minpol`, `_minlive` floor the step after `_unseen`'s factor, so theirs is not the
# product where the floor binds (e.g. u = 0.5, |θ| = |V|: 0.008 against 0.25 × 0.025); their own
# tests below cover their `_unseen` forms
_UNFLOORED_UNSEEN = tuple(r for r in reference.UNSEEN_RULES if r not in reference.MINREL_RULES
                          and r not in reference.MINPOL_RULES and r not in reference.LIVE_RULES)


@settings(max_examples=300, deadline=None)
@given(rule=st.sampled_from(_UNFLOORED_UNSEEN), L0=finite, dL=finite, vg=finite, pg=nonneg,
       vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg, beta=positive, kv=kappa, kp=kappa, ema=kappa,
       length=kappa, pdir=st.sampled_from([DIR_V, DIR_P]),
       u=st.one_of(st.just(0.0), st.just(1.0), st.floats(min_value=0.0, max_value=1.0)))
def test_unseen_rules_scale_the_step_by_the_seen_share_squared_and_keep_the_base_state(
        rule, L0, dL, vg, pg, vv, pp, gg, tt, beta, kv, kp, ema, length, pdir, u):
    """`*_unseen`: α is the rule without the modifier times (1 − u)², u = vz/|V|²; every state slot
    but the last step's α (the α memory, the next probe, `_len`'s length) is the rule's without it;
    the device agrees."""
    beta, kv, kp, ema, length = (float(torch.tensor(x, dtype=torch.float32))
                                 for x in (beta, kv, kp, ema, length))
    base = rule[:-len("_unseen")]
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt, vz=u * vv)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema, length=length)
    a_u, n_u = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    assert a_u == pytest.approx(a_b * (1 - u) ** 2 if vv > 0 else a_b, rel=1e-12, abs=1e-300)
    assert n_u.alpha == a_u and vars(n_u) == dict(vars(n_b), alpha=a_u)  # the step taken
    a_dev, n_dev = run_device(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    _, m_dev = run_device(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    assert float(a_dev) == pytest.approx(a_u, rel=1e-5, abs=1e-30)
    assert torch.equal(n_dev["alpha"], a_dev)
    assert all(torch.equal(n_dev[k], m_dev[k]) for k in n_dev if k != "alpha")


def test_unseen_scale_is_one_without_unseen_mass_and_zero_when_all_of_it_is():
    assert reference.unseen_scale(0.0, 2.0) == 1.0 and reference.unseen_scale(2.0, 2.0) == 0.0
    assert reference.unseen_scale(0.5, 2.0) == pytest.approx(0.5625)
    assert reference.unseen_scale(0.0, 0.0) == 1.0 and reference.unseen_scale(3.0, 2.0) == 0.0


@settings(max_examples=300, deadline=None)
@given(rule=st.sampled_from(reference.CARRY_RULES), L0=finite, dL=finite, vg=finite, pg=nonneg,
       vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg, beta=positive, kv=kappa, kp=kappa, ema=kappa,
       length=kappa, pdir=st.sampled_from([DIR_V, DIR_P]))
def test_carry_rules_differ_from_their_base_only_where_v_does_not_descend(
        rule, L0, dL, vg, pg, vv, pp, gg, tt, beta, kv, kp, ema, length, pdir):
    """`*_carry`: where ⟨V,G⟩ > 0 the step and every state slot are the rule's without it; the
    device agrees either way."""
    beta, kv, kp, ema, length = (float(torch.tensor(x, dtype=torch.float32))
                                 for x in (beta, kv, kp, ema, length))
    base = rule.replace("_carry", "")
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt, vz=0.1 * vv)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema, length=length)
    a_c, n_c = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    if vg > 0:
        assert a_c == a_b and vars(n_c) == vars(n_b)
    a_dev, _ = run_device(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    assert float(a_dev) == pytest.approx(a_c, rel=1e-5, abs=1e-30)


@pytest.mark.parametrize("rule", reference.CARRY_RULES)
def test_carry_steps_with_the_memory_where_the_batch_says_v_ascends(rule):
    """A P probe that fits well (minimum at 0.8β) on a batch where ⟨V,G⟩ < 0: the base rule takes no
    step, `_carry` the memory's (0.01, inside the 10 % bound and the length bound), times (1 − u)²
    where it has `_unseen` (u = 0.1 here); with no memory, no step either way."""
    red = dict(vg=-0.02, pg=0.05, vv=1.0, pp=4.0, sg=0.0, gg=1.0, tt=100.0, vz=0.1)
    beta = 0.1
    Lb = 1.0 - beta * 0.05 + beta * 0.05 / 1.6
    rs = reference.RuleState(alpha=0.01, beta=beta, kappa_v=1.0, kappa_p=1.0, ema=0.01, length=0.02)
    a_b, _ = reference.rule_step(rule.replace("_carry", ""), 1.0, Lb, red, beta, rs, 1e-3, DIR_P)
    a_c, n_c = reference.rule_step(rule, 1.0, Lb, red, beta, rs, 1e-3, DIR_P)
    want = 0.01 * (0.9 ** 2 if rule.endswith("_unseen") else 1.0)
    assert a_b == 0.0 and a_c == pytest.approx(want, rel=1e-12) and n_c.alpha == a_c
    a_dev, _ = run_device(rule, 1.0, Lb, red, beta, rs, 1e-3, DIR_P)
    assert float(a_dev) == pytest.approx(want, rel=1e-5)
    empty = reference.RuleState(alpha=0.0, beta=beta, kappa_v=0.0, kappa_p=0.0, ema=0.0)
    assert reference.rule_step(rule, 1.0, Lb, red, beta, empty, 1e-3, DIR_P)[0] == 0.0


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(reference.SPLIT_RULES), L0=finite, dL=finite, vg=finite, pg=nonneg,
       vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg, beta=positive, kv=kappa, kp=kappa, ema=kappa,
       length=kappa, pending=st.one_of(st.just(0.0), positive), pdir=st.sampled_from([DIR_V, DIR_P]),
       rounding=st.booleans())
def test_split_rules_keep_each_direction_s_request_for_its_own_next_probe(
        rule, L0, dL, vg, pg, vv, pp, gg, tt, beta, kv, kp, ema, length, pending, pdir, rounding):
    """`*_split`: the step and every slot but β and `beta_alt` are the rule's without it; where the
    rule without it sends the next probe to a distance this probe asked for (10β after a probe that
    measured nothing, the fitted minimum after a fit too near to trust), `_split` stores that request
    in `beta_alt` and probes next where the other direction asked (`pending`), or at the rule's own
    distance when it asked for nothing; the device agrees."""
    beta, kv, kp, ema, length, pending = (float(torch.tensor(x, dtype=torch.float32))
                                          for x in (beta, kv, kp, ema, length, pending))
    if rounding:  # the loss moved along the line from the slope only
        dL = -beta * (pg if pdir == DIR_P else vg) + 0.5 * reference.RESOLVE * abs(L0)
    base = rule.replace("_split", "")
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt, vz=0.1 * vv)
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, ema=ema, length=length,
                             beta_alt=pending)
    none = reference.RuleState(**{**vars(rs), "beta_alt": 0.0})
    a_s, n_s = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    a_0, n_0 = reference.rule_step(rule, L0, L0 + dL, red, beta, none, 1e-3, pdir, **NO_FLOOR)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir, **NO_FLOOR)
    same = ("alpha", "kappa_v", "kappa_p", "ema", "held", "length", "skips")
    assert a_s == a_0 == a_b and all(getattr(n_s, k) == getattr(n_b, k) for k in same)
    asked = n_0.beta_alt
    assert n_s.beta_alt == asked and n_b.beta_alt == pending  # the base never touches the slot
    if asked > 0:
        assert n_b.beta == asked  # where the base's next probe would have gone
    else:
        assert n_b.beta == n_0.beta
    if reference.measured_nothing(rule, L0, L0 + dL, beta, pg if pdir == DIR_P else vg,
                                  reference.FP32_EPS) and math.isfinite(L0 + dL):
        assert asked == 10 * beta
    assert n_s.beta == (pending if pending > 0 else n_0.beta)
    a_dev, n_dev = run_device(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir, param_eps=0.0,
                              beta_alt=pending)
    assert float(a_dev) == pytest.approx(a_s, rel=1e-5, abs=1e-30)
    assert float(n_dev["beta"]) == pytest.approx(n_s.beta, rel=1e-5)
    assert float(n_dev["beta_alt"]) == pytest.approx(n_s.beta_alt, rel=1e-5)


@pytest.mark.parametrize("rule", reference.SPLIT_RULES)
def test_split_breaks_the_two_cycle_of_the_physics_informed_net(rule):
    """The 2-cycle of log item 49, in two steps: a V probe at 3e-4 that moves the loss by rounding
    only, then a P probe whose fit lies at a tenth of its distance. Without `_split` the P probe goes
    10× farther than V's (3e-3) and the V probe after it to P's fitted minimum (3e-4, rounding again);
    with it P is probed at the rule's own distance and V next at 10× its last, 3e-3, while P's
    request waits for the P probe after that."""
    base = rule.replace("_split", "")
    L0, beta_v = 0.22, 3e-4
    red = dict(vg=3e-3, pg=5e-3, vv=2.5, pp=3.6, sg=0.0, gg=1.0, tt=400.0, vz=0.0)
    rs = reference.RuleState(alpha=4e-4, beta=beta_v, kappa_v=1.0, kappa_p=10.0, ema=4e-4,
                             length=1e-3)
    Lb = L0 - beta_v * red["vg"] + 1e-8  # within rounding of the line
    steps = {}
    for name in (base, rule):
        a1, n1 = reference.rule_step(name, L0, Lb, red, beta_v, rs, 1e-2, DIR_V)
        beta_p = n1.beta
        a_far = beta_p / 10
        Lb_p = L0 - beta_p * red["pg"] + red["pg"] * beta_p ** 2 / (2 * a_far)
        a2, n2 = reference.rule_step(name, L0, Lb_p, red, beta_p, n1, 1e-2, DIR_P)
        steps[name] = (a1, n1, a2, n2)
    a1, n1, a2, n2 = steps[base]
    assert a1 == 0 and n1.beta == pytest.approx(10 * beta_v)  # P probed 10x farther
    assert a2 == 0 and n2.beta == pytest.approx(n1.beta / 10)  # V probed at P's fitted minimum
    a1, n1, a2, n2 = steps[rule]
    reach = reference.NEAR[rule][0]
    assert a1 == 0 and n1.beta_alt == pytest.approx(10 * beta_v)
    assert n1.beta == pytest.approx(reach * 4e-4 * math.sqrt(red["vv"] / red["pp"]), rel=1e-9)
    assert a2 == 0 and n2.beta == pytest.approx(10 * beta_v)  # V's own request
    assert n2.beta_alt == pytest.approx(n1.beta / 10)  # P's, for the P probe after


@pytest.mark.parametrize("rule", reference.SPLIT_RULES)
def test_split_requests_are_dropped_after_a_non_finite_probe(rule):
    red = dict(vg=1.0, pg=1.0, vv=1.0, pp=1.0, sg=0.0, gg=1.0, tt=4.0)
    rs = reference.RuleState(alpha=0.1, beta=0.1, beta_alt=0.5)
    _, new = reference.rule_step(rule, 1.0, math.inf, red, 0.1, rs, 1e-3, DIR_V)
    assert new.beta == pytest.approx(0.01) and new.beta_alt == 0.0
    _, new_dev = run_device(rule, 1.0, math.inf, red, 0.1, rs, 1e-3, DIR_V, beta_alt=0.5)
    assert float(new_dev["beta_alt"]) == 0.0
    _, skipped = reference.rule_step(rule, math.nan, 0.9, red, 0.1, rs, 1e-3, DIR_V)
    assert skipped.beta_alt == 0.5 and skipped.beta == 0.1  # a skipped step changes nothing


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(reference.GROW_RULES), L0=finite, dL=finite, vg=finite, vv=nonneg,
       gg=nonneg, tt=nonneg, beta=positive, ema=kappa, held=kappa, concave=st.booleans())
def test_grow_rules_differ_from_their_base_only_on_a_fit_without_a_minimum(
        rule, L0, dL, vg, vv, gg, tt, beta, ema, held, concave):
    """`*_grow`: where the fit has a minimum (or V does not descend), the step and every slot are the
    rule's without it; where the loss along V falls faster than a line (a₂ ≤ 0, ⟨V,G⟩ > 0) the fit
    counts as one at the growth cap, so the step is at least the base rule's; the device agrees."""
    beta, ema, held = (float(torch.tensor(x, dtype=torch.float32)) for x in (beta, ema, held))
    if concave and vg > 0:  # below the line through L0 with the slope: no minimum
        dL = -beta * vg * (1 + (L0 % 1 if L0 > 0 else 0.5))
    base = rule.replace("_grow", "")
    red = dict(vg=vg, pg=vg, vv=vv, pp=vv, sg=0.0, gg=gg, tt=tt)
    rs = reference.RuleState(alpha=beta, beta=beta, ema=ema, held=held)
    a_g, n_g = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, DIR_V)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, DIR_V)
    a_star, a2 = reference._fit(L0, L0 + dL, vg, beta)
    if reference._good(a_star) or not (a2 <= 0 and vg > 0):
        assert a_g == a_b and vars(n_g) == vars(n_b)
    else:
        assert a_g >= a_b
    a_dev, n_dev = run_device(rule, L0, L0 + dL, red, beta, rs, 1e-3, DIR_V)
    assert float(a_dev) == pytest.approx(a_g, rel=1e-5, abs=1e-30)
    assert float(n_dev["ema"]) == pytest.approx(n_g.ema, rel=1e-5, abs=1e-30)
    assert float(n_dev["beta"]) == pytest.approx(n_g.beta, rel=1e-5)


@pytest.mark.parametrize("rule", [r for r in reference.GROW_RULES if r in reference.FIT_RULES])
def test_grow_lets_the_step_grow_where_the_loss_along_v_is_concave(rule):
    """Round 24's CTC task from α₀ = 1e-4: the probe finds the loss along V below the line of its
    slope. The SGD default holds the step at β and probes at β again; `_grow` counts the fit at
    2β, so the smoothed fit, the held step and the next probe grow by 2^0.1 a step."""
    beta, L0, vg = 1e-4, 6.0, 17.0
    Lb = L0 - beta * vg - 2e-7  # a₂ < 0
    red = dict(vg=vg, pg=vg, vv=vg, pp=vg, sg=0.0, gg=vg, tt=4000.0)
    rs = reference.RuleState(alpha=beta, beta=beta, ema=beta, held=beta)
    a_b, n_b = reference.rule_step(rule.replace("_grow", ""), L0, Lb, red, beta, rs, 1e-4, DIR_V)
    a_g, n_g = reference.rule_step(rule, L0, Lb, red, beta, rs, 1e-4, DIR_V)
    assert a_b == pytest.approx(beta) and n_b.beta == pytest.approx(beta)
    assert a_g == pytest.approx(beta * 2 ** 0.1, rel=1e-9) and n_g.beta == pytest.approx(a_g)


def ctc_start(rule, below_line):
    """The CTC task's start from α₀ = 1e-4: a probe at β = α₀ whose loss falls ``below_line`` under
    the line of its slope along either direction (pg = vg), no curvature stored, the memory at the
    step the probe stood for. Returns (β, L0, Lβ, reductions, that step, the rule state)."""
    beta, L0, vg = 1e-4, 6.0, 17.0
    step = beta / reference.NEAR[rule][0]
    red = dict(vg=vg, pg=vg, vv=vg, pp=vg, sg=0.0, gg=vg, tt=4000.0, vz=0.0)
    rs = reference.RuleState(alpha=step, beta=beta, ema=step, held=step)
    return beta, L0, L0 - beta * vg - below_line, red, step, rs


@pytest.mark.parametrize("rule", [r for r in reference.GROW_RULES if r in reference.WGEO_RULES])
@pytest.mark.parametrize("probe_dir", [DIR_V, DIR_P])
def test_alternating_grow_lets_the_step_grow_where_no_curvature_is_measured(rule, probe_dir):
    """The CTC task from α₀ = 1e-4 with Momentum: both probe directions find the loss below the line
    of their slope, so no curvature is left to combine. The rule without `_grow` moves its memory
    towards β·scale, a quarter of the step times 1.25, and the step shrinks; with it the fit counts
    as GROW_STEPS steps (β / reach), so the memory moves towards 2.5 steps and the step grows by
    2.5^0.1; the device agrees."""
    reach, scale = reference.NEAR[rule]
    beta, L0, Lb, red, step, rs = ctc_start(rule, 2e-7)  # a₂ < 0
    a_b, _ = reference.rule_step(rule.replace("_grow", ""), L0, Lb, red, beta, rs, 1e-4, probe_dir)
    a_g, n_g = reference.rule_step(rule, L0, Lb, red, beta, rs, 1e-4, probe_dir)
    assert a_b == pytest.approx(step * (beta * scale / step) ** (1 - reference.EMA_DECAY))
    assert a_g == pytest.approx(step * (reference.GROW_STEPS * scale) ** (1 - reference.EMA_DECAY))
    assert a_g > step > a_b and n_g.beta == pytest.approx(reach * a_g)
    a_dev, n_dev = run_device(rule, L0, Lb, red, beta, rs, 1e-4, probe_dir)
    assert float(a_dev) == pytest.approx(a_g, rel=1e-6)
    assert float(n_dev["beta"]) == pytest.approx(n_g.beta, rel=1e-6)


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(reference.STEEP_RULES), L0=finite, vg=finite, vv=nonneg, gg=nonneg,
       tt=nonneg, beta=positive, ema=kappa, lines=st.floats(0.0, 4.0), pdir=st.sampled_from([DIR_V, DIR_P]))
def test_steep_rules_are_grow_on_a_steep_fall_and_their_base_elsewhere(rule, L0, vg, vv, gg, tt, beta,
                                                                       ema, lines, pdir):
    """`*_steep`: where the probe's loss fell at least GROW_STEPS lines deep (L0 − Lβ ≥ GROW_STEPS·β·d_X,
    d_X > 0) the step and every slot are the `_grow` rule's; elsewhere, a shallower fall without a
    minimum included, the rule's without either modifier; the device agrees."""
    beta, ema = (float(torch.tensor(x, dtype=torch.float32)) for x in (beta, ema))
    Lb = L0 - lines * beta * vg  # `lines` line-depths below L0 (above it where vg < 0)
    red = dict(vg=vg, pg=vg, vv=vv, pp=vv, sg=0.0, gg=gg, tt=tt, vz=0.0)
    rs = reference.RuleState(alpha=beta, beta=beta, ema=ema, kappa_v=0.0, kappa_p=0.0)
    a_s, n_s = reference.rule_step(rule, L0, Lb, red, beta, rs, 1e-3, pdir)
    twin = rule.replace("_steep", "_grow") if vg > 0 and L0 - Lb >= reference.GROW_STEPS * beta * vg \
        else rule.replace("_steep", "")
    a_t, n_t = reference.rule_step(twin, L0, Lb, red, beta, rs, 1e-3, pdir)
    assert a_s == a_t and vars(n_s) == vars(n_t)
    a_dev, n_dev = run_device(rule, L0, Lb, red, beta, rs, 1e-3, pdir)
    assert float(a_dev) == pytest.approx(a_s, rel=1e-5, abs=1e-30)
    assert float(n_dev["ema"]) == pytest.approx(n_s.ema, rel=1e-5, abs=1e-30)
    assert float(n_dev["beta"]) == pytest.approx(n_s.beta, rel=1e-5)


@pytest.mark.parametrize("rule", reference.STEEP_RULES)
def test_steep_grows_on_a_deep_fall_and_not_on_a_straight_stretch(rule):
    """A probe that fell 10 lines deep: `_steep` grows the step as `_grow` does. One that fell just
    below the line (a straight stretch whose a₂ rounding put below zero, as the quantile regression's
    between kinks, and as the CTC task's from α₀ = 1e-4, whose probes fell 1.00–1.01 lines deep; log
    item 53): `_grow` grows there, `_steep` steps as the rule without it."""
    beta, L0, vg = 1e-4, 6.0, 17.0
    reach, _ = reference.NEAR[rule]
    red = dict(vg=vg, pg=vg, vv=vg, pp=vg, sg=0.0, gg=vg, tt=4000.0, vz=0.0)
    step = beta / reach
    rs = reference.RuleState(alpha=step, beta=beta, ema=step)
    for Lb, grows in ((L0 - 10 * beta * vg, True), (L0 - beta * vg - 2e-7, False)):
        a_s, _ = reference.rule_step(rule, L0, Lb, red, beta, rs, 1e-4, DIR_V)
        a_g, _ = reference.rule_step(rule.replace("_steep", "_grow"), L0, Lb, red, beta, rs, 1e-4, DIR_V)
        a_b, _ = reference.rule_step(rule.replace("_steep", ""), L0, Lb, red, beta, rs, 1e-4, DIR_V)
        assert a_g > step > a_b  # both falls are below the line: `_grow` grows on either
        assert a_s == (a_g if grows else a_b)


EARLY_ONLY = tuple(r for r in reference.EARLY_RULES  # `_kmax`, `_share`, `_lowshare`: own tests
                   if r not in reference.KMAX_RULES and r not in reference.SHARE_RULES
                   and r not in reference.LOWSHARE_RULES)


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(EARLY_ONLY), L0=finite, dL=finite, vg=finite, pg=finite,
       vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg, beta=positive, ema=kappa, kv=kappa, kp=kappa,
       found=st.sampled_from([0.0, 1.0]), pdir=st.sampled_from([DIR_V, DIR_P]))
def test_early_rules_are_grow_until_a_fit_with_a_minimum_and_their_base_after(rule, L0, dL, vg, pg, vv,
                                                                                pp, gg, tt, beta, ema,
                                                                                kv, kp, found, pdir):
    """`*_early`: before the rule stored a curvature (found = 0) the step and every other slot are
    the `_grow` rule's, after it (found = 1) the rule's without either modifier; `found` turns 1
    exactly when this step stores a curvature, and never back; the device agrees."""
    beta, ema, kv, kp = (float(torch.tensor(x, dtype=torch.float32)) for x in (beta, ema, kv, kp))
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt, vz=0.0)
    rs = reference.RuleState(alpha=beta, beta=beta, ema=ema, kappa_v=kv, kappa_p=kp, found=found)
    a_e, n_e = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    twin = rule.replace("_early", "" if found else "_grow")
    a_t, n_t = reference.rule_step(twin, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    assert a_e == a_t
    assert {k: v for k, v in vars(n_e).items() if k != "found"} == \
        {k: v for k, v in vars(n_t).items() if k != "found"}
    old, new = (kp, n_e.kappa_p) if pdir == DIR_P else (kv, n_e.kappa_v)
    stored = new > 0 and new != old and n_e.skips == rs.skips  # a curvature this step measured
    assert n_e.found == (1.0 if (found or stored) else 0.0)
    a_dev, n_dev = run_device(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    assert float(a_dev) == pytest.approx(a_e, rel=1e-5, abs=1e-30)
    assert float(n_dev["ema"]) == pytest.approx(n_e.ema, rel=1e-5, abs=1e-30)
    assert float(n_dev["beta"]) == pytest.approx(n_e.beta, rel=1e-5)
    assert float(n_dev["found"]) == n_e.found


@pytest.mark.parametrize("rule", EARLY_ONLY)
def test_early_grows_at_the_start_and_not_after_a_fit_with_a_minimum(rule):
    """The CTC task's start (log item 52): fits without a minimum along both directions grow the step
    as `_grow` does; once a probe finds a minimum, a later fit without one, no curvature left to
    combine, steps as the rule without `_grow` (the interpolation check's late spike, log item 54)."""
    beta, L0, concave, red, step, rs = ctc_start(rule, 1e-4)  # a₂ < 0, clear of `_guard`'s test
    vg = red["vg"]
    convex = L0 - 0.5 * beta * vg  # a₂ > 0: a minimum at β
    a_e, n1 = reference.rule_step(rule, L0, concave, red, beta, rs, 1e-4, DIR_P)
    a_g, _ = reference.rule_step(rule.replace("_early", "_grow"), L0, concave, red, beta, rs, 1e-4, DIR_P)
    assert a_e == a_g > step and n1.found == 0.0
    _, n2 = reference.rule_step(rule, L0, convex, red, n1.beta, n1, 1e-4, DIR_V)
    assert n2.found == 1.0 and n2.kappa_v > 0
    n2.kappa_v = n2.kappa_p = 0.0  # both directions' last fits without a minimum: nothing to combine
    late = L0 - n2.beta * vg - 1e-4
    a_late, n3 = reference.rule_step(rule, L0, late, red, n2.beta, n2, 1e-4, DIR_P)
    a_base, _ = reference.rule_step(rule.replace("_early", ""), L0, late, red, n2.beta, n2, 1e-4, DIR_P)
    a_grow, _ = reference.rule_step(rule.replace("_early", "_grow"), L0, late, red, n2.beta, n2, 1e-4,
                                    DIR_P)
    assert a_late == a_base < a_grow and n3.found == 1.0


@pytest.mark.parametrize("rule", [r for r in reference.GROW_RULES + EARLY_ONLY
                                  if r.startswith("alternate_trust")])
@pytest.mark.parametrize("probe_dir", [DIR_V, DIR_P])
def test_adam_grow_and_early_let_the_step_grow_where_no_curvature_is_measured(rule, probe_dir):
    """QLAB-Adam from α₀ = 1e-4 on the CTC task finds no minimum on its first 63 fits (log item 54):
    without `_grow` the step stays near α₀; with it (and with `_early` before a first minimum) a fit
    that falls below its line, clear of `_guard`'s rounding test, counts as GROW_STEPS steps and the
    step grows; the device agrees."""
    beta, L0, Lb, red, step, rs = ctc_start(rule, 1e-4)  # a₂ < 0, clear of `_guard`'s rounding test
    base = rule.replace("_grow", "").replace("_early", "")
    a_b, _ = reference.rule_step(base, L0, Lb, red, beta, rs, 1e-4, probe_dir)
    a_g, n_g = reference.rule_step(rule, L0, Lb, red, beta, rs, 1e-4, probe_dir)
    assert 0 < a_b <= step < a_g and n_g.beta > beta
    a_dev, n_dev = run_device(rule, L0, Lb, red, beta, rs, 1e-4, probe_dir)
    assert float(a_dev) == pytest.approx(a_g, rel=1e-6)
    assert float(n_dev["beta"]) == pytest.approx(n_g.beta, rel=1e-6)


def _without_kmax(rule):
    for token in ("_kres", "_kmaxv", "_kmaxn", "_kmaxp", "_kmaxs", "_kmax"):
        rule = rule.replace(token, "")
    return rule


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(reference.KMAX_RULES), L0=finite, dL=finite, vg=finite, pg=finite,
       vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg, beta=positive, ema=kappa, kv=kappa, kp=kappa,
       kmax=kappa, found=st.sampled_from([0.0, 1.0]), pdir=st.sampled_from([DIR_V, DIR_P]))
def test_kmax_rules_bound_the_step_by_the_fit_at_the_decayed_largest_curvature(rule, L0, dL, vg, pg,
                                                                               vv, pp, gg, tt, beta,
                                                                               ema, kv, kp, kmax,
                                                                               found, pdir):
    """`*_kmax`: κ_max becomes max(the curvature this probe stores, KMAX_DECAY·κ_max) (`_kmaxv`: a
    P probe's in V's units, κ_V·κ_P/κ_P before); the step is the rule's without the modifier, at
    most scale·⟨V,G⟩/(2 κ_max |V|²) where ⟨V,G⟩, |V| and κ_max are positive (`_kmaxn`: the κ_max
    before this probe, decayed; `_kmaxp`: that, or a P probe's own κ in V's units if larger;
    `_kmaxs`: both halved; `_kres`: only a curvature the probe resolved, at most FP32_MAX);
    every other slot (the α memory, the next probe) is that rule's; the device agrees."""
    beta, ema, kv, kp, kmax = (float(torch.tensor(x, dtype=torch.float32))
                               for x in (beta, ema, kv, kp, kmax))
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt, vz=0.0)  # `_unseen`: its own test
    rs = reference.RuleState(alpha=beta, beta=beta, ema=ema, kappa_v=kv, kappa_p=kp, found=found,
                             kmax=kmax)
    a_k, n_k = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    base = _without_kmax(rule)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    if n_k.skips > rs.skips:  # non-finite inputs: nothing is remembered
        assert n_k.kmax == kmax and a_k == a_b == 0.0
        return
    dX, xx = (pg, pp) if pdir == DIR_P else (vg, vv)
    a2 = (L0 + dL - L0 + beta * dX) / beta ** 2  # as reference._fit computes it
    fitted = a2 / xx if (a2 > 0 and xx > 0) else 0.0
    stored = n_b.kappa_p if pdir == DIR_P else n_b.kappa_v  # `_guard`: only what it measured
    entry = fitted if stored == fitted else 0.0
    kres = rule in reference.KRES_RULES
    threshold = reference.resolve_threshold(reference.FP32_EPS) * abs(L0)
    if kres and abs(L0 + dL - L0 + beta * dX) <= threshold:
        entry = 0.0
    if rule in reference.KMAXV_RULES and pdir == DIR_P:
        entry = kv * entry / kp if (kv > 0 and kp > 0) else 0.0
    if kres and entry > reference.FP32_MAX:
        entry = 0.0
    assert n_k.kmax == max(entry, reference.KMAX_DECAY * kmax)
    kb = reference.KMAX_DECAY * kmax if rule in reference.KMAX_BEFORE_RULES else n_k.kmax
    if rule in reference.KMAX_OWN_RULES and pdir == DIR_P and kv > 0 and kp > 0:
        own = kv * entry / kp
        own = 0.0 if kres and own > reference.FP32_MAX else own
        kb = max(kb, reference.KMAX_DECAY * own if rule in reference.KMAXS_RULES else own)
    bound = reference.NEAR[rule][1] * vg / (2 * kb * vv) if (vg > 0 and vv > 0 and kb > 0) else math.inf
    assert a_k == min(a_b, bound) and n_k.alpha == a_k
    assert vars(n_k) == dict(vars(n_b), alpha=a_k, kmax=n_k.kmax)
    a_dev, n_dev = run_device(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    assert float(a_dev) == pytest.approx(a_k, rel=1e-5, abs=1e-30)
    assert float(n_dev["kmax"]) == pytest.approx(n_k.kmax, rel=1e-5, abs=1e-30)
    assert float(n_dev["beta"]) == pytest.approx(n_k.beta, rel=1e-5)
    assert float(n_dev["ema"]) == pytest.approx(n_k.ema, rel=1e-5, abs=1e-30)


@pytest.mark.parametrize("rule", [r for r in reference.KMAX_RULES if r in reference.WGEO_RULES])
def test_kmax_keeps_a_rare_steep_batch_s_curvature_while_the_buffer_carries_its_gradient(rule):
    """The interpolation check's spikes (log item 55): a batch of high loss measures a curvature far
    above the quiet batches' and the next probes, on quiet batches, measure almost none. Without
    `_kmax` the quiet steps take the memory's long step at once; with it they are short while the
    steep curvature, halved each step, outweighs the quiet one, and the rule's own once it has
    decayed below it."""
    reach, scale = reference.NEAR[rule]
    base = _without_kmax(rule)
    quiet = dict(vg=1e-5, pg=1e-5, vv=1e-2, pp=1e-2, sg=0.0, gg=1e-5, tt=4000.0, vz=0.0)
    kq = 1e-6  # the quiet batches' curvature per unit length, along V and along P
    rs = reference.RuleState(alpha=3.0, beta=3.0 * reach, ema=3.0, kappa_v=kq, kappa_p=kq,
                             found=1.0, kmax=1.0)  # the steep batch's curvature, just stored
    L0, bounded = 1.0, []  # far from zero loss: `_polyak` does not bind
    for k in range(30):
        pdir = DIR_P if k % 2 == 0 else DIR_V
        dX = quiet["pg" if pdir == DIR_P else "vg"]
        Lb = L0 - rs.beta * dX + kq * quiet["vv"] * rs.beta ** 2  # a₂ = κ·|X|²
        a_k, n_k = reference.rule_step(rule, L0, Lb, quiet, rs.beta, rs, 1e-4, pdir)
        a_b, _ = reference.rule_step(base, L0, Lb, quiet, rs.beta, rs, 1e-4, pdir)
        assert n_k.kmax == pytest.approx(max(0.5 ** (k + 1), kq), rel=1e-6)
        if k == 0:
            assert a_k == pytest.approx(scale * 1e-5 / (2 * 0.5 * 1e-2), rel=1e-9) and a_b > 100 * a_k
        assert a_k <= a_b
        bounded.append(a_k < a_b)
        rs = n_k
    assert all(bounded[:14]) and not any(bounded[-5:])  # short while the steep κ outweighs


def _alternating_run(rule, kappas, quiet, rs, L0=1.0):
    """The rule over probes alternating P, V, P, ... whose fits read the curvatures ``kappas``;
    the steps it takes and the state it ends in."""
    steps = []
    for k, kx in enumerate(kappas):
        pdir = DIR_P if k % 2 == 0 else DIR_V
        dX, xx = (quiet["pg"], quiet["pp"]) if pdir == DIR_P else (quiet["vg"], quiet["vv"])
        Lb = L0 - rs.beta * dX + kx * xx * rs.beta ** 2  # a₂ = κ·|X|²
        a, rs = reference.rule_step(rule, L0, Lb, quiet, rs.beta, rs, 1e-4, pdir)
        steps.append(a)
    return steps, rs


# Quiet batches whose P probes read 2.3× V's curvature (the median measured on the CNN), at the
# fits' steady state where the memory's step is the fit along V (c_V 50 < c_P 65).
_QUIET = dict(vg=1e-3, pg=3e-3, vv=1e-2, pp=1e-2, sg=0.0, gg=3e-3, tt=4000.0, vz=0.0)
_KV, _KP = 1e-3, 2.3e-3
_CV = _QUIET["vg"] / (2 * _KV * _QUIET["vv"])


def _quiet_start(rule):
    """The rule's state at that steady state (its probe distance its reach × c_V)."""
    reach, _ = reference.NEAR[rule]
    return reference.RuleState(alpha=_CV, beta=_CV * reach, ema=_CV, kappa_v=_KV, kappa_p=_KP,
                               found=1.0)


@pytest.mark.parametrize("rule", [r for r in reference.KMAXV_RULES if r in reference.WGEO_RULES])
def test_kmaxv_reads_a_p_probe_s_curvature_against_the_last_p_probe_s(rule):
    """On quiet batches the curvature along P reads higher than along V (2.3× here, the median
    measured on the CNN): `_kmax` bounds the step along V taken with a P probe by that probe's κ
    and cuts it where the memory's step is the fit along V (here, the fits' steady state: c_P >
    c_V); `_kmaxv` does not, and takes the rule's own steps. A steep batch measured along P (1000× the P
    probe before it) enters as 1000× the stored V curvature and binds the steps after it, as a
    steep V probe does under `_kmax`; the device agrees."""
    kmax_rule, base = rule.replace("_kmaxv", "_kmax"), _without_kmax(rule)
    quiet, kv, kp, start = _QUIET, _KV, _KP, _quiet_start(rule)
    kappas = [kp, kv] * 10
    own, _ = _alternating_run(base, kappas, quiet, start)
    with_v, _ = _alternating_run(rule, kappas, quiet, start)
    with_k, _ = _alternating_run(kmax_rule, kappas, quiet, start)
    assert with_v == pytest.approx(own, rel=1e-12)
    cut = [b / a for a, b in zip(own, with_k)]
    assert all(c < 0.6 for c in cut[0::2])  # `_kmax`: each P probe's κ_P bounds its own step
    steep = [1000 * kp] + kappas[1:]
    after, rs = _alternating_run(rule, steep, quiet, start)
    own_steep, _ = _alternating_run(base, steep, quiet, start)  # its memory saw the steep fit too
    assert rs.kmax > 0 and after[1] < 0.01 * own_steep[1] and after[3] < 0.02 * own_steep[3]
    assert after[-1] == pytest.approx(own_steep[-1], rel=1e-6)  # decayed below the quiet κ
    st = dataclasses.replace(start, kmax=3e-3)
    Lb = 1.0 - st.beta * quiet["pg"] + 1000 * kp * quiet["pp"] * st.beta ** 2
    a_r, n_r = reference.rule_step(rule, 1.0, Lb, quiet, st.beta, st, 1e-4, DIR_P)
    assert n_r.kmax == pytest.approx(1000 * kv, rel=1e-9)
    a_dev, n_dev = run_device(rule, 1.0, Lb, quiet, st.beta, st, 1e-4, DIR_P)
    assert float(a_dev) == pytest.approx(a_r, rel=1e-5)
    assert float(n_dev["kmax"]) == pytest.approx(n_r.kmax, rel=1e-5)


@pytest.mark.parametrize("rule", [r for r in reference.KMAXN_RULES if r in reference.WGEO_RULES])
def test_kmaxn_bounds_a_step_by_the_probes_before_it_only(rule):
    """`_kmaxn`: on quiet batches whose P probes read 2.3× V's curvature, the steps taken with P
    probes are the rule's own (under `_kmax` each P probe's κ cuts its own), and those taken with V
    probes are `_kmax`'s (a V probe's own κ never binds: the step is at most scale × its fit). A
    steep P probe's own step is the rule's, and the steps after it are bounded as under `_kmax`."""
    kmax_rule, base = rule.replace("_kmaxn", "_kmax"), _without_kmax(rule)
    quiet, kv, kp, start = _QUIET, _KV, _KP, _quiet_start(rule)
    kappas = [kp, kv] * 10
    own, _ = _alternating_run(base, kappas, quiet, start)
    with_n, _ = _alternating_run(rule, kappas, quiet, start)
    with_k, _ = _alternating_run(kmax_rule, kappas, quiet, start)
    assert with_n[0::2] == pytest.approx(own[0::2], rel=1e-12)  # the P probes' steps
    assert with_n[1::2] == pytest.approx(with_k[1::2], rel=1e-12)  # the V probes' steps
    assert all(k < 0.6 * o for k, o in zip(with_k[0::2], own[0::2]))
    steep = [1000 * kp] + kappas[1:]
    own, _ = _alternating_run(base, steep, quiet, start)
    with_n, _ = _alternating_run(rule, steep, quiet, start)
    with_k, _ = _alternating_run(kmax_rule, steep, quiet, start)
    assert with_n[0] == pytest.approx(own[0], rel=1e-12) and with_k[0] < 0.01 * own[0]
    assert with_n[1] == pytest.approx(with_k[1], rel=1e-12) and with_n[1] < 0.01 * own[1]


def _assert_steep_p_step(rule, start, cut):
    """One P probe 1000× steeper than the one before, from ``start`` on a quiet batch: the
    reference steps ``cut``; the device agrees on the step and on κ_max."""
    quiet, st = _QUIET, start
    Lb = 1.0 - st.beta * quiet["pg"] + 1000 * _KP * quiet["pp"] * st.beta ** 2
    a_r, n_r = reference.rule_step(rule, 1.0, Lb, quiet, st.beta, st, 1e-4, DIR_P)
    a_dev, n_dev = run_device(rule, 1.0, Lb, quiet, st.beta, st, 1e-4, DIR_P)
    assert a_r == pytest.approx(cut, rel=1e-9)
    assert float(a_dev) == pytest.approx(a_r, rel=1e-5)
    assert float(n_dev["kmax"]) == pytest.approx(n_r.kmax, rel=1e-5)


@pytest.mark.parametrize("rule", [r for r in reference.KMAXP_RULES  # `_share`, `_kres`: their own
                                  if r in reference.WGEO_RULES and r not in reference.SHARE_RULES
                                  and r not in reference.KRES_RULES])
def test_kmaxp_lets_a_quiet_p_probe_step_and_cuts_a_steep_one(rule):
    """`_kmaxp`: on quiet batches whose P probes read 2.3× V's curvature, every step is `_kmaxn`'s
    (a P probe's own κ in V's units, κ_V·κ_P/κ_P before = κ_V, allows scale × the fit along V, more
    than the `_wgeo` step). A steep P probe (1000× the P probe's before) cuts its own step to
    scale·⟨V,G⟩/(2·1000 κ_V |V|²), which `_kmaxn` does not; the steps after it are `_kmaxn`'s; the
    device agrees."""
    kmaxn_rule, base = rule.replace("_kmaxp", "_kmaxn"), _without_kmax(rule)
    quiet, kv, kp, start = _QUIET, _KV, _KP, _quiet_start(rule)
    _, scale = reference.NEAR[rule]
    kappas = [kp, kv] * 10
    with_p, _ = _alternating_run(rule, kappas, quiet, start)
    with_n, _ = _alternating_run(kmaxn_rule, kappas, quiet, start)
    assert with_p == pytest.approx(with_n, rel=1e-12)
    steep = [1000 * kp] + kappas[1:]
    own, _ = _alternating_run(base, steep, quiet, start)
    with_p, rs_p = _alternating_run(rule, steep, quiet, start)
    with_n, rs_n = _alternating_run(kmaxn_rule, steep, quiet, start)
    cut = scale * quiet["vg"] / (2 * 1000 * kv * quiet["vv"])
    assert with_p[0] == pytest.approx(cut, rel=1e-9) and with_p[0] < 0.01 * with_n[0]
    assert with_n[0] == pytest.approx(own[0], rel=1e-12)
    assert with_p[1:] == pytest.approx(with_n[1:], rel=1e-12) and rs_p.kmax == rs_n.kmax
    _assert_steep_p_step(rule, start, cut)


@pytest.mark.parametrize("rule", [r for r in reference.KMAXS_RULES if r in reference.WGEO_RULES])
def test_kmaxs_halves_a_p_probe_s_own_bound(rule):
    """`_kmaxs`: `_kmaxp` with the P probe's own κ halved, as the probes' before it are. On quiet
    batches every step is `_kmaxn`'s; a P probe 2× steeper than the one before, which `_kmaxp`
    cuts, takes `_kmaxn`'s step; one 1000× steeper cuts its own step to
    scale·⟨V,G⟩/(2·500 κ_V |V|²), twice `_kmaxp`'s; the device agrees."""
    kmaxn_rule, kmaxp_rule = rule.replace("_kmaxs", "_kmaxn"), rule.replace("_kmaxs", "_kmaxp")
    quiet, kv, kp, start = _QUIET, _KV, _KP, _quiet_start(rule)
    _, scale = reference.NEAR[rule]
    kappas = [kp, kv] * 10
    with_s, _ = _alternating_run(rule, kappas, quiet, start)
    with_n, _ = _alternating_run(kmaxn_rule, kappas, quiet, start)
    assert with_s == pytest.approx(with_n, rel=1e-12)
    mild = [2 * kp] + kappas[1:]
    with_s, _ = _alternating_run(rule, mild, quiet, start)
    with_n, _ = _alternating_run(kmaxn_rule, mild, quiet, start)
    with_p, _ = _alternating_run(kmaxp_rule, mild, quiet, start)
    assert with_s[0] == pytest.approx(with_n[0], rel=1e-12) and with_p[0] < 0.9 * with_n[0]
    steep = [1000 * kp] + kappas[1:]
    with_s, rs_s = _alternating_run(rule, steep, quiet, start)
    with_n, rs_n = _alternating_run(kmaxn_rule, steep, quiet, start)
    with_p, _ = _alternating_run(kmaxp_rule, steep, quiet, start)
    cut = scale * quiet["vg"] / (2 * 500 * kv * quiet["vv"])
    assert with_s[0] == pytest.approx(cut, rel=1e-9) and with_s[0] == pytest.approx(2 * with_p[0])
    assert with_s[1:] == pytest.approx(with_n[1:], rel=1e-12) and rs_s.kmax == rs_n.kmax
    _assert_steep_p_step(rule, start, cut)


@pytest.mark.parametrize("rule", reference.KRES_RULES)
def test_kres_keeps_rounding_and_overflowing_curvatures_out_of_kmax(rule):
    """Momentum's trap at α₀ = 1 (log item 69): probes as short as a collapsed step read rounding
    over β² as ever larger curvatures, and one overflows the float32 state, after which κ_max is
    infinite and every step zero. `_kres`: a probe that moved the loss by rounding only stores its
    κ in the α memory as the rule without it does, but not in κ_max (which decays), nor does a
    resolved κ above FP32_MAX; a resolved finite one enters as before; the device agrees."""
    base = rule.replace("_kres", "")
    quiet, L0, k0 = _QUIET, 1.0, 1e-3
    for pdir in (DIR_V, DIR_P):
        dX, xx = (quiet["pg"], quiet["pp"]) if pdir == DIR_P else (quiet["vg"], quiet["vv"])
        for beta, moved, taken in ((1e-6, 1e-7, False), (1e-20, 1e-3, False), (1e-2, 1e-3, True)):
            rs = reference.RuleState(**dict(vars(_quiet_start(rule)), kmax=k0))
            rs.beta = beta
            Lb = L0 - beta * dX + moved * L0  # a₂·β² = `moved`: rounding below RESOLVE·|L0|
            a_k, n_k = reference.rule_step(rule, L0, Lb, quiet, beta, rs, 1.0, pdir)
            a_b, n_b = reference.rule_step(base, L0, Lb, quiet, beta, rs, 1.0, pdir)
            fitted = (Lb - L0 + beta * dX) / beta ** 2 / xx
            assert (n_b.kappa_p if pdir == DIR_P else n_b.kappa_v) == fitted  # stored by both
            assert vars(n_k) == dict(vars(n_b), alpha=n_k.alpha, kmax=n_k.kmax)
            assert n_b.kmax == fitted and a_k >= a_b
            if taken:
                assert n_k.kmax == fitted and a_k == a_b
            else:
                assert n_k.kmax == reference.KMAX_DECAY * k0 and fitted > 1e6 * k0
            a_dev, n_dev = run_device(rule, L0, Lb, quiet, beta, rs, 1.0, pdir)
            assert float(n_dev["kmax"]) == pytest.approx(n_k.kmax, rel=1e-5)
            assert float(a_dev) == pytest.approx(a_k, rel=1e-5, abs=1e-30)
            _, b_dev = run_device(base, L0, Lb, quiet, beta, rs, 1.0, pdir)
            assert math.isinf(float(b_dev["kmax"])) == (fitted > reference.FP32_MAX)
    # an infinite κ_max (the rule without `_kres`, after an overflow) bounds every step to zero
    rs = reference.RuleState(**dict(vars(_quiet_start(rule)), kmax=k0))
    trapped = reference.RuleState(**dict(vars(rs), kmax=math.inf))
    Lb = L0 - rs.beta * quiet["vg"] + _KV * quiet["vv"] * rs.beta ** 2
    assert reference.rule_step(base, L0, Lb, quiet, rs.beta, trapped, 1.0, DIR_V)[0] == 0.0
    assert reference.rule_step(rule, L0, Lb, quiet, rs.beta, rs, 1.0, DIR_V)[0] > 0.0


def _c2(red):
    """The fresh gradient's share of V, ⟨V,G⟩²/(|V|²|G|²) (0 where ⟨V,G⟩ ≤ 0 or a norm is 0)."""
    vg, vv, gg = red["vg"], red["vv"], red["gg"]
    return vg * vg / (vv * gg) if (vg > 0 and vv > 0 and gg > 0) else 0.0


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from([r for r in reference.SHARE_RULES if r not in reference.SHARESM_RULES]),
       L0=finite, dL=finite, vg=finite, pg=finite,
       vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg, beta=positive, ema=kappa, kv=kappa, kp=kappa,
       kmax=kappa, found=st.sampled_from([0.0, 1.0]), pdir=st.sampled_from([DIR_V, DIR_P]))
def test_share_never_shortens_the_step_and_leaves_noise_level_batches_alone(rule, L0, dL, vg, pg, vv,
                                                                            pp, gg, tt, beta, ema,
                                                                            kv, kp, kmax, found,
                                                                            pdir):
    """`*_share`: the fit along V weighs more in the `_wgeo` mean as c² = ⟨V,G⟩²/(|V|²|G|²) rises
    past SHARE_LO (`_share4`: only where c_V ≤ SHARE_SPREAD·c_P, checked in the scenario test
    below; `_sharesm`: its own tests). Where c² ≤ SHARE_LO every slot is the rule's without the
    modifier; elsewhere the step and the α memory are at least that rule's (the weight moves the mean towards the longer
    estimate, c_V, and the step never exceeds c_V anyway), and every slot the mean does not reach
    (the curvatures, κ_max, the step length) is that rule's; the device agrees."""
    beta, ema, kv, kp, kmax = (float(torch.tensor(x, dtype=torch.float32))
                               for x in (beta, ema, kv, kp, kmax))
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt, vz=0.0)
    rs = reference.RuleState(alpha=beta, beta=beta, ema=ema, kappa_v=kv, kappa_p=kp, found=found,
                             kmax=kmax)
    base = reference.without_share(rule)
    a_s, n_s = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    if _c2(red) <= reference.SHARE_LO:
        assert a_s == a_b and vars(n_s) == vars(n_b)
    else:
        assert a_s >= a_b * (1 - 1e-12) and n_s.ema >= n_b.ema * (1 - 1e-12)
        assert vars(n_s) == dict(vars(n_b), alpha=n_s.alpha, ema=n_s.ema, beta=n_s.beta)
    a_dev, n_dev = run_device(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    assert float(a_dev) == pytest.approx(a_s, rel=1e-5, abs=1e-30)
    assert float(n_dev["ema"]) == pytest.approx(n_s.ema, rel=1e-5, abs=1e-30)
    assert float(n_dev["beta"]) == pytest.approx(n_s.beta, rel=1e-5)


def _free_v_probe(rule, kv, kp, gg, share=0.0):
    """A V probe with an empty α memory and no bound in reach (the Polyak bound, 2·L0/⟨V,G⟩, far
    beyond the step; ⟨V,G⟩ = |V|² = ⟨P,G⟩ = |P|² = 1, |G|² = gg), its fit along V of curvature kv
    and the P probe's before of kp, the smoothed share before ``share``: (the step of ``rule``, of
    the rule without `_share`, of the device, c_V, c_P)."""
    red = dict(vg=1.0, pg=1.0, vv=1.0, pp=1.0, sg=0.0, gg=gg, tt=1e12, vz=0.0)
    L0, beta = 1e4, 10.0
    Lb = L0 - beta * red["vg"] + kv * red["vv"] * beta ** 2
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=kv, kappa_p=kp, found=1.0, share=share)
    a_r, _ = reference.rule_step(rule, L0, Lb, red, beta, rs, 1e-3, DIR_V)
    a_b, _ = reference.rule_step(reference.without_share(rule), L0, Lb, red, beta, rs, 1e-3, DIR_V)
    a_dev, _ = run_device(rule, L0, Lb, red, beta, rs, 1e-3, DIR_V)
    return a_r, a_b, float(a_dev), 1 / (2 * kv), 1 / (2 * kp)


@pytest.mark.parametrize("rule", [r for r in reference.SHARE_RULES  # `_share4`, `_sharesm`: below
                                  if r not in reference.SHARE4_RULES
                                  and r not in reference.SHARESM_RULES])
@pytest.mark.parametrize("c2", [0.1, 0.19, 0.25, 0.3, 0.35, 0.4, 0.7, 1.0])
def test_share_weighs_the_fit_along_v_by_the_fresh_gradient_s_share(rule, c2):
    """A V probe with an empty α memory and no bound in reach: the step is scale × c_V^w · c_P^(1−w)
    (at most scale × c_V), w = WGEO_V up to c² = SHARE_LO, 1 from SHARE_HI (the fit along V alone,
    as SGD's rules step), linear between; the rule without `_share` steps with w = WGEO_V at every
    share; the device agrees."""
    _, scale = reference.NEAR[rule]
    # the P probe before read 4× V's curvature: c_P = c_V / 4 here; c² = 1 / |G|²
    a_s, a_b, a_dev, cv, cp = _free_v_probe(rule, 1e-3, 4e-3, 1.0 / c2)
    w = reference.WGEO_V + (1 - reference.WGEO_V) * min(max((c2 - 0.2) / 0.2, 0.0), 1.0)
    assert (reference.SHARE_LO, reference.SHARE_HI) == (0.2, 0.4)
    assert a_s == pytest.approx(scale * cv ** w * cp ** (1 - w), rel=1e-9)
    assert a_b == pytest.approx(scale * cv ** reference.WGEO_V * cp ** (1 - reference.WGEO_V), rel=1e-9)
    if c2 >= 0.4:
        assert a_s == pytest.approx(scale * cv, rel=1e-9) and a_s > 2.8 * a_b
    assert a_dev == pytest.approx(a_s, rel=1e-5)


@pytest.mark.parametrize("rule", reference.SHARE4_RULES)
@pytest.mark.parametrize("spread", [2.0, 3.9, 4.1, 8.0])
def test_share4_reweights_only_where_the_fits_along_v_and_p_are_near(rule, spread):
    """`_share4`: `_share`'s weight where the fit along V is at most SHARE_SPREAD = 4 × the fit
    along P, the rule without the modifier's beyond (at a share c² = 1, where `_share` steps c_V
    alone); the device agrees."""
    _, scale = reference.NEAR[rule]
    a_4, a_b, a_dev, cv, cp = _free_v_probe(rule, 1e-3, 1e-3 * spread, 1.0)  # c_V / c_P = spread
    assert reference.SHARE_SPREAD == 4.0
    if spread < 4.0:
        assert a_4 == pytest.approx(scale * cv, rel=1e-9) and a_4 > a_b
    else:
        assert a_4 == a_b == pytest.approx(scale * cv ** 0.25 * cp ** 0.75, rel=1e-9)
    assert a_dev == pytest.approx(a_4, rel=1e-5)


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(reference.SHARESM_RULES), L0=finite, dL=finite, vg=finite, pg=finite,
       vv=nonneg, pp=nonneg, gg=nonneg, tt=nonneg, beta=positive, ema=kappa, kv=kappa, kp=kappa,
       kmax=kappa, share=st.floats(0.0, 1.0), found=st.sampled_from([0.0, 1.0]),
       pdir=st.sampled_from([DIR_V, DIR_P]))
def test_sharesm_smooths_the_share_and_never_shortens_the_step(rule, L0, dL, vg, pg, vv, pp, gg, tt,
                                                               beta, ema, kv, kp, kmax, share,
                                                               found, pdir):
    """`*_sharesm`: every step that steps averages this batch's c² into the `share` slot (decay
    SHARE_DECAY), along either probe direction; the weight of the fit along V comes from the
    smoothed share through its own band. Where the smoothed share is at most SHARESM_LO every
    other slot and the step are the rule's without the modifier; elsewhere the step and the α
    memory are at least that rule's and the slots the mean does not reach are that rule's; the
    device agrees, the slot too."""
    beta, ema, kv, kp, kmax, share = (float(torch.tensor(x, dtype=torch.float32))
                                      for x in (beta, ema, kv, kp, kmax, share))
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt, vz=0.0)
    rs = reference.RuleState(alpha=beta, beta=beta, ema=ema, kappa_v=kv, kappa_p=kp, found=found,
                             kmax=kmax, share=share)
    base = reference.without_share(rule)
    assert base in reference.RULES and base not in reference.SHARE_RULES
    a_s, n_s = reference.rule_step(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    a_b, n_b = reference.rule_step(base, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    smoothed = 0.95 * share + 0.05 * _c2(red)
    assert n_s.share == pytest.approx(smoothed, rel=1e-12, abs=1e-300) and n_b.share == share
    if smoothed <= reference.SHARESM_LO:
        assert a_s == a_b and vars(n_s) == dict(vars(n_b), share=n_s.share)
    else:
        assert a_s >= a_b * (1 - 1e-12) and n_s.ema >= n_b.ema * (1 - 1e-12)
        assert vars(n_s) == dict(vars(n_b), alpha=n_s.alpha, ema=n_s.ema, beta=n_s.beta,
                                 share=n_s.share)
    a_dev, n_dev = run_device(rule, L0, L0 + dL, red, beta, rs, 1e-3, pdir)
    assert float(a_dev) == pytest.approx(a_s, rel=1e-5, abs=1e-30)
    assert float(n_dev["ema"]) == pytest.approx(n_s.ema, rel=1e-5, abs=1e-30)
    assert float(n_dev["share"]) == pytest.approx(n_s.share, rel=1e-5, abs=1e-30)


@pytest.mark.parametrize("rule", reference.SHARESM_RULES)
@pytest.mark.parametrize("share", [0.0, 0.19, 0.25, 0.3, 0.5])
@pytest.mark.parametrize("c2", [0.05, 0.19, 0.4, 1.0])
def test_sharesm_weighs_the_fit_along_v_by_the_smoothed_share(rule, share, c2):
    """A V probe with an empty α memory and no bound in reach, the smoothed share before
    ``share`` and this batch's c²: the slot becomes s = 0.95·share + 0.05·c², and the step is
    scale × c_V^w · c_P^(1−w), w = WGEO_V up to s = 0.22, 1 from s = 0.34, linear between, however
    high this one batch's share; the device agrees."""
    _, scale = reference.NEAR[rule]
    a_s, a_b, a_dev, cv, cp = _free_v_probe(rule, 1e-3, 4e-3, 1.0 / c2, share=share)
    s = 0.95 * share + 0.05 * c2
    w = 0.25 + 0.75 * min(max((s - 0.22) / 0.12, 0.0), 1.0)
    assert (reference.SHARESM_LO, reference.SHARESM_HI, reference.SHARE_DECAY) == (0.22, 0.34, 0.95)
    assert a_s == pytest.approx(scale * cv ** w * cp ** (1 - w), rel=1e-9)
    assert a_b == pytest.approx(scale * cv ** 0.25 * cp ** 0.75, rel=1e-9)
    if share == 0.0:  # an empty slot: one batch, at any share, moves nothing
        assert a_s == a_b
    assert a_dev == pytest.approx(a_s, rel=1e-5)


@pytest.mark.parametrize("rule", reference.SHARESM_RULES)
def test_sharesm_climbs_over_about_twenty_batches_and_falls_back(rule):
    """Batches of share c² = 0.5 from an empty slot: the slot is 0.5·(1 − 0.95ᵏ) after k steps
    (both probe directions count), so the weight of the fit along V leaves WGEO_V from the 12th
    step and reaches 1 from the 23rd; then batches at the noise level (c² = 0.19) bring it down
    step by step, below SHARESM_LO after 21–45 of them; the device's slot follows."""
    red = dict(vg=1.0, pg=1.0, vv=1.0, pp=1.0, sg=0.0, gg=2.0, tt=1e12, vz=0.0)
    rs = reference.RuleState(alpha=1e-3, beta=1e-3, kappa_v=1e-3, kappa_p=4e-3, found=1.0)
    dev = rules.init_state(1e-3, "cpu")
    slots, want = [], []
    for k in range(100):
        if k == 40:
            red = dict(red, gg=1 / 0.19)
        pdir = DIR_P if k % 2 == 0 else DIR_V
        L0, beta = 1.0, rs.beta
        dX = red["pg"] if pdir == DIR_P else red["vg"]
        Lb = L0 - beta * dX + 2e-3 * beta ** 2
        _, rs = reference.rule_step(rule, L0, Lb, red, beta, rs, 1e-3, pdir)
        vec = torch.tensor([red[k2] for k2 in ("vg", "pg", "vv", "pp", "sg", "gg", "tt", "vz")],
                           dtype=torch.float64)
        _, dev = rules.rule_step(rule, torch.tensor(L0, dtype=torch.float64),
                                 torch.tensor(Lb, dtype=torch.float64), vec,
                                 dict(dev, beta=torch.tensor(beta)), 1e-3, pdir, reference.FP32_EPS)
        slots.append(rs.share)
        assert float(dev["share"]) == pytest.approx(rs.share, rel=1e-5)
    for k in range(40):
        want.append(0.5 * (1 - 0.95 ** (k + 1)))
    assert slots[:40] == pytest.approx(want, rel=1e-9)
    assert slots[10] < 0.22 < slots[11] and slots[21] < 0.34 < slots[22]
    assert all(b < a for a, b in zip(slots[39:], slots[40:]))
    assert slots[59] > 0.22 > slots[84]


LOWSHARE_ONLY = tuple(r for r in reference.LOWSHARE_RULES  # the floored ones: own tests
                      if r not in reference.MINREL_RULES + reference.MINPOL_RULES
                      + reference.LIVE_RULES)


def _lowshare_base(rule):
    base = rule.replace("_lowshare", "")
    assert base in reference.RULES and base not in reference.LOWSHARE_RULES
    return base


def _share_call(L0, dL, vg, pg, vv, pp, gg, tt, vz, beta, ema, kv, kp, length, share, found,
                pdir):
    """One call of a rule: (L0, Lβ, reductions, β, state, α₀, probe direction), the slots
    rounded to fp32 as the device stores them and Σ_{G=0}V² no larger than |V|²."""
    beta, ema, kv, kp, length, share = (float(torch.tensor(x, dtype=torch.float32))
                                        for x in (beta, ema, kv, kp, length, share))
    red = dict(vg=vg, pg=pg, vv=vv, pp=pp, sg=0.0, gg=gg, tt=tt, vz=min(vz, vv))
    rs = reference.RuleState(alpha=beta, beta=beta, ema=ema, kappa_v=kv, kappa_p=kp, found=found,
                             length=length, share=share)
    return L0, L0 + dL, red, beta, rs, 1e-3, pdir


SHARE_CALLS = st.builds(_share_call, L0=finite, dL=finite, vg=finite, pg=finite, vv=nonneg,
                        pp=nonneg, gg=nonneg, tt=nonneg, vz=nonneg, beta=positive, ema=kappa,
                        kv=kappa, kp=kappa, length=kappa,
                        share=st.one_of(st.just(0.0), st.floats(1e-4, 1.0)),
                        found=st.sampled_from([0.0, 1.0]), pdir=st.sampled_from([DIR_V, DIR_P]))


def _assert_the_device_agrees(rule, call, alpha, new, also=()):
    """The device rule on ``call`` gives the reference's step and its share, EMA, next probe and
    step length (and the slots named in ``also``); returns the device's new state."""
    a_dev, n_dev = run_device(rule, *call)
    assert float(a_dev) == pytest.approx(alpha, rel=1e-5, abs=1e-30)
    for k in ("share", "ema", "beta", "length") + tuple(also):
        assert float(n_dev[k]) == pytest.approx(getattr(new, k), rel=1e-5, abs=1e-30)
    return n_dev


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(LOWSHARE_ONLY), call=SHARE_CALLS)
def test_lowshare_scales_only_the_step_by_the_smoothed_share(rule, call):
    """`*_lowshare`: every step averages this batch's c² into the `share` slot (decay
    SHARE_DECAY; an empty slot takes c² as it is), along either probe direction, and the step is
    the rule's without the modifier times clamp(slot/0.10, 0.25, 1); every other slot (the α
    memory, the curvatures, the next probe, the step length) is that rule's; the device agrees,
    the slot too."""
    red, share = call[2], call[4].share
    a_l, n_l = reference.rule_step(rule, *call)
    a_b, n_b = reference.rule_step(_lowshare_base(rule), *call)
    c2 = _c2(red)
    slot = 0.95 * share + 0.05 * c2 if share > 0 else c2
    assert n_l.share == pytest.approx(slot, rel=1e-12, abs=1e-300) and n_b.share == share
    factor = min(max(slot / 0.10, 0.25), 1.0)
    assert (reference.LOWSHARE_REF, reference.LOWSHARE_LO) == (0.10, 0.25)
    assert a_l == pytest.approx(a_b * factor, rel=1e-12, abs=1e-300)
    assert vars(n_l) == dict(vars(n_b), alpha=n_l.alpha, share=n_l.share)
    _assert_the_device_agrees(rule, call, a_l, n_l)


@pytest.mark.parametrize("rule", LOWSHARE_ONLY)
@pytest.mark.parametrize("share", [0.0, 0.01, 0.05, 0.1, 0.3])
@pytest.mark.parametrize("c2", [0.01, 0.05, 0.2])
def test_lowshare_shortens_the_step_where_the_smoothed_share_is_low(rule, share, c2):
    """A V probe with a stored fit along P and no bound in reach: the slot becomes
    s = 0.95·share + 0.05·c² (c² alone from an empty slot) and the step is the rule's without the
    modifier times s/0.10, at least a quarter of it and at most all of it; the device agrees."""
    red = dict(vg=1.0, pg=1.0, vv=1.0, pp=1.0, sg=0.0, gg=1.0 / c2, tt=1e12, vz=0.0)
    L0, beta = 1e4, 10.0
    Lb = L0 - beta * red["vg"] + 1e-3 * red["vv"] * beta ** 2
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=1e-3, kappa_p=4e-3, found=1.0,
                             share=share)
    a_l, _ = reference.rule_step(rule, L0, Lb, red, beta, rs, 1e-3, DIR_V)
    a_b, _ = reference.rule_step(_lowshare_base(rule), L0, Lb, red, beta, rs, 1e-3, DIR_V)
    a_dev, _ = run_device(rule, L0, Lb, red, beta, rs, 1e-3, DIR_V)
    s = 0.95 * share + 0.05 * c2 if share > 0 else c2
    assert a_b > 0 and a_l == pytest.approx(a_b * min(max(s / 0.10, 0.25), 1.0), rel=1e-12)
    if share >= 0.3 or (share == 0 and c2 >= 0.1):
        assert a_l == a_b
    if share == 0.01 and c2 <= 0.05:
        assert a_l == pytest.approx(a_b / 4, rel=1e-12)
    assert float(a_dev) == pytest.approx(a_l, rel=1e-5)


def _minrel_bases(rule, token="_minrel"):
    """(the `_lowshare` rule `_minrel` (or `_minpol`) floors, the rule without either)"""
    shortened, plain = rule.replace(token, ""), rule.replace("_lowshare" + token, "")
    assert shortened in LOWSHARE_ONLY and plain in reference.RULES
    assert plain not in reference.LOWSHARE_RULES
    return shortened, plain


def _floored_steps(rule, token, call):
    """(α, state) of the `_minrel` or `_minpol` rule, (α, state) of the `_lowshare` rule it
    floors, and α of the rule without either, on one call."""
    shortened, plain = _minrel_bases(rule, token)
    a_m, n_m = reference.rule_step(rule, *call)
    a_s, n_s = reference.rule_step(shortened, *call)
    a_p, _ = reference.rule_step(plain, *call)
    return a_m, n_m, a_s, n_s, a_p


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(reference.MINREL_RULES), call=SHARE_CALLS)
def test_minrel_floors_the_share_s_shortening_at_a_relative_length(rule, call):
    """`*_lowshare_minrel`: the step is max(α_share, min(α_rule, 0.008·|θ|/|V|)), α_share the
    `_lowshare` rule's and α_rule the rule's without either modifier (|θ| or |V| zero: α_share);
    so it lies between the two, and every slot is the `_lowshare` rule's but the step; the device
    agrees."""
    red = call[2]
    a_m, n_m, a_s, n_s, a_p = _floored_steps(rule, "_minrel", call)
    assert reference.MINREL == 0.008
    if red["tt"] > 0 and red["vv"] > 0:
        least = 0.008 * math.sqrt(red["tt"] / red["vv"])
        assert a_m == pytest.approx(max(a_s, min(a_p, least)), rel=1e-12, abs=1e-300)
    else:
        assert a_m == a_s
    assert min(a_s, a_p) * (1 - 1e-12) <= a_m <= max(a_s, a_p) * (1 + 1e-12)
    assert vars(n_m) == dict(vars(n_s), alpha=n_m.alpha)
    _assert_the_device_agrees(rule, call, a_m, n_m)


def _quartered_probe(tt, L0=1e4):
    """A V probe with a stored fit along P, no bound in reach but `_rel`'s 0.1·|θ|/|V| (at least
    316 for |θ|² ≥ 1e7) against a step of 187.5, and a smoothed share of 0.01, so that `_lowshare`
    quarters the step: one call of a rule."""
    red = dict(vg=1.0, pg=1.0, vv=1.0, pp=1.0, sg=0.0, gg=100.0, tt=tt, vz=0.0)
    beta = 10.0
    Lb = L0 - beta * red["vg"] + 1e-3 * red["vv"] * beta ** 2
    rs = reference.RuleState(alpha=beta, beta=beta, kappa_v=1e-3, kappa_p=4e-3, found=1.0,
                             share=0.01)
    return L0, Lb, red, beta, rs, 1e-3, DIR_V


@pytest.mark.parametrize("rule", reference.MINREL_RULES)
@pytest.mark.parametrize("tt, kept", [(1e7, "quarter"), (1e8, "floor"), (1e10, "whole")])
def test_minrel_keeps_the_share_s_step_no_shorter_than_0_008_theta(rule, tt, kept):
    """`_quartered_probe`'s call: with 0.008·|θ|/|V| = 25.3 below the quarter, the step is the
    quarter; with 80, between the quarter and the whole step, it is 80; with 800, above the whole
    step, the whole step (never lengthened); the device agrees."""
    call = _quartered_probe(tt)
    a_m, _, a_s, _, a_p = _floored_steps(rule, "_minrel", call)
    a_dev, _ = run_device(rule, *call)
    least = 0.008 * math.sqrt(tt)
    assert a_p == pytest.approx(187.5, rel=1e-12) and a_s == pytest.approx(a_p / 4, rel=1e-12)
    expected = {"quarter": a_s, "floor": least, "whole": a_p}[kept]
    assert a_m == pytest.approx(expected, rel=1e-12)
    assert float(a_dev) == pytest.approx(a_m, rel=1e-5)


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(reference.MINPOL_RULES), call=SHARE_CALLS)
def test_minpol_floors_the_share_s_shortening_below_the_polyak_bound(rule, call):
    """`*_lowshare_minpol`: the step is max(α_share, min(α_rule, 0.008·|θ|/|V|, 2·L0/⟨V,G⟩)) where
    |θ|, |V|, L0 and ⟨V,G⟩ are all positive, else α_share; so it lies between `_lowshare`'s and
    `_minrel`'s; every slot is the `_lowshare` rule's but the step; the device agrees."""
    L0, red = call[0], call[2]
    tt, vv, vg = red["tt"], red["vv"], red["vg"]
    a_m, n_m, a_s, n_s, a_p = _floored_steps(rule, "_minpol", call)
    a_r, _ = reference.rule_step(rule.replace("_minpol", "_minrel"), *call)
    if tt > 0 and vv > 0 and L0 > 0 and vg > 0:
        least = min(0.008 * math.sqrt(tt / vv), 2.0 * L0 / vg)
        assert a_m == pytest.approx(max(a_s, min(a_p, least)), rel=1e-12, abs=1e-300)
    else:
        assert a_m == a_s
    assert min(a_s, a_r) * (1 - 1e-12) <= a_m <= max(a_s, a_r) * (1 + 1e-12)
    assert vars(n_m) == dict(vars(n_s), alpha=n_m.alpha)
    _assert_the_device_agrees(rule, call, a_m, n_m)


@pytest.mark.parametrize("rule", reference.MINPOL_RULES)
@pytest.mark.parametrize("L0, kept", [(1e4, "floor"), (30.0, "polyak"), (10.0, "quarter")])
def test_minpol_lets_the_share_shorten_the_step_near_zero_loss(rule, L0, kept):
    """`_quartered_probe`'s call with the floor 0.008·|θ|/|V| = 80 between the quarter (46.9)
    and the whole step (187.5), ⟨V,G⟩ = 1: at L0 = 1e4 the bound 2·L0/⟨V,G⟩ is far above and the
    step is the floor, 80, as `_minrel`'s; at L0 = 30 the bound, 60, is below the floor and the
    step is 60; at L0 = 10 the bound, 20, is below the quarter and the step is `_lowshare`'s
    quarter; the device agrees."""
    call = _quartered_probe(1e8, L0)
    a_m, _, a_s, _, a_p = _floored_steps(rule, "_minpol", call)
    a_dev, _ = run_device(rule, *call)
    assert a_p == pytest.approx(187.5, rel=1e-12) and a_s == pytest.approx(a_p / 4, rel=1e-12)
    expected = {"floor": 80.0, "polyak": 2.0 * L0, "quarter": a_s}[kept]
    assert a_m == pytest.approx(expected, rel=1e-12)
    assert float(a_dev) == pytest.approx(a_m, rel=1e-5)


def _with_grad_slots(call, grad_ema, grad_start, grad_seen):
    """``call`` with its rule state's `_minlive` slots set (fp32-rounded, as the device stores
    them)."""
    f32 = lambda x: float(torch.tensor(x, dtype=torch.float32))  # noqa: E731
    rs = dataclasses.replace(call[4], grad_ema=f32(grad_ema), grad_start=f32(grad_start),
                             grad_seen=grad_seen)
    return call[:4] + (rs,) + call[5:]


def _live_slots_by_hand(gg, ema, start, seen):
    """(grad_ema, grad_start, grad_seen) after a finite step with batch |G|² ``gg``: the first
    10 steps' |G|² averaged in log space, then held; the EMA with decay 0.95 (an empty one takes
    |G|² as it is); nothing moves where |G|² is 0."""
    if gg <= 0:
        return ema, start, seen
    if seen < 10:
        start = math.exp((seen * math.log(start) + math.log(gg)) / (seen + 1)) if seen else gg
        seen += 1
    return (0.95 * ema + 0.05 * gg if ema > 0 else gg), start, seen


GRAD_SLOTS = dict(grad_ema=kappa, grad_start=st.floats(1e-8, 1e8),
                  grad_seen=st.sampled_from([0, 1, 5, 9, 10]))


@settings(max_examples=400, deadline=None)
@given(rule=st.sampled_from(reference.LIVE_RULES), call=SHARE_CALLS, **GRAD_SLOTS)
def test_minlive_floors_as_minrel_while_the_gradient_is_alive(rule, call, grad_ema, grad_start,
                                                             grad_seen):
    """`*_lowshare_minlive`: the step is `_minrel`'s while the batch gradient is alive (fewer than
    10 steps seen, or the smoothed |G|² at least 1e-3 of the first 10 steps' geometric mean, this
    step's |G|² included), else the `_lowshare` rule's; the slots follow `_live_slots_by_hand`,
    every other slot is the `_lowshare` rule's; the device agrees, its slots too."""
    call = _with_grad_slots(call, grad_ema, grad_start, grad_seen)
    rs, red = call[4], call[2]
    a_l, n_l = reference.rule_step(rule, *call)
    a_r, n_r = reference.rule_step(rule.replace("_minlive", "_minrel"), *call)
    a_s, _ = reference.rule_step(rule.replace("_minlive", ""), *call)
    ema, start, seen = _live_slots_by_hand(red["gg"], rs.grad_ema, rs.grad_start, rs.grad_seen)
    assert (reference.LIVE_DECAY, reference.LIVE_START, reference.LIVE_FRAC) == (0.95, 10, 1e-3)
    assert n_l.grad_seen == seen
    assert n_l.grad_ema == pytest.approx(ema, rel=1e-12, abs=1e-300)
    assert n_l.grad_start == pytest.approx(start, rel=1e-12, abs=1e-300)
    alive = seen < 10 or ema >= 1e-3 * start
    assume(seen < 10 or abs(ema / (1e-3 * start) - 1) > 1e-6)  # no verdict on a rounding edge
    assert a_l == (a_r if alive else a_s)
    assert vars(n_l) == dict(vars(n_r), alpha=n_l.alpha, grad_ema=n_l.grad_ema,
                             grad_start=n_l.grad_start, grad_seen=n_l.grad_seen)
    n_dev = _assert_the_device_agrees(rule, call, a_l, n_l, also=("grad_ema", "grad_start"))
    assert float(n_dev["grad_seen"]) == seen


@pytest.mark.parametrize("rule", reference.LIVE_RULES)
def test_minlive_shuts_the_floor_once_the_gradient_has_died_and_the_device_follows(rule):
    """`_quartered_probe`'s call, its state carried from step to step, with the batch |G|²
    100·2^k at the first 10 steps k, then 1e-6 (|V|² 1e8 and |θ|² 1e16 with it, so that c² stays
    near 0.01 and the floor at 80): the start slot is the geometric mean of the first ten
    (100·2^4.5), the EMA follows by hand, and the step is `_minrel`'s, longer than `_lowshare`'s,
    exactly until the EMA has decayed below 1e-3 of the start (some 150 steps later), then
    `_lowshare`'s; the device, carrying its own grad_* slots from step to step, agrees."""
    L0, Lb, red, beta, rs, alpha0, pdir = _quartered_probe(1e8)
    dev = rules.init_state(alpha0, "cpu")
    ema = start = 0.0
    seen, shut_at, n, floored = 0, None, 220, []
    for k in range(n):
        gg, vv, tt = (100.0 * 2.0 ** k, 1.0, 1e8) if k < 10 else (1e-6, 1e8, 1e16)
        red_k = dict(red, gg=gg, vv=vv, tt=tt)
        call = (L0, Lb, red_k, beta, rs, alpha0, pdir)
        a_l, n_l = reference.rule_step(rule, *call)
        a_r, _ = reference.rule_step(rule.replace("_minlive", "_minrel"), *call)
        a_s, _ = reference.rule_step(rule.replace("_minlive", ""), *call)
        ema, start, seen = _live_slots_by_hand(gg, ema, start, seen)
        assert (n_l.grad_ema, n_l.grad_start, n_l.grad_seen) == (
            pytest.approx(ema, rel=1e-12), pytest.approx(start, rel=1e-12), seen)
        if shut_at is None and seen == 10 and ema < 1e-3 * start:
            shut_at = k
        assert a_l == (a_s if shut_at is not None else a_r)
        floored.append(a_r > a_s * (1 + 1e-9))
        dev.update({key: torch.tensor(float(getattr(rs, key))) for key in
                    ("alpha", "kappa_v", "kappa_p", "ema", "length", "found", "share")},
                   beta=torch.tensor(beta))
        vec = torch.tensor([red_k[x] for x in ("vg", "pg", "vv", "pp", "sg", "gg", "tt", "vz")],
                           dtype=torch.float64)
        a_dev, dev = rules.rule_step(rule, torch.tensor(L0, dtype=torch.float64),
                                     torch.tensor(call[1], dtype=torch.float64), vec, dev,
                                     alpha0, pdir, reference.FP32_EPS)
        assert float(a_dev) == pytest.approx(a_l, rel=1e-5)
        for key in ("grad_ema", "grad_start", "grad_seen"):
            assert float(dev[key]) == pytest.approx(getattr(n_l, key), rel=1e-5)
        rs = n_l
    assert start == pytest.approx(100.0 * 2.0 ** 4.5, rel=1e-12)
    assert shut_at is not None and 100 < shut_at < n - 10
    assert all(floored) and rs.share < 0.025  # the floor holds the step up throughout
