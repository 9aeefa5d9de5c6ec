"""Two diagnostics behind docs/quality.md log item 38.

    python -m bench.quality.zero_loss trace --base adam --alpha0 0.01 --seed 4 --epochs 30
    python -m bench.quality.zero_loss unseen --task ratings_mf,tabular_embed,digits_mlp

``trace``: one run of the interpolation check's model (the demo MLP, bench/quality/interpolation.py)
with QLAB's rule for ``--base`` (``--rule``, default ``auto``); per epoch the train loss, the median
and largest α, and α·⟨V,G⟩/L0, the step in units of the Polyak step L0/⟨V,G⟩ (what `_polyak` bounds
at 2), as median, 90th percentile and largest. The rule's inputs are read by wrapping the device rule
(qlab_fused.rules.rule_step); the run itself is the check's.

``unseen``: torch's Adam at ``--lr`` on a protocol task; every 20 steps, the share of |V|² (V = m̂/(√v̂+ε),
Adam's direction) on coordinates whose gradient on this batch is exactly 0 (embedding rows the batch
does not touch, dead units): the part of the step the batch's loss, and so QLAB's fit, cannot see.
Median, least and largest over the run.
"""
from __future__ import annotations

import argparse
import statistics

import torch


def trace(base: str, rule: str, alpha0: float, seed: int, epochs: int) -> list[dict]:
    from bench.quality.interpolation import make
    from qlab_fused import demo, rules
    from qlab_fused.contract import RED_VG
    steps = []
    real = rules.rule_step

    def recording(rule_, L0, Lb, red, *args, **kw):
        alpha, new = real(rule_, L0, Lb, red, *args, **kw)
        L, d = float(L0), float(red[RED_VG])
        steps.append((float(alpha), float(alpha) * d / L if L > 0 and d > 0 else None))
        return alpha, new

    rules.rule_step = recording
    try:
        out = demo.train(f"{base} {rule}", demo.load_digits(seed), epochs, 64, seed,
                         make=make(base, alpha0, rule), is_qlab=True)
    finally:
        rules.rule_step = real
    per = len(steps) // epochs
    rows = []
    for e in range(epochs):
        chunk = steps[e * per:(e + 1) * per]
        alphas = [a for a, _ in chunk]
        polyak = sorted(p for _, p in chunk if p is not None) or [float("nan")]
        rows.append(dict(epoch=e + 1, loss=out["loss"][e], alpha_median=statistics.median(alphas),
                         alpha_max=max(alphas), polyak_median=statistics.median(polyak),
                         polyak_p90=polyak[int(0.9 * (len(polyak) - 1))], polyak_max=polyak[-1]))
    return rows


def unseen(task_name: str, lr: float, seed: int = 0, every: int = 20) -> list[float]:
    from bench.quality.tasks import TASKS
    task = TASKS[task_name](seed)
    model = task.model
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    (beta1, beta2), eps = opt.defaults["betas"], opt.defaults["eps"]
    shares = []
    for k, (x, y) in enumerate(task.batches()):
        opt.zero_grad()
        task.loss(model, x, y).backward()
        if k > 0 and k % every == 0:  # V from the state before this batch, G from this batch
            hidden = total = 0.0
            for p in model.parameters():
                st = opt.state[p]
                t = float(st["step"])
                v = (st["exp_avg"] / (1 - beta1 ** t)) / ((st["exp_avg_sq"] / (1 - beta2 ** t)).sqrt() + eps)
                hidden += float((v[p.grad == 0] ** 2).sum())
                total += float((v * v).sum())
            shares.append(hidden / total)
        opt.step()
    return shares


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("mode", choices=["trace", "unseen"])
    ap.add_argument("--base", default="adam", choices=["sgd", "momentum", "adam"])
    ap.add_argument("--rule", default="auto")
    ap.add_argument("--alpha0", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--task", default="ratings_mf,tabular_embed,digits_mlp")
    ap.add_argument("--lr", type=float, default=1e-2)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.mode == "trace":
        for r in trace(args.base, args.rule, args.alpha0, args.seed, args.epochs):
            print(f"epoch {r['epoch']:3d} loss {r['loss']:.2e}  α median {r['alpha_median']:.2e} "
                  f"max {r['alpha_max']:.2e}  α·⟨V,G⟩/L0 median {r['polyak_median']:.2f} "
                  f"p90 {r['polyak_p90']:.2f} max {r['polyak_max']:.2f}")
    else:
        for name in args.task.split(","):
            s = sorted(unseen(name, args.lr, args.seed))
            print(f"{name}: share of |V|² where the batch gradient is 0: median {s[len(s) // 2]:.2f} "
                  f"(least {s[0]:.2f}, largest {s[-1]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
