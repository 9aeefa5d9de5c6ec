"""Diagnostics behind docs/quality.md log items 11, 13, 15, 17, 19, 22, 26 and 27: what one step can
measure, rule prototypes.

    python -m bench.quality.diagnose constant --task digits_mlp --base momentum --lrs 0.05,0.1,0.2
    python -m bench.quality.diagnose probe --task digits_mlp --base momentum --lrs 0.1
    python -m bench.quality.diagnose rule --task digits_mlp --base momentum --spec combine=wgeo,ema=0.9
    python -m bench.quality.diagnose constant --task digits_mlp --base adam --lrs 0.01 --sharp 10

``constant``: plain X at constant lrs off the grid; final train loss / X at its best grid lr (from the
results files), per seed. ``probe``: the same runs, and at every step diagnostic forwards (not part
of training) that fit the batch loss along V and along P; medians over the second half of the run of
c_V (the fitted step along V, probed at β = lr), c_P (along P, same displacement length, in units of
V), lr·λ_V and lr·λ_P (λ = curvature per unit length; along P = along G for SGD/momentum), the
hindsight step α_h = lr + ⟨V_{t−1}, G_t⟩ / (2 a₂,_{t−1}) (the step the next batch wanted along the
last direction), the relative step lr·|V|/|θ| and the bend along V and P (curvature seen at lr/4 over
the one seen at 2·lr). ``rule``: a plain-Python prototype of the `alternate*` rules with switches for
what rounds 3–5 tried; it matches the library's rules within a few percent of the final loss (the
library computes in fp32 on flat buffers); ``edge=F`` adds a floor α ≥ F·threshold/λ_max (an oracle:
λ_max from exact Hessian-vector products every ``every`` steps, warm-started power iteration);
``reach=r`` probes next at r·α and ``scale=s,vcap=s`` steps s × the estimate, at most s·c_V (the
`*_near` rules, log item 15); ``bend=γ,smax=S`` sets that multiple from the measured bend (log item
17); ``match=1`` puts P probes at the step's length (item 19); ``warm=N`` takes the first N steps at α₀
and ``ema_down=d`` smooths decreases with decay d (item 22; ``down_inside=1``: not when the fitted
minimum lies inside the probe distance, item 23); ``skip_far=1,unwind=1,resolve=1e-6`` is the
`_guard` modifier (item 26); rule runs print the median α of their second half, with ``--bend`` also
the bend over [α/4, α].
``--sharp K``: every K steps, α·λ_max / the base's linear stability threshold ("edge"; SGD 2, heavy
ball 2(1 + μ), Adam (2 + 2β₁)/(1 − β₁) on the preconditioned Hessian D^-½HD^-½, D = √v̂ + ε).
Every diagnostic forward replays the step's dropout masks and leaves BatchNorm's statistics and the
training RNG stream as they were (the optimizer's probe hygiene). Seeds 0–2 by default; 1 thread per
run.
"""
from __future__ import annotations

import argparse
import math
import statistics
from multiprocessing import get_context

import torch

from bench.quality.analyze import best_plain, load
from qlab_fused.contract import KIND_ADAM, KIND_MOMENTUM, KIND_SGD, Hyper
from qlab_fused.reference import REL_CAP, TRUST_FAR, directions

HYPER = {"sgd": Hyper(KIND_SGD), "momentum": Hyper(KIND_MOMENTUM, momentum=0.9), "adam": Hyper(KIND_ADAM)}
RED = ("vg", "pg", "vv", "pp", "sg", "gg", "tt")


def _good(x):
    return math.isfinite(x) and x > 0


class _Replay:
    """Probe hygiene for the diagnostic forwards (as the optimizer's probe): the dropout masks of the
    step's forward (its RNG state is replayed) and BatchNorm's running statistics (restored), and the
    RNG stream of training is left where it was."""

    def __init__(self, model, rng):
        self.model, self.rng = model, rng

    def __enter__(self):
        self.after, self.bufs = torch.get_rng_state(), [b.clone() for b in self.model.buffers()]
        torch.set_rng_state(self.rng)

    def __exit__(self, *exc):
        for b, o in zip(self.model.buffers(), self.bufs):
            b.copy_(o)
        torch.set_rng_state(self.after)


def _loss_at(task, model, ps, x, y, X, dist, rng):
    """The batch loss at θ − dist·X (the step's dropout masks), θ restored afterwards."""
    orig = [p.data.clone() for p in ps]
    for p, d in zip(ps, X):
        p.data.sub_(dist * d)
    with _Replay(model, rng), torch.no_grad():
        L = float(task.loss(model, x, y))
    for p, o in zip(ps, orig):
        p.data.copy_(o)
    return L


def _a2(task, model, ps, x, y, X, slope, L0, dist, rng):
    """The parabola's a₂ through L0, the slope ⟨X,G⟩ and a probe at θ − dist·X."""
    return (_loss_at(task, model, ps, x, y, X, dist, rng) - L0 + dist * slope) / dist ** 2


def _bend(task, model, ps, x, y, X, slope, L0, near, far, rng):
    """Curvature of the batch loss along X seen by a probe at ``near`` over the one seen at ``far``
    (1: a parabola over that range; > 1: the loss flattens with distance, a near probe sees more)."""
    a = [_a2(task, model, ps, x, y, X, slope, L0, b, rng) for b in (near, far)]
    return a[0] / a[1] if (a[0] > 0 and a[1] > 0) else math.nan


class Prototype:
    """`alternate*` in plain Python: probe P on even steps and V on odd ones, keep the curvature per
    unit length along each, combine the two step estimates, optionally smooth, bound by REL_CAP."""

    def __init__(self, combine="wgeo", w=0.25, ema=0.0, linear=False, scale=1.0, trust=False,
                 step_nondescent=False, edge=0.0, every=10, reach=1.0, vcap=1.0, bend=0.0, smax=2.0,
                 match=False, warm=0, ema_down=0.0, down_inside=False, skip_far=False, unwind=False,
                 resolve=0.0):
        # skip_far: a fit the trust test rejects (measured too far) leaves the curvatures and the EMA
        # as they were; unwind: the EMA never holds more than the step bound |αV| ≤ REL_CAP·|θ| lets
        # the step take; resolve = R: a probe whose loss differs from the parabola's line by at most
        # R·|L0| (rounding) measured nothing: no step, memory kept, probe 10× farther (log item 26)
        self.skip_far, self.unwind, self.resolve = bool(skip_far), bool(unwind), float(resolve)
        # ema_down: the EMA's decay when the estimate is below it (0: the same as ``ema``; log item 22);
        # down_inside: not when the fitted minimum lies inside the probe distance (log item 23)
        self.ema_down, self.down_inside = float(ema_down), bool(down_inside)
        # match: a probe along P at the length of the step, β_P = β·|V|/|P| (log item 19)
        self.match = bool(match)
        # warm = N: the first N steps go at the constant α₀ (the rule runs alongside; log item 22)
        self.warm = int(warm)
        # next probe distance = reach·α; a smoothed step at most vcap·c_V (log item 15)
        self.reach, self.vcap = float(reach), float(vcap)
        # bend > 0: every fourth step probes V at the step's own distance instead of reach·α; the
        # EMA of (near curvature / far curvature) = b sets the multiple smax / b^bend (log item 17)
        self.bend, self.smax = float(bend), float(smax)
        self.edge, self.every = float(edge), int(every)  # floor α ≥ edge·threshold/λ_max (log item 13)
        self.combine, self.w, self.ema, self.linear = combine, float(w), float(ema), bool(linear)
        self.scale, self.trust, self.step_nondescent = float(scale), bool(trust), bool(step_nondescent)

    def _far_probe(self, rs):
        return self.bend > 0 and rs["k"] % 4 == 3

    def probe(self, rs):
        if self._far_probe(rs):
            return "V", rs["beta"] / self.reach
        return ("P" if rs["k"] % 2 == 0 else "V"), rs["beta"]

    def step(self, rs, L0, Lb, red, beta, pdir):
        far_probe = self._far_probe(rs)
        last = beta if far_probe else beta / self.reach  # the last step's length
        rs["k"] += 1
        if not math.isfinite(Lb):  # as the library: skip the step, probe 10× nearer next time
            rs["beta"] = beta / 10
            return 0.0
        dX, xx = (red["pg"], red["pp"]) if pdir == "P" else (red["vg"], red["vv"])
        a2 = (Lb - L0 + beta * dX) / beta ** 2
        a_star = dX / (2 * a2) if a2 != 0 else math.nan
        kappa = a2 / xx if (a2 > 0 and xx > 0) else 0.0
        far = self.trust and _good(a_star) and a_star < last / TRUST_FAR
        if self.resolve and abs(Lb - L0 + beta * dX) <= self.resolve * abs(L0):
            rs["beta"] = 10 * beta  # the probe moved the loss by rounding only
            return 0.0
        if self.skip_far and far:
            pass
        elif far_probe:
            if kappa > 0 and rs.get("kv", 0.0) > 0:
                lb = math.log(rs["kv"] / kappa)
                rs["lb"] = 0.7 * rs.get("lb", lb) + 0.3 * lb
        else:
            rs["kp" if pdir == "P" else "kv"] = kappa
        scale, vcap = self.scale, self.vcap
        if self.bend > 0:
            scale = vcap = self.smax / math.exp(max(rs.get("lb", 0.0), 0.0) * self.bend)
        kv, kp = rs.get("kv", 0.0), rs.get("kp", 0.0)
        cv = red["vg"] / (2 * kv * red["vv"]) if kv > 0 else math.nan
        cp = red["pg"] / (2 * kp * red["pp"]) if kp > 0 else math.nan
        cands = [c for c in (cv, cp) if _good(c)]
        if not cands:
            tgt = beta
        elif len(cands) == 1 or self.combine == "min":
            tgt = min(cands)
        elif self.combine == "wgeo":
            tgt = min(math.exp(self.w * math.log(cv) + (1 - self.w) * math.log(cp)), cv)
        else:  # "geo", "geov"
            tgt = math.exp((math.log(cv) + math.log(cp)) / 2)
            tgt = min(tgt, cv) if self.combine == "geov" else tgt
        tgt = tgt * scale if cands else tgt
        if self.ema and self.skip_far and far:
            val = rs.get("sm", 0.0)
        elif self.ema and rs.get("sm", 0.0) > 0:
            inside = self.down_inside and _good(a_star) and a_star < beta
            dec = self.ema_down if (self.ema_down and tgt < rs["sm"] and not inside) else self.ema
            val = (dec * rs["sm"] + (1 - dec) * tgt if self.linear else
                   math.exp(dec * math.log(rs["sm"]) + (1 - dec) * math.log(tgt)))
        else:
            val = tgt
        if self.unwind and val > 0 and not (self.skip_far and far) and red["tt"] > 0 and red["vv"] > 0:
            val = min(val, REL_CAP * math.sqrt(red["tt"] / red["vv"]))
        rs["sm"] = val
        if not val > 0:  # skip_far before any accepted fit: no estimate yet
            val = beta / self.reach
        alpha = (min(val, vcap * cv) if _good(cv) else val) if self.ema else min(val, 2 * beta)
        if self.edge and rs.get("lam", 0.0) > 0:
            alpha = max(alpha, self.edge * rs["thr"] / rs["lam"])
        if red["tt"] > 0 and red["vv"] > 0:
            alpha = min(alpha, REL_CAP * math.sqrt(red["tt"] / red["vv"]))
        if far or (not red["vg"] > 0 and not self.step_nondescent) or red["gg"] == 0:
            alpha = 0.0
        if rs["k"] <= self.warm:
            alpha = rs["alpha0"]
        if far:
            rs["beta"] = max(a_star, beta / 1000)
        else:
            rs["beta"] = self.reach * (alpha if alpha > 0 else (val if self.ema else rs["alpha0"]))
            if self.match and rs["k"] % 2 == 0 and red["pp"] > 0 and red["vv"] > 0:  # next: P
                rs["beta"] *= math.sqrt(red["vv"] / red["pp"])
        return alpha


def _top_curvature(task, model, ps, x, y, rng, denom=None, iters=12, v0=None):
    """λ_max of the batch Hessian (of D^-½ H D^-½ for Adam's preconditioner D = √v̂ + ε) by power
    iteration on Hessian-vector products, at the step's dropout masks."""
    from torch.nn.attention import SDPBackend, sdpa_kernel  # the fused CPU attention has no double backward
    with _Replay(model, rng), torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        gs = torch.autograd.grad(task.loss(model, x, y), ps, create_graph=True)
        s = [torch.ones_like(p) if denom is None else d.rsqrt() for p, d in zip(ps, denom or ps)]
        v = _start_vector(ps) if v0 is None else v0
        lam = math.nan
        for _ in range(iters):
            n = math.sqrt(sum(float((w * w).sum()) for w in v))
            u = [w / n for w in v]
            hu = torch.autograd.grad(gs, ps, [w * si for w, si in zip(u, s)], retain_graph=True)
            v = [h.detach() * si for h, si in zip(hu, s)]  # A u, A = D^-½ H D^-½
            lam = sum(float((a * w).sum()) for a, w in zip(v, u))
    return (lam, v) if v0 is not None else lam


def _stability(base, h, state, t):
    """(linear stability threshold of lr·λ_max, Adam's preconditioner D or None) after step t."""
    if base == "adam":
        denom = [st["exp_avg_sq"].sqrt() / math.sqrt(1 - h.beta2 ** t) + h.eps for st in state]
        return (2 + 2 * h.beta1) / (1 - h.beta1), denom
    return (2 * (1 + h.momentum) if base == "momentum" else 2.0), None


def _start_vector(ps):
    g = torch.Generator().manual_seed(0)  # not the training RNG stream
    return [torch.randn(p.shape, generator=g) for p in ps]


def run(task_name, base, seed, lr, rule=None, probe=False, sharp=0):
    """One run: constant lr (rule None) or the prototype rule from α₀ = lr. Returns (final train
    loss, per-step diagnostics when ``probe`` or ``sharp``: every ``sharp`` steps α·λ_max relative to
    the base's stability threshold)."""
    from bench.quality.tasks import TASKS
    torch.set_num_threads(1)
    task = TASKS[task_name](seed)
    model, h = task.model, HYPER[base]
    ps = list(model.parameters())
    states = [{n: torch.zeros_like(p) for n in h.state_names()} for p in ps]
    rs = dict(k=0, beta=lr, alpha0=lr)
    diag, prev_a2 = [], 0.0
    for t, (x, y) in enumerate(task.batches(), start=1):
        for p in ps:
            p.grad = None
        rng = torch.get_rng_state()  # the dropout masks of this step's forward, replayed by probes
        L = task.loss(model, x, y)
        L.backward()
        L0 = float(L.detach())
        with torch.no_grad():
            V, P, news = [], [], []
            red = dict.fromkeys(RED, 0.0)
            for p, st in zip(ps, states):
                g = p.grad
                v, pp, s, nst = directions(p.data, g, st, t, h)
                V.append(v), P.append(pp), news.append(nst)
                for key, val in (("vg", v * g), ("pg", pp * g), ("vv", v * v), ("pp", pp * pp),
                                 ("sg", s * g), ("gg", g * g), ("tt", p * p)):
                    red[key] += float(val.sum())
            states[:] = news
            if rule is None:
                alpha = lr
                bp = lr * math.sqrt(red["vv"] / red["pp"]) if red["pp"] > 0 else 0.0
                if probe and 0 < bp < math.inf and math.isfinite(L0):  # (a diverged run: no fits)
                    a2 = _a2(task, model, ps, x, y, V, red["vg"], L0, lr, rng)
                    a2p = _a2(task, model, ps, x, y, P, red["pg"], L0, bp, rng)
                    diag.append(dict(  # bend over [lr/4, 2·lr], along P over the same lengths
                        bend=_bend(task, model, ps, x, y, V, red["vg"], L0, lr / 4, 2 * lr, rng),
                        bendP=_bend(task, model, ps, x, y, P, red["pg"], L0, bp / 4, 2 * bp, rng),
                        cV=red["vg"] / (2 * a2) if a2 > 0 else math.nan,
                        cP=red["pg"] / (2 * a2p) if a2p > 0 else math.nan,
                        lamV=lr * 2 * a2 / red["vv"], lamP=lr * 2 * a2p / red["pp"],
                        hind=lr + red["sg"] / (2 * prev_a2) if prev_a2 > 0 else math.nan,
                        rho=red["sg"] / red["vg"] if red["vg"] > 0 else math.nan,
                        rel=lr * math.sqrt(red["vv"] / red["tt"]) if red["tt"] > 0 else math.nan))
                    prev_a2 = a2
            if rule is not None and rule.edge and (t - 1) % rule.every == 0:
                thr, denom = _stability(base, h, news, t)
                first = "u" not in rs  # warm-started power iteration: 12 products first, then 3
                rs["lam"], rs["u"] = _top_curvature(task, model, ps, x, y, rng, denom, 12 if first else 3,
                                                    _start_vector(ps) if first else rs["u"])
                rs["thr"] = thr
            if rule is not None:
                pdir, beta = rule.probe(rs)
                Lb = _loss_at(task, model, ps, x, y, P if pdir == "P" else V, beta, rng)
                alpha = rule.step(rs, L0, Lb, red, beta, pdir)
                diag.append(dict(alpha=alpha))
                ab = alpha * math.sqrt(red["vv"] / red["pp"]) if probe and red["pp"] > 0 else 0.0
                if 0 < ab < math.inf:  # --bend: at the step's own length
                    diag.append(dict(
                        bend=_bend(task, model, ps, x, y, V, red["vg"], L0, alpha / 4, alpha, rng),
                        bendP=_bend(task, model, ps, x, y, P, red["pg"], L0, ab / 4, ab, rng),
                        # where the rule's own P probes land: β·P with β = r·α, r = ¼ and 1
                        bendPr=_bend(task, model, ps, x, y, P, red["pg"], L0, alpha / 4, alpha, rng),
                        PV=math.sqrt(red["pp"] / red["vv"])))
            if sharp and t % sharp == 0:  # a zeroed step counts as edge 0
                thr, denom = _stability(base, h, news, t)
                diag.append(dict(edge=alpha * _top_curvature(task, model, ps, x, y, rng, denom) / thr))
            for p, v in zip(ps, V):
                p.data.sub_(alpha * v)
    final = task.train_loss(model)
    return (final if math.isfinite(final) else math.inf), diag


def _job(args):
    task, base, seed, lr, spec, probe, sharp = args
    rule = Prototype(**spec) if spec is not None else None
    return (task, base, seed, lr) + run(task, base, seed, lr, rule, probe, sharp)


def _median_late(diag, key):
    xs = [d[key] for d in diag[len(diag) // 2:] if math.isfinite(d[key])]
    return statistics.median(xs) if xs else math.nan


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=["constant", "probe", "rule"])
    ap.add_argument("--task", default="digits_mlp", help="comma list")
    ap.add_argument("--base", default="momentum", help="comma list of sgd, momentum, adam")
    ap.add_argument("--lrs", default="1e-4,1e-3,1e-2,0.1,1", help="constant lrs, or α₀ for 'rule'")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--bend", action="store_true",
                    help="rule runs: every step, the bend of the batch loss along V and P over [α/4, α]")
    ap.add_argument("--sharp", type=int, default=0,
                    help="every K steps: α·λ_max / the base's stability threshold ('edge')")
    ap.add_argument("--spec", default="combine=wgeo,w=0.25,ema=0.9",
                    help="Prototype(...) keywords: combine=min|geo|geov|wgeo, w, ema (decay, 0: none), "
                         "linear=1, scale, trust=1, step_nondescent=1, edge, reach (next probe at "
                         "reach·α), vcap (smoothed step ≤ vcap·c_V), bend and smax (a multiple from the "
                         "measured bend), match=1 (P probes at the step's length), warm (steps at α₀ "
                         "first), ema_down (the EMA's decay for decreases), down_inside=1 (full speed "
                         "when the fitted minimum lies inside the probe distance), skip_far=1, "
                         "unwind=1, resolve=R (the _guard modifier: R = 1e-6)")
    args = ap.parse_args(argv)
    spec = None
    if args.mode == "rule":
        spec = {k: (v if k == "combine" else float(v)) for k, v in
                (kv.split("=") for kv in args.spec.split(",") if kv)}
    probe = args.mode == "probe" or args.bend
    jobs = [(t, b, int(s), float(lr), spec, probe, args.sharp) for t in args.task.split(",")
            for b in args.base.split(",") for lr in args.lrs.split(",") for s in args.seeds.split(",")]
    with get_context("fork").Pool(2) as pool:
        res = pool.map(_job, jobs)
    best = best_plain(load())
    for task, base, seed, lr, final, diag in res:
        ref = best.get((task, base, seed), (math.nan,))[0]
        line = f"{task:17s} {base:9s} seed {seed} lr/α₀ {lr:<7g} final {final:.4f}  ratio {final / ref:.2f}"
        keys = [k for k in ("cV", "cP", "lamV", "lamP", "hind", "rho", "rel", "bend", "bendP", "bendPr", "PV",
                            "edge", "alpha") if any(k in d for d in diag)]
        if keys:
            line += "  " + "  ".join(f"{k} {_median_late([d for d in diag if k in d], k):.4g}" for k in keys)
        print(line)


if __name__ == "__main__":
    main()
