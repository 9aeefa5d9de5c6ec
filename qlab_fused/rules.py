"""The step-size rules on device: α from (L0, Lβ, reductions, β) as 0-d fp32 tensor ops.

Same semantics as ``qlab_fused.reference.rule_step`` (plain Python, the readable version), written
with ``torch.where`` so that nothing is read back to the host. The rule is tiny and shared by every
backend; only the two passes over memory are fused.
"""
from __future__ import annotations

import torch

from .contract import DIR_P, DIR_V, RED_GG, RED_PG, RED_PP, RED_SG, RED_TT, RED_VG, RED_VV, RED_VZ
from .reference import (CARRY_RULES, EARLY_RULES, EDGE_OF, EDGE_RULES, EMA_DECAY, EMA_DOWN,  # noqa: F401
                        EMA_RULES, FIT_RULES,
                        FLOOR_RULES, FP32_EPS, GEO2_RULES, GEO2_SPREAD, GEO_RULES, GEO_V_RULES,
                        GROW_RULES, GROW_STEPS,
                        FP32_MAX, GUARD_RULES, HOLD_RULES, KMAX_BEFORE_RULES, KMAX_DECAY,
                        KMAX_OWN_RULES, KRES_RULES,
                        KMAX_RULES, KMAXS_RULES, KMAXV_RULES,
                        LEN_DECAY_OF, LEN_GROWTH, LEN_RULES, LEN_MOVED_RULES,
                        LENUP_RULES, LIVE_DECAY, LIVE_FRAC, LIVE_RULES, LIVE_START,
                        LOWSHARE_LO, LOWSHARE_REF, LOWSHARE_RULES, MATCH_RULES,
                        MEMORY_STEP_RULES, MINPOL_RULES, MINREL, MINREL_RULES, NEAR,
                        POLYAK, POLYAK_RULES, PROBE_ULPS,
                        REL_CAP, REL_RULES, RESTART_RULES, RULE_BETA, RULE_CAP, RULES, SHARE_HI, SHARE_LO,
                        SHARE4_RULES, SHARE_DECAY, SHARE_RULES, SHARE_SPREAD, SHARESM_HI,
                        SHARESM_LO, SHARESM_RULES, SIGNAL_EMA, SKIP_RULES,
                        SLOW_RULES, SPLIT_RULES, START_RULES, STEEP_RULES, STILL_RULES, TRUST_FAR,
                        TRUST_RULES,
                        UNSEEN_RULES,
                        WGEO_RULES, WGEO_V, moved_by_rounding, next_probe_direction,
                        probe_direction)

STATE_KEYS = ("alpha", "beta", "kappa_v", "kappa_p", "ema", "held", "length", "beta_alt", "found",
              "kmax", "share", "grad_ema", "grad_start", "grad_seen", "skips", "step")


def init_state(alpha0: float, device) -> dict:
    z = lambda v=0.0: torch.tensor(v, dtype=torch.float32, device=device)  # noqa: E731
    return {"alpha": z(), "beta": z(alpha0), "kappa_v": z(), "kappa_p": z(), "ema": z(), "held": z(),
            "length": z(), "beta_alt": z(), "found": z(), "kmax": z(), "share": z(),
            "grad_ema": z(), "grad_start": z(), "grad_seen": z(), "skips": z(), "step": z()}


def _good(x):
    return torch.isfinite(x) & (x > 0)


def _share_ramp(c2, lo, hi):
    """The weight of the fit along V: WGEO_V at c² ≤ lo, 1 at c² ≥ hi, linear between
    (``reference.share_ramp``)."""
    return WGEO_V + (1 - WGEO_V) * ((c2 - lo) / (hi - lo)).clamp(0, 1)


def _weighted_geo(cv, cp, wv, wp):
    """c_V^wv · c_P^wp where both estimates exist (are finite), else the one that does (inf: none)."""
    both = torch.isfinite(cv) & torch.isfinite(cp)
    one = torch.ones_like(cv)
    mix = (wv * torch.where(both, cv, one).log() + wp * torch.where(both, cp, one).log()).exp()
    return torch.where(both, mix, torch.minimum(cv, cp))


def _log_ema(prev, x, decay, down=None):
    """x averaged into prev in log space with ``decay`` (``down`` where x lies below prev), x itself
    while prev holds nothing."""
    prev_ok = _good(prev)
    lp = torch.where(prev_ok, prev, torch.ones_like(prev)).log()
    lx = x.log()
    if down is not None:
        decay = torch.where(lx < lp, torch.full_like(lp, down), torch.full_like(lp, decay))
    return torch.where(prev_ok, (decay * lp + (1 - decay) * lx).exp(), x)


def _hold(last, m, edge):
    """`*edge`: the held step ``last`` moved into [m, edge·m] (m itself while none is held)."""
    return torch.where(last > 0, torch.minimum(torch.maximum(last, m), edge * m), m)


def rule_step(rule: str, L0, Lb, red, st: dict, alpha0: float, probe_dir: int,
              loss_eps: float | None = None, param_eps: float = FP32_EPS):
    """Return (α, new rule state). All tensors stay on device; no branch reads a tensor.
    ``loss_eps``: the machine epsilon of the dtype the losses were computed in (None: the coarser of
    L0's and Lβ's dtypes as given); ``param_eps``: that of the parameters the probe forward reads
    (the probe floor, ``reference.PROBE_ULPS``).

    Computed in float64 (0-d tensors, so it costs nothing): a₂ comes from Lβ − L0 + β·d, a
    difference of nearly equal numbers, and fp32 would throw away digits the losses still carry.
    """
    f64 = torch.float64
    if loss_eps is None:
        loss_eps = max(torch.finfo(L0.dtype).eps, torch.finfo(Lb.dtype).eps)
    L0 = L0.detach().reshape(()).to(f64)
    Lb = Lb.detach().reshape(()).to(device=L0.device, dtype=f64)
    red = red.to(device=L0.device, dtype=f64)
    st64 = {k: v.to(f64) for k, v in st.items()}
    beta = st64["beta"]
    zero = torch.zeros((), dtype=f64, device=L0.device)
    l0_ok = torch.isfinite(L0)
    fin = torch.isfinite(Lb) & torch.isfinite(red).all()
    d = red[RED_VG]
    dX = red[RED_PG] if probe_dir == DIR_P else d
    a2 = (Lb - L0 + beta * dX) / (beta * beta)
    a_star = dX / (2 * a2)
    fallback = torch.where(_good(a_star), a_star, beta)
    grows = rule in GROW_RULES or rule in STEEP_RULES or rule in EARLY_RULES
    if grows:  # a fit without a minimum counts at the cap
        if rule in STEEP_RULES:  # `*steep`: only a fall at least GROW_STEPS lines deep
            no_minimum = (dX > 0) & (L0 - Lb >= GROW_STEPS * beta * dX)
        else:  # `*grow`: the loss along X falls faster than a line
            no_minimum = (a2 <= 0) & (dX > 0)
        if rule in EARLY_RULES:  # `*early`: only before the first fit with a minimum
            no_minimum = no_minimum & ~(st64["found"] > 0)
        fallback = torch.where(no_minimum, RULE_CAP[rule] * beta, fallback)
    kappa_v, kappa_p = st64["kappa_v"], st64["kappa_p"]

    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose from {RULES}")
    cap = RULE_CAP[rule] * beta
    reach, scale = NEAR.get(rule, (1.0, 1.0))
    inf = torch.full_like(zero, float("inf"))
    tt, vv = red[RED_TT], red[RED_VV]
    rel_bound = torch.where((tt > 0) & (vv > 0), REL_CAP * (tt / vv).sqrt(), inf)  # |αV| ≤ 0.1·|θ|
    false = torch.zeros((), dtype=torch.bool, device=L0.device)
    tests_far = rule in TRUST_RULES or rule in SKIP_RULES or rule in START_RULES
    far = (_good(a_star) & (a_star < beta / (TRUST_FAR * reach))) if tests_far else false
    if rule in START_RULES:  # only while the EMA is empty
        far = far & ~_good(st64["ema"])
    rounding = moved_by_rounding(L0, Lb, beta, dX, loss_eps)
    unresolved = rounding if rule in GUARD_RULES else false
    if rule in HOLD_RULES or rule in STILL_RULES:  # a loss bit for bit unchanged: nothing moved
        unresolved = unresolved | (Lb == L0)
    gated = (rule in GUARD_RULES or rule in SKIP_RULES or rule in START_RULES
             or rule in STILL_RULES)
    remember = ~(far | unresolved) if gated else ~false
    kmax_takes = remember & ~rounding if rule in KRES_RULES else remember  # `*_kres`: resolved only
    zero_far = far  # `*skip`: only while there is no memory (below)
    if rule in FIT_RULES:
        alpha = torch.minimum(fallback, cap)
        if rule in EDGE_RULES:  # the held step h in [m, edge·m], m the smoothed fit
            m = _log_ema(st64["ema"], fallback, EMA_DECAY)
            ema = torch.where(remember, m, st64["ema"])
            held = _hold(st64["held"], m, EDGE_OF[rule])
            held_next = torch.where(remember, held, st64["held"])
            far_fit = _good(a_star) & (a_star < beta / TRUST_FAR)  # no step past a far fit's minimum
            bound = torch.where(far_fit, 1.0, EDGE_OF[rule]) * fallback
            alpha = torch.minimum(torch.minimum(held, bound), cap)
    elif rule == "stale":
        alpha = torch.where(a2 > 0, red[RED_SG].clamp_min(0) / (2 * a2), beta)
    elif rule in ("signal", "signal_nocap"):
        sg = red[RED_SG]
        rho = torch.where(d > 0, (sg / d).clamp(0.0, 1.0), zero)
        rho = torch.where(sg == 0, torch.ones_like(zero), rho)
        eta = (SIGNAL_EMA * kappa_p + (1 - SIGNAL_EMA) * (1 - rho)).clamp(0.0, 1.0)
        kappa_p = eta
        alpha = torch.minimum((1 - eta) * fallback, cap)
    else:  # "alternate*"
        pp = red[RED_PP]
        xx = pp if probe_dir == DIR_P else vv
        kappa = torch.where((a2 > 0) & (xx > 0), a2 / xx, zero)
        if probe_dir == DIR_P:
            kappa_p = torch.where(remember, kappa, kappa_p)
        else:
            kappa_v = torch.where(remember, kappa, kappa_v)
        if rule in EARLY_RULES:  # `*early`: a stored curvature is a fit with a minimum
            found = torch.where(remember & (kappa > 0), torch.ones_like(zero), st64["found"])
        if rule in KMAX_RULES:  # this probe's curvature, if stored, against the decayed largest
            entry = torch.where(kmax_takes, kappa, zero)
            if rule in KMAXV_RULES and probe_dir == DIR_P:  # in V's units
                kv, kp = st64["kappa_v"], st64["kappa_p"]
                ok = (kv > 0) & (kp > 0)
                entry = torch.where(ok, kv * entry / torch.where(ok, kp, zero + 1), zero)
            if rule in KRES_RULES:
                entry = torch.where(entry <= FP32_MAX, entry, zero)
            kmax = torch.maximum(entry, KMAX_DECAY * st64["kmax"])
        cv = d / (2 * kappa_v * vv)
        cp = red[RED_PG] / (2 * kappa_p * pp)
        cv = torch.where((kappa_v > 0) & (vv > 0) & _good(cv), cv, inf)
        cp = torch.where((kappa_p > 0) & (pp > 0) & _good(cp), cp, inf)
        if rule in SHARE_RULES or rule in LOWSHARE_RULES:  # the fresh gradient's share of V, c²
            gg = red[RED_GG]
            ok = (d > 0) & (vv > 0) & (gg > 0)
            c2 = torch.where(ok, d * d / torch.where(ok, vv * gg, zero + 1), zero)
        if rule in SHARESM_RULES or rule in LOWSHARE_RULES:  # c² smoothed over the steps
            share = SHARE_DECAY * st64["share"] + (1 - SHARE_DECAY) * c2
            if rule in LOWSHARE_RULES:  # an empty slot takes this step's c² as it is
                share = torch.where(st64["share"] > 0, share, c2)
        if rule in WGEO_RULES:
            w = WGEO_V
            if rule in SHARESM_RULES:  # `_sharesm`: the smoothed share, its own band
                w = _share_ramp(share, SHARESM_LO, SHARESM_HI)
            elif rule in SHARE_RULES:  # more weight on the fit along V as c² grows
                w = _share_ramp(c2, SHARE_LO, SHARE_HI)
                if rule in SHARE4_RULES:  # `_share4`: only where c_V ≤ SHARE_SPREAD · c_P
                    w = torch.where(cv <= SHARE_SPREAD * cp, w, torch.full_like(w, WGEO_V))
            best = torch.minimum(_weighted_geo(cv, cp, w, 1 - w), cv)
        elif rule in GEO_RULES:
            best = _weighted_geo(cv, cp, 0.5, 0.5)
            if rule in GEO_V_RULES:
                best = torch.minimum(best, cv)
            if rule in GEO2_RULES:
                best = torch.minimum(best, GEO2_SPREAD * torch.minimum(cv, cp))
        elif rule == "alternate_noise":
            sg = red[RED_SG]
            rho = torch.where(d > 0, (sg / d).clamp(0.0, 1.0), zero)
            rho = torch.where(sg == 0, torch.ones_like(zero), rho)
            w = 1 - rho
            best = _weighted_geo(cv, cp, 1 - w, w)
        else:
            best = torch.minimum(cv, cp)
        no_curvature = beta
        if grows:  # a fit without a minimum: GROW_STEPS steps
            no_curvature = torch.where(no_minimum, GROW_STEPS * beta / reach, beta)
        alpha = torch.where(torch.isfinite(best), best, no_curvature)
        if rule in SKIP_RULES:
            zero_far = far & ~torch.isfinite(best)
        if rule not in EMA_RULES:  # the EMA rules limit growth by the EMA itself
            alpha = torch.minimum(alpha, cap)
        else:
            alpha = alpha * scale
            prev = st64["ema"]
            alpha = _log_ema(prev, alpha, EMA_DECAY, EMA_DOWN if rule in SLOW_RULES else None)
            if rule in GUARD_RULES:  # the EMA never holds more than the step bound lets a step take
                alpha = torch.minimum(alpha, rel_bound)
            ema = torch.where(remember, alpha, prev)
            if rule in EDGE_RULES:
                held = _hold(st64["held"], alpha, EDGE_OF[rule])
                held_next = torch.where(remember, held, st64["held"])
                alpha = held
            alpha = torch.minimum(alpha, scale * cv)  # cv is inf when there is no V estimate
    if rule in FLOOR_RULES:
        alpha = torch.maximum(alpha, beta / 2)
    if rule in REL_RULES:
        alpha = torch.minimum(alpha, rel_bound)
    alpha = torch.where(zero_far, zero, alpha)

    if probe_dir == DIR_V:
        not_descent = torch.where(Lb < L0, beta, zero)
    else:
        not_descent = zero
    if rule in CARRY_RULES:  # V does not descend for this batch: the memory's step (none without one)
        carry = _good(st64["ema"]) & ~zero_far
        not_descent = torch.where(carry, torch.minimum(st64["ema"], rel_bound), not_descent)
    alpha = torch.where(d > 0, alpha, not_descent)
    if rule in MEMORY_STEP_RULES:  # a probe that measured nothing: the memory's step, where V descends
        unresolved_zero = unresolved & ~(_good(st64["ema"]) & (d > 0))
    else:
        unresolved_zero = unresolved
    alpha = torch.where((red[RED_GG] == 0) | unresolved_zero, zero, alpha)
    alpha = torch.where(fin & l0_ok, alpha, zero)

    policy = RULE_BETA.get(rule, "last")
    if rule in EMA_RULES:
        fallback_beta = torch.where(_good(ema), ema, torch.full_like(zero, alpha0))
        at = torch.where(_good(ema), ema, alpha) if rule in EDGE_RULES else alpha  # `*edge`: at m
        beta_next = reach * torch.where(at > 0, at, fallback_beta)
        if rule in MATCH_RULES and probe_dir == DIR_V:  # the next probe is along P
            ok = (vv > 0) & (pp > 0)
            one = torch.ones_like(pp)
            beta_next = beta_next * torch.where(ok, vv / torch.where(ok, pp, one), one).sqrt()
    elif rule in EDGE_RULES:  # probe at the fit's scale m
        beta_next = torch.where(alpha > 0, torch.where(_good(ema), ema, alpha),
                                torch.full_like(zero, alpha0))
    elif policy == "paper":
        beta_next = torch.clamp_min(alpha, alpha0)
    elif policy == "keep":
        beta_next = torch.where(alpha > 0, alpha, beta)
    else:
        beta_next = torch.where(alpha > 0, alpha, torch.full_like(zero, alpha0))
    asked = torch.where(far & (alpha == 0) & (red[RED_GG] != 0), torch.maximum(a_star, beta / 1000),
                        zero)  # where this probe asks the next probe along its direction to go
    asked = torch.where(unresolved, 10 * beta, asked)
    if rule in SPLIT_RULES:  # `*split`: the request waits for this direction's next probe
        pending = st64["beta_alt"]
        beta_next = torch.where(pending > 0, pending, beta_next)
    else:
        beta_next = torch.where(asked > 0, asked, beta_next)
    floor = param_eps > FP32_EPS  # the probe floor (bf16, fp16 parameters)
    if floor or rule in RESTART_RULES:  # host-side test: no ops on the hot path of the others
        xx_next = red[RED_PP] if next_probe_direction(rule, probe_dir) == DIR_P else vv
        ok = (tt > 0) & (xx_next > 0)
        ulp = torch.where(ok, PROBE_ULPS * param_eps * (tt / torch.where(ok, xx_next, inf)).sqrt(),
                          zero)
        if floor:
            beta_next = torch.maximum(beta_next, ulp)
    if rule in RESTART_RULES:  # a probe that cannot move θ: start over
        restart = beta_next < ulp
        beta_next = torch.where(restart, torch.full_like(zero, (reach if rule in EMA_RULES else 1.0)
                                                         * alpha0), beta_next)
    beta_next = torch.where(fin, beta_next, beta / 10)
    stepped = l0_ok & fin
    if rule in SHARESM_RULES or rule in LOWSHARE_RULES:  # the `share` slot after this step
        share = torch.where(stepped, share, st64["share"])
    if rule in POLYAK_RULES:  # the step only: the memory and the next probe are the rule's own
        ok = (L0 > 0) & (d > 0)
        alpha = torch.where(ok, torch.minimum(alpha, POLYAK * L0 / torch.where(ok, d, zero + 1)), alpha)
    ema_next = (torch.where(stepped, ema, st64["ema"]) if (rule in EMA_RULES or rule in EDGE_RULES)
                else st64["ema"])
    length = st64["length"]
    if rule in LEN_RULES:  # the step only, as `*polyak`; its own memory: the smoothed step length
        norm = vv.clamp_min(0).sqrt()
        moved = length
        if rule in LEN_MOVED_RULES:  # moved with the α memory (`_lenmem`, `_lenup`)
            one = zero + 1
            shift = _good(length) & _good(st64["ema"]) & _good(ema_next)
            ratio = torch.where(shift, ema_next / torch.where(shift, st64["ema"], one), one)
            moved = length * (ratio.clamp_min(1.0) if rule in LENUP_RULES else ratio)
        bounded = _good(moved) & (vv > 0)
        longest = LEN_GROWTH * moved / torch.where(bounded, norm, zero + 1)
        alpha = torch.where(bounded, torch.minimum(alpha, longest), alpha)
        taken = stepped & (vv > 0) & (alpha > 0)
        step_len = torch.where(taken, alpha * norm, zero + 1)
        length = torch.where(taken, _log_ema(moved, step_len, LEN_DECAY_OF[rule]), length)
    if rule in KMAX_RULES:  # the step only, as `*polyak`
        kb = KMAX_DECAY * st64["kmax"] if rule in KMAX_BEFORE_RULES else kmax  # `_kmaxn`: before
        if rule in KMAX_OWN_RULES and probe_dir == DIR_P:
            # `_kmaxp`: and a P probe's own, in V's units
            kv0, kp0 = st64["kappa_v"], st64["kappa_p"]
            own_ok = kmax_takes & (kv0 > 0) & (kp0 > 0)
            own = torch.where(own_ok, kv0 * kappa_p / torch.where(own_ok, kp0, zero + 1), zero)
            if rule in KRES_RULES:
                own = torch.where(own <= FP32_MAX, own, zero)
            kb = torch.maximum(kb, KMAX_DECAY * own if rule in KMAXS_RULES else own)  # `_kmaxs`: ½
        ok = (d > 0) & (vv > 0) & (kb > 0)
        one = zero + 1
        bound = scale * d / (2 * torch.where(ok, kb, one) * torch.where(ok, vv, one))
        alpha = torch.where(ok, torch.minimum(alpha, bound), alpha)
    floored = rule in MINREL_RULES or rule in MINPOL_RULES or rule in LIVE_RULES
    unshortened = alpha  # `_minrel`, `_minpol`, `_minlive`: the step without `_lowshare`'s factor
    if rule in LOWSHARE_RULES:  # the step only, as `*unseen`
        alpha = alpha * (share / LOWSHARE_REF).clamp(LOWSHARE_LO, 1)
    if rule in UNSEEN_RULES:  # the step only: the memory, the next probe and the length are the rule's
        u = torch.where(vv > 0, red[RED_VZ] / torch.where(vv > 0, vv, zero + 1), zero)
        kept = (1 - u.clamp(0, 1)) ** 2
        alpha = alpha * kept
        if floored:
            unshortened = unshortened * kept
    if floored:  # the share shortens no step below MINREL·|θ|
        one = zero + 1
        ok = (tt > 0) & (vv > 0)
        least = MINREL * (tt / torch.where(ok, vv, one)).sqrt()
        if rule in MINPOL_RULES:  # nor, near zero loss, below POLYAK·L0/⟨V,G⟩
            ok = ok & (L0 > 0) & (d > 0)
            least = torch.minimum(least, POLYAK * L0 / torch.where(ok, d, one))
        if rule in LIVE_RULES:  # only while the batch gradient is alive (`reference.grad_alive`)
            gg, seen = red[RED_GG], st64["grad_seen"]
            took = stepped & (gg > 0)
            n = seen + 1
            start = (st64["grad_start"].clamp_min(1e-300).log() * (n - 1) / n
                     + torch.where(took, gg, one).log() / n).exp()
            start = torch.where(seen > 0, start, gg)
            grad_start = torch.where(took & (seen < LIVE_START), start, st64["grad_start"])
            grad_seen = torch.where(took & (seen < LIVE_START), n, seen)
            prev = st64["grad_ema"]
            g_ema = torch.where(prev > 0, LIVE_DECAY * prev + (1 - LIVE_DECAY) * gg, gg)
            grad_ema = torch.where(took, g_ema, prev)
            ok = ok & ((grad_seen < LIVE_START) | (grad_ema >= LIVE_FRAC * grad_start))
        alpha = torch.where(ok, torch.maximum(alpha, torch.minimum(unshortened, least)), alpha)
    new = {
        "alpha": torch.where(l0_ok, alpha, st64["alpha"]),
        "beta": torch.where(l0_ok, beta_next, beta),
        "kappa_v": torch.where(stepped, kappa_v, st64["kappa_v"]),
        "kappa_p": torch.where(stepped, kappa_p, st64["kappa_p"]),
        "ema": ema_next,
        "held": torch.where(stepped, held_next, st64["held"]) if rule in EDGE_RULES else st64["held"],
        "length": length,
        "beta_alt": (torch.where(l0_ok, torch.where(fin, asked, zero), st64["beta_alt"])
                     if rule in SPLIT_RULES else st64["beta_alt"]),
        "found": (torch.where(stepped, found, st64["found"]) if rule in EARLY_RULES else st64["found"]),
        "kmax": torch.where(stepped, kmax, st64["kmax"]) if rule in KMAX_RULES else st64["kmax"],
        "share": share if rule in SHARESM_RULES or rule in LOWSHARE_RULES else st64["share"],
        "grad_ema": grad_ema if rule in LIVE_RULES else st64["grad_ema"],
        "grad_start": grad_start if rule in LIVE_RULES else st64["grad_start"],
        "grad_seen": grad_seen if rule in LIVE_RULES else st64["grad_seen"],
        "skips": st64["skips"] + (~stepped).to(f64),
        "step": st64["step"],
    }
    if rule in RESTART_RULES:
        new["ema"] = torch.where(restart & stepped, zero, new["ema"])
        if rule in EDGE_RULES:
            new["held"] = torch.where(restart & stepped, zero, new["held"])
    return alpha.float(), {k: v.float() for k, v in new.items()}

