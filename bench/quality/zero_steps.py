"""Why a QLAB run takes no step: the diagnostic behind docs/quality.md log items 47 and 48.

    python -m bench.quality.zero_steps --task pinn_poisson --base adam --alpha0 0.01 --seed 0
    python -m bench.quality.zero_steps --task adding_rnn,digits_distill --base adam
    python -m bench.quality.zero_steps --task selection --base momentum   # log item 48 (~3 min)

One run of a protocol task with QLAB-X (``--rule``, default ``auto``), reading the rule's inputs by
wrapping the device rule (qlab_fused.rules.rule_step; the run itself is the protocol's). Each step
whose α is zero gets the first reason that holds, in the order the rule tests them: a non-finite
loss or reduction (skipped), an all-zero gradient, V not a descent direction for the batch
(⟨V,G⟩ ≤ 0), a probe that moved the loss by rounding only (`*_guard`, `*_hold`, `*_still`:
nothing measured, the next probe goes 10× farther), a fit whose minimum lies too near to trust
(`*trust`: below β/(TRUST_FAR·reach)), or none of these. Printed with the median α of the steps
taken.
"""
from __future__ import annotations

import argparse
import math
import statistics

import torch

from qlab_fused import reference as R
from qlab_fused.contract import DIR_P, RED_GG, RED_PG, RED_VG

REASONS = ("skipped", "zero gradient", "V not descending", "rounding only", "too near to trust",
           "other")


def why_zero(rule: str, L0: float, Lb: float, red: dict, beta: float, probe_dir: int,
             loss_eps: float = R.FP32_EPS, ema: float = 0.0) -> str:
    """The reason a step of ``rule`` with these inputs is zero (``red``: vg, pg, gg at least;
    ``ema``: the α memory before the step), by reference.rule_step's own tests; call it only for a
    step whose α is zero."""
    if not (math.isfinite(L0) and math.isfinite(Lb) and all(map(math.isfinite, red.values()))):
        return "skipped"
    if red["gg"] == 0:
        return "zero gradient"
    if not red["vg"] > 0:
        return "V not descending"
    dX = red["pg"] if probe_dir == DIR_P else red["vg"]
    if R.measured_nothing(rule, L0, Lb, beta, dX, loss_eps):
        return "rounding only"
    a_star, _ = R._fit(L0, Lb, dX, beta)
    if R.fit_too_near(rule, a_star, beta, R.NEAR.get(rule, (1.0, 1.0))[0], ema):
        return "too near to trust"
    return "other"


def run(task_name: str, base: str, rule: str, alpha0: float, seed: int) -> dict:
    """{"steps", "taken", "median_alpha" (of the steps taken), "final_train_loss", "rule", reason:
    count} for one run."""
    from bench.quality.run import make_optimizer
    from bench.quality.tasks import TASKS
    from qlab_fused import rules
    task = TASKS[task_name](seed)
    opt = make_optimizer("qlab_" + base, task.model.parameters(), alpha0,
                         None if rule == "auto" else rule)
    seen, real = [], rules.rule_step

    def recording(rule_, L0, Lb, red, st, alpha0_, probe_dir, loss_eps=None, *args, **kw):
        alpha, new = real(rule_, L0, Lb, red, st, alpha0_, probe_dir, loss_eps, *args, **kw)
        inputs = {"vg": float(red[RED_VG]), "pg": float(red[RED_PG]), "gg": float(red[RED_GG])}
        seen.append((rule_, float(L0), float(Lb), inputs, float(st["beta"]), probe_dir, loss_eps,
                     float(st["ema"]), float(alpha)))
        return alpha, new

    rules.rule_step = recording
    try:
        for x, y in task.batches():
            opt.step(lambda: task.loss(task.model, x, y))
    finally:
        rules.rule_step = real
    out = {"steps": len(seen), "rule": seen[0][0], **{r: 0 for r in REASONS}}
    taken = [s[-1] for s in seen if s[-1] > 0]
    for rule_, L0, Lb, red, beta, pdir, eps, ema, alpha in seen:
        if alpha == 0:
            eps = R.FP32_EPS if eps is None else eps
            out[why_zero(rule_, L0, Lb, red, beta, pdir, eps, ema)] += 1
    out["taken"] = len(taken)
    out["final_train_loss"] = task.train_loss(task.model)
    out["median_alpha"] = statistics.median(taken) if taken else 0.0
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--task", default="pinn_poisson",
                    help="comma list of protocol tasks, or 'selection' (the choice's tasks)")
    ap.add_argument("--base", default="adam", choices=["sgd", "momentum", "adam"])
    ap.add_argument("--rule", default="auto")
    ap.add_argument("--alpha0", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from bench.quality.tasks import SELECTION
    for name in (SELECTION if args.task == "selection" else args.task.split(",")):
        r = run(name, args.base, args.rule, args.alpha0, args.seed)
        zeros = ", ".join(f"{k} {r[k]}" for k in REASONS if r[k])
        print(f"{name} ({r['rule']}): {r['steps'] - r['taken']} of {r['steps']} steps zero"
              f"{' (' + zeros + ')' if zeros else ''}; median α of the steps taken "
              f"{r['median_alpha']:.2g}; final train loss {r['final_train_loss']:.4g}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
